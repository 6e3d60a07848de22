"""Flood limits: a second client's round trip while one client floods SAYs at full speed.

A ``zmeet broker`` subprocess with its default flood limits (DEFAULT_RATE_LIMITS, as
``zmeet broker`` runs). A probe client (plain pyzmq, this process) measures its round trips,
PING to PONG on the control lane (every request of every client goes through the one control
loop) and SAY to its own chat event on the events lane (25 a phase: within its chat burst),
first quiet, then while a flooder (another process, plain pyzmq) pipelines SAYs as fast as the
broker takes them, each refused RATE_LIMITED past its burst. The same flood against a broker
with the limits lifted (``--no-rate-limits``) is the comparison: what the limits save.

The goal (issue 12): the probe's round trip during the flood within 2x of its quiet value.
Reported, never asserted.

    python -m benchmarks.flood [--seconds S] [--smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import zmq

from zmeet import protocol as p

from .common import broker_process, histogram, percentiles_ms, proc_cpu_s, save, table

SAY_SAMPLES = 25
"""SAY round trips per phase: within the default chat burst (30), so the probe itself is
never refused."""

PING_INTERVAL_S = 0.001
"""Pause between the probe's PINGs: it samples the broker, it does not load it."""

WINDOW = 1000
"""The flooder's SAYs in flight at most (the DEALER's high-water mark is 1000 too)."""


def flooder(control: str, ready, stop, result) -> None:
    """HELLO, JOIN ``bench``, then SAYs as fast as the broker takes them until ``stop``;
    sends ``(sent, posted, refused, seconds)`` on ``result``."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(control)
    dealer.send_multipart(p.encode(p.Hello(req_id=1, nick="flooder")))
    assert isinstance(p.decode(dealer.recv_multipart()), p.Welcome)
    dealer.send_multipart(p.encode(p.Join(req_id=2, room="bench", history=0)))
    assert isinstance(p.decode(dealer.recv_multipart()), p.Joined)
    req_id, sent, posted, refused = 10, 0, 0, 0
    told = False
    t0 = time.perf_counter()
    while not stop.is_set():
        while sent - posted - refused < WINDOW:
            try:
                dealer.send_multipart(p.encode(p.Say(req_id=req_id, room="bench",
                                                     text="flood " * 8)), zmq.NOBLOCK)
            except zmq.Again:
                break
            req_id += 1
            sent += 1
        if not dealer.poll(10):
            continue
        while True:
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[1] == b"ERROR":
                refused += 1
            else:
                posted += 1
        if not told and refused + posted >= 5 * WINDOW:
            ready.set()  # flooding in earnest
            told = True
    ready.set()
    result.send((sent, posted, refused, time.perf_counter() - t0))
    ctx.destroy(linger=0)


class Probe:
    """The second client: a DEALER and a SUB on room ``probe``, under ``nick``."""

    def __init__(self, ctx: zmq.Context, endpoints: dict, nick: str) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(endpoints["control"])
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(endpoints["events"])
        self.sub.subscribe(p.room_topic("probe"))
        self.sub.subscribe(p.HEARTBEAT_TOPIC)
        self.ids = 0
        reply = self.call(p.Hello, nick=nick)
        assert isinstance(reply, p.Welcome), reply
        self.limits = reply.limits
        # the first heartbeat proves the SUB connection is up, then JOIN
        while not isinstance(p.decode_published(self.sub.recv_multipart())[1], p.Heartbeat):
            pass
        assert isinstance(self.call(p.Join, room="probe", history=0), p.Joined)

    def call(self, cls, **fields) -> p.Message:
        self.ids += 1
        self.dealer.send_multipart(p.encode(cls(req_id=self.ids, **fields)))
        return p.decode(self.dealer.recv_multipart())

    def ping_rtt(self, seconds: float) -> dict:
        h = histogram()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            reply = self.call(p.Ping)
            h.record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
            assert isinstance(reply, p.Pong), reply
            time.sleep(PING_INTERVAL_S)
        return percentiles_ms(h)

    def say_rtt(self, count: int) -> dict:
        h = histogram()
        refused = 0
        for i in range(count):
            t0 = time.perf_counter()
            self.ids += 1
            self.dealer.send_multipart(p.encode(p.Say(req_id=self.ids, room="probe",
                                                      text=f"probe {i}")))
            while True:
                _, msg = p.decode_published(self.sub.recv_multipart())
                if isinstance(msg, p.RoomEvent) and msg.type == "chat":
                    break
            h.record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
            if isinstance(p.decode(self.dealer.recv_multipart()), p.Error):
                refused += 1
            time.sleep(0.02)
        return {**percentiles_ms(h), "refused": refused}

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.sub.close(linger=0)


def phase(ctx, endpoints, broker_pid: int, name: str, seconds: float, flood: bool) -> dict:
    """The probe's round trips under nick ``name``, with a flooder running if ``flood``;
    the broker's CPU meanwhile (``broker_cpu_pct`` of one core)."""
    row: dict = {"phase": name}
    proc = None
    if flood:
        ready, stop = multiprocessing.Event(), multiprocessing.Event()
        here, there = multiprocessing.Pipe()
        proc = multiprocessing.Process(target=flooder,
                                       args=(endpoints["control"], ready, stop, there))
        proc.start()
        if not ready.wait(60):
            raise RuntimeError("the flooder did not start")
    probe = Probe(ctx, endpoints, name)
    cpu0, t0 = proc_cpu_s(broker_pid), time.perf_counter()
    try:
        ping = probe.ping_rtt(seconds)
        say = probe.say_rtt(SAY_SAMPLES)
    finally:
        row["broker_cpu_pct"] = 100 * (proc_cpu_s(broker_pid) - cpu0) / (time.perf_counter() - t0)
        probe.close()
        if proc is not None:
            stop.set()
            sent, posted, refused, flood_s = here.recv()
            proc.join(timeout=10)
            row.update(flood_sent=sent, flood_posted=posted, flood_refused=refused,
                       flood_replies_per_s=(posted + refused) / flood_s)
    row.update({f"ping_{k}": v for k, v in ping.items()})
    row.update({f"say_{k}": v for k, v in say.items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="PING sampling per phase")
    parser.add_argument("--smoke", action="store_true", help="short run (3 s a phase)")
    args = parser.parse_args()
    seconds = 3.0 if args.smoke else args.seconds
    ctx = zmq.Context()
    rows = []
    with broker_process(rate_limits=True) as (endpoints, proc):
        print("broker with its default rate limits (DEFAULT_RATE_LIMITS)", flush=True)
        for name, flood in (("quiet", False), ("flood", True)):
            rows.append({"limits": "on", **phase(ctx, endpoints, proc.pid, name, seconds,
                                                 flood)})
    with broker_process() as (endpoints, proc):
        for name, flood in (("quiet2", False), ("flood2", True)):
            rows.append({"limits": "lifted", **phase(ctx, endpoints, proc.pid, name, seconds,
                                                     flood)})
    ctx.destroy(linger=0)
    for quiet, flood in ((rows[0], rows[1]), (rows[2], rows[3])):
        for k in ("ping_p50_ms", "ping_p99_ms", "say_p50_ms", "say_p99_ms"):
            flood[f"{k.removesuffix('_ms')}_x"] = flood[k] / quiet[k]
    print(table(rows, ["limits", "phase", "ping_p50_ms", "ping_p99_ms", "ping_count",
                       "say_p50_ms", "say_p99_ms", "say_refused", "flood_sent",
                       "flood_posted", "flood_refused", "flood_replies_per_s",
                       "broker_cpu_pct"]))
    print(table(rows[1::2], ["limits", "phase", "ping_p50_x", "ping_p99_x", "say_p50_x",
                             "say_p99_x"]))
    ratio = rows[1]["ping_p99_x"]
    print(f"with limits on, the probe's PING p50 is {rows[1]['ping_p50_x']:.2f}x and p99 "
          f"{ratio:.2f}x its quiet value during the flood (goal: within 2x)")
    print(f"results: {save('flood', {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
