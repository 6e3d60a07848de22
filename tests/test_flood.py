"""Flood limits and bounded state on a live broker, over real loopback sockets.

The ``broker`` fixture runs the default limits (DEFAULT_RATE_LIMITS), as ``zmeet broker``
does; the tests here that count refusals set their own small limits, and the one that makes
100,000 rooms lifts them (``rate_limits=None``) to reach the room table's bound at all.
"""

from __future__ import annotations

import json

import gevent
import gevent.event
import msgpack
import pytest
from click.testing import CliRunner

from zmeet import protocol as p
from zmeet.broker.ratelimit import DEFAULT_RATE_LIMITS, Rate
from zmeet.errors import RateLimited
from zmeet.protocol.limits import MAX_LIVE_ROOMS, MAX_SESSIONS

FLOOD = 20_000
"""SAYs a flooding client pipelines."""


def _replies(dealer, recv, n: int, timeout_s: float = 30.0) -> list[p.Message]:
    """The next ``n`` replies on ``dealer``, under one deadline."""
    out: list[p.Message] = []
    with gevent.Timeout(timeout_s, AssertionError(f"{len(out)} of {n} replies")):
        while len(out) < n:
            out.append(recv(dealer, timeout_s))
    return out


def _hello(dealer, roundtrip, nick: str, req_id: int = 1) -> p.Welcome:
    welcome = roundtrip(dealer, p.encode(p.Hello(req_id=req_id, nick=nick)))
    assert isinstance(welcome, p.Welcome), welcome
    return welcome


@pytest.mark.broker_config(rate_limits={"chat": Rate(count=5, period_ms=250, burst=10)})
def test_a_flood_of_says_is_refused_with_retry_after_and_then_admitted(
    broker, raw_dealer, roundtrip, recv
):
    dealer = raw_dealer()
    _hello(dealer, roundtrip, "flooder")
    assert isinstance(roundtrip(dealer, p.encode(p.Join(req_id=2, room="lobby"))), p.Joined)
    n = 500
    for i in range(n):
        dealer.send_multipart(p.encode(p.Say(req_id=10 + i, room="lobby", text=f"spam {i}")))
    replies = _replies(dealer, recv, n)  # every request is answered: never a silent drop
    assert [r.req_id for r in replies] == list(range(10, 10 + n))
    posted = [r for r in replies if isinstance(r, p.Posted)]
    refused = [r for r in replies if isinstance(r, p.Error)]
    assert len(posted) + len(refused) == n
    assert 10 <= len(posted) < 20  # the burst, and what refilled while the flood went on
    assert all(r.code == p.ErrorCode.RATE_LIMITED for r in refused)
    assert all(1 <= r.retry_after_ms <= 50 for r in refused), {r.retry_after_ms for r in refused}
    assert "chat" in refused[0].reason
    assert broker.stats["rate_limited"] == len(refused)
    # waiting what the last refusal said is enough
    gevent.sleep(refused[-1].retry_after_ms / 1000)
    again = roundtrip(dealer, p.encode(p.Say(req_id=10 + n, room="lobby", text="at last")))
    assert isinstance(again, p.Posted), again
    # the refused SAYs were not applied: the room's seq counts the admitted ones
    assert again.seq == 1 + len(posted) + 1  # the join, the posted, this one


def test_another_client_is_served_while_one_floods(broker, connect, raw_dealer, roundtrip, recv):
    """The default limits: a flood from one nick costs the others nothing of their own
    buckets, and they are answered while the flood is still being read."""
    flooder = raw_dealer()
    _hello(flooder, roundtrip, "bot")
    roundtrip(flooder, p.encode(p.Join(req_id=2, room="lobby")))
    bob = connect("bob")
    bob.join("lobby")
    replies: list[p.Message] = []
    underway = gevent.event.Event()

    def send() -> None:
        for i in range(FLOOD):
            flooder.send_multipart(p.encode(p.Say(req_id=10 + i, room="lobby", text="spam")))

    def read() -> None:
        for _ in range(FLOOD):
            replies.append(recv(flooder, 30))
            if len(replies) == 1000:
                underway.set()

    sender, reader = gevent.spawn(send), gevent.spawn(read)
    try:
        assert underway.wait(30), "the flood did not start"
        for i in range(20):  # a person's paste: none refused, none waits
            assert bob.say("lobby", f"line {i}").seq > 0
        served_at = len(replies)
        gevent.joinall([sender, reader], timeout=60, raise_error=True)
    finally:
        gevent.killall([sender, reader])
    assert served_at < FLOOD, "bob was served only after the flood"
    assert len(replies) == FLOOD  # every flood request answered too
    refused = [r for r in replies if isinstance(r, p.Error)]
    assert all(r.code == p.ErrorCode.RATE_LIMITED and r.retry_after_ms > 0 for r in refused)
    burst = DEFAULT_RATE_LIMITS["chat"].burst
    assert burst <= FLOOD - len(refused) <= burst + 50  # the burst, and a few refills
    assert broker.stats["rate_limited"] == len(refused)


def test_welcome_tells_the_limits(make_broker, connect):
    limited = make_broker(rate_limits={"chat": Rate(10, 5000, 30), "hello": Rate(5, 10_000, 10)})
    limits = connect("alice", limited).welcome.limits
    assert {k: v for k, v in limits.items() if k.startswith("rate_")} == {
        "rate_chat_count": 10, "rate_chat_period_ms": 5000, "rate_chat_burst": 30,
        "rate_hello_count": 5, "rate_hello_period_ms": 10_000, "rate_hello_burst": 10,
    }
    lifted = make_broker(rate_limits=None, data_dir=limited.config.data_dir.parent / "other")
    assert not any(k.startswith("rate_") for k in connect("bob", lifted).welcome.limits)


def test_the_default_limits_are_told(broker, connect):
    limits = connect("alice").welcome.limits
    assert (limits["max_sessions"], limits["max_live_rooms"]) == (MAX_SESSIONS, MAX_LIVE_ROOMS)
    for name, rate in DEFAULT_RATE_LIMITS.items():
        assert limits[f"rate_{name}_count"] == rate.count
        assert limits[f"rate_{name}_period_ms"] == rate.period_ms
        assert limits[f"rate_{name}_burst"] == rate.burst


@pytest.mark.broker_config(rate_limits={"hello": Rate(count=1, period_ms=60_000, burst=2)})
def test_hello_attempts_from_one_address_are_limited(broker, raw_dealer, roundtrip):
    """HELLO is counted per peer address: a new connection (and a new key: keys cost
    nothing) from the same address shares the bucket."""
    dealer = raw_dealer()
    _hello(dealer, roundtrip, "a", 1)
    _hello(dealer, roundtrip, "b", 2)
    refused = roundtrip(dealer, p.encode(p.Hello(req_id=3, nick="c")))
    assert isinstance(refused, p.Error) and refused.code == p.ErrorCode.RATE_LIMITED
    assert 59_000 <= refused.retry_after_ms <= 60_000
    # the session it has goes on: "b" still holds it, and a limited class is not touched
    assert isinstance(roundtrip(dealer, p.encode(p.Join(req_id=4, room="lobby"))), p.Joined)
    assert broker.session_of("b") is not None and broker.session_of("c") is None
    # another connection with another key, from the same address: the same bucket
    again = roundtrip(raw_dealer(), p.encode(p.Hello(req_id=1, nick="d")))
    assert isinstance(again, p.Error) and again.code == p.ErrorCode.RATE_LIMITED


@pytest.mark.broker_config(rate_limits={"chat": Rate(count=1, period_ms=100, burst=2)})
def test_session_say_waits_out_rate_limited(broker, connect):
    alice = connect("alice")
    alice.join("lobby")
    seqs = [alice.say("lobby", f"line {i}").seq for i in range(6)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert broker.stats["rate_limited"] >= 3  # it was refused, and waited, and got through
    alice.rate_limit_wait_s = 0  # no waiting allowed: the refusal reaches the caller
    with pytest.raises(RateLimited) as info:
        for _ in range(5):
            alice.say("lobby", "now")
    assert info.value.code == p.ErrorCode.RATE_LIMITED and 1 <= info.value.retry_after_ms <= 100


@pytest.mark.timeout(300)
@pytest.mark.broker_config(rate_limits=None)
def test_100000_joins_and_leaves_of_distinct_rooms_leave_the_room_table_bounded(
    broker, raw_dealer, roundtrip, recv
):
    """Limits lifted (else the join bucket stops this at its burst): 100,000 JOIN+LEAVE pairs
    of distinct rooms, pipelined a window at a time, leave no room in memory; the store keeps
    their events."""
    dealer = raw_dealer()
    _hello(dealer, roundtrip, "mallory")
    assert broker.rooms is not None
    rooms, window, req_id, peak = 100_000, 1000, 10, 0
    with gevent.Timeout(240, AssertionError("100,000 JOIN/LEAVE took over 240 s")):
        for start in range(0, rooms, window):
            for n in range(start, start + window):
                dealer.send_multipart(p.encode(p.Join(req_id=req_id, room=f"r{n}", history=0)))
                dealer.send_multipart(p.encode(p.Leave(req_id=req_id + 1, room=f"r{n}")))
                req_id += 2
            replies = _replies(dealer, recv, 2 * window, timeout_s=60)
            assert all(not isinstance(r, p.Error) for r in replies), replies[:3]
            peak = max(peak, len(broker.rooms))
    assert peak <= 2 * window  # never more than what one window had in flight
    assert len(broker.rooms) == 0
    info = roundtrip(dealer, p.encode(p.Info(req_id=req_id, room=f"r{rooms - 1}")))
    assert isinstance(info, p.RoomInfo) and info.last_seq == 2


def test_says_and_infos_to_rooms_one_is_not_in_leave_nothing(broker, raw_dealer, roundtrip):
    dealer = raw_dealer()
    _hello(dealer, roundtrip, "mallory")
    assert broker.rooms is not None
    before = len(broker.rooms)
    for n in range(20):  # within the default chat and join bursts
        say = roundtrip(dealer, p.encode(p.Say(req_id=10 + 3 * n, room=f"x{n}", text="hi")))
        assert isinstance(say, p.Error) and say.code == p.ErrorCode.NOT_MEMBER
        info = roundtrip(dealer, p.encode(p.Info(req_id=11 + 3 * n, room=f"y{n}")))
        assert isinstance(info, p.RoomInfo)
        hist = roundtrip(dealer, p.encode(p.History(req_id=12 + 3 * n, room=f"z{n}",
                                                    after_seq=0, limit=1)))
        assert isinstance(hist, p.Error) and hist.code == p.ErrorCode.NOT_MEMBER
    assert len(broker.rooms) == before


def test_an_error_without_retry_after_ms_still_decodes():
    """An ERROR from a broker older than RATE_LIMITED: the field defaults to 0; a new one
    always carries it."""
    body = msgpack.packb({"req_id": 7, "code": 404, "reason": "no such file"})
    error = p.decode([p.HEADER, b"ERROR", body])
    assert error == p.Error(req_id=7, code=404, reason="no such file", retry_after_ms=0)
    frames = p.encode(p.Error(req_id=7, code=420, reason="slow down", retry_after_ms=250))
    assert msgpack.unpackb(frames[2])["retry_after_ms"] == 250
    assert p.decode(frames).retry_after_ms == 250


def test_the_broker_command_checks_its_rate_limit_options():
    from zmeet_cli.broker import _rate_limits, broker

    assert _rate_limits(()) == DEFAULT_RATE_LIMITS
    changed = _rate_limits(("chat=20/10:40", "games=off"))
    assert changed["chat"] == Rate(20, 10_000, 40) and "games" not in changed
    runner = CliRunner()
    for bad in ("chat", "chitchat=1/1", "chat=fast"):
        result = runner.invoke(broker, ["--rate-limit", bad, "--bind", "tcp://127.0.0.1:*"])
        assert result.exit_code == 2 and "--rate-limit" in result.output, result.output


@pytest.mark.timeout(120)
def test_zmeet_say_waits_out_the_limit_and_fails_clearly_past_its_bound(tmp_path):
    """A real ``zmeet broker`` and ``zmeet say``: the nick's chat bucket outlives its
    sessions, so a second ``say`` at once is refused and waits its turn (exit 0); when the
    wait would be longer than the session's bound, it fails with the broker's reason.
    ``zmeet bench`` refuses to measure a broker whose chat limit it would hit."""
    from proc import ZMEET, Proc, start_broker

    broker, endpoints = start_broker(tmp_path / "data", "--rate-limit", "chat=1/3:1")
    slow, slow_endpoints = start_broker(tmp_path / "slow", "--rate-limit", "chat=1/600:1")
    try:
        def say(lanes: dict, text: str) -> Proc:
            address = lanes.get("entry", lanes["control"])  # the broker's address
            return Proc([*ZMEET, "say", "lobby", text, "--nick", "alice", "--json",
                         "--broker", address])

        assert say(endpoints, "one").wait(timeout_s=30) == 0
        second = say(endpoints, "two")
        assert second.wait(timeout_s=30) == 0, second.stderr
        assert json.loads(second.stdout[-1])["type"] == "posted"
        assert say(slow_endpoints, "one").wait(timeout_s=30) == 0
        refused = say(slow_endpoints, "two")
        assert refused.wait(timeout_s=30) == 1
        assert "rate limited" in "\n".join(refused.stderr)
        # a benchmark of a limited broker would measure the limit: it says so and fails
        bench = Proc([*ZMEET, "bench", "--count", "5", "--messages", "50", "--broker",
                      endpoints.get("entry", endpoints["control"])])
        assert bench.wait(timeout_s=30) == 1
        assert "--no-rate-limits" in "\n".join(bench.stderr)
    finally:
        slow.stop()
        broker.stop()
