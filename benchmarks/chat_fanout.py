"""Chat fan-out: one sender to a room of 1, 10 and 100 members, zmeet beside its baselines.

Systems, each measured in the same run with the same sender, member and message code paths:

- ``zmeet``: a ``zmeet broker`` subprocess. The sender and every member are sessions (HELLO,
  JOIN) speaking the zmeet protocol over plain pyzmq (DEALER + SUB, as ``chat_rtt.ZmeetClient``);
  members PING every heartbeat interval as ``Session`` does, so none is timed out.
- ``bare``: a ROUTER to PUB relay in plain blocking pyzmq in a subprocess: the limit for a
  Python relay on this machine (no decoding, no store, no sequencing).
- ``redis``: ``redis-server`` from the system packages (started and stopped here, no
  persistence) with redis-py clients: PUBLISH from the sender, one SUBSCRIBE connection per
  member.

Members are spread over ``--procs`` member processes (each holds ``members/procs`` sockets
and waits on all of them with one poller), so no single Python process has to receive
``members x rate`` messages; the sender is its own process (the main one).

Phases, per system and room size:

1. probe: the sender sends probes until every member has received one (proves every
   subscription is live; nothing is timed).
2. latency: ``--latency-count`` messages at a fixed offered rate ``--rate``; each message
   carries its *scheduled* send time (``time.monotonic_ns``, one clock system-wide), and each
   member records receive time minus scheduled time in an HdrHistogram, so a stall of the
   system delays every later message and is not hidden (coordinated omission).
3. throughput: ``--burst`` messages as fast as the system delivers them to every member, with
   at most ``--window`` messages sent and not yet received by the slowest member (flow control
   through shared memory, the same for all three systems, so nothing is dropped at a
   high-water mark). Figures: messages per second delivered to every member, and deliveries
   (messages x members) per second.

Every member must receive every message of phases 2 and 3; ``lost`` counts those that did not.

    python -m benchmarks.chat_fanout [--members 1,10,100] [--systems zmeet,bare,redis]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import zmq

from zmeet import protocol as p
from zmeet.protocol.limits import HEARTBEAT_INTERVAL_MS

from .common import (
    RESULTS,
    broker_process,
    distribution_ms,
    histogram,
    percentiles_ms,
    proc_cpu_s,
    profile_summary,
    py_spy,
    raise_fd_limit,
    redis_server,
    save,
    table,
)

ROOM = "bench"
CHANNEL = "room/bench/"  # the bare relay's topic and the Redis channel
PING_INTERVAL_S = HEARTBEAT_INTERVAL_MS / 1000
_MSG = re.compile(rb"([PLB])\|(\d+)\|(\d+)\|")
PHASES = {b"P": 0, b"L": 1, b"B": 2}
SYSTEMS = ("zmeet", "bare", "redis")


def text_of(phase: str, i: int, sched_ns: int) -> str:
    """The chat text: phase letter, index, scheduled send time, padding to ~64 characters."""
    return f"{phase}|{i}|{sched_ns}|".ljust(64, ".")


# --- servers ---------------------------------------------------------------------------------


def bare_relay(ready) -> None:
    """ROUTER in, PUB out, plain blocking pyzmq; ``[b"STOP"]`` ends it."""
    ctx = zmq.Context()
    router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    cport = router.bind_to_random_port("tcp://127.0.0.1")
    eport = pub.bind_to_random_port("tcp://127.0.0.1")
    ready.send((cport, eport))
    topic = CHANNEL.encode()
    while True:
        frames = router.recv_multipart()
        if frames[1] == b"STOP":
            break
        pub.send_multipart([topic, *frames[1:]])
    ctx.destroy(linger=0)


@contextmanager
def server(system: str):
    """Start ``system``'s server; yield ``(address dict, pid)``."""
    if system == "zmeet":
        with broker_process() as (endpoints, proc):
            yield endpoints, proc.pid
    elif system == "bare":
        here, there = mp.Pipe()
        relay = mp.get_context("spawn").Process(target=bare_relay, args=(there,), daemon=True)
        relay.start()
        cport, eport = here.recv()
        try:
            yield {"control": f"tcp://127.0.0.1:{cport}",
                   "events": f"tcp://127.0.0.1:{eport}"}, relay.pid
        finally:
            ctx = zmq.Context()
            s = ctx.socket(zmq.DEALER)
            s.connect(f"tcp://127.0.0.1:{cport}")
            s.send(b"STOP")
            relay.join(timeout=5)
            if relay.is_alive():
                relay.terminate()
            ctx.destroy(linger=0)
    elif system == "redis":
        with redis_server() as (port, proc):
            yield {"port": port}, proc.pid
    else:
        raise ValueError(system)


# --- members ---------------------------------------------------------------------------------


class ZmqMember:
    """One member on the zmeet broker or the bare relay: a SUB (and for zmeet a session)."""

    def __init__(self, ctx, system: str, addr: dict, nick: str) -> None:
        self.dealer = None
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.ids = 0
        if system == "zmeet":
            self.dealer = ctx.socket(zmq.DEALER)
            self.dealer.setsockopt(zmq.LINGER, 0)
            self.dealer.connect(addr["control"])
            self.sub.subscribe(p.room_topic(ROOM))
            self.call(p.Hello(req_id=self._id(), nick=nick, client="bench"))
            self.call(p.Join(req_id=self._id(), room=ROOM, history=0))
        else:
            self.sub.subscribe(CHANNEL.encode())
        self.sub.connect(addr["events"])

    def _id(self) -> int:
        self.ids += 1
        return self.ids

    def call(self, msg) -> p.Message:
        self.dealer.send_multipart(p.encode(msg))
        if not self.dealer.poll(10_000):
            raise RuntimeError("the broker did not answer")
        reply = p.decode(self.dealer.recv_multipart())
        if isinstance(reply, p.Error):
            raise RuntimeError(f"broker refused: {reply.reason}")
        return reply

    def ping(self) -> None:
        if self.dealer is not None:
            self.dealer.send_multipart(p.encode(p.Ping(req_id=self._id())), zmq.NOBLOCK)

    def drain_replies(self) -> int:
        """Read PONGs; returns how many ERROR replies came (a session the broker ended)."""
        errors = 0
        while self.dealer is not None and self.dealer.poll(0):
            if isinstance(p.decode(self.dealer.recv_multipart()), p.Error):
                errors += 1
        return errors

    def fileno(self):
        return self.sub

    def drain(self, out: list) -> None:
        sub = self.sub
        while True:
            try:
                out.append(sub.recv_multipart(zmq.NOBLOCK)[-1])
            except zmq.Again:
                return

    def close(self) -> None:
        if self.dealer is not None:
            try:
                self.call(p.Bye(req_id=self._id()))
            except RuntimeError:
                pass
            self.dealer.close(0)
        self.sub.close(0)


class RedisMember:
    """One member on Redis: a redis-py PubSub connection SUBSCRIBEd to the room's channel."""

    def __init__(self, port: int) -> None:
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.ps = self.client.pubsub(ignore_subscribe_messages=True)
        self.ps.subscribe(CHANNEL)
        while self.ps.get_message(timeout=1.0) is None and not self.ps.subscribed:
            pass

    def fileno(self) -> int:
        return self.ps.connection._sock.fileno()

    def drain(self, out: list) -> None:
        get = self.ps.get_message
        while True:
            m = get(timeout=0.0)
            if m is None:
                return
            if m["type"] == "message":
                out.append(m["data"])

    def ping(self) -> None:
        pass

    def drain_replies(self) -> int:
        return 0

    def close(self) -> None:
        self.ps.close()
        self.client.close()


def member_process(system: str, addr: dict, proc: int, first: int, count: int, expect: dict,
                   counts, ready, stop, results) -> None:
    """Hold members ``first .. first+count-1``; publish per-phase minimum counts in ``counts``
    (``[phase * nprocs + proc]``); at ``stop``, put a summary on ``results``."""
    from hdrh.histogram import HdrHistogram

    raise_fd_limit()
    nprocs = len(counts) // 3
    ctx = zmq.Context()
    if system == "redis":
        members = [RedisMember(addr["port"]) for _ in range(count)]
    else:
        members = [ZmqMember(ctx, system, addr, f"m{first + i}") for i in range(count)]
    poller = zmq.Poller()
    for m in members:
        poller.register(m.fileno(), zmq.POLLIN)
    index = {(m.fileno() if system == "redis" else m.sub): m for m in members}
    seen = {id(m): [0, 0, 0] for m in members}
    h = histogram()
    session_errors = 0
    ready.release()
    next_ping = time.monotonic() + PING_INTERVAL_S
    buf: list[bytes] = []
    match = _MSG.search
    phase_max = {0: None, 1: expect["latency"], 2: expect["burst"]}
    while not stop.is_set():
        events = poller.poll(100)
        for sock, _ in events:
            m = index[sock]
            m.drain(buf)
            now_ns = time.monotonic_ns()  # after the drain: every message in buf is here
            c = seen[id(m)]
            for data in buf:
                g = match(data)
                if g is None:
                    continue
                ph = PHASES[g[1]]
                c[ph] += 1
                if ph == 1:
                    h.record_value(max(1, (now_ns - int(g[3])) // 1000))
            buf.clear()
        for ph in (0, 1, 2):
            low = min(s[ph] for s in seen.values())
            if phase_max[ph] is not None:
                low = min(low, phase_max[ph])
            counts[ph * nprocs + proc] = low
        if time.monotonic() >= next_ping:
            next_ping += PING_INTERVAL_S
            for m in members:
                session_errors += m.drain_replies()
                m.ping()
    for m in members:
        session_errors += m.drain_replies()
    lat_counts = [s[1] for s in seen.values()]
    burst_counts = [s[2] for s in seen.values()]
    results.put({
        "hist": HdrHistogram.encode(h),
        "latency_received": sum(lat_counts),
        "burst_received": sum(burst_counts),
        "latency_min": min(lat_counts), "burst_min": min(burst_counts),
        "extra": sum(max(0, c - expect["latency"]) for c in lat_counts)
        + sum(max(0, c - expect["burst"]) for c in burst_counts),
        "session_errors": session_errors,
    })
    for m in members:
        m.close()
    ctx.destroy(linger=0)


# --- sender ----------------------------------------------------------------------------------


class ZmqSender:
    def __init__(self, ctx, system: str, addr: dict) -> None:
        self.zmeet = system == "zmeet"
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.SNDHWM, 0)
        self.dealer.connect(addr["control"])
        self.ids = 0
        self.errors = 0
        if self.zmeet:
            for msg in (p.Hello(req_id=1, nick="sender", client="bench"),
                        p.Join(req_id=2, room=ROOM, history=0)):
                self.dealer.send_multipart(p.encode(msg))
                if not self.dealer.poll(10_000):
                    raise RuntimeError("the broker did not answer")
                self.dealer.recv_multipart()
            self.ids = 2

    def send(self, texts: list[str]) -> None:
        d = self.dealer
        if self.zmeet:
            for t in texts:
                self.ids += 1
                d.send_multipart(p.encode(p.Say(req_id=self.ids, room=ROOM, text=t)))
            self.drain()
        else:
            for t in texts:
                d.send(t.encode())

    def drain(self) -> None:
        """Read the POSTED replies; count ERRORs (a message the broker refused is lost)."""
        d = self.dealer
        while True:
            try:
                frames = d.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frames[1] == b"ERROR":
                self.errors += 1

    def close(self) -> None:
        self.dealer.close(0)


class RedisSender:
    def __init__(self, port: int) -> None:
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port)
        self.errors = 0

    def send(self, texts: list[str]) -> None:
        if len(texts) == 1:
            self.client.publish(CHANNEL, texts[0])
            return
        pipe = self.client.pipeline(transaction=False)
        for t in texts:
            pipe.publish(CHANNEL, t)
        pipe.execute()

    def drain(self) -> None:
        pass

    def close(self) -> None:
        self.client.close()


def _cpu(server_pid: int, workers: list) -> tuple[float, float, float]:
    """CPU seconds so far of the server, this (sender) process and all member processes."""
    return (proc_cpu_s(server_pid), time.process_time(),
            sum(proc_cpu_s(w.pid) for w in workers))


def _wait_counts(counts, phase: int, nprocs: int, target: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        low = min(counts[phase * nprocs:(phase + 1) * nprocs])
        if low >= target or time.monotonic() > deadline:
            return low
        time.sleep(0.002)


def run_one(system: str, members: int, *, procs: int, rate: float, latency_count: int,
            burst: int, window: int, profile: Path | None = None) -> dict:
    """One system and room size: the row of figures (see the module docstring)."""
    from hdrh.histogram import HdrHistogram

    raise_fd_limit()
    nprocs = max(1, min(procs, members))
    per = [members // nprocs + (1 if i < members % nprocs else 0) for i in range(nprocs)]
    spawn = mp.get_context("spawn")
    counts = spawn.Array("q", 3 * nprocs, lock=False)
    ready = spawn.Semaphore(0)
    stop = spawn.Event()
    results = spawn.Queue()
    expect = {"latency": latency_count, "burst": burst}
    row: dict = {"system": system, "members": members, "member_procs": nprocs,
                 "offered_rate": rate}
    with server(system) as (addr, server_pid):
        workers = []
        first = 0
        for i, n in enumerate(per):
            w = spawn.Process(target=member_process,
                              args=(system, addr, i, first, n, expect, counts, ready, stop,
                                    results), daemon=True)
            w.start()
            workers.append(w)
            first += n
        for _ in workers:
            if not ready.acquire(timeout=120):
                raise RuntimeError(f"{system}: member processes did not start")
        ctx = zmq.Context()
        sender = RedisSender(addr["port"]) if system == "redis" else ZmqSender(ctx, system, addr)
        try:
            # 1. probe until every member has one
            i = 0
            deadline = time.monotonic() + 60
            while min(counts[0:nprocs]) < 1:
                sender.send([text_of("P", i, 0)])
                i += 1
                time.sleep(0.02)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system}: members never received a probe")
            time.sleep(0.2)  # let the last probes land before timing
            # 2. latency at a fixed offered rate, measured from the scheduled send time
            interval_ns = int(1e9 / rate)
            t0 = time.monotonic_ns() + 10_000_000
            late = 0
            for i in range(latency_count):
                sched = t0 + i * interval_ns
                wait_ns = sched - time.monotonic_ns()
                if wait_ns > 0:
                    time.sleep(wait_ns / 1e9)
                elif wait_ns < -1_000_000:
                    late += 1
                sender.send([text_of("L", i, sched)])
            got = _wait_counts(counts, 1, nprocs, latency_count, 30)
            row["sender_late"] = late
            # 3. throughput: as fast as the slowest member takes them, window-limited
            profiler = py_spy(server_pid, profile) if profile else nullcontext(False)
            profiling = profiler.__enter__()
            cpu0 = _cpu(server_pid, workers)
            sent = 0
            t_start = time.perf_counter()
            deadline = time.monotonic() + max(60, burst / 200)
            while sent < burst:
                low = min(counts[2 * nprocs:3 * nprocs])
                room = min(low + window - sent, burst - sent, 100)
                if room >= 10 or (room > 0 and sent + room == burst):
                    now = time.monotonic_ns()
                    sender.send([text_of("B", sent + k, now) for k in range(room)])
                    sent += room
                else:
                    sender.drain()
                    time.sleep(0.0002)
                if time.monotonic() > deadline:
                    break
            got = _wait_counts(counts, 2, nprocs, burst, 30)
            elapsed = time.perf_counter() - t_start
            cpu1 = _cpu(server_pid, workers)
            for key, a, b in zip(("server_cpu_pct", "sender_cpu_pct", "members_cpu_pct"),
                                 cpu0, cpu1, strict=True):
                row[key] = 100 * (b - a) / elapsed
            profiler.__exit__(None, None, None)
            if profiling:
                row["profile"] = profile_summary(profile)
                row["profile_file"] = profile.name
            sender.drain()
        finally:
            stop.set()
            summaries = [results.get(timeout=60) for _ in workers]
            for w in workers:
                w.join(timeout=10)
            sender.close()
            ctx.destroy(linger=0)
    h = histogram()
    for s in summaries:
        h.add(HdrHistogram.decode(s["hist"]))
    lat_lost = latency_count * members - sum(s["latency_received"] for s in summaries)
    burst_lost = burst * members - sum(s["burst_received"] for s in summaries)
    msgs_per_s = min(got, burst) / elapsed
    row.update({
        **percentiles_ms(h),
        "msgs_per_s": msgs_per_s,
        "deliveries_per_s": msgs_per_s * members,
        "lost": lat_lost + burst_lost,
        "duplicates": sum(s["extra"] for s in summaries),
        "refused": sender.errors,
        "session_errors": sum(s["session_errors"] for s in summaries),
        "distribution": distribution_ms(h),
    })
    return row


def run(members_list=(1, 10, 100), systems=SYSTEMS, *, procs: int = 2, rate: float = 500,
        latency_count: int = 2500, burst: int = 20000, window: int = 500,
        profile_stem: str | None = None, log=print) -> list[dict]:
    """Every system at every room size; with ``profile_stem``, zmeet's broker is sampled by
    py-spy during each throughput phase (``results/<stem>-broker-x<members>.txt``)."""
    rows = []
    for members in members_list:
        for system in systems:
            t = time.monotonic()
            try:
                prof = (RESULTS / f"{profile_stem}-broker-x{members}.txt"
                        if profile_stem and system == "zmeet" else None)
                row = run_one(system, members, procs=procs, rate=rate,
                              latency_count=latency_count, burst=burst, window=window,
                              profile=prof)
            except Exception as exc:  # a failed system is a row that says so
                row = {"system": system, "members": members, "error": repr(exc)}
            log(f"chat {system:>5} x{members:<3}: {_brief(row)} ({time.monotonic() - t:.0f} s)")
            rows.append(row)
    for row in rows:
        if "error" in row:
            continue
        same = {r["system"]: r for r in rows if r["members"] == row["members"] and "error" not in r}
        for base in ("bare", "redis"):
            if base in same and base != row["system"]:
                row[f"vs_{base}_throughput"] = row["msgs_per_s"] / same[base]["msgs_per_s"]
    return rows


def _brief(row: dict) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    return (f"{row['msgs_per_s']:,.0f} msg/s, p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms, p99.9 {row['p99_9_ms']:.2f} ms, lost {row['lost']}")


COLUMNS = ["members", "system", "msgs_per_s", "deliveries_per_s", "offered_rate", "p50_ms",
           "p99_ms", "p99_9_ms", "max_ms", "lost", "vs_bare_throughput", "vs_redis_throughput",
           "server_cpu_pct", "sender_cpu_pct", "members_cpu_pct"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1,10,100", help="room sizes, comma-separated")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--procs", type=int, default=2, help="member processes per run")
    parser.add_argument("--rate", type=float, default=500, help="offered msg/s, latency phase")
    parser.add_argument("--latency-count", type=int, default=2500)
    parser.add_argument("--burst", type=int, default=20000, help="messages, throughput phase")
    parser.add_argument("--window", type=int, default=500, help="messages in flight at most")
    parser.add_argument("--profile", action="store_true",
                        help="sample zmeet's broker with py-spy during the throughput phase")
    args = parser.parse_args()
    rows = run([int(x) for x in args.members.split(",")], args.systems.split(","),
               procs=args.procs, rate=args.rate, latency_count=args.latency_count,
               burst=args.burst, window=args.window,
               profile_stem=time.strftime("%Y-%m-%d-%H%M%S") if args.profile else None)
    print(table(rows, COLUMNS))
    for row in rows:
        for kind in ("own", "inclusive"):
            if row.get("profile"):
                print(f"\nbroker profile, x{row['members']}, {kind} samples "
                      f"(of {row['profile']['samples']}):")
                print(table([{"function": f, "percent": v} for f, v in row["profile"][kind]],
                            ["function", "percent"]))
    print(f"results: {save('chat-fanout', {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
