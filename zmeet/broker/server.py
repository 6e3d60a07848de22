"""The zmeet broker: gevent and ``zmq.green`` drive the chat domain and the store.

Sockets (docs/architecture.md, "Lanes"):

- control: ROUTER, bound at ``config.control``. Requests in, one reply each.
- events: PUB, bound at ``config.events``. Room events and heartbeats.
- media in, media out: ROUTER and XPUB, bound at ``config.media_in`` and ``config.media_out``,
  held by the media lane (:mod:`zmeet.broker.media`).

One greenlet owns each socket it waits on (DESIGN.md, "Rules of the gevent hub"): the control
greenlet waits on the control ROUTER, the media lane's greenlets on its sockets. PUB sockets are
never waited on: every send on them is ``NOBLOCK`` and a full queue drops, as PUB does. Hot
loops wait once on the green socket, then drain the raw socket it shadows with ``NOBLOCK``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import zmq
import zmq.green as zmq_green

from .. import protocol as p
from ..chat import ChatError, Rooms
from ..clock import SYSTEM_CLOCK
from ..protocol.limits import (
    DEFAULT_HISTORY,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_LIVENESS,
    MAX_CONTROL_FRAME_BYTES,
    MAX_HISTORY,
    MAX_MEDIA_FRAME_BYTES,
    MAX_MEDIA_META_BYTES,
    MAX_NICK_LENGTH,
    MAX_REQUEST_BYTES,
    MAX_ROOM_LENGTH,
    MAX_ROOM_TOPIC_BYTES,
    MAX_ROOMS_PER_SESSION,
    MAX_TEXT_BYTES,
    PROTOCOL_VERSION,
)
from ..zmqio import recv_rest, send_parts
from .media import MediaLane, native_forwarder
from .service import DEFAULT_SERVICES, TICK_INTERVAL_S, Service, ServiceFactory
from .store import Store

log = logging.getLogger("zmeet.broker")

DRAIN_BATCH = 256
"""Messages handled per wake-up before the loop yields to other greenlets."""

REPLY_CACHE_SIZE = 64
"""Replies remembered per session, so a retried ``req_id`` gets its first reply."""

DEFAULT_CONTROL = "tcp://127.0.0.1:5555"

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+|\*)$")


def derive_endpoints(control: str) -> dict[str, str]:
    """The four lane endpoints from the control endpoint: the next TCP ports, or for
    ``ipc://PATH`` the paths ``PATH-events``, ``PATH-media-in`` and ``PATH-media-out``.

    ``tcp://HOST:*`` gives every lane a port of the system's choosing. Raises ValueError for
    an endpoint that is neither.
    """
    match = _TCP.match(control)
    lanes = ("events", "media_in", "media_out")
    if match:
        host, port = match["host"], match["port"]
        if port == "*":
            return {"control": control, **{lane: f"tcp://{host}:*" for lane in lanes}}
        base = int(port)
        if not 0 < base <= 65535 - 3:
            raise ValueError(f"port {base} leaves no room for the next three lanes")
        out = {"control": control}
        for i, lane in enumerate(lanes, 1):
            out[lane] = f"tcp://{host}:{base + i}"
        return out
    if control.startswith(("ipc://", "inproc://")):
        return {
            "control": control,
            **{lane: f"{control}-{lane.replace('_', '-')}" for lane in lanes},
        }
    raise ValueError(f"endpoint {control!r} is not tcp://HOST:PORT, ipc://PATH or inproc://NAME")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/zmeet``, or ``~/.local/share/zmeet`` (XDG Base Directory spec)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "zmeet"


@dataclass
class BrokerConfig:
    """What ``zmeet broker`` takes. Lanes left None take :func:`derive_endpoints`'s."""

    control: str = DEFAULT_CONTROL
    events: str | None = None
    media_in: str | None = None
    media_out: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    history: int = DEFAULT_HISTORY
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    heartbeat_liveness: int = HEARTBEAT_LIVENESS
    services: list[ServiceFactory] | None = None
    """Service factories; None: DEFAULT_SERVICES."""
    max_file_size: int = 4 * 1024**3
    """Largest file the files service takes, in octets (``--max-file-size``; WELCOME.limits)."""
    media_forwarder: str = "auto"
    """``native`` (the compiled loop, :mod:`zmeet.broker._mediafwd`), ``python``
    (:mod:`zmeet.broker.media`'s Python loop) or ``auto`` (native if it was built). Same
    protocol, same checks; native costs a third of the CPU per frame. :meth:`Broker.start`
    raises RuntimeError for ``native`` when the module was not built."""

    def endpoints(self) -> dict[str, str]:
        derived = derive_endpoints(self.control)
        for lane in ("events", "media_in", "media_out"):
            given = getattr(self, lane)
            if given:
                derived[lane] = given
        return derived


@dataclass
class ClientSession:
    """What the broker knows of one connected client (keyed by control routing id)."""

    routing_id: bytes
    nick: str
    media_token: bytes
    last_seen: float
    replies: OrderedDict[int, list[bytes]] = field(default_factory=OrderedDict)


_NOBLOCK = int(zmq.NOBLOCK)


class Broker:
    """A zmeet broker. :meth:`start` binds and spawns; :meth:`stop` stops; endpoints are in
    :attr:`endpoints` after :meth:`start` (wildcard ports resolved).

    Raises ``zmq.ZMQError`` from :meth:`start` if an endpoint cannot be bound (address in use).
    """

    def __init__(self, config: BrokerConfig, context: zmq_green.Context | None = None) -> None:
        self.config = config
        self._own_context = context is None
        self.context = context or zmq_green.Context()
        self.epoch = secrets.token_hex(8)
        self.endpoints: dict[str, str] = {}
        self.sessions: dict[bytes, ClientSession] = {}
        self._by_token: dict[bytes, ClientSession] = {}
        self.media: MediaLane | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._stopping = False
        self._control_greenlet: gevent.Greenlet | None = None
        self.crashed = False
        self._batching = False
        self._pending_events: list[p.RoomEvent] = []
        self._pending_out: list[tuple[bytes, list[bytes], bool, int]] = []
        self._stopped = gevent.event.Event()
        self.store: Store | None = None
        self.rooms: Rooms | None = None
        self.stats = {"requests": 0, "errors": 0, "media_in": 0, "media_dropped": 0}

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        # a bad media forwarder fails here, before anything is opened
        native = native_forwarder(cfg.media_forwarder)
        self.store = Store(Path(cfg.data_dir) / "zmeet.sqlite3")
        ids = itertools.count(1)
        # message ids: this run's epoch and a counter (unique across restarts, 7x cheaper
        # than uuid4 on the hot path)
        self.rooms = Rooms(time.time, self.store.load_room, lambda: f"{self.epoch}-{next(ids):x}")
        factories = DEFAULT_SERVICES if cfg.services is None else cfg.services
        self.services: list[Service] = [factory(self) for factory in factories]
        self._handlers: dict[type, Any] = {}
        for service in self.services:
            self._handlers.update(service.handlers())
        wanted = cfg.endpoints()
        ctx = self.context
        self._control = ctx.socket(zmq.ROUTER)
        self._control.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._control.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_FRAME_BYTES)
        self._events = ctx.socket(zmq.PUB)
        self.media = MediaLane(ctx, native, by_token=self._by_token,
                               is_member=self.rooms.is_member, send_direct=self.send_direct,
                               clock=SYSTEM_CLOCK, stats=self.stats)
        sockets = {"control": self._control, "events": self._events}
        try:
            for lane, sock in sockets.items():
                sock.setsockopt(zmq.LINGER, 0)
                sock.bind(wanted[lane])
                self.endpoints[lane] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self.endpoints.update(self.media.bind(wanted["media_in"], wanted["media_out"]))
        except zmq.ZMQError:
            self._close_sockets()
            self.store.close()
            raise
        # raw sockets shadowing the green ones: NOBLOCK drains and sends, no hub round trip
        self._control_raw = zmq.Socket.shadow(self._control.underlying)
        self._events_raw = zmq.Socket.shadow(self._events.underlying)
        self._control_greenlet = gevent.spawn(self._control_loop)
        self._greenlets = [
            self._control_greenlet,
            *self.media.start(),
            gevent.spawn(self._heartbeat_loop),
            gevent.spawn(self._tick_loop),
        ]
        for greenlet in self._greenlets:
            greenlet.link_exception(self._on_loop_crash)
        log.info(
            "broker epoch %s: control %s, events %s, media in %s, media out %s, data %s",
            self.epoch,
            *(self.endpoints[k] for k in ("control", "events", "media_in", "media_out")),
            self.store.path,
        )

    def stop(self) -> None:
        """Stop serving: kill the loops, close the sockets and the store. Idempotent; a second
        call (from another greenlet) waits until the first has finished."""
        if self._stopping:
            self._stopped.wait()
            return
        self._stopping = True
        try:
            gevent.killall(self._greenlets, block=True, timeout=2)
            for service in getattr(self, "services", ()):
                try:
                    service.close()
                except Exception:
                    log.exception("closing service %s", service.name)
            self._close_sockets()
            if self.store is not None:
                self.store.close()
            if self._own_context:
                self.context.term()
            log.info("broker stopped")
        finally:
            self._stopped.set()

    def _on_loop_crash(self, greenlet: gevent.Greenlet) -> None:
        """A loop died of a bug: stop the whole broker loudly rather than serve half a lane."""
        log.critical("broker loop crashed: %r; stopping", greenlet.exception)
        self.crashed = True
        gevent.spawn(self.stop)

    def serve_forever(self) -> None:
        """Start if needed and block the calling greenlet until :meth:`stop`."""
        if not self.endpoints:
            self.start()
        self._stopped.wait()

    def _close_sockets(self) -> None:
        for name in ("_control", "_events"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        if self.media is not None:
            self.media.close()

    # control lane -----------------------------------------------------------------------------

    def _control_loop(self) -> None:
        green, raw = self._control, self._control_raw
        while True:
            first = _recv_control_rest(raw, green.recv())
            self._batching = True
            try:
                self._on_control(first)
                for _ in range(DRAIN_BATCH):
                    try:
                        head = raw.recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_control(_recv_control_rest(raw, head))
            finally:
                self._batching = False
                self._flush()
            gevent.sleep(0)

    def _flush(self) -> None:
        """Group commit: store the batch's events in one transaction, then publish them, then
        send the replies held back meanwhile (docs/architecture.md, "Group commit")."""
        events, self._pending_events = self._pending_events, []
        out, self._pending_out = self._pending_out, []
        stored = True
        if events:
            assert self.store is not None
            try:
                self.store.append(events)
            except Exception:
                log.exception("could not store %d events: not published", len(events))
                stored = False
            else:
                for event in events:
                    send_parts(self._events_raw, p.encode_published(event))
        for routing_id, frames, needs_store, req_id in out:
            if needs_store and not stored:
                frames = p.encode(p.Error(req_id=req_id, code=p.ErrorCode.INTERNAL_ERROR,
                                          reason="the broker could not store this"))
                session = self.sessions.get(routing_id)
                if session is not None:  # a retry must not get the reply of what failed
                    session.replies.pop(req_id, None)
            # a ROUTER drops what it cannot route (peer gone, queue full): never raises here
            send_parts(self._control_raw, [routing_id, *frames])
        if out and gevent.getcurrent() is not self._control_greenlet:
            # A send on the raw socket can consume the edge of the ZMQ_FD that the control
            # greenlet waits on; it would then sleep with requests queued until zmq.green's
            # fallback poll. Reading ZMQ_EVENTS through the green socket's get() re-checks
            # the state and wakes it, as zmq.green does after its own sends.
            self._control.get(zmq.EVENTS)

    def _on_control(self, frames: list[bytes]) -> None:
        routing_id, body = frames[0], frames[1:]
        self.stats["requests"] += 1
        try:
            request = p.decode(body, max_body_bytes=MAX_REQUEST_BYTES)
            if not isinstance(request, p.Request):
                raise p.RemoteProtocolError(
                    f"{request.COMMAND.decode()} is not a request",
                    code=p.ErrorCode.BAD_REQUEST,
                    req_id=getattr(request, "req_id", 0),
                )
        except p.RemoteProtocolError as exc:
            self.stats["errors"] += 1
            log.debug("bad message from %s: %s", routing_id.hex(), exc.reason)
            self._reply(routing_id, p.Error(req_id=exc.req_id, code=exc.code, reason=exc.reason))
            return
        session = self.sessions.get(routing_id)
        if session is not None:
            session.last_seen = time.monotonic()
            cached = session.replies.get(request.req_id)
            if cached is not None and not isinstance(request, p.Ping):
                self._pending_out.append((routing_id, cached, False, request.req_id))
                return
        events_before = len(self._pending_events)
        try:
            reply = self._dispatch(routing_id, session, request)
        except ChatError as exc:
            self.stats["errors"] += 1
            reply = p.Error(req_id=request.req_id, code=int(exc.code), reason=exc.reason)
        except Exception:
            log.exception("error handling %s", type(request).__name__)
            reply = p.Error(
                req_id=request.req_id, code=p.ErrorCode.INTERNAL_ERROR, reason="internal error"
            )
        made_events = len(self._pending_events) > events_before
        frames_out = self._reply(routing_id, reply, needs_store=made_events)
        session = self.sessions.get(routing_id)
        if session is not None and not isinstance(request, p.Ping):
            session.replies[request.req_id] = frames_out
            if len(session.replies) > REPLY_CACHE_SIZE:
                session.replies.popitem(last=False)

    def _reply(self, routing_id: bytes, reply: p.Reply, needs_store: bool = False) -> list[bytes]:
        frames = p.encode(reply)
        self._pending_out.append((routing_id, frames, needs_store, reply.req_id))
        if not self._batching:
            self._flush()
        return frames

    def _dispatch(
        self, routing_id: bytes, session: ClientSession | None, req: p.Request
    ) -> p.Reply:
        if isinstance(req, p.Hello):
            return self._hello(routing_id, session, req)
        if session is None:
            raise ChatError(p.ErrorCode.NO_SESSION, "no session: send HELLO first")
        rooms = self.rooms
        assert rooms is not None and self.store is not None
        nick = session.nick
        handler = self._handlers.get(type(req))
        if handler is not None:
            return handler(session, req)
        if isinstance(req, p.Ping):
            return p.Pong(req_id=req.req_id, ts_ms=int(time.time() * 1000))
        if isinstance(req, p.Say):
            event = rooms.say(req.room, nick, req.text)
            self._publish_events([event])
            log.debug("chat %s#%d from %s", req.room, event.seq, nick)
            return p.Posted(req_id=req.req_id, room=req.room, seq=event.seq, id=event.id,
                            ts_ms=event.ts_ms)
        if isinstance(req, p.Join | p.History | p.Info):
            self._flush()  # what the store returns must include this batch's events
        if isinstance(req, p.Join):
            count = self.config.history if req.history < 0 else req.history
            if count > MAX_HISTORY:
                raise ChatError(p.ErrorCode.TOO_MANY, f"history is limited to {MAX_HISTORY}")
            event = rooms.join(req.room, nick)
            if event is not None:
                self._publish_events([event])
                log.info("%s joined %s", nick, req.room)
            room = rooms.room(req.room)
            return p.Joined(
                req_id=req.req_id,
                room=room.name,
                topic=room.topic,
                members=tuple(room.members),
                last_seq=room.last_seq,
                history=tuple(self.store.recent_chat(room.name, count)),
            )
        if isinstance(req, p.Leave):
            self._publish_events([rooms.leave(req.room, nick)])
            log.info("%s left %s", nick, req.room)
            return p.Ok(req_id=req.req_id)
        if isinstance(req, p.History):
            rooms.room(req.room)  # validates the name
            if not rooms.is_member(req.room, nick):
                raise ChatError(p.ErrorCode.NOT_MEMBER, f"join room {req.room!r} first")
            if req.after_seq < 0:
                raise ChatError(p.ErrorCode.BAD_REQUEST, "after_seq must be 0 or more")
            if not 0 <= req.limit <= MAX_HISTORY:
                raise ChatError(p.ErrorCode.TOO_MANY, f"limit must be 0 to {MAX_HISTORY}")
            return p.Events(req_id=req.req_id, room=req.room,
                            events=tuple(self.store.after(req.room, req.after_seq, req.limit)))
        if isinstance(req, p.Info):
            room = rooms.peek(req.room)
            return p.RoomInfo(req_id=req.req_id, room=room.name, topic=room.topic,
                              members=tuple(room.members),
                              message_count=self.store.chat_count(room.name),
                              last_seq=room.last_seq)
        if isinstance(req, p.SetTopic):
            self._publish_events([rooms.set_topic(req.room, nick, req.topic)])
            return p.Ok(req_id=req.req_id)
        if isinstance(req, p.Bye):
            self._end_session(session, "leave", "quit")
            return p.Ok(req_id=req.req_id)
        raise ChatError(p.ErrorCode.UNKNOWN_COMMAND, f"{req.COMMAND.decode()} is not handled")

    def _hello(self, routing_id: bytes, session: ClientSession | None, req: p.Hello) -> p.Reply:
        rooms = self.rooms
        assert rooms is not None
        if session is not None and session.nick != req.nick:
            holder = rooms.holder(req.nick)
            if holder is not None and holder != routing_id:  # keep the old session on refusal
                raise ChatError(p.ErrorCode.NICK_IN_USE, f"nick {req.nick!r} is in use")
            from ..chat.rooms import check_nick

            check_nick(req.nick)
            self._end_session(session, "leave", "new nick")
            session = None
        rooms.claim_nick(req.nick, routing_id)  # raises NICK_IN_USE, INVALID_NAME
        if session is None:
            session = ClientSession(
                routing_id, req.nick, b"m" + secrets.token_bytes(15), time.monotonic()
            )
            self.sessions[routing_id] = session
            self._by_token[session.media_token] = session
            log.info("%s connected (%s)", req.nick, req.client or "unknown client")
        return p.Welcome(
            req_id=req.req_id,
            nick=req.nick,
            epoch=self.epoch,
            endpoints=dict(self.endpoints),
            limits=self.limits(),
            media_token=session.media_token,
        )

    def limits(self) -> dict[str, int]:
        """The limits told to clients in WELCOME (docs/protocol.md, "Limits")."""
        return {
            "protocol_version": PROTOCOL_VERSION,
            "max_text_bytes": MAX_TEXT_BYTES,
            "max_room_topic_bytes": MAX_ROOM_TOPIC_BYTES,
            "max_request_bytes": MAX_REQUEST_BYTES,
            "max_media_frame_bytes": MAX_MEDIA_FRAME_BYTES,
            "max_media_meta_bytes": MAX_MEDIA_META_BYTES,
            "max_control_frame_bytes": MAX_CONTROL_FRAME_BYTES,
            "max_nick_length": MAX_NICK_LENGTH,
            "max_room_length": MAX_ROOM_LENGTH,
            "max_history": MAX_HISTORY,
            "history_default": self.config.history,
            "max_rooms": MAX_ROOMS_PER_SESSION,
            "heartbeat_interval_ms": self.config.heartbeat_interval_ms,
            "heartbeat_liveness": self.config.heartbeat_liveness,
            "max_file_size": self.config.max_file_size,
        }

    def _end_session(self, session: ClientSession, type_: str, reason: str) -> None:
        assert self.rooms is not None
        for service in self.services:
            try:
                service.on_session_end(session, reason)
            except Exception:
                log.exception("service %s failed on the end of %s", service.name, session.nick)
        events = self.rooms.release_nick(session.nick, type_, reason)
        self._publish_events(events)
        self.sessions.pop(session.routing_id, None)
        self._by_token.pop(session.media_token, None)
        log.info("%s %s (%s)", session.nick, "gone" if type_ == "gone" else "disconnected", reason)

    def _publish_events(self, events: list[p.RoomEvent]) -> None:
        """Store, then publish (the Clone pattern: nothing is published that was not stored).

        Inside a batch of the control loop the events wait for the batch's one commit."""
        self._pending_events.extend(events)
        if not self._batching:
            self._flush()

    def _publish(self, frames: list[bytes]) -> None:
        send_parts(self._events_raw, frames)

    # for services ---------------------------------------------------------------------------

    def session_of(self, nick: str) -> ClientSession | None:
        """The session holding ``nick``, or None."""
        assert self.rooms is not None
        routing_id = self.rooms.holder(nick)
        return None if routing_id is None else self.sessions.get(routing_id)  # type: ignore[arg-type]

    def send_direct(self, session: ClientSession, message: p.Message) -> None:
        """Send ``session`` a message it did not ask for (a :class:`~zmeet.protocol.Direct`) on
        the control lane; inside a batch it goes out after the batch's commit."""
        self._pending_out.append((session.routing_id, p.encode(message), False, 0))
        if not self._batching:
            self._flush()

    def post_event(self, room: str, type_: str, nick: str, text: str = "") -> p.RoomEvent:
        """Make a room event of a feature's ``type_`` (``file``, ...) by ``nick`` in ``room``:
        sequenced, stored, then published like a chat line. Raises ChatError INVALID_NAME."""
        assert self.rooms is not None
        event = self.rooms.post(room, type_, nick, text)
        self._publish_events([event])
        return event

    def publish(self, message: p.Message) -> None:
        """Publish a registered published message (not stored; room events use the chat path)."""
        send_parts(self._events_raw, p.encode_published(message))

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(TICK_INTERVAL_S)
            now = time.monotonic()
            for service in self.services:
                try:
                    service.tick(now)
                except Exception:
                    log.exception("service %s failed in tick", service.name)

    # heartbeats -------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval_s = self.config.heartbeat_interval_ms / 1000
        expiry_s = interval_s * self.config.heartbeat_liveness
        while True:
            self._publish(p.encode_published(p.Heartbeat(
                epoch=self.epoch, ts_ms=int(time.time() * 1000),
                interval_ms=self.config.heartbeat_interval_ms)))
            now = time.monotonic()
            for session in [s for s in self.sessions.values() if now - s.last_seen > expiry_s]:
                self._end_session(session, "gone", "heartbeats stopped")
            gevent.sleep(interval_s)

    # media lane (zmeet.broker.media) ----------------------------------------------------------

    @property
    def media_forwarder(self) -> str:
        """``native`` or ``python``: the media forwarding loop this started broker runs."""
        return "python" if self.media is None else self.media.forwarder

    def media_demand(self, room: str, nick: str) -> tuple[str, ...]:
        """The kinds of ``nick``'s media in ``room`` that at least one subscriber takes."""
        return () if self.media is None else self.media.media_demand(room, nick)


def _recv_control_rest(sock: zmq.Socket, routing_id: bytes) -> list:
    """All of a control message whose first part, ``routing_id``, was just received:
    ``[routing_id, header, command, body(, payload)]`` as bytes, a payload (a FILE-DATA chunk)
    as a memoryview of its :class:`zmq.Frame`, not copied."""
    parts = recv_rest(sock, routing_id, 4)
    for i in range(4, len(parts)):
        parts[i] = parts[i].buffer
    return parts


__all__ = ["Broker", "BrokerConfig", "default_data_dir", "derive_endpoints"]
