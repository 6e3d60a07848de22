"""The client session: HELLO, requests and replies, ordered room events, heartbeats, reconnects.

Driven by gevent and ``zmq.green``. One greenlet owns each socket it waits on: the reply
reader owns the control DEALER, the event reader the events SUB. Requests are sent with
``NOBLOCK`` (a DEALER queues them; nothing waits on the socket to send) and wait for their reply
on a :class:`gevent.event.AsyncResult` under a :class:`gevent.Timeout`.

Room events reach :attr:`Session.events` in order, each once (docs/protocol.md, "Reliable
room events", after the Clone pattern of the ZeroMQ Guide, chapter 5): the SUB subscribes
before JOIN, events at or below JOINED's ``last_seq`` are dropped, and a gap in sequence
numbers is filled with HISTORY before later events are delivered. Those rules, and the
recovery after a lost broker, are the sans-IO machine :class:`zmeet.protocol.clone.CloneClient`;
``Session`` is its driver: it feeds the machine what the sockets bring and carries out the
effects it returns (deliver, HISTORY, notices, subscriptions, reconnect).
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable

import gevent
import gevent.event
import gevent.queue
import zmq
import zmq.green as zmq_green

from .. import keys
from .. import protocol as p
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import (
    BrokerKeyChanged,
    BrokerUnavailable,
    InsecureBroker,
    NickInUse,
    RateLimited,
    Refused,
)
from ..protocol import clone
from ..protocol import privacy as pp
from ..protocol.clone import LinkState, Notice
from ..protocol.limits import MAX_HISTORY
from ..zmqio import recv_rest, send_parts

log = logging.getLogger("zmeet.client")

DEFAULT_TIMEOUT_S = 5.0
"""How long a request waits for its reply before the broker is taken to be unavailable."""

RATE_LIMIT_RETRIES = 20
"""Times a request refused RATE_LIMITED is sent again (after its ``retry_after_ms``) before
:class:`~zmeet.errors.RateLimited` reaches the caller."""

RATE_LIMIT_WAIT_S = 60.0
"""Most seconds one request spends waiting out RATE_LIMITED refusals in all."""


def resolve_endpoint(advertised: str, control: str) -> str:
    """``advertised`` with a wildcard host (``0.0.0.0``, ``*``, ``[::]``) replaced by the host of
    ``control``, so that a broker bound to every interface still tells clients a usable address."""
    m = re.match(r"^tcp://(\[[^\]]*\]|[^:/]*):(\d+)$", advertised)
    c = re.match(r"^tcp://(\[[^\]]*\]|[^:/]*):", control)
    if m and c and m.group(1) in ("0.0.0.0", "*", "[::]", "::", ""):
        return f"tcp://{c.group(1)}:{m.group(2)}"
    return advertised


class Session:
    """A connection to one broker under one nick.

    ``broker`` is the broker's address, its entry lane: ``tcp://HOST:PORT``, ``ipc://PATH``,
    or ``zmeet://HOST:PORT/KEY``, which pins the broker's key; ``timeout_s`` bounds every
    request. Call :meth:`connect` first; it raises :class:`BrokerUnavailable` if the broker
    does not answer within ``timeout_s``, :class:`NickInUse` or :class:`Refused` if it
    refuses. Every other request raises the same on timeout or ERROR. ``clock`` gives the
    monotonic time of heartbeat liveness (:data:`zmeet.clock.SYSTEM_CLOCK` by default).

    Trust (docs/protocol.md 5): every lane but entry is CurveZMQ. ``identity`` is this
    person's key pair (default: made on first use at
    :func:`zmeet.keys.default_identity_path`); the broker names every connection by it and
    binds nicks to it. ``broker_key`` (Z85 or hex) pins the broker's key; without it the key
    the broker announces is checked against ``known_brokers`` (default
    ``config_dir()/known_brokers``): remembered on first contact (:attr:`first_contact` is then
    True), and a different one later raises :class:`~zmeet.errors.BrokerKeyChanged`. A broker
    run with ``--insecure`` is refused (:class:`~zmeet.errors.InsecureBroker`) unless
    ``insecure`` is True, and always when a key is pinned for it.
    """

    rate_limit_wait_s: float = RATE_LIMIT_WAIT_S
    """Most seconds one request waits out RATE_LIMITED refusals in all before
    :class:`~zmeet.errors.RateLimited` reaches the caller (0: it does at once)."""

    def __init__(
        self,
        broker: str,
        nick: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: str = "zmeet",
        context: zmq_green.Context | None = None,
        reconnect: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        identity: keys.KeyPair | None = None,
        broker_key: str | bytes | None = None,
        known_brokers: keys.KnownBrokers | None = None,
        insecure: bool = False,
    ) -> None:
        self.broker, url_key = keys.parse_address(broker)
        self.nick = nick
        given = keys.parse_key(broker_key) if broker_key else None
        if given and url_key and given != url_key:
            raise BrokerKeyChanged(f"--broker-key {keys.fingerprint(given)} is not the key in "
                                   f"{broker} ({keys.fingerprint(url_key)})")
        self.pinned_key: bytes | None = given or url_key
        """The broker key given by the caller (``broker_key`` or the zmeet URL), or None."""
        self.broker_key: bytes | None = None
        """The broker's public key (Z85) once connected; None for an insecure broker."""
        self.first_contact = False
        """Whether :meth:`connect` met this broker's key for the first time (and remembered
        it in :attr:`known_brokers`)."""
        self._identity = identity
        self.known_brokers = known_brokers
        self.insecure = insecure
        self.timeout_s = timeout_s
        self.client_name = client
        self.clock = clock
        self.context = context or zmq_green.Context.instance()
        self.events: gevent.queue.Queue = gevent.queue.Queue()
        """Ordered :class:`~zmeet.protocol.RoomEvent` and :class:`Notice` items."""
        self.welcome: p.Welcome | None = None
        self.welcome_listeners: list = []
        """Callables given each WELCOME, the first and those after a reconnect (the media lane
        takes its new ``media_token`` from them)."""
        self.endpoints: dict[str, str] = {}
        self.direct_handlers: dict[type, Callable[[p.Message], None]] = {
            pp.Kicked: self._on_kicked,  # type: ignore[dict-item]
        }
        """``{Direct subclass: handler}``: such a message goes to its handler (on the hub; it
        must not block) instead of :attr:`events` (the media publisher takes MEDIA-DEMAND)."""
        self.member_listeners: list = []
        """Callables given a room's name each time its member list changes (see
        :meth:`members`): the media lane subscribes to each member's streams from it."""
        self._clone = clone.CloneClient(reconnect=reconnect, max_history=MAX_HISTORY)
        self._ids = itertools.count(1)
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._dealer: zmq_green.Socket | None = None
        self._reply_greenlet: gevent.Greenlet | None = None
        self._previous_id = b""
        """The routing id of the control connection before the current one (HELLO resume)."""
        self._sub: zmq_green.Socket | None = None
        self._last_heartbeat_s = self.clock.monotonic_s()

    @property
    def reconnect(self) -> bool:
        """Whether a lost broker is recovered (HELLO again, rejoin, fill); else one notice."""
        return self._clone.reconnect

    @reconnect.setter
    def reconnect(self, value: bool) -> None:
        self._clone.reconnect = value

    @property
    def state(self) -> LinkState:
        """Where the link to the broker is: a :class:`zmeet.protocol.clone.LinkState`
        (``NEW``, ``UP``, ``RECOVERING``, ``LOST``, ``CLOSING``, ``CLOSED``)."""
        return self._clone.state

    # connection -------------------------------------------------------------------------------

    @property
    def identity(self) -> keys.KeyPair:
        """This person's key pair (loaded, or made, on first use)."""
        if self._identity is None:
            self._identity, _made = keys.load_or_create(keys.default_identity_path())
        return self._identity

    def secure(self, sock: zmq.Socket) -> zmq.Socket:
        """Make ``sock`` (before it connects to one of the broker's lanes) a CurveZMQ client of
        the broker, as :attr:`identity`; a no-op for an insecure broker. Returns ``sock``.
        The media lane's sockets come through here."""
        if self.broker_key is not None:
            keys.secure_client(sock, self.broker_key, self.identity)
        return sock

    def discover(self) -> p.BrokerInfo:
        """Ask the entry lane who the broker is, check its key (pinned, known or new) and take
        its lanes. Raises :class:`BrokerUnavailable` (no answer within ``timeout_s``),
        :class:`BrokerKeyChanged`, :class:`InsecureBroker`, :class:`Refused`."""
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.broker)
            send_parts(sock, p.encode(p.Discover(req_id=1)))
            if not sock.poll(int(self.timeout_s * 1000)):
                raise BrokerUnavailable(
                    f"no answer from the broker at {self.broker} within {self.timeout_s:g} s: "
                    "is `zmeet broker` running there?")
            try:
                info = p.decode(recv_rest(sock, sock.recv(), 3))
            except p.RemoteProtocolError as exc:
                raise BrokerUnavailable(f"{self.broker} is not a zmeet broker ({exc.reason})"
                                        ) from None
        finally:
            sock.close(linger=0)
        if isinstance(info, p.Error):
            raise Refused(info.code, info.reason)
        if not isinstance(info, p.BrokerInfo):
            raise BrokerUnavailable(f"{self.broker} answered DISCOVER with "
                                    f"{info.COMMAND.decode()}")
        if info.version != p.PROTOCOL_VERSION:
            raise Refused(p.ErrorCode.VERSION_MISMATCH,
                          f"the broker speaks protocol version {info.version}, this client "
                          f"{p.PROTOCOL_VERSION}")
        known = self.known_brokers or keys.KnownBrokers()
        if not info.key:
            remembered = self.pinned_key or (known.lookup(self.broker) or (None,))[0]
            if remembered is not None:
                raise InsecureBroker(
                    f"the broker at {self.broker} runs without encryption, but its key "
                    f"{keys.fingerprint(remembered)} is pinned: someone may be impersonating "
                    "it. Refusing to connect.")
            if not self.insecure:
                raise InsecureBroker(
                    f"the broker at {self.broker} runs without encryption (`zmeet broker "
                    "--insecure`): anyone on the network can read and impersonate. Pass "
                    "--insecure (or ZMEET_INSECURE=1) to connect anyway.")
            self.broker_key = None
        else:
            key = keys.parse_key(info.key)
            if self.pinned_key is not None:
                if key != self.pinned_key:
                    raise BrokerKeyChanged(
                        f"the broker at {self.broker} has key {keys.fingerprint(key)}, not the "
                        f"key given ({keys.fingerprint(self.pinned_key)}): someone may be "
                        "impersonating it. Refusing to connect.")
            elif self.broker_key is None or self.broker_key != key:
                # the first connect, or a reconnect to a broker whose key changed
                self.first_contact = known.check(self.broker, key) or self.first_contact
            self.broker_key = key
        self.endpoints = {k: resolve_endpoint(v, self.broker) for k, v in info.endpoints.items()}
        return info

    def _open_dealer(self) -> None:
        """A new control DEALER (a new routing id) to the broker's control lane, and its reply
        greenlet; the old one, if any, is closed with its greenlet (docs/protocol.md 3.8: a
        client whose connection stops answering opens a new one)."""
        old, old_loop = self._dealer, self._reply_greenlet
        dealer = self.secure(self.context.socket(zmq.DEALER))
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IDENTITY, b"c-" + secrets.token_bytes(14))
        dealer.connect(self.endpoints["control"])
        self._dealer = dealer
        self._reply_greenlet = gevent.spawn(self._reply_loop, dealer)
        self._greenlets.append(self._reply_greenlet)
        if old_loop is not None:
            old_loop.kill(block=False)
            self._greenlets.remove(old_loop)
        if old is not None:
            self._previous_id = bytes(old.getsockopt(zmq.IDENTITY))  # type: ignore[arg-type]
            old.close(linger=0)

    def connect(self) -> p.Welcome:
        """Ask the entry lane for the broker's key and lanes, open the control and events
        lanes and say HELLO. Returns the WELCOME."""
        try:
            self.discover()
            self._open_dealer()
            welcome = self._hello()
        except BaseException:
            self.close(bye=False)
            raise
        sub = self.secure(self.context.socket(zmq.SUB))
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, p.HEARTBEAT_TOPIC)
        sub.connect(self.endpoints["events"])
        self._sub = sub
        self._last_heartbeat_s = self.clock.monotonic_s()
        self._greenlets.append(gevent.spawn(self._event_loop))
        self._greenlets.append(gevent.spawn(self._heartbeat_loop))
        return welcome

    def _hello(self) -> p.Welcome:
        welcome = self.request(p.Hello, nick=self.nick, client=self.client_name,
                               resume=self._previous_id)
        assert isinstance(welcome, p.Welcome)
        version = welcome.limits.get("protocol_version", p.PROTOCOL_VERSION)
        if version != p.PROTOCOL_VERSION:
            raise Refused(
                p.ErrorCode.VERSION_MISMATCH,
                f"the broker speaks protocol version {version}, this client {p.PROTOCOL_VERSION}",
            )
        self.welcome = welcome
        self._run(self._clone.welcomed(welcome.epoch))
        for listener in list(self.welcome_listeners):
            listener(welcome)
        return welcome

    def close(self, bye: bool = True) -> None:
        """Say BYE (if asked and connected, waiting at most ``timeout_s``), stop the greenlets
        and close the sockets. Idempotent; never raises for a broker that went away."""
        if self._clone.state is LinkState.CLOSED:
            return
        self._run(self._clone.close_started())  # no catch-up requests after BYE
        if bye and self.welcome is not None:
            try:
                self.request(p.Bye, timeout_s=min(self.timeout_s, 2.0))
            except (BrokerUnavailable, Refused):
                pass  # the broker will time the session out by heartbeats
        self._run(self._clone.closed())
        gevent.killall(self._greenlets, block=True, timeout=1)
        for sock in (self._dealer, self._sub):
            if sock is not None:
                sock.close(linger=0)

    @property
    def heartbeat_interval_s(self) -> float:
        if self.welcome is None:
            return 2.0
        return self.welcome.limits.get("heartbeat_interval_ms", 2000) / 1000

    # requests ---------------------------------------------------------------------------------

    def request(self, cls: type[p.Request], *, timeout_s: float | None = None, **fields) -> p.Reply:
        """Send ``cls(req_id=..., **fields)`` and wait for its reply.

        A request the broker refuses RATE_LIMITED (docs/protocol.md, "Rate limits") is sent
        again, under a new ``req_id``, once its ``retry_after_ms`` has passed: at most
        RATE_LIMIT_RETRIES times and :attr:`rate_limit_wait_s` seconds of waiting in all.

        Raises :class:`BrokerUnavailable` after ``timeout_s`` without a reply,
        :class:`RateLimited` past those bounds, :class:`NickInUse` or :class:`Refused` for
        another ERROR reply.
        """
        waited_s = 0.0
        for _ in range(RATE_LIMIT_RETRIES):
            try:
                return self._request_once(cls, timeout_s=timeout_s, **fields)
            except RateLimited as exc:
                wait_s = exc.retry_after_ms / 1000
                if waited_s + wait_s > self.rate_limit_wait_s:
                    raise
                log.debug("%s rate limited: retrying in %d ms", cls.__name__,
                          exc.retry_after_ms)
                gevent.sleep(wait_s)
                waited_s += wait_s
        return self._request_once(cls, timeout_s=timeout_s, **fields)

    def _request_once(self, cls: type[p.Request], *, timeout_s: float | None = None,
                      **fields) -> p.Reply:
        """One request and its reply (see :meth:`request`); RATE_LIMITED raises at once."""
        if self._dealer is None or self._clone.state is LinkState.CLOSED:
            raise BrokerUnavailable("the session is closed")
        req_id = next(self._ids)
        result = gevent.event.AsyncResult()
        self._pending[req_id] = result
        try:
            try:
                # copied: a client that exits while the broker is gone still holds unsent
                # chunks, and zero-copy ones are released through pyzmq's garbage-collector
                # thread, whose exit handler can then wait forever in Context.term (seen in CI,
                # an uploading `zmeet send` whose broker was killed; pyzmq#1003). The CLI also
                # terminates the context before exit (cli/main.py, _release_zmq); a script
                # using Session may not. The copy costs an uploading client ~0.1 s a GiB.
                send_parts(self._dealer, p.encode(cls(req_id=req_id, **fields)), copy=True)
            except zmq.Again:
                raise BrokerUnavailable(f"cannot reach the broker at {self.broker}") from None
            wait_s = self.timeout_s if timeout_s is None else timeout_s
            try:
                reply = result.get(timeout=wait_s)
            except gevent.Timeout:
                raise BrokerUnavailable(
                    f"no answer from the broker at {self.broker} within {wait_s:g} s: "
                    "is `zmeet broker` running there?"
                ) from None
        finally:
            self._pending.pop(req_id, None)
        if isinstance(reply, p.Error):
            if reply.code == p.ErrorCode.RATE_LIMITED:
                raise RateLimited(reply.code, reply.reason, reply.retry_after_ms)
            exc_cls = NickInUse if reply.code == p.ErrorCode.NICK_IN_USE else Refused
            raise exc_cls(reply.code, reply.reason)
        return reply

    def say(self, room: str, text: str) -> p.Posted:
        """Say ``text`` in ``room``; returns POSTED once stored and published. Over the chat
        rate limit it waits and retries (:meth:`request`); raises :class:`RateLimited` past
        its bounds, :class:`Refused`, :class:`BrokerUnavailable`."""
        reply = self.request(p.Say, room=room, text=text)
        assert isinstance(reply, p.Posted)
        return reply

    def join(self, room: str, history: int = -1, key: str = "") -> p.Joined:
        """Subscribe to ``room``, JOIN it (with ``key``, for a room that has one), and queue
        its history (chat messages, oldest first) on :attr:`events`, followed by live events in
        order."""
        if self._clone.is_joined(room):  # already in: nothing to redo
            joined = self.request(p.Join, room=room, history=0)
            assert isinstance(joined, p.Joined)
            return joined
        self._run(self._clone.join_started(room))
        try:
            joined = self.request(p.Join, room=room, history=history, key=key)
        except BaseException:
            self._run(self._clone.join_failed(room))
            raise
        assert isinstance(joined, p.Joined)
        self._run(self._clone.joined(room, joined))
        return joined

    def leave(self, room: str) -> None:
        """LEAVE ``room`` and stop listening to it."""
        self.request(p.Leave, room=room)
        self._run(self._clone.left(room))

    # private rooms and direct messages (docs/protocol.md 3.16) --------------------------------

    def lock(self, room: str, locked: bool = True) -> None:
        """Make ``room`` invite-only (or open again). Owners only: Refused 403."""
        self.request(pp.Lock, room=room, locked=locked)

    def set_key(self, room: str, key: str) -> None:
        """Give ``room`` a key that JOIN must present (``""``: none). Owners only."""
        self.request(pp.SetKey, room=room, key=key)

    def invite(self, room: str, nick: str) -> None:
        self.request(pp.Invite, room=room, nick=nick)

    def kick(self, room: str, nick: str, reason: str = "") -> None:
        self.request(pp.Kick, room=room, nick=nick, reason=reason)

    def ban(self, room: str, nick: str, banned: bool = True) -> None:
        self.request(pp.Ban, room=room, nick=nick, banned=banned)

    def add_owner(self, room: str, nick: str) -> None:
        self.request(pp.AddOwner, room=room, nick=nick)

    def send_direct(self, to: str, text: str) -> pp.Sent:
        """Send ``text`` to the nick ``to`` alone, over the control lane; returns SENT
        (``stored`` if ``to`` is offline and will get it when it next connects). Raises
        Refused 404 for a nick nobody has."""
        reply = self.request(pp.SendDirect, to=to, text=text)
        assert isinstance(reply, pp.Sent)
        return reply

    def _on_kicked(self, kicked: pp.Kicked) -> None:
        """An owner removed this nick from a room: leave it as after LEAVE, and tell the
        application (the KICKED on :attr:`events`)."""
        self._run(self._clone.left(kicked.room))
        self.events.put(kicked)

    def members(self, room: str) -> tuple[str, ...]:
        """The nicks in ``room`` (this one included), in join order, as this session knows
        them: JOINED's snapshot, then every ``join``, ``leave`` and ``gone`` event in sequence
        order (the Clone pattern's snapshot and updates). Empty for a room not joined."""
        return self._clone.members(room)

    def subscribe(self, topic: bytes) -> None:
        """Also receive published messages under ``topic`` (a prefix) on :attr:`events`."""
        assert self._sub is not None, "connect first"
        self._sub.setsockopt(zmq.SUBSCRIBE, topic)

    def unsubscribe(self, topic: bytes) -> None:
        assert self._sub is not None, "connect first"
        self._sub.setsockopt(zmq.UNSUBSCRIBE, topic)

    def info(self, room: str) -> p.RoomInfo:
        reply = self.request(p.Info, room=room)
        assert isinstance(reply, p.RoomInfo)
        return reply

    def set_topic(self, room: str, topic: str) -> None:
        self.request(p.SetTopic, room=room, topic=topic)

    def history(
        self, room: str, after_seq: int, limit: int = MAX_HISTORY
    ) -> tuple[p.RoomEvent, ...]:
        reply = self.request(p.History, room=room, after_seq=after_seq, limit=limit)
        assert isinstance(reply, p.Events)
        return reply.events

    @property
    def rooms(self) -> Iterable[str]:
        return self._clone.rooms

    # the machine's effects --------------------------------------------------------------------

    def _run(self, effects: list[clone.Effect]) -> None:
        """Carry out ``effects`` in order. A HISTORY is asked and answered before the next
        effect: what its reply gives comes first (a blocking loop's order, without recursion)."""
        todo: deque[clone.Effect] = deque(effects)
        while todo:
            effect = todo.popleft()
            if isinstance(effect, clone.Deliver | Notice):
                self.events.put(effect.event if isinstance(effect, clone.Deliver) else effect)
            elif isinstance(effect, clone.MembersChanged):
                self._members_changed(effect.room)
            elif isinstance(effect, clone.Subscribe):
                if self._sub is not None:
                    self._sub.setsockopt(zmq.SUBSCRIBE, p.room_topic(effect.room))
            elif isinstance(effect, clone.Unsubscribe):
                if self._sub is not None:
                    self._sub.setsockopt(zmq.UNSUBSCRIBE, p.room_topic(effect.room))
            elif isinstance(effect, clone.FetchHistory):
                todo.extendleft(reversed(self._fetch(effect)))
            elif isinstance(effect, clone.Reconnect):
                try:
                    self._reconnect()
                except BaseException:  # a bug, or killed: a later loss must start over
                    self._clone.recovery_abandoned()
                    raise

    def _fetch(self, fetch: clone.FetchHistory) -> list[clone.Effect]:
        try:
            events = self.history(fetch.room, fetch.after_seq, fetch.limit)
        except (BrokerUnavailable, Refused) as exc:
            if not self._clone.closing:
                log.warning(
                    "could not fill the gap in %s after seq %d: %s", fetch.room, fetch.after_seq,
                    exc,
                )
            return self._clone.history_failed(fetch.fetch_id, str(exc))
        return self._clone.history_received(fetch.fetch_id, events)

    def _members_changed(self, room: str) -> None:
        for listener in list(self.member_listeners):
            try:
                listener(room)
            except Exception:
                log.exception("a member listener failed for %s", room)

    # loops ------------------------------------------------------------------------------------

    def _reply_loop(self, dealer: zmq_green.Socket) -> None:
        while True:
            # a payload (a FILE-CHUNK's data) as a memoryview of the received frame, not copied
            frames = recv_rest(dealer, dealer.recv(), 3)
            for i in range(3, len(frames)):
                frames[i] = frames[i].buffer
            try:
                reply = p.decode(frames)
            except p.RemoteProtocolError as exc:
                log.warning("bad reply from the broker: %s", exc.reason)
                continue
            if isinstance(reply, p.Direct):  # unasked: a challenge, a file offer
                handler = self.direct_handlers.get(type(reply))
                if handler is None:
                    self.events.put(reply)
                    continue
                try:
                    handler(reply)
                except Exception:
                    log.exception("the handler of %s failed", reply.COMMAND.decode())
                continue
            req_id = getattr(reply, "req_id", -1)
            if req_id == 0 and isinstance(reply, p.Error):
                # the broker could not read which request this answers: fail them all
                for waiter in list(self._pending.values()):
                    waiter.set(reply)
                continue
            waiter = self._pending.get(req_id)
            if waiter is not None:
                waiter.set(reply)

    def _event_loop(self) -> None:
        assert self._sub is not None
        while True:
            frames = self._sub.recv_multipart()
            try:
                _topic, message = p.decode_published(frames)
            except p.RemoteProtocolError as exc:
                log.warning("bad event from the broker: %s", exc.reason)
                continue
            if isinstance(message, p.Heartbeat):
                self._last_heartbeat_s = self.clock.monotonic_s()
                self._run(self._clone.heartbeat(message.epoch))
            elif isinstance(message, p.RoomEvent):
                self._run(self._clone.event(message))
            else:  # a feature's published message (a game's state for spectators)
                self.events.put(message)

    def _heartbeat_loop(self) -> None:
        while True:
            interval_s = self.heartbeat_interval_s
            gevent.sleep(interval_s)
            liveness = self.welcome.limits.get("heartbeat_liveness", 5) if self.welcome else 5
            silent_s = self.clock.monotonic_s() - self._last_heartbeat_s
            try:
                self.request(p.Ping, timeout_s=interval_s * liveness)
            except BrokerUnavailable:
                self._recover("broker-lost", "lost the broker; reconnecting")
                continue
            except Refused as exc:
                if exc.code == p.ErrorCode.NO_SESSION:  # the broker timed us out
                    self._recover("broker-lost", "the broker dropped this session; rejoining")
                continue
            if silent_s > interval_s * liveness:
                self._recover("broker-lost", "no heartbeat from the broker; rejoining")

    def _recover(self, kind: str, text: str) -> None:
        """Tell the machine the broker is lost; carry out its notice and its reconnect."""
        self._run(self._clone.lost(kind, text))

    def _reconnect(self) -> None:
        """Say HELLO again and rejoin every room, filling what was missed from history
        (docs/protocol.md 3.8, "Recovery"; the machine's ``Reconnect`` effect)."""
        while self._clone.state is not LinkState.CLOSED:
            try:
                old_events = self.endpoints.get("events")
                self.discover()  # the broker may have restarted on other ports, or another key
                self._open_dealer()
                if self._sub is not None and old_events != self.endpoints["events"]:
                    if old_events:
                        self._sub.disconnect(old_events)
                    self._sub.connect(self.endpoints["events"])
                self._hello()
                for room in self._clone.rejoin_rooms():
                    if not self._clone.is_joined(room):
                        continue  # left while an earlier room was rejoined
                    self._run(self._clone.rejoin_started(room))
                    try:
                        joined = self.request(p.Join, room=room, history=0)
                    except Refused as exc:
                        self._run(self._clone.rejoin_refused(room, str(exc)))
                        continue
                    assert isinstance(joined, p.Joined)
                    self._run(self._clone.rejoined(room, joined))
                self._last_heartbeat_s = self.clock.monotonic_s()
                self._run(self._clone.recovered())
                return
            except (BrokerKeyChanged, InsecureBroker) as exc:
                # never a silent reconnect to another key: the machine's notice tells why
                log.error("not reconnecting: %s", exc)
                self._run(self._clone.gave_up("broker-key-changed", str(exc)))
                return
            except (BrokerUnavailable, Refused) as exc:
                log.info("reconnect failed: %s", exc)
                gevent.sleep(self.heartbeat_interval_s)
