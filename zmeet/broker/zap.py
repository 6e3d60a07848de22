"""The broker's ZAP handler (ZeroMQ RFC 27, ZMQ Authentication Protocol), a greenlet.

libzmq asks the handler bound at ``inproc://zeromq.zap.01`` of a socket's context about every
peer that completes a security handshake with a socket that has a ``ZMQ_ZAP_DOMAIN``. For CURVE
(RFC 26) the request carries the client's long-term public key; the handler answers ``200``
with a *user id*, which libzmq then attaches to every message from that connection
(``zmq.Frame.get("User-Id")``), or ``400`` to refuse the connection.

zmeet's user id is the client's public key in Z85: a person's identity is their key, never a
routing id, a token or a name in a payload (DESIGN.md, "Trust").

libzmq fails open: a handshake that finds no handler bound is let in with no user id. The
broker therefore binds this handler before any other socket (:meth:`ZapHandler.bind` raises if
another one holds the endpoint), links its greenlet's death to stopping the broker, and refuses
any message that comes without a user id on a secure lane.

Request frames (RFC 27, 3.1): version ``1.0``, request id, domain, address, routing id,
mechanism, then the mechanism's credentials (CURVE: one frame, the 32-octet public key).
Reply frames: version, request id, status code, status text, user id, metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
import zmq.green as zmq_green
from zmq.utils import z85

log = logging.getLogger("zmeet.broker")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq looks for its context's ZAP handler (RFC 27)."""

ZAP_VERSION = b"1.0"

DOMAIN = "zmeet"
"""The ZAP domain every secure lane of the broker sets."""


class ZapHandler:
    """Authenticate the broker's CURVE peers.

    ``context`` is the broker's context (green); ``admit(key) -> bool`` decides about a client
    public key (Z85 bytes): ``--open`` admits every key, ``--allow-keys`` only the listed ones.
    ``stats`` is the broker's dict; ``zap_admitted`` and ``zap_refused`` are counted in it.
    :meth:`bind` first, then :meth:`run` in a greenlet; :meth:`close` after it is killed."""

    def __init__(
        self,
        context: zmq_green.Context,
        admit: Callable[[bytes], bool],
        stats: dict[str, int],
    ) -> None:
        self._admit = admit
        self.stats = stats
        stats.setdefault("zap_admitted", 0)
        stats.setdefault("zap_refused", 0)
        self._sock = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)

    def bind(self) -> None:
        """Bind :data:`ZAP_ENDPOINT`. Raises ``zmq.ZMQError`` (EADDRINUSE) if another handler
        is bound in this context: the broker must not start then."""
        self._sock.bind(ZAP_ENDPOINT)

    def run(self) -> None:
        """Answer ZAP requests until killed."""
        sock = self._sock
        while True:
            request = sock.recv_multipart()
            sock.send_multipart(self.answer(request))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The reply frames to one ZAP request's frames (RFC 27): ``200`` with the client key
        in Z85 as user id, or ``400`` (malformed, not CURVE, key not admitted) with none."""
        if len(request) < 6:
            log.error("ZAP request of %d frames", len(request))
            request_id = request[1] if len(request) > 1 else b""
            return [ZAP_VERSION, request_id, b"400", b"malformed request", b"", b""]
        version, request_id, _domain, address, _routing_id, mechanism = request[:6]
        credentials = request[6:]
        if version != ZAP_VERSION:
            return [ZAP_VERSION, request_id, b"400", b"unknown ZAP version", b"", b""]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self.stats["zap_refused"] += 1
            return [ZAP_VERSION, request_id, b"400", b"CURVE only", b"", b""]
        key = z85.encode(credentials[0])
        if not self._admit(key):
            self.stats["zap_refused"] += 1
            log.info("refused key %s from %s", key.decode(), address.decode(errors="replace"))
            return [ZAP_VERSION, request_id, b"400", b"key not admitted", b"", b""]
        self.stats["zap_admitted"] += 1
        return [ZAP_VERSION, request_id, b"200", b"OK", key, b""]

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=0)


__all__ = ["DOMAIN", "ZAP_ENDPOINT", "ZapHandler"]
