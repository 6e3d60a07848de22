"""``zmeet bench``: measure a running broker from this machine (round trip and throughput).

The composition root (:mod:`zmeet_cli.main`) adds :func:`bench` to its group. It uses the
real client (:class:`zmeet.client.Session`), so the figures are what a user of this machine
gets from that broker over this network, in a room of its own.
"""

from __future__ import annotations

import json
import secrets
import sys
import time

import click
import gevent
import gevent.pool

from zmeet.client import Session
from zmeet.errors import ZmeetError
from zmeet.protocol import RoomEvent

from .common import _open_session, broker_option, timeout_option


def _percentile_ms(values_s: list[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100, nearest rank) of ``values_s``, in milliseconds."""
    if not values_s:
        return float("nan")
    ordered = sorted(values_s)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank] * 1000


def _round_trips(session: Session, room: str, count: int, timeout_s: float) -> dict:
    """SAY ``count`` times one after the other; time POSTED and the chat event coming back."""
    posted_s, event_s = [], []
    lost = 0
    for i in range(count):
        text = f"bench rtt {i}"
        t0 = time.perf_counter()
        session.say(room, text)
        posted_s.append(time.perf_counter() - t0)
        try:
            with gevent.Timeout(timeout_s):
                while True:
                    event = session.events.get()
                    if (isinstance(event, RoomEvent) and event.type == "chat"
                            and event.sender == session.nick and event.text == text):
                        break
        except gevent.Timeout:
            lost += 1
            continue
        event_s.append(time.perf_counter() - t0)
    return {"posted": posted_s, "event": event_s, "lost": lost}


def _throughput(session: Session, room: str, count: int, concurrency: int,
                timeout_s: float) -> dict:
    """SAY ``count`` messages with ``concurrency`` requests in flight; count them coming back."""
    received = 0
    last = [0.0]
    prefix = "bench tput "

    def receive() -> None:
        nonlocal received
        while received < count:
            event = session.events.get()
            if isinstance(event, RoomEvent) and event.type == "chat" and \
                    event.text.startswith(prefix):
                received += 1
                last[0] = time.perf_counter()

    reader = gevent.spawn(receive)
    pool = gevent.pool.Pool(concurrency)
    t0 = time.perf_counter()
    for i in range(count):
        pool.spawn(session.say, room, f"{prefix}{i}")
    pool.join(raise_error=True)
    acked_s = time.perf_counter() - t0
    reader.join(timeout=timeout_s)
    reader.kill()
    delivered_s = (last[0] or time.perf_counter()) - t0
    return {"acked_per_s": count / acked_s, "delivered_per_s": received / delivered_s,
            "lost": count - received}


@click.command()
@broker_option
@click.option("--nick", default=None, help="Nick to measure as [bench-XXXX].")
@click.option("--room", default=None, help="Room to measure in [a new bench-XXXXXX].")
@click.option("--count", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Round trips, one after the other.")
@click.option("--messages", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="Messages for the throughput run.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=32, show_default=True,
              help="SAY requests in flight during the throughput run.")
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_context
def bench(ctx, broker, nick, room, count, messages, concurrency, connect_timeout_s,
          as_json) -> None:
    """Measure the broker at --broker from here: chat round trip and throughput.

    Round trip: SAY, then POSTED (stored) and the chat event back on the events lane, one
    message at a time. Throughput: --messages SAYs with --concurrency in flight; acknowledged
    (POSTED) and delivered (received back) messages per second. The benchmark's messages stay
    in the broker's history of its room.
    """
    nick = nick or f"bench-{secrets.token_hex(2)}"
    room = room or f"bench-{secrets.token_hex(3)}"
    session = _open_session(broker, nick, connect_timeout_s)
    limits = session.welcome.limits if session.welcome is not None else {}
    if "rate_chat_burst" in limits and count + messages + 1 > limits["rate_chat_burst"]:
        session.close()
        click.echo(f"zmeet: error: this broker limits chat to {limits['rate_chat_count']} "
                   f"messages per {limits['rate_chat_period_ms'] / 1000:g} s per nick "
                   f"({limits['rate_chat_burst']} at once): a benchmark would measure that "
                   "limit, not the broker. Measure a broker run with `zmeet broker "
                   "--no-rate-limits`.", err=True)
        sys.exit(1)
    try:
        session.join(room, history=0)
        # warm-up: an event published before the new SUB subscription reaches the broker is
        # fetched at the next heartbeat (the slow joiner); let that pass before timing
        _round_trips(session, room, 1, connect_timeout_s + 2 * session.heartbeat_interval_s)
        rtt = _round_trips(session, room, count, connect_timeout_s)
        tput = _throughput(session, room, messages, concurrency, connect_timeout_s)
        session.leave(room)
    except ZmeetError as exc:
        session.close()
        click.echo(f"zmeet: error: {exc}", err=True)
        sys.exit(1)
    session.close()
    result = {
        "broker": broker, "room": room, "count": count, "messages": messages,
        "concurrency": concurrency,
        "rtt_p50_ms": _percentile_ms(rtt["event"], 50),
        "rtt_p99_ms": _percentile_ms(rtt["event"], 99),
        "rtt_max_ms": _percentile_ms(rtt["event"], 100),
        "posted_p50_ms": _percentile_ms(rtt["posted"], 50),
        "posted_p99_ms": _percentile_ms(rtt["posted"], 99),
        "acked_per_s": tput["acked_per_s"], "delivered_per_s": tput["delivered_per_s"],
        "lost": rtt["lost"] + tput["lost"],
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        rows = [
            ("round trip p50 / p99 / max (SAY to own event)",
             f"{result['rtt_p50_ms']:.2f} / {result['rtt_p99_ms']:.2f} / "
             f"{result['rtt_max_ms']:.2f} ms"),
            ("SAY to POSTED p50 / p99",
             f"{result['posted_p50_ms']:.2f} / {result['posted_p99_ms']:.2f} ms"),
            (f"throughput, {concurrency} in flight: acknowledged",
             f"{result['acked_per_s']:,.0f} msg/s"),
            ("throughput: delivered back", f"{result['delivered_per_s']:,.0f} msg/s"),
            ("lost", str(result["lost"])),
        ]
        width = max(len(k) for k, _ in rows)
        click.echo(f"zmeet bench: {broker}, room {room}, {count} round trips, "
                   f"{messages} messages")
        for key, value in rows:
            click.echo(f"  {key.ljust(width)}  {value}")
    sys.exit(1 if result["lost"] else 0)
