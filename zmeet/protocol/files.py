"""The file messages of the zmeet protocol (docs/protocol.md, section "Files").

A file goes to the broker once (FILE-PUT, FILE-DATA..., FILE-DONE), is stored there by its
SHA-256, announced to its room as a ``file`` room event (or offered to one nick), and is then
fetched by each receiver (FILE-GET, then FILE-CHUNK messages paced by FILE-CREDIT). Chunks travel
on the control lane, each chunk's bytes as a raw frame after the body, never on PUB.

Flow control follows the ZeroMQ Guide's ``fileio3`` (chapter 7, "Transferring Files"): the side
that receives gives credit, and the side that sends never has more chunks in flight than that,
so memory stays bounded whatever the file size.

- upload: the broker's FILE-READY says ``window``; the client keeps at most ``window`` FILE-DATA
  requests without their FILE-ACK.
- download: the client's FILE-GET says ``credit`` (chunks the broker may send at once); each
  FILE-CREDIT adds more as the client writes what it received.

Sans-IO like the rest of :mod:`zmeet.protocol`: no gevent, no zmq.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from .codec import register
from .codes import ErrorCode
from .limits import MAX_CONTROL_FRAME_BYTES
from .messages import Direct, Reply, Request

FILE_EVENT_TYPE = "file"
"""``RoomEvent.type`` of a file shared with a room; its ``text`` is the JSON object
``{"id", "name", "size", "sha256"}`` (the sender is the event's ``from``)."""

FILE_CHUNK_BYTES = 512 * 1024
"""The chunk size ``UPLOAD_WINDOW`` and ``MAX_CREDIT`` are counted in; a broker says the chunk
size it uses in FILE-READY and FILE-STREAM (zmeet's: ``MAX_FILE_CHUNK_BYTES``)."""

MAX_FILE_CHUNK_BYTES = MAX_CONTROL_FRAME_BYTES
"""Largest chunk payload frame: the broker's ROUTER drops a connection over this anyway."""

UPLOAD_WINDOW = 16
"""FILE-DATA requests a client may have without their FILE-ACK (FILE-READY.window)."""

DOWNLOAD_CREDIT = 16
"""Chunks a zmeet client lets the broker send ahead on a download (FILE-GET.credit)."""

MAX_CREDIT = 32
"""Most chunks the broker keeps in flight for one download, whatever credit was given."""

DEFAULT_MAX_FILE_SIZE = 4 * 1024**3
"""Largest file a broker takes unless ``--max-file-size`` says otherwise (4 GiB); told to
clients as ``max_file_size`` in WELCOME.limits."""

MAX_FILE_NAME_BYTES = 1024
"""Largest ``name`` (a relative path, ``/`` between components) in UTF-8 octets."""

MAX_FILE_LIST = 1000
"""Most files one FILE-LISTED carries (the newest ones)."""

NOT_FOUND = ErrorCode.NOT_FOUND
"""ERROR code for a file id, upload or download that does not exist (or that this session may
not see), and for a recipient nick nobody holds."""

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
"""A SHA-256 as it travels: 64 lower-case hex digits."""

FILE_ID_PATTERN = re.compile(r"[0-9a-f]{12}")
"""A file id: 12 lower-case hex digits, random, unique on the broker."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInfo:
    """A stored file as the broker describes it (a record nested in replies and offers).

    ``id`` is its file id (12 hex digits); ``name`` the sender's name for it, a relative path
    with ``/`` between components (receivers MUST reduce it to safe components, never trust
    it); ``size`` in octets; ``sha256`` 64 hex digits of its content; ``sender`` (``from`` on
    the wire) the sharer's nick; ``room`` the room it was shared with, or ``""``; ``to`` the
    one nick it was sent to, or ``""``; ``ts_ms`` when it was shared, ms since the Unix epoch.
    """

    id: str
    name: str
    size: int
    sha256: str
    sender: str
    room: str = ""
    to: str = ""
    ts_ms: int = 0


# --- upload ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FilePut(Request):
    """Start (or resume) the upload of a file of ``size`` octets with content ``sha256``, to
    share with ``room`` (the sender must be a member) or to send to nick ``to`` (give exactly
    one). ``name`` is a relative path, ``/`` between components.

    Reply: :class:`FileReady`; or ERROR 413 (over ``max_file_size``, or a name over
    MAX_FILE_NAME_BYTES), 422 (bad sha256, name or room), 403 (not in ``room``), 404 (nobody
    holds nick ``to``), 429 (the same content is being uploaded by another live session, or
    too many transfers at once), 400.
    """

    COMMAND: ClassVar[bytes] = b"FILE-PUT"
    name: str
    size: int
    sha256: str
    room: str = ""
    to: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileData(Request):
    """One chunk of upload ``upload`` at ``offset``; ``data`` travels as a raw frame after the
    body. ``offset`` MUST be the broker's ``received`` (chunks in order, no gaps).

    Reply: :class:`FileAck`; or ERROR 404 (no such upload for this session), 400 (wrong
    offset, empty chunk, past the size), 413 (chunk over MAX_FILE_CHUNK_BYTES).
    """

    COMMAND: ClassVar[bytes] = b"FILE-DATA"
    PAYLOAD_FIELD: ClassVar[str] = "data"
    MAX_PAYLOAD_BYTES: ClassVar[int] = MAX_FILE_CHUNK_BYTES
    upload: str
    offset: int
    data: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDone(Request):
    """All of ``upload`` is sent: the broker checks its SHA-256, stores it and announces it.

    Reply: :class:`FileShared`; or ERROR 404, 400 (not all octets received; or the content
    does not match its sha256: the broker then drops what it had and the client must upload
    again from offset 0).
    """

    COMMAND: ClassVar[bytes] = b"FILE-DONE"
    upload: str


# --- download -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileGet(Request):
    """Fetch file ``id`` from ``offset`` (a resumed download gives the octets it has), and let
    the broker send ``credit`` chunks (1 to MAX_CREDIT) before waiting for FILE-CREDIT.

    Reply: :class:`FileStream`, then :class:`FileChunk` messages; or ERROR 404 (no such file, or
    a file sent to someone else), 400 (offset outside 0..size, credit below 1), 429.
    """

    COMMAND: ClassVar[bytes] = b"FILE-GET"
    id: str
    offset: int = 0
    credit: int = DOWNLOAD_CREDIT


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCredit(Request):
    """Let download ``download`` have ``credit`` more chunks in flight. Reply: OK; or ERROR
    400 (credit below 1); credit for a download that ended or is another session's is
    ignored (OK)."""

    COMMAND: ClassVar[bytes] = b"FILE-CREDIT"
    download: str
    credit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCancel(Request):
    """Stop upload or download ``id`` of this session (an upload's octets stay for a resume).
    Reply: OK, also for an id that is already gone."""

    COMMAND: ClassVar[bytes] = b"FILE-CANCEL"
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileList(Request):
    """List the files shared with ``room`` (membership not needed, as for INFO), or with
    ``room`` empty the files this nick sent or was sent one to one; the newest ``limit``
    (1 to MAX_FILE_LIST), oldest first. Reply: :class:`FileListed`; or ERROR 422, 429."""

    COMMAND: ClassVar[bytes] = b"FILE-LIST"
    room: str = ""
    limit: int = MAX_FILE_LIST


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileReady(Reply):
    """Reply to FILE-PUT: send the chunks of ``upload`` from ``offset`` (the octets the broker
    already has: 0 for a new upload, more for a resumed one, ``size`` when it already stores
    this content), ``chunk_bytes`` at a time, at most ``window`` without their FILE-ACK."""

    COMMAND: ClassVar[bytes] = b"FILE-READY"
    upload: str
    offset: int
    chunk_bytes: int
    window: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileAck(Reply):
    """Reply to FILE-DATA: the broker accepted ``received`` octets of ``upload``, in order (on
    disk, or queued to be written: a broker restart may lose the queued ones, and FILE-READY
    of the resumed upload then says where to go on from)."""

    COMMAND: ClassVar[bytes] = b"FILE-ACK"
    upload: str
    received: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileShared(Reply):
    """Reply to FILE-DONE: the file is stored and announced as ``file``."""

    COMMAND: ClassVar[bytes] = b"FILE-SHARED"
    file: FileInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStream(Reply):
    """Reply to FILE-GET: download ``download`` of ``file`` starts at ``offset``; FILE-CHUNK
    messages of ``chunk_bytes`` (the last one shorter) follow. A download of 0 remaining
    octets has no chunks."""

    COMMAND: ClassVar[bytes] = b"FILE-STREAM"
    download: str
    file: FileInfo
    offset: int
    chunk_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileListed(Reply):
    """Reply to FILE-LIST: ``files``, oldest first."""

    COMMAND: ClassVar[bytes] = b"FILE-LISTED"
    room: str
    files: tuple[FileInfo, ...]


# --- unasked, broker to one client ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChunk(Direct):
    """``data`` (a raw frame after the body) of download ``download`` at ``offset``. Chunks of
    one download come in order; each uses one credit."""

    COMMAND: ClassVar[bytes] = b"FILE-CHUNK"
    PAYLOAD_FIELD: ClassVar[str] = "data"
    MAX_PAYLOAD_BYTES: ClassVar[int] = MAX_FILE_CHUNK_BYTES
    download: str
    offset: int
    data: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileAbort(Direct):
    """Download ``download`` stopped on the broker's side (its stored copy could not be read):
    ``code`` and ``reason`` as in ERROR."""

    COMMAND: ClassVar[bytes] = b"FILE-ABORT"
    download: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOffer(Direct):
    """A file sent to this client alone (``file.to``). A file shared with a room is announced
    by the room's ``file`` event instead (sequenced, in history)."""

    COMMAND: ClassVar[bytes] = b"FILE-OFFER"
    file: FileInfo


FILE_REQUESTS: tuple[type[Request], ...] = (
    FilePut, FileData, FileDone, FileGet, FileCredit, FileCancel, FileList,
)
FILE_REPLIES: tuple[type[Reply], ...] = (FileReady, FileAck, FileShared, FileStream, FileListed)
FILE_DIRECTS: tuple[type[Direct], ...] = (FileChunk, FileAbort, FileOffer)

register(FileInfo, *FILE_REQUESTS, *FILE_REPLIES, *FILE_DIRECTS)

__all__ = [
    "DEFAULT_MAX_FILE_SIZE", "DOWNLOAD_CREDIT", "FILE_CHUNK_BYTES", "FILE_DIRECTS",
    "FILE_EVENT_TYPE", "FILE_ID_PATTERN", "FILE_REPLIES", "FILE_REQUESTS", "MAX_CREDIT",
    "MAX_FILE_CHUNK_BYTES", "MAX_FILE_LIST", "MAX_FILE_NAME_BYTES", "NOT_FOUND",
    "SHA256_PATTERN", "UPLOAD_WINDOW", "FileAbort", "FileAck", "FileCancel", "FileChunk",
    "FileCredit", "FileData", "FileDone", "FileGet", "FileInfo", "FileList", "FileListed",
    "FileOffer", "FilePut", "FileReady", "FileShared", "FileStream",
]
