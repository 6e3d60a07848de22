"""pyzmq calls the broker and the client share on their hot paths: a multipart message read
and sent one part at a time, with its large parts not copied.

Why not ``recv_multipart``/``send_multipart``: pyzmq's ``recv_multipart(copy=False)`` costs about
three times as much as one ``recv`` per part for small parts (23 µs against 7 µs a message,
measured), ``recv_multipart(copy=True)`` copies a 1 MiB file chunk into a fresh ``bytes`` (a
first-touch page fault per 4 KiB), and both read ``rcvmore`` through pyzmq's attribute and enum
machinery (3 µs against 1 µs for ``get(RCVMORE)``, once a part).
"""

from __future__ import annotations

import zmq

RCVMORE = int(zmq.RCVMORE)
NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)


def recv_rest(sock: zmq.Socket, first: bytes, payload_at: int) -> list:
    """``[first, part, ...]``: all of a multipart message whose first part, ``first``, was just
    received from ``sock``. Parts from index ``payload_at`` on are :class:`zmq.Frame` (not
    copied; ``frame.buffer`` is a memoryview of it), the others ``bytes``. The whole message is
    read whatever its length, so the next read starts at a message boundary. Raises
    :class:`zmq.ZMQError` as ``recv`` does (never ``zmq.Again``: the parts of a message arrive
    together)."""
    parts: list = [first]
    while sock.get(RCVMORE):
        parts.append(sock.recv(copy=len(parts) < payload_at))
    return parts


def send_parts(sock: zmq.Socket, frames: list, flags: int = NOBLOCK, *, copy: bool = False) -> None:
    """``send_multipart(frames, flags)``, one ``send`` a part. Unless ``copy``, parts of
    ``sock.copy_threshold`` octets (64 KiB) and more are handed to libzmq without a copy, and
    smaller ones are copied. pyzmq then keeps a reference to each such part until libzmq is done
    with it, through a garbage-collector thread of its own. Raises :class:`zmq.ZMQError` as
    ``send`` does (``zmq.Again`` on the first part when the queue is full and ``flags`` has
    NOBLOCK)."""
    last = len(frames) - 1
    more = flags | _SNDMORE
    for i, frame in enumerate(frames):
        sock.send(frame, more if i < last else flags, copy=copy)
