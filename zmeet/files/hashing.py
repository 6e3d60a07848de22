"""SHA-256 helpers. Blocking (they read files): drivers call them in gevent's threadpool.

``hashlib`` releases the GIL while it hashes more than 2 KiB, so a hash in a pool thread runs
beside the gevent hub instead of stopping it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from ..protocol.files import SHA256_PATTERN

HASH_BLOCK_BYTES = 1024 * 1024
"""Octets read per step when hashing a file."""


def is_sha256(text: object) -> bool:
    """True for 64 lower-case hex digits."""
    return isinstance(text, str) and SHA256_PATTERN.fullmatch(text) is not None


def sha256_of(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_range(
    hasher: hashlib._Hash,
    path: str | os.PathLike[str],
    start: int = 0,
    length: int | None = None,
    *,
    block_bytes: int = HASH_BLOCK_BYTES,
    on_block: Callable[[int], None] | None = None,
) -> int:
    """Feed ``length`` octets of the file at ``path`` from ``start`` (to its end if None) into
    ``hasher``; ``on_block(n)`` is called after each block. Returns the octets hashed, fewer
    than ``length`` only if the file is shorter.

    Raises OSError if the file cannot be read.
    """
    done = 0
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        buf = bytearray(block_bytes)
        view = memoryview(buf)
        while length is None or done < length:
            want = block_bytes if length is None else min(block_bytes, length - done)
            n = f.readinto(view[:want])
            if not n:
                break
            hasher.update(view[:n])
            done += n
            if on_block is not None:
                on_block(n)
    return done


def sha256_file(
    path: str | os.PathLike[str], *, on_block: Callable[[int], None] | None = None
) -> str:
    """Hex SHA-256 of the whole file at ``path``. Raises OSError if it cannot be read."""
    hasher = hashlib.sha256()
    hash_range(hasher, path, on_block=on_block)
    return hasher.hexdigest()


def write_and_hash(
    fd: int, data: bytes | bytearray | memoryview, offset: int, hasher: hashlib._Hash | None
) -> None:
    """``os.pwrite`` all of ``data`` at ``offset`` of ``fd``, then feed it to ``hasher`` (if
    given). Raises OSError (disk full, I/O error)."""
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], offset + written)
    if hasher is not None:
        hasher.update(view)


def read_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` octets of ``fd`` at ``offset`` (fewer only at the end of the file)."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
