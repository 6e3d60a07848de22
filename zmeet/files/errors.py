"""Errors of file sharing. Each docstring is written for people: the CLI prints the message (or
the docstring) and exits 1 (magic-wormhole ``errors.py`` does the same)."""

from __future__ import annotations

from ..errors import ZmeetError


class FileError(ZmeetError):
    """A file could not be shared or received."""


class FileMissing(FileError):
    """File doesn't exist."""


class FileUnreadable(FileError):
    """The file cannot be read (permissions, or not a regular file)."""


class FileTooLarge(FileError):
    """The file is over the broker's size limit (--max-file-size); nothing was sent."""


class IntegrityError(FileError):
    """The received file does not match its SHA-256: it was set aside, not delivered."""


class UnsafeDestination(FileError):
    """No safe place was found for a received file inside the target folder."""


class TransferFailed(FileError):
    """The transfer stopped before the end; run the same command again to resume it."""
