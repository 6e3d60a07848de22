"""Flood limits and bounded chat state without sockets: the token bucket, the broker's table of
buckets, and the rooms that nobody is in (zmeet.broker.ratelimit, zmeet.chat.Rooms), all on a
ManualClock or a fake store."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmeet import protocol as p
from zmeet.broker.ratelimit import (
    DEFAULT_RATE_LIMITS,
    REQUEST_CLASSES,
    Rate,
    RateLimiter,
    TokenBucket,
    parse_rate,
)
from zmeet.chat import Rooms
from zmeet.clock import ManualClock
from zmeet.errors import Refused
from zmeet.protocol import ErrorCode

# --- the bucket --------------------------------------------------------------------------------


def test_a_bucket_admits_its_burst_then_one_token_per_interval():
    bucket = TokenBucket(Rate(count=10, period_ms=5000, burst=3), now_us=0)
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0) == 500_000  # one token every 500 ms
    assert bucket.take(499_999) == 1
    assert bucket.take(500_000) == 0
    assert bucket.take(500_000) == 500_000
    assert bucket.tokens(500_000) == 0
    assert bucket.tokens(2_000_000) == 3 and bucket.is_full(2_000_000)


def test_a_refused_request_takes_no_token():
    bucket = TokenBucket(Rate(1, 1000, 1), now_us=0)
    assert bucket.take(0) == 0
    for t in range(0, 1_000_000, 100_000):
        assert bucket.take(t) == 1_000_000 - t
    assert bucket.take(1_000_000) == 0


def test_a_rate_that_does_not_divide_evenly_never_drifts():
    """3 tokens per 1000 ms is 333,333.33... µs a token: the bucket keeps thirds of a
    microsecond exactly, so a client that always comes back when told is admitted exactly
    ``burst + floor(3 t)`` times by second ``t``, however long it runs."""
    bucket = TokenBucket(Rate(3, 1000, 2), now_us=0)
    admitted, t, last = 0, 0, 0
    for _ in range(30_000):
        wait = bucket.take(t)
        if wait:
            t += wait
            continue
        admitted += 1
        last = t
    assert admitted == 2 + (3 * last) // 1_000_000
    assert last >= 4_999_000_000  # ~15,000 tokens: 5,000 s of them


def test_rates_are_checked_and_parsed():
    with pytest.raises(ValueError):
        Rate(0, 1000, 1)
    with pytest.raises(ValueError):
        Rate(1, 1000, True)  # type: ignore[arg-type]
    assert parse_rate("10/5:30") == Rate(10, 5000, 30)
    assert parse_rate("10/5") == Rate(10, 5000, 10)
    assert parse_rate("3/250ms") == Rate(3, 250, 3)
    assert parse_rate(" 2 / 0.5s : 4 ") == Rate(2, 500, 4)
    for bad in ("", "10", "10/", "a/5", "10/5:", "10/0.0001", "-1/5"):
        with pytest.raises(ValueError):
            parse_rate(bad)


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 50),
    period_ms=st.integers(1, 10_000),
    burst=st.integers(1, 50),
    gaps_us=st.lists(st.integers(0, 3_000_000), min_size=1, max_size=200),
)
def test_no_window_admits_more_than_burst_plus_rate_times_its_length(
    count, period_ms, burst, gaps_us
):
    """In every window [a, b] of the admitted times, at most burst + count * (b - a) / period
    requests (compared on integers: no rounding in the check either)."""
    rate = Rate(count, period_ms, burst)
    bucket = TokenBucket(rate, now_us=0)
    now, admitted = 0, []
    for gap in gaps_us:
        now += gap
        if bucket.take(now) == 0:
            admitted.append(now)
    period_us = period_ms * 1000
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            n = j - i + 1
            length = admitted[j] - start
            assert n * period_us <= burst * period_us + count * length, (i, j, admitted)


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 50),
    period_ms=st.integers(1, 10_000),
    burst=st.integers(1, 20),
    gaps_us=st.lists(st.integers(0, 2_000_000), min_size=1, max_size=100),
)
def test_retry_after_is_exact(count, period_ms, burst, gaps_us):
    """A refusal's wait is exact: one microsecond earlier the request is still refused, at
    the wait it is admitted (on a copy of the state: a refusal changes nothing)."""
    rate = Rate(count, period_ms, burst)
    bucket = TokenBucket(rate, now_us=0)
    now = 0
    for gap in gaps_us:
        now += gap
        wait = bucket.take(now)
        if wait == 0:
            continue
        assert wait > 0
        early = TokenBucket(rate, 0)
        early.tat = bucket.tat
        assert early.take(now + wait - 1) > 0
        assert bucket.take(now + wait) == 0
        now += wait


# --- the table -----------------------------------------------------------------------------


def test_the_limiter_counts_classes_and_identities_apart():
    clock = ManualClock()
    limiter = RateLimiter({"chat": Rate(1, 1000, 2), "join": Rate(1, 1000, 1)}, clock)
    assert [limiter.check(p.Say, "alice") for _ in range(3)] == [0, 0, 1000]
    assert limiter.check(p.SetTopic, "alice") == 1000  # the same class: the same bucket
    assert limiter.check(p.Say, "bob") == 0
    assert limiter.check(p.Join, "alice") == 0
    assert limiter.check(p.Ping, "alice") == 0  # not limited
    assert limiter.check(p.Hello, "alice") == 0  # hello is not in these limits
    assert limiter.refused == 2
    clock.advance(0.5)
    assert limiter.check(p.Say, "alice") == 500
    clock.advance(0.5)
    assert limiter.check(p.Say, "alice") == 0
    assert limiter.advertised() == {
        "rate_chat_count": 1, "rate_chat_period_ms": 1000, "rate_chat_burst": 2,
        "rate_join_count": 1, "rate_join_period_ms": 1000, "rate_join_burst": 1,
    }
    with pytest.raises(ValueError):
        RateLimiter({"chitchat": Rate(1, 1000, 1)}, clock)


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1500)), max_size=100))
def test_retry_after_ms_on_a_manual_clock_is_when_the_request_is_admitted(steps):
    """Through the table and the clock's float seconds: after ``retry_after_ms`` the same
    request is admitted, and one millisecond earlier it was not (when the wait is over 1 ms)."""
    clock = ManualClock()
    limiter = RateLimiter({"chat": Rate(3, 1000, 2)}, clock)
    for who, gap_ms in steps:
        clock.advance(gap_ms / 1000)
        retry_ms = limiter.check(p.Say, who)
        if retry_ms:
            assert retry_ms >= 1
            clock.advance((retry_ms - 1) / 1000)
            if retry_ms > 1:
                assert limiter.check(p.Say, who) > 0
            clock.advance(0.001)
            assert limiter.check(p.Say, who) == 0


def test_the_table_is_bounded_and_forgets_the_least_recently_used():
    clock = ManualClock()
    limiter = RateLimiter({"hello": Rate(1, 60_000, 1)}, clock, max_buckets=1000)
    for n in range(100_000):
        limiter.check(p.Hello, n.to_bytes(8, "big"))
    assert len(limiter) == 1000
    newest = (99_999).to_bytes(8, "big")
    assert limiter.check(p.Hello, newest) > 0  # the newest are still counted
    # the oldest was forgotten: it starts again with a full bucket
    assert limiter.check(p.Hello, (0).to_bytes(8, "big")) == 0


def test_full_buckets_are_dropped_from_the_old_end():
    clock = ManualClock()
    limiter = RateLimiter({"chat": Rate(1, 1000, 1)}, clock)
    for n in range(500):
        limiter.check(p.Say, n)
    assert len(limiter) == 500
    clock.advance(1.0)  # every bucket has refilled: the same as none
    for n in range(500, 1000):
        limiter.check(p.Say, n)
    # each new bucket dropped up to two full ones: the 500 old ones are gone
    assert len(limiter) <= 501


def test_the_default_limits_serve_a_paste_and_refuse_a_flood():
    clock = ManualClock()
    limiter = RateLimiter(DEFAULT_RATE_LIMITS, clock)
    assert set(DEFAULT_RATE_LIMITS) == set(REQUEST_CLASSES)
    assert all(limiter.check(p.Say, "paster") == 0 for _ in range(20))
    admitted = sum(limiter.check(p.Say, "bot") == 0 for _ in range(50_000))
    assert admitted == DEFAULT_RATE_LIMITS["chat"].burst
    # a reconnecting client rejoins all its rooms
    from zmeet.protocol.limits import MAX_ROOMS_PER_SESSION
    assert all(limiter.check(p.Join, "back") == 0 for _ in range(MAX_ROOMS_PER_SESSION))


# --- rooms nobody is in --------------------------------------------------------------------


class Store:
    """What a store would keep of the rooms' events: the last seq and topic of each room."""

    def __init__(self) -> None:
        self.rooms: dict[str, tuple[int, str]] = {}
        self.loads = 0

    def load_room(self, room: str) -> tuple[int, str]:
        self.loads += 1
        return self.rooms.get(room, (0, ""))

    def append(self, events) -> None:
        for e in events:
            _seq, topic = self.rooms.get(e.room, (0, ""))
            self.rooms[e.room] = (e.seq, e.text if e.type == "topic" else topic)


def _rooms(store: Store, **limits) -> Rooms:
    ids = itertools.count(1)
    return Rooms(lambda: 1_700_000_000.0, store.load_room, lambda: f"id{next(ids)}", **limits)


def test_100000_join_and_leave_of_distinct_rooms_keeps_no_room():
    store = Store()
    rooms = _rooms(store)
    rooms.claim_nick("mallory", "owner")
    for n in range(100_000):
        name = f"r{n}"
        store.append([rooms.join(name, "mallory"), rooms.leave(name, "mallory")])
        rooms.free_idle()
    assert len(rooms) == 0
    assert store.rooms["r99999"] == (2, "")


def test_say_and_info_to_a_room_one_is_not_in_leave_nothing():
    store = Store()
    rooms = _rooms(store)
    rooms.claim_nick("mallory", "owner")
    for n in range(1000):
        with pytest.raises(Refused):
            rooms.say(f"r{n}", "mallory", "hi")
        with pytest.raises(Refused):
            rooms.leave(f"r{n}", "mallory")
        rooms.peek(f"s{n}")
        assert rooms.members(f"t{n}") == ()
    assert len(rooms) == 0


def test_a_freed_room_comes_back_with_its_seq_and_topic():
    store = Store()
    rooms = _rooms(store)
    rooms.claim_nick("alice", "a")
    events = [rooms.join("den", "alice"), rooms.set_topic("den", "alice", "plans"),
              rooms.say("den", "alice", "hi"), rooms.leave("den", "alice")]
    assert len(rooms) == 1  # kept until the caller says its events are stored
    store.append(events)
    assert rooms.free_idle() == 1 and len(rooms) == 0
    join = rooms.join("den", "alice")
    assert join.seq == 5
    assert rooms.room("den").topic == "plans"


def test_live_rooms_and_sessions_have_named_limits():
    store = Store()
    rooms = _rooms(store, max_rooms=3, max_nicks=2)
    rooms.claim_nick("a", 1)
    rooms.claim_nick("b", 2)
    rooms.claim_nick("a", 1)  # one already held: no new session
    with pytest.raises(Refused) as info:
        rooms.claim_nick("c", 3)
    assert info.value.code == ErrorCode.TOO_MANY
    for name in ("x", "y", "z"):
        rooms.join(name, "a")
    with pytest.raises(Refused) as info:
        rooms.join("w", "b")
    assert info.value.code == ErrorCode.TOO_MANY and "rooms open" in info.value.reason
    rooms.join("x", "b")  # a room in memory is still open to join
    store.append(rooms.release_nick("a"))
    rooms.free_idle()
    assert len(rooms) == 1  # x, where b is
    rooms.join("w", "b")
    rooms.claim_nick("c", 3)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["join", "leave", "say", "topic", "post",
                                               "free", "quit"]),
                              st.sampled_from(["a", "b", "c"]),
                              st.sampled_from(["r1", "r2", "r3"])), max_size=80))
def test_freeing_rooms_never_reuses_a_sequence_number(ops):
    """Whatever the order of joins, leaves, says, topics, posts, quits and frees (each free
    after the store has every event, as the broker does it after a commit), every room's
    events are numbered 1, 2, 3, ... with no gap and no repeat, and its topic survives."""
    store = Store()
    rooms = _rooms(store)
    topics: dict[str, str] = {}
    seqs: dict[str, list[int]] = {}
    for op, nick, room in ops:
        if rooms.holder(nick) is None:
            rooms.claim_nick(nick, nick)
        try:
            if op == "join":
                made = [rooms.join(room, nick)]
            elif op == "leave":
                made = [rooms.leave(room, nick)]
            elif op == "say":
                made = [rooms.say(room, nick, "hi")]
            elif op == "topic":
                made = [rooms.set_topic(room, nick, f"t{len(ops)}{nick}")]
                topics[room] = made[0].text
            elif op == "post":
                made = [rooms.post(room, "file", nick, "{}")]
            elif op == "quit":
                made = rooms.release_nick(nick)
            else:
                store.append([])
                rooms.free_idle()
                made = []
        except Refused:
            continue
        events = [e for e in made if e is not None]
        store.append(events)
        for e in events:
            seqs.setdefault(e.room, []).append(e.seq)
    for room, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), (room, numbers)
    rooms.free_idle()
    for room, topic in topics.items():
        assert rooms.peek(room).topic == topic
    assert all(r.members for r in rooms.all_rooms())  # nobody's room is left in memory
