"""Chat round trip and throughput through a real broker, beside a bare pyzmq relay.

zmeet: a ``zmeet broker`` subprocess. A client SAYs, and the round trip ends when its own chat
event comes back on the events lane (request, sequencing, SQLite append, publish, receive).
Baseline, in the same run: a bare ROUTER-to-PUB relay in plain blocking pyzmq in a subprocess,
the limit for a Python relay on this machine, driven by the same plain-pyzmq client code.

    python -m benchmarks.chat_rtt [--count N] [--burst N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import zmq

from zmeet import protocol as p

from .common import broker_process, histogram, percentiles_ms, save, table


def bare_relay(control: str, events: str, ready) -> None:
    ctx = zmq.Context()
    router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    cport = router.bind_to_random_port(control)
    eport = pub.bind_to_random_port(events)
    ready.send((cport, eport))
    while True:
        frames = router.recv_multipart()
        if frames[1] == b"STOP":
            break
        pub.send_multipart([b"room/bench/", *frames[1:]])
    ctx.destroy(linger=0)


class ZmeetClient:
    """Plain pyzmq DEALER + SUB speaking the zmeet protocol (no gevent: like the baseline)."""

    def __init__(self, ctx: zmq.Context, endpoints: dict) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.connect(endpoints["control"])
        self.sub = ctx.socket(zmq.SUB)
        self.sub.connect(endpoints["events"])
        self.sub.subscribe(p.room_topic("bench"))
        self.sub.subscribe(p.HEARTBEAT_TOPIC)
        self.ids = 0
        self.call(p.Hello, nick="bench")
        # the first heartbeat proves the SUB connection is up, then JOIN
        while not isinstance(p.decode_published(self.sub.recv_multipart())[1], p.Heartbeat):
            pass
        self.call(p.Join, room="bench", history=0)

    def call(self, cls, **fields):
        self.ids += 1
        self.dealer.send_multipart(p.encode(cls(req_id=self.ids, **fields)))
        return p.decode(self.dealer.recv_multipart())

    def send(self, text: str) -> None:
        self.ids += 1
        self.dealer.send_multipart(p.encode(p.Say(req_id=self.ids, room="bench", text=text)))

    def recv_event(self) -> p.RoomEvent:
        while True:
            _, msg = p.decode_published(self.sub.recv_multipart())
            if isinstance(msg, p.RoomEvent) and msg.type == "chat":
                return msg


class BareClient:
    def __init__(self, ctx: zmq.Context, control: str, events: str) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.connect(control)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.connect(events)
        self.sub.subscribe(b"room/bench/")
        # prove the subscription: relay probes until one comes back
        self.sub.rcvtimeo = 100
        while True:
            self.dealer.send_multipart([b"probe"])
            try:
                self.sub.recv_multipart()
                break
            except zmq.Again:
                continue
        self.sub.rcvtimeo = 200
        while True:  # drain the probes
            try:
                self.sub.recv_multipart()
            except zmq.Again:
                break
        self.sub.rcvtimeo = -1

    def send(self, text: str) -> None:
        self.dealer.send_multipart([text.encode()])

    def recv_event(self) -> list[bytes]:
        return self.sub.recv_multipart()


def measure(client, count: int, burst: int) -> dict:
    h = histogram()
    for i in range(count):
        t0 = time.perf_counter()
        client.send(f"message {i}")
        client.recv_event()
        h.record_value(max(1, int((time.perf_counter() - t0) * 1e6)))
    if hasattr(client, "dealer") and isinstance(client, ZmeetClient):
        while client.dealer.poll(0):  # the POSTED replies
            client.dealer.recv_multipart()
    t0 = time.perf_counter()
    sent = received = 0
    while received < burst:
        while sent < burst and sent - received < 500:  # bounded window in flight
            client.send(f"burst {sent}")
            sent += 1
        client.recv_event()
        received += 1
    rate = burst / (time.perf_counter() - t0)
    return {**percentiles_ms(h), "msgs_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="sequential round trips")
    parser.add_argument("--burst", type=int, default=20000, help="messages for throughput")
    args = parser.parse_args()
    rows = []
    ctx = zmq.Context()
    with broker_process() as (endpoints, _proc):
        client = ZmeetClient(ctx, endpoints)
        rows.append({"system": "zmeet broker", **measure(client, args.count, args.burst)})
    here, there = multiprocessing.Pipe()
    relay = multiprocessing.Process(target=bare_relay,
                                    args=("tcp://127.0.0.1", "tcp://127.0.0.1", there))
    relay.start()
    cport, eport = here.recv()
    bare = BareClient(ctx, f"tcp://127.0.0.1:{cport}", f"tcp://127.0.0.1:{eport}")
    rows.append({"system": "bare pyzmq relay", **measure(bare, args.count, args.burst)})
    bare.dealer.send_multipart([b"STOP"])
    relay.join(timeout=10)
    ctx.destroy(linger=0)
    rows[0]["vs_bare_throughput"] = rows[0]["msgs_per_s"] / rows[1]["msgs_per_s"]
    print(table(rows, ["system", "p50_ms", "p99_ms", "p99_9_ms", "max_ms", "msgs_per_s",
                       "vs_bare_throughput"]))
    print(f"results: {save('chat-rtt', {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
