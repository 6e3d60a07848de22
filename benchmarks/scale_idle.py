"""Scale: the broker's CPU and memory with 1,000 connected idle clients, heartbeats on.

A ``zmeet broker`` subprocess with its default heartbeat (``HEARTBEAT_INTERVAL_MS``, 2 s).
``--procs`` client processes each hold ``clients/procs`` sessions: a DEALER that said HELLO
and a SUB subscribed to the heartbeat topic, and PING every heartbeat interval as ``Session``
does (spread over the interval, as independent clients would be). Nobody chats.

Figures: the broker's CPU (percent of one core, from ``/proc/<pid>/stat`` utime + stime over
``--seconds``), RSS (``VmRSS``) and open descriptors, idle with no client and then with every
client connected; PING round trips seen by the clients (p50, p99); heartbeats received per
client; sessions the broker ended (must be 0). Each process raises its soft ``RLIMIT_NOFILE``:
a client costs the broker two descriptors and the client side two.

    python -m benchmarks.scale_idle [--clients N] [--seconds S]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import zmq

from zmeet import protocol as p
from zmeet.protocol.limits import HEARTBEAT_INTERVAL_MS

from .common import (
    broker_process,
    cpu_percent,
    histogram,
    percentiles_ms,
    proc_fds,
    proc_rss_mib,
    raise_fd_limit,
    save,
    table,
)

INTERVAL_S = HEARTBEAT_INTERVAL_MS / 1000


def clients_process(control: str, events: str, first: int, count: int, ready, counting_event,
                    stop, results) -> None:
    from hdrh.histogram import HdrHistogram

    raise_fd_limit()
    ctx = zmq.Context()
    ctx.setsockopt(zmq.MAX_SOCKETS, 8192)
    dealers, subs = [], []
    for i in range(count):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(control)
        d.send_multipart(p.encode(p.Hello(req_id=1, nick=f"idle{first + i}", client="bench")))
        dealers.append(d)
    welcomed = errors = 0
    for d in dealers:  # every HELLO answered
        if d.poll(30_000):
            welcomed += isinstance(p.decode(d.recv_multipart()), p.Welcome)
    for _ in range(count):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.subscribe(p.HEARTBEAT_TOPIC)
        s.connect(events)
        subs.append(s)
    poller = zmq.Poller()
    for s in dealers + subs:
        poller.register(s, zmq.POLLIN)
    is_dealer = {d: i for i, d in enumerate(dealers)}
    start = time.monotonic()
    next_ping = [start + INTERVAL_S * i / count for i in range(count)]
    sent_at: dict[tuple[int, int], int] = {}
    req = [1] * count
    heartbeats = [0] * count
    h = histogram()
    ready.release()
    counting = False
    while not stop.is_set():
        now = time.monotonic()
        for i in range(count):
            if now >= next_ping[i]:
                next_ping[i] += INTERVAL_S
                req[i] += 1
                sent_at[(i, req[i])] = time.monotonic_ns()
                dealers[i].send_multipart(p.encode(p.Ping(req_id=req[i])), zmq.NOBLOCK)
        for sock, _ in poller.poll(20):
            i = is_dealer.get(sock)
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = p.decode(frames) if i is not None else None
                if i is None:
                    heartbeats[subs.index(sock)] += counting
                elif isinstance(msg, p.Error):
                    errors += 1
                else:
                    t = sent_at.pop((i, msg.req_id), None)
                    if t is not None and counting:
                        h.record_value(max(1, (time.monotonic_ns() - t) // 1000))
        if not counting and counting_event.is_set():
            counting = True
            heartbeats = [0] * count
    results.put({"hist": HdrHistogram.encode(h), "welcomed": welcomed, "errors": errors,
                 "heartbeats_min": min(heartbeats), "heartbeats_max": max(heartbeats)})
    ctx.destroy(linger=0)


def run(clients: int = 1000, *, procs: int = 4, seconds: float = 20, log=print) -> dict:
    from hdrh.histogram import HdrHistogram

    raise_fd_limit()
    spawn = mp.get_context("spawn")
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    row: dict = {"clients": clients, "client_procs": procs,
                 "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS, "window_s": seconds}
    with broker_process() as (endpoints, broker):
        pid = broker.pid
        time.sleep(1)
        row["idle_cpu_pct"] = cpu_percent(pid, min(5, seconds))
        row["idle_rss_mib"] = proc_rss_mib(pid)
        ready = spawn.Semaphore(0)
        counting, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
        workers, first = [], 0
        t0 = time.monotonic()
        for n in per:
            w = spawn.Process(target=clients_process,
                              args=(endpoints["control"], endpoints["events"], first, n, ready,
                                    counting, stop, results), daemon=True)
            w.start()
            workers.append(w)
            first += n
        try:
            for _ in workers:
                if not ready.acquire(timeout=180):
                    raise RuntimeError("client processes did not connect")
            row["connect_s"] = time.monotonic() - t0
            time.sleep(INTERVAL_S)  # one heartbeat interval to settle
            counting.set()
            time.sleep(0.1)
            row["cpu_pct"] = cpu_percent(pid, seconds)
            row["rss_mib"] = proc_rss_mib(pid)
            row["broker_fds"] = proc_fds(pid)
        finally:
            stop.set()
            summaries = [results.get(timeout=60) for _ in workers]
            for w in workers:
                w.join(timeout=10)
    h = histogram()
    for s in summaries:
        h.add(HdrHistogram.decode(s["hist"]))
    ping = percentiles_ms(h)
    row.update({
        "welcomed": sum(s["welcomed"] for s in summaries),
        "session_errors": sum(s["errors"] for s in summaries),
        "heartbeats_min": min(s["heartbeats_min"] for s in summaries),
        "ping_p50_ms": ping["p50_ms"], "ping_p99_ms": ping["p99_ms"], "pings": ping["count"],
        "rss_per_client_kib": (row["rss_mib"] - row["idle_rss_mib"]) * 1024 / clients,
    })
    row["lost"] = clients - row["welcomed"] + row["session_errors"]
    log(f"scale {clients} idle clients: broker CPU {row['cpu_pct']:.1f}%, "
        f"RSS {row['rss_mib']:.0f} MiB (idle {row['idle_rss_mib']:.0f} MiB), "
        f"ping p99 {row['ping_p99_ms']:.2f} ms, session errors {row['session_errors']}")
    return row


COLUMNS = ["clients", "idle_cpu_pct", "cpu_pct", "idle_rss_mib", "rss_mib", "rss_per_client_kib",
           "broker_fds", "ping_p50_ms", "ping_p99_ms", "heartbeats_min", "session_errors",
           "connect_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    args = parser.parse_args()
    row = run(args.clients, procs=args.procs, seconds=args.seconds)
    print(table([row], COLUMNS))
    print(f"results: {save('scale-idle', {'rows': [row], 'args': vars(args)})}")


if __name__ == "__main__":
    main()
