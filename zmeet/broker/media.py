"""The broker's media lane: the media sockets, the forwarding rule, its two loops, media demand.

Sockets (docs/architecture.md, "Lanes"; docs/protocol.md, 3.9):

- media in: ROUTER. Clients' media DEALERs connect with their ``media_token`` as routing id,
  so the lane knows the sender of every frame.
- media out: XPUB. Frames under ``media/<room>/<sender>/<kind>``; the subscriptions it reports
  are the media demand (3.9.5).

The forwarding rule, which frames pass and under which topic, is written once: the frame-shape
checks of :func:`well_formed` (five parts, header, command, meta and payload sizes; the compiled
loop does the same checks in C on the parts' sizes and octets, with the same constants), then
:meth:`MediaLane.route` for everything that needs the broker's state (the token's session, the
meta's ``room``, ``kind`` and ``from``, membership, the topic, the first frame in a room). Both
loops call that one ``route``: :meth:`MediaLane._media_loop` in Python over a green socket, and
:class:`zmeet.broker._mediafwd.MediaForwarder`, which receives and sends the parts with libzmq's
own calls and hands ``route`` only the token and the meta (docs/architecture.md, "Media
forwarding"; benchmarks/NOTES.md for why it exists).

One greenlet owns each socket it waits on (DESIGN.md, "Rules of the gevent hub"): the media
greenlet waits on media in, the demand greenlet on media out. Sends on media out are ``NOBLOCK``
on the raw socket and a full queue drops, as PUB does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gevent
import msgpack
import zmq
import zmq.green as zmq_green

from .. import protocol as p
from ..clock import SYSTEM_CLOCK, Clock
from ..protocol.limits import (
    CURVE_OVERHEAD_BYTES,
    HEADER,
    MAX_MEDIA_FRAME_BYTES,
    MAX_MEDIA_META_BYTES,
    MEDIA_SOCKET_BUFFER_BYTES,
)
from ..protocol.messages import MEDIA_KINDS, MediaFrame
from ..zmqio import recv_rest, send_parts

try:
    from ._mediafwd import PARTS as _NATIVE_PARTS
    from ._mediafwd import MediaForwarder
except ImportError:  # not built (no C compiler at install time), or pyzmq not as it expects
    MediaForwarder = None
    _NATIVE_PARTS = None

log = logging.getLogger("zmeet.broker")

FORWARDERS = ("auto", "native", "python")
"""The choices of ``BrokerConfig.media_forwarder``."""

DRAIN_BATCH = 256
"""Media messages forwarded per wake-up before the loop yields to other greenlets."""

FRAME_PARTS = 5
"""Parts of a media-in message: ``token, header, command, meta, payload`` (docs/protocol.md,
3.9)."""

if MediaForwarder is not None and _NATIVE_PARTS != FRAME_PARTS:  # pragma: no cover
    raise ImportError(f"zmeet.broker._mediafwd reads {_NATIVE_PARTS} parts, not {FRAME_PARTS}")

MEDIA_IN_HWM = 16
"""Media messages the broker's media ROUTER queues per connected sender; past it libzmq
stops reading that connection (back-pressure) and the sender's NOBLOCK sends drop. As small
as the out-queue: a larger one let a broker that was descheduled for a moment push a burst
into MEDIA_OUT_HWM, where PUB dropped the newest of it (measured: 60% of a saturated
stream delivered with 64, 75% with 16; a bare proxy with the same marks 85%). At 30 fps
video, its thumbnail and 50 audio frames a second, 16 messages are about 150 ms."""

MEDIA_OUT_HWM = 16
"""Media messages queued per subscriber before PUB drops (newest-frame-wins, not a backlog)."""

TOPIC_CACHE_SIZE = 4096
"""Out topics (``media/<room>/<nick>/<kind>``) remembered; past it the cache starts again."""

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_COMMAND = MediaFrame.COMMAND


class MediaSender(Protocol):
    """What the lane uses of a broker session: its ``nick`` (str), its ``media_token`` (bytes,
    the media DEALER's routing id), ``key_bytes`` (its client key in Z85 as octets, empty when
    insecure) and ``last_seen`` (float, monotonic seconds), which the lane sets for each frame
    it forwards."""

    nick: str
    media_token: bytes
    key_bytes: bytes
    last_seen: float


def _user_id(frame: zmq.Frame) -> bytes:
    """The ZAP ``User-Id`` of ``frame``'s connection as octets, empty if it has none."""
    try:
        return frame.get("User-Id").encode("ascii")  # type: ignore[union-attr]
    except zmq.ZMQError:
        return b""


def native_forwarder(choice: str) -> bool:
    """Whether ``choice`` (``BrokerConfig.media_forwarder``: ``auto``, ``native`` or
    ``python``) runs the compiled forwarder: ``native``, or ``auto`` when it was built.

    Raises ValueError for an unknown choice, RuntimeError for ``native`` when
    :mod:`zmeet.broker._mediafwd` was not built (or refused to load: its ImportError is logged
    at import). The caller should report either and not start."""
    if choice not in FORWARDERS:
        raise ValueError(f"media_forwarder {choice!r} is not auto, native or python")
    if choice == "native" and MediaForwarder is None:
        raise RuntimeError("media_forwarder 'native': zmeet.broker._mediafwd was not built "
                           "(reinstall zmeet with a C compiler)")
    return choice != "python" and MediaForwarder is not None


def well_formed(frames: list) -> bool:
    """Whether a media-in message has a FRAME's shape: ``[token, header, command, meta,
    payload]`` (bytes, the payload anything with a ``len``, such as a :class:`zmq.Frame`), the
    header :data:`~zmeet.protocol.limits.HEADER`, the command ``FRAME``, the meta at most
    ``MAX_MEDIA_META_BYTES`` and the payload at most ``MAX_MEDIA_FRAME_BYTES`` octets
    (docs/protocol.md, 3.9). ``_mediafwd`` makes the same checks in C with these constants."""
    return (
        len(frames) == FRAME_PARTS
        and frames[1] == HEADER
        and frames[2] == _COMMAND
        and len(frames[3]) <= MAX_MEDIA_META_BYTES
        and len(frames[4]) <= MAX_MEDIA_FRAME_BYTES
    )


class MediaLane:
    """The broker's media sockets and the greenlets that forward media and tell demand.

    ``context`` is the broker's green context. ``native`` (from :func:`native_forwarder`)
    picks the compiled forwarding loop. What the lane needs of the broker is passed in:
    ``by_token`` maps a media token (bytes) to its :class:`MediaSender` (read, never written),
    ``is_member(room, nick) -> bool`` is the rooms' membership test, ``send_direct(sender,
    message)`` sends a client a :class:`~zmeet.protocol.MediaDemand` on the control lane,
    ``clock`` gives the monotonic time of ``last_seen``; ``stats`` is the dict the lane counts
    ``media_in`` and ``media_dropped`` in (the broker's ``stats``).

    :meth:`bind`, then :meth:`start`; :meth:`close` after the greenlets are killed.
    """

    def __init__(
        self,
        context: zmq_green.Context,
        native: bool,
        *,
        by_token: Mapping[bytes, MediaSender],
        is_member: Callable[[str, str], bool],
        send_direct: Callable[[Any, p.Message], None],
        clock: Clock = SYSTEM_CLOCK,
        stats: dict[str, int] | None = None,
    ) -> None:
        self._by_token = by_token
        self._is_member = is_member
        self._send_direct = send_direct
        self._clock = clock
        self.stats = {} if stats is None else stats
        self.stats.setdefault("media_in", 0)
        self.stats.setdefault("media_dropped", 0)
        self._subscriptions: set[bytes] = set()
        """Topic prefixes someone subscribes to on the media-out XPUB."""
        self._told: dict[bytes, dict[str, tuple[str, ...]]] = {}
        """Per media token, per room: the kinds last told wanted (MEDIA-DEMAND)."""
        self._topics: dict[tuple[str, str, str], bytes] = {}
        self._native = native
        self._forwarder: Any = None
        # the compiled forwarder reads a plain socket and waits on its ZMQ_FD itself; the
        # Python loop waits on a green one
        self._in = zmq.Socket(context, zmq.ROUTER) if native else context.socket(zmq.ROUTER)
        # no ROUTER_HANDOVER: nobody can take over a sender's media connection by naming its
        # token; a session resumed on a new connection gets a new token
        self._in.setsockopt(zmq.MAXMSGSIZE, MAX_MEDIA_FRAME_BYTES + CURVE_OVERHEAD_BYTES)
        self._in.setsockopt(zmq.RCVHWM, MEDIA_IN_HWM)
        self._in.setsockopt(zmq.RCVBUF, MEDIA_SOCKET_BUFFER_BYTES)
        # XPUB: a PUB that also tells the broker which topics have subscribers (the first
        # subscription to a topic and the last unsubscription, disconnects included)
        self._out = context.socket(zmq.XPUB)
        self._out.setsockopt(zmq.SNDHWM, MEDIA_OUT_HWM)
        self._out.setsockopt(zmq.SNDBUF, MEDIA_SOCKET_BUFFER_BYTES)
        for sock in (self._in, self._out):
            sock.setsockopt(zmq.LINGER, 0)

    @property
    def sockets(self) -> tuple[zmq.Socket, zmq.Socket]:
        """The media-in ROUTER and the media-out XPUB (the broker makes them CURVE servers
        before :meth:`bind`)."""
        return self._in, self._out

    @property
    def forwarder(self) -> str:
        """``native`` or ``python``: the forwarding loop this lane runs."""
        return "native" if self._native else "python"

    # lifecycle --------------------------------------------------------------------------------

    def bind(self, media_in: str, media_out: str) -> dict[str, str]:
        """Bind the two sockets; returns ``{"media_in": ..., "media_out": ...}``, the endpoints
        bound (wildcard ports resolved). Raises ``zmq.ZMQError`` if one cannot be bound: then
        :meth:`close`."""
        bound = {}
        for lane, sock, endpoint in (("media_in", self._in, media_in),
                                     ("media_out", self._out, media_out)):
            sock.bind(endpoint)
            bound[lane] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return bound

    def start(self) -> list[gevent.Greenlet]:
        """Spawn the forwarding and the demand greenlets and return them (the broker links its
        crash handler to them and kills them before :meth:`close`)."""
        # raw sockets shadowing the green ones: NOBLOCK drains and sends, no hub round trip
        self._in_raw: zmq.Socket = zmq.Socket.shadow(self._in.underlying)
        self._out_raw: zmq.Socket = zmq.Socket.shadow(self._out.underlying)
        if self._native:
            assert MediaForwarder is not None
            self._forwarder = MediaForwarder(
                self._in, self._out, self.route, self.stats, HEADER, _COMMAND,
                MAX_MEDIA_META_BYTES, MAX_MEDIA_FRAME_BYTES)
        loop = self._native_media_loop if self._native else self._media_loop
        return [gevent.spawn(loop), gevent.spawn(self._media_demand_loop)]

    def close(self) -> None:
        """Close both sockets (``linger=0``). Idempotent."""
        for sock in (self._in, self._out):
            if not sock.closed:
                sock.close(linger=0)

    # the forwarding rule ----------------------------------------------------------------------

    def route(self, token: bytes, meta: bytes, user_id: bytes = b"") -> bytes | None:
        """The out topic of a well-formed frame (:func:`well_formed`) from ``token`` with the
        msgpack ``meta``, received on a connection whose ZAP ``User-Id`` is ``user_id`` (the
        client's key in Z85; empty on an insecure broker), or None to drop it
        (docs/protocol.md, 3.9).

        The token names the session; ``user_id`` must be that session's key: a token is never
        a credential (a frame on another key's connection is dropped and counted as
        ``media_wrong_key``).

        The lane reads only what routing needs, the meta's ``room``, ``kind`` and ``from``, and
        stamps the sender in the topic, ``media/<room>/<nick>/<kind>``; receivers take the
        sender from there and check the rest of the meta themselves. None for an unknown
        token, a meta that is not a map with a str ``room`` and a known ``kind``, a ``from``
        the sender filled in, or a room the sender is not in. For a frame that passes, the
        sender's ``last_seen`` is set, and for its first in a room it is told the demand
        (a MEDIA-DEMAND on the control lane). Never raises for any octets.
        """
        session = self._by_token.get(token)
        if session is None:
            return None
        if session.key_bytes != user_id:
            self.stats["media_wrong_key"] = self.stats.get("media_wrong_key", 0) + 1
            return None
        try:
            fields = msgpack.unpackb(meta)
            room, kind = fields["room"], fields["kind"]
            stamped = fields.get("from", "")
        except Exception:  # msgpack raises many types, and the meta may be any shape
            return None
        nick = session.nick
        if (
            kind not in MEDIA_KINDS
            or type(room) is not str
            or stamped != ""
            or not self._is_member(room, nick)
        ):
            return None
        session.last_seen = self._clock.monotonic_s()
        key = (room, nick, kind)
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) >= TOPIC_CACHE_SIZE:
                self._topics.clear()
            topic = self._topics[key] = p.media_topic(room, nick, kind)
        told = self._told.get(token)
        if told is None or room not in told:  # its first frame here: tell it what is wanted
            self._tell_demand(token, session, room)
        return topic

    # the two forwarding loops -----------------------------------------------------------------

    def _native_media_loop(self) -> None:
        """The media loop with the compiled forwarder. It drains the media-in socket without
        blocking; when it is empty this greenlet waits for libzmq's ZMQ_FD to be readable (an
        io watcher on the hub's loop) and then, the FD being edge-triggered, checks ZMQ_EVENTS
        before it forwards or waits again. Against waiting through a green socket (an
        AsyncResult, a timer, two callbacks, pyzmq's ``PollEvent`` enums) this saves some
        10 µs a wake-up, and frames often come one a wake-up (docs/architecture.md)."""
        fwd = self._forwarder
        forward, incoming, subscriptions_waiting = (
            fwd.forward, fwd.incoming, fwd.subscriptions_waiting)
        hub = gevent.get_hub()
        readable = hub.loop.io(self._in.get(zmq.FD), 1)  # 1: EV_READ
        try:
            while True:
                read = forward(DRAIN_BATCH)
                # the sends may have taken the XPUB's ZMQ_FD edge that the demand greenlet
                # waits on: if a subscription arrived meanwhile, wake it through the green socket
                if subscriptions_waiting():
                    self._out.get(zmq.EVENTS)
                if read == DRAIN_BATCH:
                    gevent.sleep(0)  # a full batch: let the other greenlets run first
                    continue
                while not incoming():  # empty (forward saw EAGAIN)
                    hub.wait(readable)
        finally:
            readable.close()

    def _media_loop(self) -> None:
        green, raw = self._in, self._in_raw
        while True:
            head = green.recv(copy=False)
            self._on_media(recv_rest(raw, head.bytes, 4), _user_id(head))
            # drain while ZMQ_EVENTS says a message waits (2 us), rather than until zmq.Again
            # (6 us: an exception object per wake-up, and most wake-ups bring one or two frames)
            for _ in range(DRAIN_BATCH):
                if not raw.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
                    break
                head = raw.recv(_NOBLOCK, copy=False)
                self._on_media(recv_rest(raw, head.bytes, 4), _user_id(head))
            else:
                gevent.sleep(0)  # a full batch: let the other greenlets run before the next
            # the raw sends may have taken the XPUB's ZMQ_FD edge that the demand greenlet
            # waits on (a subscription arrived meanwhile): re-check through the green socket
            self._out.get(zmq.EVENTS)

    def _on_media(self, frames: list, user_id: bytes = b"") -> None:
        """Forward one media-in message, ``[token, header, command, meta, payload]`` as
        :func:`zmeet.zmqio.recv_rest` gives it (bytes, the payload a :class:`zmq.Frame`):
        header, command and meta as the sender wrote them, the payload without copy, under
        :meth:`route`'s topic. The media lane has no replies (nothing is retransmitted): a
        frame that does not pass is dropped and counted."""
        stats = self.stats
        stats["media_in"] += 1
        topic = self.route(frames[0], frames[3], user_id) if well_formed(frames) else None
        if topic is None:
            stats["media_dropped"] += 1
            return
        # PUB never blocks: past a subscriber's SNDHWM it drops (counted by no one)
        send_parts(self._out_raw, [topic, HEADER, _COMMAND, frames[3], frames[4]])

    # media demand: which streams anyone receives (simulcast layer suspension) --------------

    def _media_demand_loop(self) -> None:
        """Read the media-out XPUB's subscription messages (``1`` or ``0`` and a topic prefix;
        libzmq passes a topic's first subscription and its last unsubscription only) and tell
        each sender whose demand changed (docs/protocol.md, 3.9.5)."""
        sock = self._out
        while True:
            message = sock.recv()
            if not message or message[0] not in (0, 1):
                continue
            prefix = message[1:]
            if message[0]:
                self._subscriptions.add(prefix)
            else:
                self._subscriptions.discard(prefix)
            self._demand_changed(prefix)

    def _demand_changed(self, prefix: bytes) -> None:
        """Tell every sender in the room(s) ``prefix`` can match, whose demand changed; forget
        the senders whose session has ended."""
        room = prefix[len(b"media/"):].split(b"/", 1)[0] if prefix.startswith(b"media/") else b""
        complete = prefix.startswith(b"media/") and b"/" in prefix[len(b"media/"):]
        for token, told in list(self._told.items()):
            session = self._by_token.get(token)
            if session is None:
                del self._told[token]
                continue
            for name in list(told):
                if not complete or name.encode() == room:
                    self._tell_demand(token, session, name)

    def media_demand(self, room: str, nick: str) -> tuple[str, ...]:
        """The kinds of ``nick``'s media in ``room`` that at least one subscriber takes, in
        the order of :data:`~zmeet.protocol.messages.MEDIA_KINDS`."""
        topics = [p.media_topic(room, nick, kind) for kind in MEDIA_KINDS]
        return tuple(kind for kind, topic in zip(MEDIA_KINDS, topics, strict=True)
                     if any(topic.startswith(prefix) for prefix in self._subscriptions))

    def _tell_demand(self, token: bytes, session: MediaSender, room: str) -> None:
        kinds = self.media_demand(room, session.nick)
        told = self._told.setdefault(token, {})
        if told.get(room) != kinds:
            told[room] = kinds
            self._send_direct(session, p.MediaDemand(room=room, kinds=kinds))


__all__ = [
    "DRAIN_BATCH",
    "FORWARDERS",
    "FRAME_PARTS",
    "MEDIA_IN_HWM",
    "MEDIA_OUT_HWM",
    "MediaLane",
    "MediaSender",
    "native_forwarder",
    "well_formed",
]
