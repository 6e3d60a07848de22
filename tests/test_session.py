"""The client session over real loopback sockets: unavailable brokers, gap fill, reconnects."""

from __future__ import annotations

import contextlib
import time

import gevent
import gevent.queue
import pytest
import zmq
import zmq.green as zmq_green

from zmeet import protocol as p
from zmeet.client import LinkState, Notice, Session
from zmeet.clock import ManualClock
from zmeet.errors import BrokerUnavailable, Refused
from zmeet.protocol import games as pg
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
    with pytest.raises(Refused) as info:
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
    with contextlib.suppress(Refused):
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


def _probe(game_id: str) -> pg.GameState:
    """A published GAME-STATE under ``game/<game_id>/``: a Session puts it on its events queue
    as it comes (no cursor, no history), so its arrival proves the SUB is subscribed."""
    view = pg.GameView(
        id=game_id, kind="tictactoe", players=("probe", "probe"), options={}, moves=(), turn="",
        status="over", result="draw", winner="", reason="full", away=(), move_timeout_s=0,
        time_left_ms=0, version=1,
    )
    return pg.GameState(game=view)


def _prove_subscriptions(broker, session, probe_id, timeout_s=5.0) -> list:
    """Wait until ``session``'s SUB is known to have its subscriptions in force at the broker.

    Subscribes the SUB to a probe topic (public :meth:`Session.subscribe`) and has the broker
    publish on it until one probe arrives: subscriptions travel to the PUB in order, so every
    change made before is in force too. Bounded in tries and time; each try waits for an item,
    never sleeps. Returns the other items taken from ``session.events`` meanwhile, in order.
    """
    topic = pg.game_topic(probe_id)
    others: list = []
    session.subscribe(topic)
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(1000):
            broker.publish(_probe(probe_id))
            try:
                item = session.events.get(timeout=0.02)
            except gevent.queue.Empty:
                item = None
            if isinstance(item, pg.GameState):
                if item.game.id == probe_id:
                    return others
            elif item is not None:
                others.append(item)
            if time.monotonic() > deadline:
                break
        pytest.fail(f"the probe never arrived; got {others!r}")
    finally:
        session.unsubscribe(topic)


def _spy_history(monkeypatch, broker) -> list[tuple[str, int, tuple[int, ...]]]:
    """``(room, after_seq, seqs returned)`` of every HISTORY the broker answers from now on
    (a spy on the real store's public ``after``)."""
    answered: list[tuple[str, int, tuple[int, ...]]] = []
    after = broker.store.after

    def spy(room, after_seq, limit):
        events = after(room, after_seq, limit)
        answered.append((room, after_seq, tuple(e.seq for e in events)))
        return events

    monkeypatch.setattr(broker.store, "after", spy)
    return answered


def test_a_subscriber_that_missed_events_gets_them_via_history(
    broker, connect, wait_for, chat, monkeypatch
):
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    bob_joined = bob.join("lobby")
    answered = _spy_history(monkeypatch, broker)

    bob.unsubscribe(p.room_topic("lobby"))
    before = _prove_subscriptions(broker, bob, "probe-a")
    missed = [alice.say("lobby", f"missed {i}") for i in range(3)]
    bob.subscribe(p.room_topic("lobby"))
    before += _prove_subscriptions(broker, bob, "probe-b")
    posted = alice.say("lobby", "back again")

    events = room_events(before + wait_for(bob, chat("back again")))
    assert [e.seq for e in events] == list(range(bob_joined.last_seq + 1, posted.seq + 1))
    assert [e.text for e in events] == [f"missed {i}" for i in range(3)] + ["back again"]
    assert [e.seq for e in events[:3]] == [x.seq for x in missed]
    # they came in a HISTORY reply asked from bob's cursor (not on the SUB: it was unsubscribed)
    missed_seqs = tuple(x.seq for x in missed)
    assert any(
        (room, after_seq, seqs[:3]) == ("lobby", bob_joined.last_seq, missed_seqs)
        for room, after_seq, seqs in answered
    ), answered


@pytest.mark.broker_config(heartbeat_interval_ms=60_000)  # no heartbeat but the test's own
def test_an_event_published_before_the_subscription_takes_effect_comes_at_the_next_heartbeat(
    broker, connect, chat
):
    """The slow joiner: bob's subscription to the room is not in force at the broker when an
    event is published (here: taken back right after JOIN, and proven gone by a probe)."""
    alice = connect("alice")
    alice.join("lobby")
    bob = connect("bob")
    bob_joined = bob.join("lobby")
    bob.unsubscribe(p.room_topic("lobby"))
    seen = _prove_subscriptions(broker, bob, "probe-a")
    posted = alice.say("lobby", "in the window")  # published while bob's SUB is not subscribed
    bob.subscribe(p.room_topic("lobby"))
    heartbeat = p.Heartbeat(epoch=broker.epoch, ts_ms=0, interval_ms=60_000)
    assert not any(chat("in the window")(item) for item in seen)
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


@pytest.mark.broker_config(heartbeat_interval_ms=100)
def test_heartbeat_silence_is_read_on_the_injected_clock(broker, connect, wait_for, chat):
    """Session reads liveness time from its ``clock``: a ManualClock moved past
    ``interval x liveness`` is silence, although heartbeats keep coming; the session recovers."""
    clock = ManualClock()
    alice = connect("alice", clock=clock)
    alice.join("lobby")
    assert alice.state is LinkState.UP
    limits = alice.welcome.limits
    silence_s = limits["heartbeat_interval_ms"] / 1000 * limits["heartbeat_liveness"]
    lost = []
    for _ in range(100):  # a heartbeat taken between a move and the check resets the silence
        clock.advance(silence_s + 1)
        try:
            item = alice.events.get(timeout=0.2)
        except gevent.queue.Empty:
            continue
        if notice("broker-lost")(item):
            lost.append(item)
            break
    assert lost == [Notice("broker-lost", "no heartbeat from the broker; rejoining")]
    wait_for(alice, notice("reconnected"))
    assert alice.state is LinkState.UP and "alice" in alice.info("lobby").members
    alice.say("lobby", "still here")
    wait_for(alice, chat("still here"))


def test_the_session_state_follows_connect_and_close(connect):
    session = Session(free_endpoint(), "alice", timeout_s=0.2)
    assert session.state is LinkState.NEW
    alice = connect("alice")
    assert alice.state is LinkState.UP
    alice.close()
    assert alice.state is LinkState.CLOSED


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
