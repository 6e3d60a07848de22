"""What ``zmeet send PATH...`` sends: files and whole folders, with the names they travel under.

A file named on the command line travels under its base name, never its path on the sender's
disk. A folder travels whole: each regular file in it under ``folder/relative/path`` (``/``
between components), in sorted order. Symbolic links inside a folder and things that are not
regular files (sockets, FIFOs, devices) are skipped and reported, so a folder never sends
what lies outside it; a symbolic link named on the command line is followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import FileMissing, FileUnreadable


@dataclass(frozen=True)
class Source:
    """One file to send: its ``path`` here, the ``name`` it travels under, its ``size``."""

    path: Path
    name: str
    size: int


def travel_name(*parts: str) -> str:
    """Components joined with ``/``; characters that cannot travel as UTF-8 (bytes of another
    encoding in a file name, seen by Python as lone surrogates) become U+FFFD."""
    text = "/".join(parts)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _checked(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileMissing(f"File doesn't exist: {path}") from None
    except PermissionError:
        raise FileUnreadable(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise FileUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    return st


def _readable(path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise FileUnreadable(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise FileUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None


def collect(paths: list[str | os.PathLike[str]]) -> tuple[list[Source], list[str]]:
    """The files to send for ``paths``, and the notes on what was skipped inside folders.

    Raises :class:`FileMissing` ("File doesn't exist: PATH") for a path that does not exist,
    :class:`FileUnreadable` for one that cannot be read or is neither file nor folder. Checks
    every path before returning, so nothing is sent when one of them is wrong.
    """
    out: list[Source] = []
    skipped: list[str] = []
    for given in paths:
        path = Path(given)
        st = _checked(path)
        if stat.S_ISREG(st.st_mode):
            _readable(path)
            out.append(Source(path, travel_name(path.name or path.resolve().name), st.st_size))
        elif stat.S_ISDIR(st.st_mode):
            top = path.name or path.resolve().name or "folder"
            found = 0
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                dirnames.sort()
                here = Path(dirpath)
                rel = here.relative_to(path).parts
                for name in sorted(filenames):
                    file = here / name
                    try:
                        lst = file.lstat()
                    except OSError as exc:
                        skipped.append(f"{file}: {exc.strerror or exc}")
                        continue
                    if stat.S_ISLNK(lst.st_mode):
                        skipped.append(f"{file}: a symbolic link (not followed)")
                        continue
                    if not stat.S_ISREG(lst.st_mode):
                        skipped.append(f"{file}: not a regular file")
                        continue
                    _readable(file)
                    out.append(Source(file, travel_name(top, *rel, name), lst.st_size))
                    found += 1
                for name in list(dirnames):
                    if (here / name).is_symlink():
                        skipped.append(f"{here / name}: a symbolic link (not followed)")
                        dirnames.remove(name)
            if not found:
                skipped.append(f"{path}: no files in this folder")
        else:
            raise FileUnreadable(f"cannot send {path}: not a regular file or folder")
    return out, skipped
