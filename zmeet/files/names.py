"""Safe names for received files (docs/protocol.md, "Files", "Names on the receiving side").

A file's ``name`` comes from the network: it is the sender's relative path with ``/`` between
components, and nothing stops a sender from writing ``../../.bashrc`` or ``/etc/passwd`` there.
Like magic-wormhole's ``cmd_receive._decide_destname`` (which had two CVEs where the check went
missing), a receiver here:

1. splits the name on ``/`` and ``\\``, and reduces each component to a safe one (no ``.`` or
   ``..``, no control or bidi characters, no leading dot, at most 255 UTF-8 octets), dropping
   components that are empty after that;
2. builds the path under the target folder, creating missing folders, and checks that the
   *resolved* path (symbolic links followed) is still inside the resolved target folder; if it
   is not, the file goes straight into the target folder under its base name;
3. never replaces an existing file: ``report.pdf`` becomes ``report (1).pdf``, ``report
   (2).pdf``, ... The final name is taken atomically (a hard link, or an exclusive create), so
   a file created meanwhile by someone else is not replaced either.
"""

from __future__ import annotations

import errno
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .errors import UnsafeDestination

MAX_COMPONENT_BYTES = 255
"""Longest component (file or folder name) in UTF-8 octets: the limit of most file systems."""

MAX_DEPTH = 32
"""Most folder levels kept from a received relative path; deeper ones are joined into the last."""

MAX_SUFFIX_TRIES = 10_000
"""Most `` (n)`` suffixes tried before giving up on a name."""

DEFAULT_NAME = "file"
"""The name of a file whose name is empty once made safe."""

_SEPARATORS = ("/", "\\")
_BIDI = {0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}
_COMPOUND_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")


def _allowed(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI:
        return False
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate (an undecodable byte on the sender's side)
        return False
    return unicodedata.category(ch) != "Cs"


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def safe_component(text: str) -> str | None:
    """One path component made safe, or None if nothing safe is left.

    Removes control characters (C0, DEL, C1), bidirectional overrides and lone surrogates;
    strips spaces at both ends; refuses ``.`` and ``..``; turns a leading ``.`` into ``_`` (no
    hidden files such as ``.bashrc`` appear in a home folder); truncates to
    MAX_COMPONENT_BYTES octets of UTF-8, keeping the extension when it can. Never contains a
    separator (the caller splits on them first; any left are replaced by ``_``).
    """
    cleaned = "".join(ch for ch in text if _allowed(ch))
    for sep in _SEPARATORS:
        cleaned = cleaned.replace(sep, "_")
    cleaned = cleaned.strip()
    if cleaned in ("", ".", ".."):
        return None
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    if len(cleaned.encode("utf-8")) > MAX_COMPONENT_BYTES:
        stem, suffix = split_suffix(cleaned)
        if len(suffix.encode("utf-8")) > 32:
            stem, suffix = cleaned, ""
        cleaned = _truncate_utf8(stem, MAX_COMPONENT_BYTES - len(suffix.encode("utf-8"))) + suffix
    return cleaned or None


def safe_relpath(name: str) -> tuple[str, ...]:
    """The safe components of a received relative path ``name`` (a str from the network).

    ``"photos/2024/a b.jpg"`` gives ``("photos", "2024", "a b.jpg")``; ``"../../etc/passwd"``
    gives ``("etc", "passwd")``; ``"/abs/x"`` gives ``("abs", "x")``; a name with nothing safe
    in it gives ``(DEFAULT_NAME,)``. Never more than MAX_DEPTH components.
    """
    parts: list[str] = [name]
    for sep in _SEPARATORS:
        parts = [piece for part in parts for piece in part.split(sep)]
    safe = [c for c in (safe_component(p) for p in parts) if c is not None]
    if not safe:
        return (DEFAULT_NAME,)
    if len(safe) > MAX_DEPTH:
        safe = [*safe[: MAX_DEPTH - 1], _truncate_utf8("_".join(safe[MAX_DEPTH - 1 :]),
                                                        MAX_COMPONENT_BYTES)]
    return tuple(safe)


def safe_basename(name: str) -> str:
    """The last safe component of ``name``: the base name a flat receiver uses."""
    return safe_relpath(name)[-1]


def split_suffix(name: str) -> tuple[str, str]:
    """``("report", ".pdf")``, ``("archive", ".tar.gz")``, ``("README", "")``; a leading dot is
    part of the stem."""
    lower = name.lower()
    for compound in _COMPOUND_SUFFIXES:
        if lower.endswith(compound) and len(name) > len(compound):
            return name[: -len(compound)], name[-len(compound) :]
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def numbered(name: str, n: int) -> str:
    """``name`` with `` (n)`` before its extension: ``numbered("a.txt", 2) == "a (2).txt"``;
    ``n == 0`` gives ``name`` itself."""
    if n == 0:
        return name
    stem, suffix = split_suffix(name)
    tag = f" ({n})"
    stem = _truncate_utf8(stem, MAX_COMPONENT_BYTES - len((tag + suffix).encode("utf-8")))
    return f"{stem}{tag}{suffix}"


def is_inside(path: Path, folder: Path) -> bool:
    """True if ``path``, resolved (symbolic links followed), is ``folder`` (resolved) or under
    it."""
    try:
        resolved = path.resolve()
        root = folder.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return resolved == root or root in resolved.parents


def _folder_for(root: Path, components: Iterable[str]) -> Path:
    """The folder under ``root`` for ``components``, made if missing; an existing *file* in the
    way makes ``name (1)`` etc. Falls back to ``root`` if the result would leave it."""
    current = root
    for component in components:
        for n in range(MAX_SUFFIX_TRIES):
            candidate = current / numbered(component, n)
            if candidate.is_dir() or not candidate.exists() and not candidate.is_symlink():
                break
        else:
            return root
        try:
            candidate.mkdir(exist_ok=True)
        except OSError:
            return root
        if not is_inside(candidate, root):
            return root
        current = candidate
    return current


def destination_folder(folder: str | os.PathLike[str], name: str) -> tuple[Path, str]:
    """``(parent, leaf)`` for a received file called ``name``: the folder to put it in (made if
    missing, always inside ``folder``) and its safe base name (not yet checked for existence).

    Raises :class:`UnsafeDestination` if ``folder`` is not a folder that exists.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UnsafeDestination(f"{folder} is not a folder")
    components = safe_relpath(name)
    parent = _folder_for(root, components[:-1])
    if not is_inside(parent, root):  # pragma: no cover - _folder_for already falls back
        parent = root
    return parent, components[-1]


def deliver(part: str | os.PathLike[str], folder: str | os.PathLike[str], name: str) -> Path:
    """Move the finished file ``part`` into ``folder`` under the safe form of ``name``, never
    replacing a file that exists (`` (1)``, `` (2)``... are added). Returns the final path.

    The final name is claimed atomically: ``os.link`` (fails if the name exists), then the
    part is unlinked; where hard links are not supported, an exclusive create reserves the
    name and ``os.replace`` moves the part onto that reservation.

    Raises :class:`UnsafeDestination` if ``folder`` is not a folder or no free name is found;
    OSError for other file system errors (disk full, permissions).
    """
    parent, leaf = destination_folder(folder, name)
    root = Path(folder)
    for n in range(MAX_SUFFIX_TRIES):
        target = parent / numbered(leaf, n)
        if not is_inside(target.parent, root):  # pragma: no cover - checked above
            raise UnsafeDestination(f"refusing to write {target} outside {folder}")
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK,
                                 errno.EOPNOTSUPP):
                raise
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            os.replace(part, target)
            return target
        os.unlink(part)
        return target
    raise UnsafeDestination(f"no free name for {leaf!r} in {parent}")
