"""Where a download keeps its partial file, for resume (docs/protocol.md, "Files", "Resume").

A download writes ``<target folder>/.zmeet-partial/<file id>.part``, in order from offset 0,
so the part's length is the offset to resume from. Only a part whose SHA-256 matches becomes
the delivered file; a part that does not match is renamed ``<file id>.rejected`` (set aside,
never delivered) and the next try starts from 0.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..protocol.files import FILE_ID_PATTERN

PARTIAL_DIR = ".zmeet-partial"


def part_path(folder: str | os.PathLike[str], file_id: str) -> Path:
    """The partial file of download ``file_id`` under ``folder``. Raises ValueError for an id
    that is not 12 hex digits (it names a file: nothing else may get in)."""
    if FILE_ID_PATTERN.fullmatch(file_id) is None:
        raise ValueError(f"bad file id {file_id!r}")
    return Path(folder) / PARTIAL_DIR / f"{file_id}.part"


def rejected_path(part: Path) -> Path:
    """Where a part that failed its SHA-256 check is set aside."""
    return part.with_suffix(".rejected")


def resume_offset(part: Path, size: int) -> int:
    """Octets of ``part`` to keep: its length, or 0 if it is missing or longer than ``size``
    (then it is not this file's)."""
    try:
        have = part.stat().st_size
    except FileNotFoundError:
        return 0
    return have if have <= size else 0


def tidy(folder: str | os.PathLike[str]) -> None:
    """Remove the partial folder under ``folder`` if it is empty."""
    try:
        (Path(folder) / PARTIAL_DIR).rmdir()
    except OSError:
        pass
