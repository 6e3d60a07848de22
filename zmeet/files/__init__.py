"""File sharing, pure logic: safe names, chunking and credit, SHA-256, progress, resume state.

No sockets here (DESIGN.md, "Layers"): :mod:`zmeet.broker.files` and :mod:`zmeet.client.files`
drive this over the control lane. Spec: docs/protocol.md, "Files".
"""

from __future__ import annotations

from .chunks import DownloadCredit, UploadWindow, chunk_spans
from .errors import (
    FileError,
    FileMissing,
    FileTooLarge,
    FileUnreadable,
    IntegrityError,
    TransferFailed,
    UnsafeDestination,
)
from .hashing import hash_range, is_sha256, sha256_file, sha256_of
from .names import (
    deliver,
    destination_folder,
    numbered,
    safe_basename,
    safe_component,
    safe_relpath,
)
from .parts import PARTIAL_DIR, part_path, rejected_path, resume_offset
from .progress import Progress, RateLimiter, format_size, parse_size
from .sources import Source, collect

__all__ = [
    "PARTIAL_DIR", "DownloadCredit", "FileError", "FileMissing", "FileTooLarge",
    "FileUnreadable", "IntegrityError", "Progress", "RateLimiter", "Source", "TransferFailed",
    "UnsafeDestination", "UploadWindow", "chunk_spans", "collect", "deliver",
    "destination_folder", "format_size", "hash_range", "is_sha256", "numbered", "parse_size",
    "part_path", "rejected_path", "resume_offset", "safe_basename", "safe_component",
    "safe_relpath", "sha256_file", "sha256_of",
]
