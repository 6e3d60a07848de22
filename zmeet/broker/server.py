"""The zmeet broker core: gevent and ``zmq.green`` drive its services (chat, games, files)
and the store.

The core keeps the sessions, dispatches each request to the handler its service declared
(:mod:`zmeet.broker.service`), remembers replies per session, commits a batch's room events in
one transaction before it publishes them and sends the replies (group commit), and runs the
heartbeats. A handler never waits: it returns a reply, or a
:class:`~zmeet.broker.service.Deferred` that its service answers later from a greenlet of its
own; what greenlets other than the control loop send goes out at once, never held by a batch.

Sockets (docs/architecture.md, "Lanes"):

- entry: ROUTER, bound at ``config.address``, the one address people give clients; the only
  socket without CURVE. It answers DISCOVER with the broker's public key and the other lanes.
- control: ROUTER, bound at ``config.control``. Requests in, one reply each.
- events: PUB, bound at ``config.events``. Room events and heartbeats.
- media in, media out: ROUTER and XPUB, bound at ``config.media_in`` and ``config.media_out``,
  held by the media lane (:mod:`zmeet.broker.media`).

Trust (DESIGN.md, "Trust"; docs/protocol.md 5): unless ``config.insecure``, the four lanes but
entry are CurveZMQ servers with the broker's long-term key pair (``broker.key_secret`` in the
data directory, made on first start), and the ZAP handler (:mod:`zmeet.broker.zap`), bound
before any of them, names each connection by its client's public key. A session belongs to the
key that opened it: a message whose connection's key is not its session's is refused, a nick
belongs to the key that first registered it, and the media lane forwards only frames whose
connection's key owns the media token's session.

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
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
import zmq
import zmq.green as zmq_green

from .. import keys
from .. import protocol as p
from ..chat import Rooms
from ..chat.access import RoomAccess
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import Refused
from ..protocol.limits import (
    CURVE_OVERHEAD_BYTES,
    DEFAULT_HISTORY,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_LIVENESS,
    MAX_CONTROL_FRAME_BYTES,
    MAX_ENTRY_BYTES,
    MAX_HISTORY,
    MAX_LIVE_ROOMS,
    MAX_MEDIA_FRAME_BYTES,
    MAX_MEDIA_META_BYTES,
    MAX_NICK_LENGTH,
    MAX_REQUEST_BYTES,
    MAX_ROOM_LENGTH,
    MAX_ROOM_TOPIC_BYTES,
    MAX_ROOMS_PER_SESSION,
    MAX_SESSIONS,
    MAX_TEXT_BYTES,
    PROTOCOL_VERSION,
)
from ..zmqio import recv_rest, send_parts
from .chat import ChatService
from .media import MediaLane, native_forwarder
from .privacy import PrivacyService
from .ratelimit import DEFAULT_RATE_LIMITS, Rate, RateLimiter
from .service import TICK_INTERVAL_S, Deferred, Handler, Service, ServiceFactory
from .sessions import ClientSession
from .store import Store
from .zap import DOMAIN, ZapHandler

log = logging.getLogger("zmeet.broker")

DRAIN_BATCH = 256
"""Messages handled per wake-up before the loop yields to other greenlets."""

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"
"""Where ``zmeet broker`` listens by default: its entry lane (the other lanes follow it)."""

LANES = ("control", "events", "media_in", "media_out")
"""The lanes derived from the broker's address, in port order after it."""

KEY_FILE = "broker.key_secret"
"""The broker's key pair in its data directory (a ZeroMQ certificate, 0600)."""

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+|\*)$")


def derive_endpoints(address: str) -> dict[str, str]:
    """The five lane endpoints from the broker's address, which is the entry lane's: the next
    four TCP ports for control, events, media in and media out, or for ``ipc://PATH`` the
    paths ``PATH-control``, ``PATH-events``, ``PATH-media-in`` and ``PATH-media-out``.

    ``tcp://HOST:*`` gives every lane a port of the system's choosing. Raises ValueError for
    an endpoint that is neither.
    """
    match = _TCP.match(address)
    if match:
        host, port = match["host"], match["port"]
        if port == "*":
            return {"entry": address, **{lane: f"tcp://{host}:*" for lane in LANES}}
        base = int(port)
        if not 0 < base <= 65535 - len(LANES):
            raise ValueError(f"port {base} leaves no room for the next {len(LANES)} lanes")
        out = {"entry": address}
        for i, lane in enumerate(LANES, 1):
            out[lane] = f"tcp://{host}:{base + i}"
        return out
    if address.startswith(("ipc://", "inproc://")):
        return {
            "entry": address,
            **{lane: f"{address}-{lane.replace('_', '-')}" for lane in LANES},
        }
    raise ValueError(f"endpoint {address!r} is not tcp://HOST:PORT, ipc://PATH or inproc://NAME")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/zmeet``, or ``~/.local/share/zmeet`` (XDG Base Directory spec)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "zmeet"


@dataclass
class BrokerConfig:
    """What ``zmeet broker`` takes. Lanes left None take :func:`derive_endpoints`'s."""

    address: str = DEFAULT_ADDRESS
    """The entry lane's endpoint: the address clients are given (``--bind``)."""
    control: str | None = None
    events: str | None = None
    media_in: str | None = None
    media_out: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    history: int = DEFAULT_HISTORY
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    heartbeat_liveness: int = HEARTBEAT_LIVENESS
    services: list[ServiceFactory] = field(default_factory=list)
    """The broker's features beyond chat (which the core always runs): one factory each, called
    with the broker at :meth:`Broker.start` (``zmeet.broker.default_services()`` gives games
    and files with their settings). Two services that handle the same request class: start
    raises ValueError."""
    clock: Clock = SYSTEM_CLOCK
    """Every time read of the broker core and its chat and games services."""
    max_file_size: int = 4 * 1024**3
    """Largest file the files service takes, in octets (``--max-file-size``; WELCOME.limits)."""
    insecure: bool = False
    """No CURVE on any lane (``--insecure``): anyone on the network can read and impersonate.
    For loopback debugging and benchmarks only."""
    allow_keys: frozenset[bytes] | None = None
    """The client public keys (Z85) admitted (``--allow-keys FILE``, CurveZMQ's Ironhouse), or
    None to admit any key (``--open``, the default; nicks stay bound to keys)."""
    media_forwarder: str = "auto"
    """``native`` (the compiled loop, :mod:`zmeet.broker._mediafwd`), ``python``
    (:mod:`zmeet.broker.media`'s Python loop) or ``auto`` (native if it was built). Same
    protocol, same checks; native costs a third of the CPU per frame. :meth:`Broker.start`
    raises RuntimeError for ``native`` when the module was not built."""
    rate_limits: dict[str, Rate] | None = field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    """Token buckets per identity and request class (:mod:`zmeet.broker.ratelimit`; told in
    WELCOME.limits); a class left out is not limited, None turns them all off
    (``--no-rate-limits``, for benchmarks)."""

    def endpoints(self) -> dict[str, str]:
        derived = derive_endpoints(self.address)
        for lane in LANES:
            given = getattr(self, lane)
            if given:
                derived[lane] = given
        return derived


@dataclass
class _Batch:
    """What goes out together: room events stored in one SQLite transaction, then published,
    then the control-lane sends held meanwhile (docs/architecture.md, "Group commit").

    The control loop opens one per wake-up; anything else (a service's greenlet, a tick, the
    heartbeat expiry, a deferred reply from another greenlet) makes one of its own and
    commits it at once."""

    events: list[p.RoomEvent] = field(default_factory=list)
    out: list[tuple[bytes, list[bytes], bool, int]] = field(default_factory=list)
    """``(routing_id, frames, needs_store, req_id)``: a reply that ``needs_store`` becomes
    ERROR 500 if the events are not stored."""
    deferred: list[Deferred] = field(default_factory=list)
    """Deferred replies whose handler made events in this batch."""
    refused: int = 0
    """Requests refused in this batch by the flood limits or before any handler ran
    (MAX_REFUSED_PER_BATCH)."""


MAX_REFUSED_PER_BATCH = 1
"""Refusals (RATE_LIMITED, a message that does not decode, a request before HELLO) after which
a wake-up's batch ends early (committed, then the loop yields): a flood must not fill the
batch whose commit every other client's reply waits for (docs/architecture.md, "Group
commit"). Measured with benchmarks/flood.py: with 256 refusals a batch, another client's PING
p50 went from 0.26 ms quiet to 7.6 ms under a flood; ending the batch at the first refusal,
0.23 to 0.4 ms (committing there and draining on without yielding: 0.7 to 1.1 ms)."""

_NOBLOCK = int(zmq.NOBLOCK)


class Broker:
    """A zmeet broker. :meth:`start` binds and spawns; :meth:`stop` stops; endpoints are in
    :attr:`endpoints` after :meth:`start` (wildcard ports resolved).

    The core: sessions, the dispatch of requests to services by their handler tables (chat,
    :class:`~zmeet.broker.chat.ChatService`, always; then ``config.services``), the reply cache,
    group commit and heartbeats; it is the :class:`~zmeet.broker.service.BrokerCore` its
    services see.

    Raises ``zmq.ZMQError`` from :meth:`start` if an endpoint cannot be bound (address in use).
    """

    def __init__(self, config: BrokerConfig, context: zmq_green.Context | None = None) -> None:
        self.config = config
        self._own_context = context is None
        self.context = context or zmq_green.Context()
        self.epoch = secrets.token_hex(8)
        self.endpoints: dict[str, str] = {}
        self.sessions: dict[bytes, ClientSession] = {}
        self._sessions_of: dict[str, list[ClientSession]] = {}
        """Nick -> its sessions, oldest first (several: one key on several connections)."""
        self._by_key: dict[str, list[ClientSession]] = {}
        """Client key -> its sessions (every nick), for the per-key limits."""
        self._by_token: dict[bytes, ClientSession] = {}
        self.media: MediaLane | None = None
        self.rate_limiter: RateLimiter | None = None
        """The flood limits of the control lane (None: off), checked before any handler."""
        self._greenlets: list[gevent.Greenlet] = []
        self._stopping = False
        self._control_greenlet: gevent.Greenlet | None = None
        self.crashed = False
        self._batch: _Batch | None = None
        """The control loop's open batch; only the control greenlet adds to it (:meth:`_open`)."""
        self._stopped = gevent.event.Event()
        self.store: Store | None = None
        self.rooms: Rooms | None = None
        self.access: RoomAccess | None = None
        self.services: list[Service] = []
        self._handlers: dict[type, Handler] = {}
        self.stats = {"requests": 0, "errors": 0, "media_in": 0, "media_dropped": 0,
                      "wrong_key": 0}
        self.keypair: keys.KeyPair | None = None
        """The broker's long-term CURVE key pair, loaded (or made) by :meth:`start`; None when
        ``config.insecure``."""
        self._zap: ZapHandler | None = None

    @property
    def clock(self) -> Clock:
        """The clock of every time read of the core and its services (``config.clock``)."""
        return self.config.clock

    @property
    def address(self) -> str:
        """The entry lane's bound endpoint: what clients are given (after :meth:`start`)."""
        return self.endpoints["entry"]

    @property
    def public_key(self) -> str:
        """The broker's public key (Z85), empty when insecure; set by :meth:`start`."""
        return "" if self.keypair is None else self.keypair.public_text

    @property
    def secure(self) -> bool:
        return not self.config.insecure

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        # a bad media forwarder fails here, before anything is opened
        native = native_forwarder(cfg.media_forwarder)
        if cfg.rate_limits is not None:  # an unknown class raises ValueError here
            self.rate_limiter = RateLimiter(cfg.rate_limits, cfg.clock)
        self.stats["rate_limited"] = 0
        self.store = Store(Path(cfg.data_dir) / "zmeet.sqlite3")
        ids = itertools.count(1)
        # message ids: this run's epoch and a counter (unique across restarts, 7x cheaper
        # than uuid4 on the hot path)
        self.rooms = Rooms(cfg.clock.wall_s, self.store.load_room,
                           lambda: f"{self.epoch}-{next(ids):x}")
        self.access = RoomAccess(self.store.room_access, self.store.set_room_access)
        try:
            self.chat = ChatService(self)
            self.services = [self.chat, PrivacyService(self),
                             *(factory(self) for factory in cfg.services)]
            self._handlers = {}
            for service in self.services:
                for cls, handler in service.handlers().items():
                    if cls in self._handlers:
                        raise ValueError(f"two services handle {cls.__name__}")
                    self._handlers[cls] = handler
        except Exception:
            self.store.close()
            raise
        wanted = cfg.endpoints()
        ctx = self.context
        try:
            if not cfg.insecure:
                self.keypair, made = keys.load_or_create(Path(cfg.data_dir) / KEY_FILE)
                if made:
                    log.info("made the broker's key pair in %s: key %s (%s)",
                                Path(cfg.data_dir) / KEY_FILE, self.public_key,
                                self.keypair.fingerprint)
                # the ZAP handler first: libzmq lets every peer in when none answers
                allow = cfg.allow_keys
                self._zap = ZapHandler(ctx, (lambda key: True) if allow is None
                                       else allow.__contains__, self.stats)
                self._zap.bind()
        except Exception:
            if self._zap is not None:
                self._zap.close()
            self.store.close()
            raise
        self._entry = ctx.socket(zmq.ROUTER)
        self._entry.setsockopt(zmq.MAXMSGSIZE, MAX_ENTRY_BYTES)
        # no ROUTER_HANDOVER: a connection that names a routing id in use is refused, and a
        # client that reconnects does so on a new DEALER (a new routing id) and says `resume`
        self._control = ctx.socket(zmq.ROUTER)
        self._control.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_FRAME_BYTES + CURVE_OVERHEAD_BYTES)
        self._events = ctx.socket(zmq.PUB)
        self.media = MediaLane(ctx, native, by_token=self._by_token,
                               is_member=self.rooms.is_member, send_direct=self.send_direct,
                               clock=cfg.clock, stats=self.stats)
        if self.keypair is not None:
            for sock in (self._control, self._events, *self.media.sockets):
                keys.secure_server(sock, self.keypair, DOMAIN)
        sockets = {"entry": self._entry, "control": self._control, "events": self._events}
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
        self._control_raw: zmq.Socket = zmq.Socket.shadow(self._control.underlying)
        self._events_raw: zmq.Socket = zmq.Socket.shadow(self._events.underlying)
        self._control_greenlet = gevent.spawn(self._control_loop)
        self._greenlets = [
            *([gevent.spawn(self._zap.run)] if self._zap is not None else []),
            gevent.spawn(self._entry_loop),
            self._control_greenlet,
            *self.media.start(),
            gevent.spawn(self._heartbeat_loop),
            gevent.spawn(self._tick_loop),
        ]
        for greenlet in self._greenlets:
            greenlet.link_exception(self._on_loop_crash)
        log.info(
            "broker epoch %s: entry %s, control %s, events %s, media in %s, media out %s, "
            "data %s, %s",
            self.epoch, self.endpoints["entry"],
            *(self.endpoints[k] for k in LANES),
            self.store.path,
            f"key {self.public_key}" if self.keypair else "INSECURE (no CURVE)",
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
        for name in ("_entry", "_control", "_events"):
            sock = getattr(self, name, None)
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        if self.media is not None:
            self.media.close()
        if self._zap is not None:  # last: no secure socket may outlive it
            self._zap.close()

    # control lane -----------------------------------------------------------------------------

    def _entry_loop(self) -> None:
        """Answer DISCOVER on the entry lane with the broker's key and lanes; anything else
        gets ERROR. Nothing here opens a session or touches the broker's state."""
        sock = self._entry
        while True:
            frames = sock.recv_multipart()
            routing_id, body = frames[0], frames[1:]
            try:
                request = p.decode(body, max_body_bytes=MAX_ENTRY_BYTES)
                if not isinstance(request, p.Discover):
                    raise p.RemoteProtocolError(
                        f"the entry lane answers DISCOVER only, not {request.COMMAND.decode()}",
                        code=p.ErrorCode.UNKNOWN_COMMAND,
                        req_id=getattr(request, "req_id", 0))
            except p.RemoteProtocolError as exc:
                reply = p.encode(p.Error(req_id=exc.req_id, code=exc.code, reason=exc.reason))
            else:
                reply = p.encode(p.BrokerInfo(req_id=request.req_id, key=self.public_key,
                                              endpoints={k: self.endpoints[k] for k in LANES},
                                              version=PROTOCOL_VERSION))
            try:
                sock.send_multipart([routing_id, *reply], flags=_NOBLOCK)
            except zmq.Again:
                pass  # a peer that does not read its replies gets none

    def _control_loop(self) -> None:
        green, raw = self._control, self._control_raw
        secure = self.keypair is not None
        while True:
            head = green.recv(copy=False)
            first = _recv_control_rest(raw, head, secure)
            self._batch = batch = _Batch()
            try:
                self._on_control(*first)
                for _ in range(DRAIN_BATCH):
                    if (self._batch or batch).refused >= MAX_REFUSED_PER_BATCH:
                        break  # a flood: commit, answer the others now, and yield
                    try:
                        head = raw.recv(_NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_control(*_recv_control_rest(raw, head, secure))
            finally:
                batch = self._batch or batch  # a commit() meanwhile started a new one
                self._batch = None
                self._commit(batch)
            gevent.sleep(0)

    def _open(self) -> tuple[_Batch, bool]:
        """The batch a send or an event of the calling greenlet joins, and whether it must be
        committed now: the control loop's open batch for the control greenlet, a new one of
        its own (committed at once) for any other greenlet."""
        batch = self._batch
        if batch is not None and gevent.getcurrent() is self._control_greenlet:
            return batch, False
        return _Batch(), True

    def _commit(self, batch: _Batch) -> bool:
        """Group commit: store ``batch``'s events in one transaction, then publish them, then
        send its replies (docs/architecture.md, "Group commit"). Whether the events were stored
        (True when there were none); if not, they are not published, the replies that needed
        them become ERROR 500 and the pending deferred replies will."""
        stored = True
        if batch.events:
            assert self.store is not None
            try:
                self.store.append(batch.events)
            except Exception:
                log.exception("could not store %d events: not published", len(batch.events))
                stored = False
                for deferred in batch.deferred:
                    deferred.store_failed = True
            else:
                for event in batch.events:
                    send_parts(self._events_raw, p.encode_published(event))
        if stored and self.rooms is not None:  # every event is stored: empty rooms can go
            self.rooms.free_idle()
        for routing_id, frames, needs_store, req_id in batch.out:
            if needs_store and not stored:
                frames = p.encode(p.Error(req_id=req_id, code=p.ErrorCode.INTERNAL_ERROR,
                                          reason="the broker could not store this"))
                session = self.sessions.get(routing_id)
                if session is not None:  # a retry must not get the reply of what failed
                    session.replies.pop(req_id, None)
            # a ROUTER drops what it cannot route (peer gone, queue full): never raises here
            send_parts(self._control_raw, [routing_id, *frames])
        if batch.out and gevent.getcurrent() is not self._control_greenlet:
            # A send on the raw socket can consume the edge of the ZMQ_FD that the control
            # greenlet waits on; it would then sleep with requests queued until zmq.green's
            # fallback poll. Reading ZMQ_EVENTS through the green socket's get() re-checks
            # the state and wakes it, as zmq.green does after its own sends.
            self._control.get(zmq.EVENTS)
        return stored

    def commit(self) -> None:
        """Store and send what the control loop's batch holds now, and go on in a new one:
        a handler that reads the store calls it first, so that what it reads includes the
        batch's events. Outside the control greenlet there is nothing to commit."""
        batch = self._batch
        if batch is not None and gevent.getcurrent() is self._control_greenlet:
            self._batch = _Batch()
            self._commit(batch)

    def _on_control(self, frames: list[bytes], key: str, head: zmq.Frame | None = None) -> None:
        """One control message, ``[routing_id, header, command, body(, payload)]``, from a
        connection whose CURVE client key is ``key`` (Z85; empty when insecure); ``head`` is
        its first frame as received (its metadata names the peer's address)."""
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
            if self._batch is not None:
                self._batch.refused += 1
            log.debug("bad message from %s: %s", routing_id.hex(), exc.reason)
            self._send(routing_id, p.encode(p.Error(req_id=exc.req_id, code=exc.code,
                                                    reason=exc.reason)))
            return
        session = self.sessions.get(routing_id)
        if session is not None and session.key != key:
            # another key's connection took a routing id a session had: it gets nothing of
            # that session, not even its cached replies (docs/protocol.md 5.2)
            self.stats["wrong_key"] += 1
            self.stats["errors"] += 1
            if self._batch is not None:
                self._batch.refused += 1
            log.warning("refused %s from another key on %s's routing id",
                        type(request).__name__, session.nick)
            self._send(routing_id, p.encode(p.Error(
                req_id=request.req_id, code=p.ErrorCode.NO_SESSION,
                reason="this connection holds no session: send HELLO first")))
            return
        if session is not None:
            session.last_seen = self.clock.monotonic_s()
            cached = session.replies.get(request.req_id)
            if cached is not None and not isinstance(request, p.Ping):
                if not isinstance(cached, Deferred):  # pending: nothing more to send yet
                    self._send(routing_id, cached)
                return
        if self.rate_limiter is not None and self._rate_limited(routing_id, session, request,
                                                                key, head):
            return
        batch = self._batch
        events_before = len(batch.events) if batch is not None else 0
        try:
            reply = self._dispatch(routing_id, session, request, key)
        except Refused as exc:
            self.stats["errors"] += 1
            reply = p.Error(req_id=request.req_id, code=exc.code, reason=exc.reason)
        except Exception:
            log.exception("error handling %s", type(request).__name__)
            reply = p.Error(
                req_id=request.req_id, code=p.ErrorCode.INTERNAL_ERROR, reason="internal error"
            )
        now = self._batch
        # a commit() inside the handler went on in a new batch: what is in it is the handler's
        made_events = now is not None and len(now.events) > (
            events_before if now is batch else 0)
        if isinstance(reply, Deferred):  # in the reply cache already (defer); answered later
            if made_events and now is not None:
                now.deferred.append(reply)
            return
        frames_out = p.encode(reply)
        self._send(routing_id, frames_out, needs_store=made_events, req_id=reply.req_id)
        session = self.sessions.get(routing_id)
        if session is not None and not isinstance(request, p.Ping):
            session.remember(request.req_id, frames_out)

    def rate_identity(self, routing_id: bytes, session: ClientSession | None,
                      request: p.Request, key: str = "", head: zmq.Frame | None = None
                      ) -> Hashable:
        """Whose bucket ``request`` takes from: the person, the session's CURVE key (all its
        nicks and connections share it), or on an insecure broker its nick; for HELLO the
        peer's address (``Peer-Address``, the IP without the port: new keys are free to make,
        addresses are not), else the routing id."""
        if session is None or isinstance(request, p.Hello):
            address = _peer_address(head) if head is not None else ""
            return ("address", address) if address else ("connection", routing_id)
        return ("key", session.key) if session.key else ("nick", session.nick)

    def _rate_limited(self, routing_id: bytes, session: ClientSession | None,
                      request: p.Request, key: str = "", head: zmq.Frame | None = None
                      ) -> bool:
        """Count ``request`` against its bucket; if it is over, answer ERROR RATE_LIMITED with
        ``retry_after_ms`` (not remembered in the reply cache: nothing was applied) and return
        True. Requests before HELLO are not counted (they get NO_SESSION)."""
        limiter = self.rate_limiter
        assert limiter is not None
        if session is None and not isinstance(request, p.Hello):
            return False
        retry_after_ms = limiter.check(
            type(request), self.rate_identity(routing_id, session, request, key, head))
        if not retry_after_ms:
            return False
        self.stats["rate_limited"] += 1
        if self._batch is not None:
            self._batch.refused += 1
        self._send(routing_id, p.encode(p.Error(
            req_id=request.req_id, code=p.ErrorCode.RATE_LIMITED,
            reason=limiter.reason(type(request)), retry_after_ms=retry_after_ms)))
        return True

    def _dispatch(
        self, routing_id: bytes, session: ClientSession | None, req: p.Request, key: str
    ) -> p.Reply | Deferred:
        if isinstance(req, p.Hello):
            return self.chat.hello(routing_id, session, req, key)
        if session is None:
            if self._batch is not None:
                self._batch.refused += 1
            raise Refused(p.ErrorCode.NO_SESSION, "no session: send HELLO first")
        handler = self._handlers.get(type(req))
        if handler is None:
            raise Refused(p.ErrorCode.UNKNOWN_COMMAND, f"{req.COMMAND.decode()} is not handled")
        return handler(session, req)

    def _send(self, routing_id: bytes, frames: list[bytes], needs_store: bool = False,
              req_id: int = 0) -> None:
        """Send ``frames`` to ``routing_id`` on the control lane, after the events of the batch
        it joins (:meth:`_open`) are stored and published."""
        batch, now = self._open()
        batch.out.append((routing_id, frames, needs_store, req_id))
        if now:
            self._commit(batch)

    def defer(self, session: ClientSession, request: p.Request) -> Deferred:
        """A pending reply to ``request`` of ``session``, for its handler to return when the
        answer comes later: :meth:`Deferred.reply` or :meth:`Deferred.refuse`, from any
        greenlet (zmeet.broker.service).

        It takes ``request.req_id``'s place in the session's reply cache at once: a retry while
        it is pending gets nothing. A handler that defers must return the Deferred (a reply it
        returns or an error it raises instead wins, and the Deferred's reply is dropped).
        """
        deferred = Deferred(session, request, self._send_deferred)
        session.remember(request.req_id, deferred)
        return deferred

    def _send_deferred(self, deferred: Deferred, reply: p.Reply) -> None:
        """Send a deferred reply on the path of any reply: into the reply cache, after the
        events made before it are stored and published (in the control loop, after the batch's
        commit; elsewhere at once); dropped if its session has ended or the broker stopped."""
        session = deferred.session
        routing_id = session.routing_id
        if self._stopping or self.sessions.get(routing_id) is not session:
            log.debug("dropped the deferred reply to %s: its session ended", session.nick)
            return
        cached = session.replies.get(deferred.req_id)
        if cached is not None and cached is not deferred:
            return  # the handler answered otherwise
        if deferred.store_failed:  # what its handler posted was not stored
            session.replies.pop(deferred.req_id, None)
            self._send(routing_id, p.encode(p.Error(
                req_id=deferred.req_id, code=p.ErrorCode.INTERNAL_ERROR,
                reason="the broker could not store this")))
            return
        try:
            frames = p.encode(reply)
        except p.LocalProtocolError:  # a bug, or stored data the protocol cannot carry
            log.exception("could not encode the deferred reply to %s", session.nick)
            frames = p.encode(p.Error(req_id=deferred.req_id, code=p.ErrorCode.INTERNAL_ERROR,
                                      reason="internal error"))
        batch, now = self._open()
        # inside the control loop's batch it goes out after the batch's events; it must not
        # claim success if the events its own handler made are among them and fail (another
        # request's events failing is no reason to refuse this one)
        needs_store = not now and deferred in batch.deferred
        batch.out.append((routing_id, frames, needs_store, deferred.req_id))
        session.remember(deferred.req_id, frames)
        if now:
            self._commit(batch)

    # sessions ---------------------------------------------------------------------------------

    def open_session(self, routing_id: bytes, nick: str, key: str = "") -> ClientSession:
        """A new session for ``nick`` (claimed in :attr:`rooms` already) at ``routing_id``,
        held by the client key ``key`` (Z85; empty when insecure), with a fresh media token."""
        session = ClientSession(routing_id, nick, b"m" + secrets.token_bytes(15),
                                self.clock.monotonic_s(), key=key)
        self.sessions[routing_id] = session
        self._sessions_of.setdefault(nick, []).append(session)
        if key:
            self._by_key.setdefault(key, []).append(session)
        self._by_token[session.media_token] = session
        for service in self.services:
            try:
                service.on_session_open(session)
            except Exception:
                log.exception("service %s failed on the start of %s", service.name, nick)
        return session

    def move_session(self, session: ClientSession, routing_id: bytes) -> None:
        """Move ``session`` to the connection ``routing_id`` (a HELLO that resumes it, from the
        same key): its nick, rooms, reply cache and media token go with it; services hear it
        (:meth:`~zmeet.broker.service.Service.on_session_moved`)."""
        assert self.rooms is not None
        old = session.routing_id
        del self.sessions[old]
        session.routing_id = routing_id
        self.sessions[routing_id] = session
        # a new media token too: the new connection's media DEALER must not meet the old one's
        self._by_token.pop(session.media_token, None)
        session.media_token = b"m" + secrets.token_bytes(15)
        self._by_token[session.media_token] = session
        if self.rooms.holder(session.nick) == old:  # insecure: a nick is held by a routing id
            self.rooms.move_nick(session.nick, routing_id)
        for service in self.services:
            try:
                service.on_session_moved(session, old)
            except Exception:
                log.exception("service %s failed on the move of %s", service.name, session.nick)
        log.info("%s resumed on a new connection", session.nick)

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
            "max_sessions": self.rooms.max_nicks if self.rooms is not None else MAX_SESSIONS,
            "max_live_rooms": self.rooms.max_rooms if self.rooms is not None else MAX_LIVE_ROOMS,
            **(self.rate_limiter.advertised() if self.rate_limiter is not None else {}),
        }

    def end_session(self, session: ClientSession, type_: str, reason: str) -> None:
        """End ``session``: every service hears it, and it is forgotten. Its nick leaves the
        rooms that no other session of it is in (events of ``type_``, ``leave`` or ``gone``,
        with ``reason``), and is released with its last session."""
        assert self.rooms is not None
        others = [s for s in self._sessions_of.get(session.nick, ()) if s is not session]
        if others:
            self._sessions_of[session.nick] = others
        else:
            self._sessions_of.pop(session.nick, None)
        same_key = [s for s in self._by_key.get(session.key, ()) if s is not session]
        if same_key:
            self._by_key[session.key] = same_key
        else:
            self._by_key.pop(session.key, None)
        for service in self.services:
            try:
                service.on_session_end(session, reason)
            except Exception:
                log.exception("service %s failed on the end of %s", service.name, session.nick)
        if others:
            still = set().union(*(s.rooms for s in others))
            events = [self.rooms.leave(room, session.nick, type_=type_, reason=reason)
                      for room in sorted(session.rooms - still)
                      if self.rooms.is_member(room, session.nick)]
        else:
            events = self.rooms.release_nick(session.nick, type_, reason)
        try:
            self.publish_events(events)
        except Refused:
            pass  # logged by the commit; the session ends all the same
        self.sessions.pop(session.routing_id, None)
        self._by_token.pop(session.media_token, None)
        log.info("%s %s (%s)", session.nick, "gone" if type_ == "gone" else "disconnected", reason)

    # for services ---------------------------------------------------------------------------

    def session_of(self, nick: str) -> ClientSession | None:
        """The newest session holding ``nick``, or None (nobody has it online)."""
        sessions = self._sessions_of.get(nick)
        return sessions[-1] if sessions else None

    def sessions_of_key(self, key: str) -> tuple[ClientSession, ...]:
        """Every session held by the client key ``key`` (all its nicks)."""
        return tuple(self._by_key.get(key, ()))

    def sessions_of(self, nick: str) -> tuple[ClientSession, ...]:
        """Every session holding ``nick``, oldest first: one person on several connections."""
        return tuple(self._sessions_of.get(nick, ()))

    def send_to_nick(self, nick: str, message: p.Message) -> int:
        """Send ``message`` (a Direct) to every session of ``nick``; returns how many."""
        sessions = self._sessions_of.get(nick, ())
        for session in sessions:
            self.send_direct(session, message)
        return len(sessions)

    def send_direct(self, session: ClientSession, message: p.Message) -> None:
        """Send ``session`` a message it did not ask for (a :class:`~zmeet.protocol.Direct`) on
        the control lane; inside the control loop's batch it goes out after the batch's commit,
        from any other greenlet at once."""
        self._send(session.routing_id, p.encode(message))

    def publish_events(self, events: Iterable[p.RoomEvent]) -> None:
        """Store room ``events`` (made by :attr:`rooms`: ``say``, ``post``, ...), then publish
        them: the Clone pattern, nothing is published that was not stored.

        Inside the control loop's batch they wait for the batch's one commit (and a reply that
        follows goes after them, or becomes ERROR 500 if they cannot be stored). From any other
        greenlet they are committed at once; raises :class:`~zmeet.errors.Refused`
        INTERNAL_ERROR (500) if they could not be stored (they are then not published)."""
        batch, now = self._open()
        batch.events.extend(events)
        if now and not self._commit(batch):
            raise Refused(p.ErrorCode.INTERNAL_ERROR, "the broker could not store this")

    def publish(self, message: p.Message) -> None:
        """Publish a registered published message that is not stored (HEARTBEAT, GAME-STATE),
        at once: PUB never waits, and past a subscriber's high-water mark it drops."""
        send_parts(self._events_raw, p.encode_published(message))

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(TICK_INTERVAL_S)
            now = self.clock.monotonic_s()
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
            self.publish(p.Heartbeat(epoch=self.epoch, ts_ms=self.clock.wall_ms(),
                                     interval_ms=self.config.heartbeat_interval_ms))
            now = self.clock.monotonic_s()
            for session in [s for s in self.sessions.values() if now - s.last_seen > expiry_s]:
                self.end_session(session, "gone", "heartbeats stopped")
            gevent.sleep(interval_s)

    # media lane (zmeet.broker.media) ----------------------------------------------------------

    @property
    def media_forwarder(self) -> str:
        """``native`` or ``python``: the media forwarding loop this started broker runs."""
        return "python" if self.media is None else self.media.forwarder

    def media_demand(self, room: str, nick: str) -> tuple[str, ...]:
        """The kinds of ``nick``'s media in ``room`` that at least one subscriber takes."""
        return () if self.media is None else self.media.media_demand(room, nick)


def user_id(frame: zmq.Frame) -> str:
    """The ZAP ``User-Id`` of the connection ``frame`` came from (zmeet's: the client's public
    key in Z85), or ``"?"`` if it has none, which no session's key equals (a secure lane whose
    ZAP handler did not answer: libzmq fails open, the broker does not)."""
    try:
        return frame.get("User-Id")  # type: ignore[return-value]
    except zmq.ZMQError:
        return "?"


def _peer_address(frame: zmq.Frame) -> str:
    """The IP address of the peer ``frame`` came from (libzmq's ``Peer-Address``), or empty
    (ipc, inproc, or none)."""
    try:
        return frame.get("Peer-Address")  # type: ignore[return-value]
    except zmq.ZMQError:
        return ""


def _recv_control_rest(sock: zmq.Socket, head: zmq.Frame, secure: bool
                       ) -> tuple[list, str, zmq.Frame]:
    """All of a control message whose first part, ``head`` (the routing id), was just received
    as a :class:`zmq.Frame`, and the connection's client key: ``([routing_id, header, command,
    body(, payload)], key)``, parts as bytes, a payload (a FILE-DATA chunk) as a memoryview of
    its :class:`zmq.Frame`, not copied; ``key`` the ZAP ``User-Id`` (Z85) when ``secure``,
    else empty."""
    key = user_id(head) if secure else ""
    parts = recv_rest(sock, head.bytes, 4)
    for i in range(4, len(parts)):
        parts[i] = parts[i].buffer
    return parts, key, head


__all__ = ["Broker", "BrokerConfig", "ClientSession", "default_data_dir", "derive_endpoints"]
