"""The broker's features (chat, games, files) plug in as services.

A service gets requests of its own message classes, may send one client a
:class:`~zmeet.protocol.Direct` message or publish on the events lane, hears when a session
ends, and is ticked on a timer for its time-outs. It sees the broker through
:class:`BrokerCore`, the narrow interface below (this module imports nothing of the broker's
server). It runs on the hub with the broker: it must not block (DESIGN.md, "Rules of the gevent
hub"); slow work goes to gevent's threadpool, in a greenlet of the service's own.

A handler never waits: ``handler(session, request) -> p.Reply | Deferred``. One whose answer
needs slow work (a thread, a greenlet) returns ``broker.defer(session, request)`` and replies
later, from any greenlet, with :meth:`Deferred.reply` or :meth:`Deferred.refuse`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import protocol as p
from ..errors import LocalProtocolError
from .sessions import ClientSession

if TYPE_CHECKING:
    from ..chat import Rooms
    from ..chat.access import RoomAccess
    from ..clock import Clock
    from .store import Store

TICK_INTERVAL_S = 0.1
"""How often :meth:`Service.tick` runs."""


class Deferred:
    """The pending reply to one request, made by :meth:`Broker.defer` and returned by a
    handler instead of a reply.

    Later, from any greenlet, :meth:`reply` (a :class:`~zmeet.protocol.Reply` with the
    request's ``req_id``) or :meth:`refuse` (``ERROR(code, reason)``) sends it, once. The reply
    takes the path of any reply: the session's reply cache (a retry of ``req_id`` while it is
    pending gets nothing; after, this reply), after the room events made before it are stored
    and published. If the session ended meanwhile (BYE, heartbeats, a new nick) or the broker
    stopped, the reply is dropped.
    """

    __slots__ = ("_done", "_send", "request", "session", "store_failed")

    def __init__(
        self, session: ClientSession, request: p.Request,
        send: Callable[[Deferred, p.Reply], None],
    ) -> None:
        self.session = session
        """The session that asked."""
        self.request = request
        """The request this answers."""
        self._send = send
        self._done = False
        self.store_failed = False
        """Set by the broker when the events the handler made could not be stored: the reply,
        whatever it is, goes out as ERROR 500."""

    @property
    def req_id(self) -> int:
        """The ``req_id`` of the request, which the reply carries."""
        return self.request.req_id

    @property
    def done(self) -> bool:
        """Whether :meth:`reply` or :meth:`refuse` was called (the reply was sent or dropped)."""
        return self._done

    def reply(self, message: p.Reply) -> None:
        """Send ``message`` as the reply. Raises :class:`~zmeet.errors.LocalProtocolError` if
        this was answered already or ``message.req_id`` is not the request's."""
        if self._done:
            raise LocalProtocolError(
                f"the reply to {self.request.COMMAND.decode()} #{self.req_id} was sent already")
        if message.req_id != self.req_id:
            raise LocalProtocolError(
                f"reply req_id {message.req_id} does not answer request #{self.req_id}")
        self._done = True
        self._send(self, message)

    def refuse(self, code: int, reason: str) -> None:
        """Send ``ERROR(code, reason)`` as the reply (docs/protocol.md, "Errors"). Raises
        :class:`~zmeet.errors.LocalProtocolError` if this was answered already."""
        self.reply(p.Error(req_id=self.req_id, code=int(code), reason=reason))

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return (f"<Deferred {self.request.COMMAND.decode()} #{self.req_id} of "
                f"{self.session.nick} {state}>")


Handler = Callable[[ClientSession, Any], "p.Reply | Deferred"]
"""``handler(session, request) -> reply or Deferred``; raises
:class:`~zmeet.errors.Refused` ``(code, reason)`` to answer ERROR."""


class BrokerConfigView(Protocol):
    """The settings of the broker that services read (:class:`zmeet.broker.BrokerConfig`)."""

    data_dir: Path
    history: int
    max_file_size: int


class BrokerCore(Protocol):
    """What a service sees of the broker (:class:`zmeet.broker.Broker` is one).

    Every method runs on the hub's thread, from any greenlet. Sends and events made inside the
    control loop's batch go out after its commit (docs/architecture.md, "Group commit"); made
    by another greenlet (a service's own, a tick), they go out at once, in a transaction of
    their own.
    """

    @property
    def config(self) -> BrokerConfigView:
        """The broker's settings."""
        ...

    epoch: str
    """This run's id, told in WELCOME and every heartbeat."""
    endpoints: dict[str, str]
    """Lane name -> bound endpoint."""
    sessions: dict[bytes, ClientSession]
    """Control routing id -> session."""
    rooms: Rooms | None
    """The chat domain (nicks, rooms, membership); set once started."""
    access: RoomAccess | None
    """Who may join and see each room (owners, locks, keys, bans); set once started."""
    store: Store | None
    """The room-event store; set once started."""

    @property
    def clock(self) -> Clock:
        """The broker's clock (``BrokerConfig.clock``): every time read goes through it."""
        ...

    def session_of(self, nick: str) -> ClientSession | None:
        """The newest session holding ``nick``, or None."""
        ...

    def sessions_of_key(self, key: str) -> tuple[ClientSession, ...]:
        """Every session held by the client key ``key``."""
        ...

    def sessions_of(self, nick: str) -> tuple[ClientSession, ...]:
        """Every session holding ``nick`` (one key may hold it on several connections)."""
        ...

    def send_to_nick(self, nick: str, message: p.Message) -> int:
        """Send a Direct to every session of ``nick``; returns how many."""
        ...

    def defer(self, session: ClientSession, request: p.Request) -> Deferred:
        """A pending reply to ``request``, for its handler to return (:class:`Deferred`)."""
        ...

    def send_direct(self, session: ClientSession, message: p.Message) -> None:
        """Send ``session`` a :class:`~zmeet.protocol.Direct` message on the control lane."""
        ...

    def publish_events(self, events: Iterable[p.RoomEvent]) -> None:
        """Store room events, then publish them (the Clone pattern)."""
        ...

    def publish(self, message: p.Message) -> None:
        """Publish a registered published message that is not stored (GAME-STATE, ...)."""
        ...

    def commit(self) -> None:
        """Store and send what the current batch holds now (before a read of the store)."""
        ...

    def open_session(self, routing_id: bytes, nick: str, key: str = "") -> ClientSession:
        """A new session for ``nick`` (already claimed in :attr:`rooms`) at ``routing_id``,
        held by client key ``key``."""
        ...

    def move_session(self, session: ClientSession, routing_id: bytes) -> None:
        """Move ``session`` to the connection ``routing_id`` (HELLO with ``resume``)."""
        ...

    @property
    def secure(self) -> bool:
        """Whether the lanes run CURVE (not ``--insecure``): sessions and nicks have keys."""
        ...

    def end_session(self, session: ClientSession, type_: str, reason: str) -> None:
        """End ``session``: services hear it, its nick is released (``type_`` leave/gone)."""
        ...

    def limits(self) -> dict[str, int]:
        """The limits told to clients in WELCOME."""
        ...


class Service:
    """Base of a broker feature. Subclasses override what they need."""

    name = "service"

    def __init__(self, broker: BrokerCore) -> None:
        self.broker = broker

    def handlers(self) -> dict[type, Handler]:
        """Request class -> ``handler(session, request) -> reply | Deferred``. A handler never
        waits; it raises :class:`~zmeet.errors.Refused` ``(code, reason)`` to answer ERROR."""
        return {}

    def on_session_end(self, session: ClientSession, reason: str) -> None:
        """``session`` is ending (BYE, heartbeats stopped, nick changed): ``reason`` says which."""

    def on_session_open(self, session: ClientSession) -> None:
        """``session`` was opened by a HELLO (its WELCOME is not sent yet: what a service
        sends it from here goes after the WELCOME only from a greenlet of its own)."""

    def on_session_moved(self, session: ClientSession, old_routing_id: bytes) -> None:
        """``session`` was resumed on a new connection: ``session.routing_id`` is the new one,
        ``old_routing_id`` what it was (a service that keys its tables by routing id moves
        them)."""

    def tick(self, now_s: float) -> None:
        """Called every TICK_INTERVAL_S with the broker clock's monotonic time (seconds)."""

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """The broker is stopping."""


ServiceFactory = Callable[[Any], Service]
"""Makes a service for a broker (called with the :class:`BrokerCore`): a Service subclass, or
a ``functools.partial`` of one with its settings (``BrokerConfig.services``)."""
