"""The client session over real loopback sockets: unavailable brokers, gap fill, reconnects."""

from __future__ import annotations

import contextlib
import time

import gevent
import gevent.event
import gevent.queue
import pytest
import zmq
import zmq.green as zmq_green

from zmeet import protocol as p
from zmeet.client import Notice, Session
from zmeet.errors import BrokerUnavailable, RequestRefused
from zmeet.protocol.limits import MAX_HISTORY

pytestmark = pytest.mark.timeout(30)


def room_events(items, room=None):
    return [e for e in items if isinstance(e, p.RoomEvent) and (room is None or e.room == room)]


def notice(kind):
    return lambda item: isinstance(item, Notice) and item.kind == kind


def free_endpoint() -> str:
    """A loopback endpoint nothing listens on (bound by the system, then released)."""
    sock = zmq_green.Context.instance().socket(zmq.ROUTER)
    try:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
    finally:
        sock.close(linger=0)
    return f"tcp://127.0.0.1:{port}"


# --- no broker ---------------------------------------------------------------------------------


def test_connect_where_no_broker_runs_raises_broker_unavailable_within_the_timeout():
    session = Session(free_endpoint(), "alice", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        session.connect()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2.0
    assert "no answer from the broker" in str(info.value)
    with pytest.raises(BrokerUnavailable):  # the failed session is closed, not half-open
        session.request(p.Ping)
    session.close()  # idempotent


@pytest.mark.broker_config(heartbeat_interval_ms=100)
def test_a_broker_that_stops_is_noticed_and_requests_fail_within_the_timeout(
    broker, connect, wait_for
):
    alice = connect("alice", timeout_s=0.5, reconnect=False)
    alice.join("lobby")
    broker.stop()
    limits = alice.welcome.limits
    lost_within_s = limits["heartbeat_interval_ms"] / 1000 * (limits["heartbeat_liveness"] + 2)
    wait_for(alice, notice("broker-lost"), timeout_s=lost_within_s + 2)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        alice.say("lobby", "anyone?")
    assert time.monotonic() - started < 0.5 + 1.0


def test_a_closed_session_refuses_requests(connect):
    alice = connect("alice")
    alice.close()
    alice.close()
    with pytest.raises(BrokerUnavailable):
        alice.say("lobby", "hi")


# --- rooms ---------------------------------------------------------------------------------------


def test_a_refused_join_leaves_no_room_behind(connect):
    alice = connect("alice")
    with pytest.raises(RequestRefused) as info:
        alice.join("no/slash")
    assert info.value.code == p.ErrorCode.INVALID_NAME
    assert "no/slash" not in alice.rooms
    alice.join("lobby")
    assert tuple(alice.rooms) == ("lobby",)


def test_joining_a_room_again_keeps_it_and_repeats_nothing(connect, wait_for, chat):
    """The broker keeps alice in a room she joins twice (refused or not): so must her session,
    and no event reaches her twice."""
    alice = connect("alice")
    alice.join("lobby")
    alice.say("lobby", "first")
    wait_for(alice, chat("first"))
    alice.join("lobby")
    with contextlib.suppress(RequestRefused):
        alice.join("lobby", history=MAX_HISTORY + 1)
    assert "lobby" in alice.rooms
    assert "alice" in alice.info("lobby").members
    bob = connect("bob")
    bob.join("lobby")
    bob.say("lobby", "can you hear me?")
    items = wait_for(alice, chat("can you hear me?"))
    assert [e.text for e in room_events(items) if e.type == "chat"] == ["can you hear me?"]


def test_after_leave_the_room_is_not_delivered(connect, wait_for, chat):
    alice = connect("alice")
    alice.join("lobby")
    alice.join("side")
    bob = connect("bob")
    bob.join("lobby")
    bob.join("side")
    wait_for(alice, lambda e: isinstance(e, p.RoomEvent) and (e.room, e.type) == ("side", "join"))
    alice.leave("side")
    bob.say("side", "alice is gone from here")
    bob.say("lobby", "marker")
    items = wait_for(alice, chat("marker"))
    # at most alice's own leave may still come from "side" (it races the LEAVE reply)
    side = [(e.type, e.sender) for e in room_events(items, "side")]
    assert side in ([], [("leave", "alice")]), items


def test_the_member_list_follows_joins_leaves_and_gones(broker, connect, wait_for, chat):
    """JOINED's snapshot, then presence events in sequence order (the Clone pattern)."""
    alice = connect("alice")
    changes: list[tuple[str, tuple[str, ...]]] = []
    alice.member_listeners.append(lambda room: changes.append((room, alice.members(room))))
    bob = connect("bob")
    bob.join("lobby")
    alice.join("lobby")
    assert alice.members("lobby") == ("bob", "alice")
    carol = connect("carol")
    carol.join("lobby")
    dave = connect("dave")
    dave.join("lobby")
    bob.leave("lobby")
    carol.close(bye=False)  # vanishes: the broker ends the session as if her pings were late
    broker.end_session(broker.session_of("carol"), "gone", "dropped by the test")
    dave.say("lobby", "marker")
    wait_for(alice, chat("marker"))
    assert alice.members("lobby") == ("alice", "dave")
    assert changes == [
        ("lobby", ("bob", "alice")),
        ("lobby", ("bob", "alice", "carol")),
        ("lobby", ("bob", "alice", "carol", "dave")),
        ("lobby", ("alice", "carol", "dave")),
        ("lobby", ("alice", "dave")),
    ]
    alice.leave("lobby")
    assert alice.members("lobby") == () and changes[-1] == ("lobby", ())


# --- gap fill ------------------------------------------------------------------------------------


def test_events_the_pub_dropped_are_filled_from_history_in_order(broker, connect, wait_for, chat):
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    bob_joined = bob.join("lobby")
    # what a PUB drop looks like to bob: events sequenced and stored, never published
    dropped = [broker.rooms.say("lobby", "alice", f"dropped {i}") for i in range(3)]
    broker.store.append(dropped)
    posted = alice.say("lobby", "after the gap")
    assert posted.seq == dropped[-1].seq + 1
    events = room_events(wait_for(bob, chat("after the gap")))
    assert [e.seq for e in events] == list(range(bob_joined.last_seq + 1, posted.seq + 1))
    assert [e.text for e in events] == [e.text for e in dropped] + ["after the gap"]
    assert events[:3] == dropped


def test_a_gap_longer_than_one_history_reply_is_filled_completely(broker, connect, wait_for, chat):
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    bob_joined = bob.join("lobby")
    dropped = [broker.rooms.say("lobby", "alice", f"dropped {i}") for i in range(MAX_HISTORY + 5)]
    broker.store.append(dropped)
    posted = alice.say("lobby", "after the big gap")
    events = room_events(wait_for(bob, chat("after the big gap"), timeout_s=15))
    missing = sorted(set(range(bob_joined.last_seq + 1, posted.seq + 1)) - {e.seq for e in events})
    assert not missing, f"{len(missing)} events never delivered, seqs {missing[0]}..{missing[-1]}"
    assert [e.seq for e in events] == list(range(bob_joined.last_seq + 1, posted.seq + 1))


def _prove_subscriptions(broker, session, probe_room, timeout_s=5.0):
    """Wait until ``session``'s SUB is known to have its subscriptions in force at the broker.

    Subscribes the SUB to a probe room and has the broker publish on it until one probe
    arrives: subscriptions travel to the PUB in order, so every change made before is in
    force too. Bounded in tries and time; each try waits for the probe, never sleeps.
    """
    seen = gevent.event.Event()
    deliver = session._on_room_event

    def spy(event):
        if event.room == probe_room:
            seen.set()
        deliver(event)

    session._on_room_event = spy
    session._sub.setsockopt(zmq.SUBSCRIBE, p.room_topic(probe_room))
    probe = p.RoomEvent(room=probe_room, seq=1, id="probe", ts_ms=0, type="chat", sender="probe")
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(1000):
            broker.publish(probe)
            if seen.wait(timeout=0.02) or time.monotonic() > deadline:
                break
        assert seen.is_set(), "the probe never arrived"
    finally:
        session._sub.setsockopt(zmq.UNSUBSCRIBE, p.room_topic(probe_room))
        session._on_room_event = deliver


def test_a_subscriber_that_missed_events_gets_them_via_history(broker, connect, wait_for, chat):
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    bob_joined = bob.join("lobby")
    delivered_live = []
    deliver = bob._on_room_event

    def spy(event):
        if event.room == "lobby":
            delivered_live.append(event.seq)
        deliver(event)

    bob._on_room_event = spy

    bob._sub.setsockopt(zmq.UNSUBSCRIBE, p.room_topic("lobby"))
    _prove_subscriptions(broker, bob, "probe-a")
    missed = [alice.say("lobby", f"missed {i}") for i in range(3)]
    bob._sub.setsockopt(zmq.SUBSCRIBE, p.room_topic("lobby"))
    _prove_subscriptions(broker, bob, "probe-b")
    posted = alice.say("lobby", "back again")

    events = room_events(wait_for(bob, chat("back again")))
    assert [e.seq for e in events] == list(range(bob_joined.last_seq + 1, posted.seq + 1))
    assert [e.text for e in events] == [f"missed {i}" for i in range(3)] + ["back again"]
    assert [e.seq for e in events[:3]] == [x.seq for x in missed]
    assert not set(delivered_live) & {x.seq for x in missed}  # they did not come on the SUB


class _HeldSubscriptions:
    """Stands in for a session's SUB and keeps its SUBSCRIBE calls from reaching the socket:
    a subscription that has not yet taken effect at the broker (the slow joiner)."""

    def __init__(self, sock):
        self.sock = sock
        self.held: list[bytes] = []

    def setsockopt(self, option, value):
        if option == zmq.SUBSCRIBE:
            self.held.append(value)
        else:
            self.sock.setsockopt(option, value)

    def __getattr__(self, name):
        return getattr(self.sock, name)


@pytest.mark.broker_config(heartbeat_interval_ms=60_000)  # no heartbeat but the test's own
def test_an_event_published_before_the_subscription_takes_effect_comes_at_the_next_heartbeat(
    broker, connect, chat
):
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    sub = bob._sub
    bob._sub = held = _HeldSubscriptions(sub)
    try:
        bob_joined = bob.join("lobby")
    finally:
        bob._sub = sub
    assert held.held == [p.room_topic("lobby")]
    posted = alice.say("lobby", "in the window")  # published while bob's SUB is not subscribed
    sub.setsockopt(zmq.SUBSCRIBE, p.room_topic("lobby"))
    heartbeat = p.Heartbeat(epoch=broker.epoch, ts_ms=0, interval_ms=60_000)
    seen = []
    for _ in range(200):  # until bob's SUB has its heartbeat subscription and takes one
        broker.publish(heartbeat)
        try:
            item = bob.events.get(timeout=0.05)
        except gevent.queue.Empty:
            continue
        seen.append(item)
        if chat("in the window")(item):
            break
    else:
        pytest.fail(f"never delivered; got {seen!r}")
    seqs = [e.seq for e in room_events(seen)]
    assert seqs == list(range(bob_joined.last_seq + 1, posted.seq + 1))


# --- reconnects -----------------------------------------------------------------------------------


@pytest.mark.broker_config(heartbeat_interval_ms=100)
def test_a_session_the_broker_dropped_rejoins_by_itself(broker, connect, wait_for, chat):
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    bob.join("lobby")
    session = next(s for s in broker.sessions.values() if s.nick == "bob")
    broker.end_session(session, "gone", "dropped by the test")  # as if its pings were late
    wait_for(bob, notice("reconnected"), timeout_s=5)
    assert "bob" in alice.info("lobby").members
    alice.say("lobby", "welcome back")
    wait_for(bob, chat("welcome back"))
    items = wait_for(alice, chat("welcome back"))
    assert [(e.type, e.sender) for e in room_events(items) if e.type != "chat"] == [
        ("join", "bob"), ("gone", "bob"), ("join", "bob")]


@pytest.mark.timeout(60)
def test_a_client_reconnects_after_a_broker_restart_on_the_same_ports(
    make_broker, connect, wait_for, chat
):
    first = make_broker(heartbeat_interval_ms=100)
    alice = connect("alice", first)
    alice.join("lobby")
    bob = connect("bob", first)
    bob.join("lobby")
    before = alice.say("lobby", "before the restart")
    wait_for(bob, chat("before the restart"))
    endpoints = dict(first.endpoints)
    first.stop()

    second = make_broker(heartbeat_interval_ms=100, **endpoints)
    assert second.endpoints == endpoints and second.epoch != first.epoch
    for session in (alice, bob):
        wait_for(session, notice("reconnected"), timeout_s=10)
        assert session.welcome.epoch == second.epoch
    assert second.rooms.members("lobby") in (("alice", "bob"), ("bob", "alice"))

    after = alice.say("lobby", "after the restart")
    assert after.seq > before.seq  # the store carried the numbers over
    for session in (alice, bob):
        items = wait_for(session, chat("after the restart"))
        assert [e.text for e in room_events(items) if e.type == "chat"] == ["after the restart"]
        seqs = [e.seq for e in room_events(items)]
        assert seqs == sorted(set(seqs))  # once each, in order
