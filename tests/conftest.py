"""Shared fixtures: in-process brokers, connected client sessions, raw control-lane sockets.

Everything runs in this process on gevent's hub with real zmq sockets on loopback, each test
on ports of the system's choosing (``tcp://127.0.0.1:*``); sockets close with ``linger=0`` and
every fixture stops what it started. Nothing here sleeps to wait: helpers wait for an item, a
reply or an event under a bounded timeout.

Fixtures:

- ``make_broker(**config)``: start a :class:`Broker`; keyword arguments override
  :class:`BrokerConfig` fields (``data_dir`` defaults to one folder per test, so a second broker
  made in the same test reopens the first one's store; ``services`` defaults to
  :func:`zmeet.broker.default_services`).
- ``broker``: one started broker. ``@pytest.mark.broker_config(heartbeat_interval_ms=100)``
  overrides its config.
- ``connect(nick, broker=None, **session_kwargs)``: a connected :class:`Session` (to the
  ``broker`` fixture unless a :class:`Broker` or its address is given), closed at teardown.
  Each nick is its own person: it gets a key pair of its own (the same one each time in a
  test) unless ``identity=`` is given.
- ``person(nick)``: the key pair ``connect(nick)`` uses, for a raw socket of the same person.
- ``raw_dealer(endpoint=None, identity=None)``: a green DEALER connected to a control endpoint
  (default: the ``broker`` fixture's), a CURVE client of the broker that bound it, for frames
  no :class:`Session` would send.
- ``curve_client(sock, endpoint, identity=None)``: make any raw socket a CURVE client of the
  test broker that bound ``endpoint`` (before it connects).

Every test has its own XDG config directory (identity, known_brokers): nothing is written to
the user's.
- ``wait_for(session, predicate, timeout_s=5)``: the first item of ``session.events`` that
  matches, and the items before it.
- ``roundtrip(dealer, frames, timeout_s=5)``: send frames and return the decoded reply.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gevent
import pytest
import zmq
import zmq.green as zmq_green

from zmeet import keys
from zmeet import protocol as p
from zmeet.broker import Broker, BrokerConfig, default_services
from zmeet.client import Session

_BROKERS: dict[str, Broker] = {}
"""Every bound endpoint of the brokers the running test started -> that broker."""


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own ``XDG_CONFIG_HOME`` (its processes inherit it): keys and known brokers
    never touch the user's."""
    # beside tmp_path, not in it: tests list their tmp_path
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path.with_name(tmp_path.name + "-xdg")))


def broker_of(endpoint: str) -> Broker:
    """The test broker that bound ``endpoint`` (any of its lanes)."""
    return _BROKERS[endpoint]


def curve_client(sock: zmq.Socket, endpoint: str,
                 identity: keys.KeyPair | None = None) -> keys.KeyPair:
    """Make ``sock`` (before it connects to ``endpoint``) a CURVE client of the test broker
    that bound it, as ``identity`` (a new key pair if None); a no-op for an insecure broker.
    Returns the identity."""
    pair = identity or keys.KeyPair.generate()
    broker = _BROKERS.get(endpoint)
    if broker is not None and broker.keypair is not None:
        keys.secure_client(sock, broker.keypair.public, pair)
    return pair

TEST_HEARTBEAT_INTERVAL_MS = 1000
"""Heartbeat of test brokers: short enough for quick recovery, long enough that a raw DEALER
that never pings keeps its session for a whole test (HEARTBEAT_LIVENESS intervals)."""

WAIT_S = 5.0
"""Default bound on any single wait in a test."""

MAX_ITEMS = 10_000
"""Bound on the items a wait loop will look at before giving up."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "broker_config(**fields): BrokerConfig fields for the `broker` fixture",
    )


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory of started in-process brokers, all stopped at teardown (newest first)."""
    started: list[Broker] = []

    def make(**overrides: Any) -> Broker:
        fields: dict[str, Any] = {
            "address": "tcp://127.0.0.1:*",
            "data_dir": tmp_path / "broker-data",
            "heartbeat_interval_ms": TEST_HEARTBEAT_INTERVAL_MS,
        }
        fields.update(overrides)
        if "services" not in fields:  # a full broker, as `zmeet broker` runs it
            fields["services"] = default_services()
        if "entry" in fields:  # a broker's endpoints, given back: its address is its entry's
            fields["address"] = fields.pop("entry")
        broker = Broker(BrokerConfig(**fields))
        broker.start()
        started.append(broker)
        for endpoint in broker.endpoints.values():
            _BROKERS[endpoint] = broker
        return broker

    yield make
    for broker in reversed(started):
        broker.stop()
    _BROKERS.clear()


@pytest.fixture
def broker(request: pytest.FixtureRequest, make_broker: Callable[..., Broker]) -> Broker:
    """A started broker on random loopback ports, stopped at teardown. Its BrokerConfig fields
    come from a ``broker_config`` marker, and from ``parametrize("broker", [{...}],
    indirect=True)``."""
    marker = request.node.get_closest_marker("broker_config")
    fields = dict(marker.kwargs if marker else {})
    fields.update(getattr(request, "param", {}))
    return make_broker(**fields)


@pytest.fixture
def person() -> Callable[[str], keys.KeyPair]:
    """``person(nick)``: the key pair of the person called ``nick`` in this test (made on first
    use), which ``connect(nick)`` uses too."""
    people: dict[str, keys.KeyPair] = {}

    def get(nick: str) -> keys.KeyPair:
        if nick not in people:
            people[nick] = keys.KeyPair.generate()
        return people[nick]

    return get


@pytest.fixture
def connect(
    request: pytest.FixtureRequest, make_broker: Callable[..., Broker],
    person: Callable[[str], keys.KeyPair],
) -> Iterator[Callable[..., Session]]:
    """Factory of connected sessions, closed (without BYE, sockets at linger 0) at teardown.

    Depends on ``make_broker`` so that sessions close before any broker stops.
    """
    sessions: list[Session] = []

    def connect_(nick: str, broker: Broker | str | None = None, **kwargs: Any) -> Session:
        if broker is None:
            broker = request.getfixturevalue("broker")
        endpoint = broker.address if isinstance(broker, Broker) else broker
        kwargs.setdefault("timeout_s", WAIT_S)
        if "identity" not in kwargs:
            kwargs["identity"] = person(nick)
        target = broker if isinstance(broker, Broker) else _BROKERS.get(endpoint)
        if target is not None and not target.secure:
            kwargs.setdefault("insecure", True)
        session = Session(endpoint, nick, **kwargs)
        sessions.append(session)
        session.connect()
        return session

    yield connect_
    for session in reversed(sessions):
        session.close(bye=False)


@pytest.fixture
def raw_dealer(request: pytest.FixtureRequest) -> Iterator[Callable[..., zmq_green.Socket]]:
    """Factory of green DEALER sockets connected to a control endpoint (default: the
    ``broker`` fixture's), closed with linger 0 at teardown."""
    sockets: list[zmq_green.Socket] = []

    def make(endpoint: str | None = None,
             identity: keys.KeyPair | None = None) -> zmq_green.Socket:
        if endpoint is None:
            endpoint = request.getfixturevalue("broker").endpoints["control"]
        sock = zmq_green.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, b"t-" + secrets.token_bytes(8))
        curve_client(sock, endpoint, identity)
        sock.connect(endpoint)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close(linger=0)


def _wait_for(
    session: Session,
    predicate: Callable[[Any], bool],
    timeout_s: float = WAIT_S,
) -> list[Any]:
    """Items of ``session.events`` up to and including the first that ``predicate`` accepts.

    Raises AssertionError, listing what did arrive, if none does within ``timeout_s`` (one
    deadline for the whole wait) or within MAX_ITEMS items.
    """
    seen: list[Any] = []
    try:
        with gevent.Timeout(timeout_s):
            for _ in range(MAX_ITEMS):
                item = session.events.get()
                seen.append(item)
                if predicate(item):
                    return seen
    except gevent.Timeout:
        pass
    raise AssertionError(f"{session.nick}: nothing matched within {timeout_s} s; got {seen!r}")


def _roundtrip(
    dealer: zmq_green.Socket, frames: Sequence[bytes], timeout_s: float = WAIT_S
) -> p.Message:
    """Send ``frames`` on ``dealer`` and decode the next message it receives."""
    dealer.send_multipart(list(frames))
    return _recv(dealer, timeout_s)


def _recv(dealer: zmq_green.Socket, timeout_s: float = WAIT_S) -> p.Message:
    try:
        with gevent.Timeout(timeout_s):
            return p.decode(dealer.recv_multipart())
    except gevent.Timeout:
        raise AssertionError(f"no reply within {timeout_s} s") from None


@pytest.fixture
def wait_for() -> Callable[..., list[Any]]:
    return _wait_for


@pytest.fixture
def roundtrip() -> Callable[..., p.Message]:
    return _roundtrip


@pytest.fixture
def recv() -> Callable[..., p.Message]:
    return _recv


def is_chat(text: str, room: str | None = None) -> Callable[[Any], bool]:
    """Predicate: a chat event with ``text`` (in ``room``, if given)."""

    def match(item: Any) -> bool:
        return (
            isinstance(item, p.RoomEvent)
            and item.type == "chat"
            and item.text == text
            and (room is None or item.room == room)
        )

    return match


@pytest.fixture
def chat() -> Callable[..., Callable[[Any], bool]]:
    """``chat(text, room=None)``: a predicate for :func:`wait_for`."""
    return is_chat

