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

from .. import protocol as p
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BrokerUnavailable, NickInUse, RateLimited, Refused
from ..protocol import clone
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

    ``broker`` is the control endpoint (``tcp://HOST:PORT``); ``timeout_s`` bounds every
    request. Call :meth:`connect` first; it raises :class:`BrokerUnavailable` if the broker
    does not answer within ``timeout_s``, :class:`NickInUse` or :class:`Refused` if it
    refuses. Every other request raises the same on timeout or ERROR. ``clock`` gives the
    monotonic time of heartbeat liveness (:data:`zmeet.clock.SYSTEM_CLOCK` by default).
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
    ) -> None:
        self.broker = broker
        self.nick = nick
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
        self.direct_handlers: dict[type, Callable[[p.Message], None]] = {}
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

    def connect(self) -> p.Welcome:
        """Open the control and events lanes and say HELLO. Returns the WELCOME."""
        dealer = self.context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IDENTITY, b"c-" + secrets.token_bytes(14))
        dealer.connect(self.broker)
        self._dealer = dealer
        self._greenlets.append(gevent.spawn(self._reply_loop))
        try:
            welcome = self._hello()
        except BaseException:
            self.close(bye=False)
            raise
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, p.HEARTBEAT_TOPIC)
        sub.connect(self.endpoints["events"])
        self._sub = sub
        self._last_heartbeat_s = self.clock.monotonic_s()
        self._greenlets.append(gevent.spawn(self._event_loop))
        self._greenlets.append(gevent.spawn(self._heartbeat_loop))
        return welcome

    def _hello(self) -> p.Welcome:
        welcome = self.request(p.Hello, nick=self.nick, client=self.client_name)
        assert isinstance(welcome, p.Welcome)
        version = welcome.limits.get("protocol_version", p.PROTOCOL_VERSION)
        if version != p.PROTOCOL_VERSION:
            raise Refused(
                p.ErrorCode.VERSION_MISMATCH,
                f"the broker speaks protocol version {version}, this client {p.PROTOCOL_VERSION}",
            )
        old_events = self.endpoints.get("events")
        self.welcome = welcome
        self._run(self._clone.welcomed(welcome.epoch))
        self.endpoints = {k: resolve_endpoint(v, self.broker) for k, v in welcome.endpoints.items()}
        if self._sub is not None and old_events and self.endpoints["events"] != old_events:
            self._sub.disconnect(old_events)  # a broker restarted on other ports
            self._sub.connect(self.endpoints["events"])
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

    def join(self, room: str, history: int = -1) -> p.Joined:
        """Subscribe to ``room``, JOIN it, and queue its history (chat messages, oldest first)
        on :attr:`events`, followed by live events in order."""
        if self._clone.is_joined(room):  # already in: nothing to redo
            joined = self.request(p.Join, room=room, history=0)
            assert isinstance(joined, p.Joined)
            return joined
        self._run(self._clone.join_started(room))
        try:
            joined = self.request(p.Join, room=room, history=history)
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

    def _reply_loop(self) -> None:
        assert self._dealer is not None
        while True:
            dealer = self._dealer
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
            except (BrokerUnavailable, Refused) as exc:
                log.info("reconnect failed: %s", exc)
                gevent.sleep(self.heartbeat_interval_s)
