"""Test files made on the spot: random content, bounded memory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MiB = 1024 * 1024


def make_file(path: Path, size: int) -> Path:
    """``size`` random octets at ``path`` (1 MiB blocks: fast and bounded in memory)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(MiB, left)
            f.write(os.urandom(n))
            left -= n
    return path


def sha256_path(path: Path) -> str:
    """The SHA-256 of the file at ``path``, in lower-case hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()
