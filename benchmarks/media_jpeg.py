"""Media: 1280x720 JPEG frames through the zmeet broker, beside imagezmq PUB/SUB sending the
same frames directly.

The frames: ``Megamind.avi`` (OpenCV's sample, Debian's ``opencv-doc``) scaled to 1280x720
and JPEG-encoded at quality 80 (zmeet's default) once, before timing, so that neither side
pays for encoding.

- ``zmeet``: a ``zmeet broker`` subprocess. The sender is a session (HELLO, JOIN) with a media
  DEALER whose routing id is its media token, sending ``MediaFrame`` messages as
  ``MediaPublisher`` does; the receiver a session with a SUB on the media-out PUB. Two hops.
- ``imagezmq``: ``ImageSender(REQ_REP=False)`` (a bound PUB) and ``ImageHub(REQ_REP=False)``
  (a SUB), ``send_jpg``/``recv_jpg``. One hop, no broker: the floor for a Python sender.

The receiver is its own process. Phases: probe until a frame arrives; ``--fps`` frames per
second for ``--seconds`` (one-way latency from the scheduled send time, ``time.monotonic_ns``,
one clock system-wide; every frame must arrive, ``lost`` counts those that did not); then
as fast as the sender can send for ``--seconds`` (received frames per second; frames dropped
at a high-water mark on the way are expected there: newest frame wins).

    python -m benchmarks.media_jpeg [--seconds S] [--fps F]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import zmq

from zmeet import protocol as p

from .common import (
    MEDIA,
    broker_process,
    distribution_ms,
    free_port,
    histogram,
    percentiles_ms,
    save,
    table,
)

ROOM = "bench"
WIDTH, HEIGHT, QUALITY = 1280, 720, 80
SYSTEMS = ("zmeet", "imagezmq")


def load_frames(count: int = 48) -> list[bytes]:
    """``count`` JPEGs (bytes) of 1280x720 from Megamind.avi, or of a test pattern without it."""
    import cv2
    import numpy as np

    frames = []
    cap = cv2.VideoCapture(str(MEDIA / "Megamind.avi"))
    for i in range(count):
        ok, img = cap.read()
        if not ok:  # no file: a moving gradient, still a realistic JPEG size
            img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            img[:] = (np.arange(WIDTH, dtype=np.uint8) + i)[None, :, None]
        img = cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        frames.append(buf.tobytes())
    cap.release()
    return frames


def _session(ctx, control: str, nick: str):
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(control)
    replies = []
    for msg in (p.Hello(req_id=1, nick=nick, client="bench"),
                p.Join(req_id=2, room=ROOM, history=0)):
        dealer.send_multipart(p.encode(msg))
        if not dealer.poll(10_000):
            raise RuntimeError("the broker did not answer")
        replies.append(p.decode(dealer.recv_multipart()))
    return dealer, replies[0]


def receiver(system: str, addr: dict, counts, ready, stop, results) -> None:
    """Count frames per phase in ``counts`` ([probe, latency, max]); histogram at the end."""
    from hdrh.histogram import HdrHistogram

    ctx = zmq.Context()
    h = histogram()
    dealer = None
    if system == "zmeet":
        dealer, _welcome = _session(ctx, addr["control"], "viewer")
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.subscribe(p.media_room_topic(ROOM))
        sub.connect(addr["media_out"])
    else:
        import imagezmq

        hub = imagezmq.ImageHub(open_port=addr["pub"], REQ_REP=False)
        sub = hub.zmq_socket
    ready.set()
    next_ping = time.monotonic() + 2
    ids = 10
    while not stop.is_set():
        if dealer is not None and time.monotonic() > next_ping:  # heartbeats, as Session does
            ids += 1
            next_ping += 2
            dealer.send_multipart(p.encode(p.Ping(req_id=ids)))
            while dealer.poll(0):
                dealer.recv_multipart()
        if not sub.poll(100):
            continue
        while True:
            try:
                if system == "zmeet":
                    frames = sub.recv_multipart(zmq.NOBLOCK, copy=False)
                    meta = p.decode([f.buffer for f in frames[1:]])
                    phase, sched_us = meta.pts_ms, meta.capture_ts_us
                else:
                    md = sub.recv_json(zmq.NOBLOCK)
                    sub.recv(copy=False)
                    phase, sched_us = md["msg"]
            except zmq.Again:
                break
            now_us = time.monotonic_ns() // 1000
            counts[phase] += 1
            if phase == 1:
                h.record_value(max(1, now_us - sched_us))
    results.put(HdrHistogram.encode(h))
    ctx.destroy(linger=0)


class Sender:
    def __init__(self, ctx, system: str, addr: dict) -> None:
        self.system = system
        self.seq = 0
        if system == "zmeet":
            self.dealer, welcome = _session(ctx, addr["control"], "camera")
            self.sock = ctx.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.IDENTITY, welcome.media_token)
            self.sock.connect(addr["media_in"])
            self.ids = 10
            self.next_ping = time.monotonic() + 2
        else:
            import imagezmq

            self.isender = imagezmq.ImageSender(connect_to=addr["pub"], REQ_REP=False)

    def send(self, jpeg: bytes, phase: int, sched_us: int) -> None:
        if self.system == "zmeet":
            frame = p.MediaFrame(room=ROOM, kind="video", seq=self.seq, capture_ts_us=sched_us,
                                 pts_ms=phase, width=WIDTH, height=HEIGHT, fps=30.0,
                                 codec="jpeg", payload=jpeg)
            self.sock.send_multipart(p.encode(frame), copy=False)
            if time.monotonic() > self.next_ping:
                self.ids += 1
                self.next_ping += 2
                self.dealer.send_multipart(p.encode(p.Ping(req_id=self.ids)))
                while self.dealer.poll(0):
                    self.dealer.recv_multipart()
        else:
            self.isender.send_jpg([phase, sched_us], jpeg)
        self.seq += 1

    def close(self) -> None:
        if self.system == "zmeet":
            self.sock.close(0)
            self.dealer.close(0)
        else:
            self.isender.close()


def run_one(system: str, frames: list[bytes], *, seconds: float, fps: float) -> dict:
    from hdrh.histogram import HdrHistogram

    spawn = mp.get_context("spawn")
    counts = spawn.Array("q", 3, lock=False)
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    ctx = zmq.Context()
    row: dict = {"system": system, "frame": f"{WIDTH}x{HEIGHT} JPEG q{QUALITY}",
                 "mean_kib": sum(map(len, frames)) / len(frames) / 1024, "offered_fps": fps}
    if system == "zmeet":
        cm = broker_process()
    else:
        from contextlib import nullcontext

        cm = nullcontext(({"pub": f"tcp://127.0.0.1:{free_port()}"}, None))
    with cm as (addr, _proc):
        sender = Sender(ctx, system, addr) if system == "imagezmq" else None
        worker = spawn.Process(target=receiver, args=(system, addr, counts, ready, stop, results),
                               daemon=True)
        worker.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("the receiver did not start")
            sender = sender or Sender(ctx, system, addr)
            deadline = time.monotonic() + 30
            while counts[0] < 1:
                sender.send(frames[0], 0, 0)
                time.sleep(0.05)
                if time.monotonic() > deadline:
                    raise RuntimeError("no probe frame arrived")
            time.sleep(0.2)
            # fixed rate: latency and loss
            n = int(seconds * fps)
            interval_ns = int(1e9 / fps)
            t0 = time.monotonic_ns() + 10_000_000
            for i in range(n):
                sched = t0 + i * interval_ns
                wait = sched - time.monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                sender.send(frames[i % len(frames)], 1, sched // 1000)
            deadline = time.monotonic() + 10
            while counts[1] < n and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            row["lost"] = n - counts[1]
            # as fast as possible
            sent = 0
            before = counts[2]
            t_start = time.perf_counter()
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                sender.send(frames[sent % len(frames)], 2, time.monotonic_ns() // 1000)
                sent += 1
            send_s = time.perf_counter() - t_start
            time.sleep(0.5)
            received = counts[2] - before
            row.update({"max_sent_fps": sent / send_s, "max_received_fps": received / send_s,
                        "max_dropped": sent - received})
        finally:
            stop.set()
            encoded = results.get(timeout=30)
            worker.join(timeout=10)
            if sender is not None:
                sender.close()
            ctx.destroy(linger=0)
    h = HdrHistogram.decode(encoded)
    row.update(percentiles_ms(h))
    row["distribution"] = distribution_ms(h)
    return row


def run(systems=SYSTEMS, *, seconds: float = 10, fps: float = 30, log=print) -> list[dict]:
    frames = load_frames()
    rows = []
    for system in systems:
        try:
            row = run_one(system, frames, seconds=seconds, fps=fps)
        except Exception as exc:
            row = {"system": system, "error": repr(exc)}
        log(f"media {system}: " + (f"ERROR {row['error']}" if "error" in row else
            f"{row['max_received_fps']:.0f} fps max, p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms at {fps:g} fps, lost {row['lost']}"))
        rows.append(row)
    ok = {r["system"]: r for r in rows if "error" not in r}
    if "zmeet" in ok and "imagezmq" in ok:
        ok["zmeet"]["vs_imagezmq_fps"] = (ok["zmeet"]["max_received_fps"]
                                          / ok["imagezmq"]["max_received_fps"])
    return rows


COLUMNS = ["system", "frame", "mean_kib", "max_received_fps", "max_sent_fps", "max_dropped",
           "offered_fps", "p50_ms", "p99_ms", "p99_9_ms", "max_ms", "lost", "vs_imagezmq_fps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--fps", type=float, default=30.0, help="offered rate, latency phase")
    args = parser.parse_args()
    rows = run(seconds=args.seconds, fps=args.fps)
    print(table(rows, COLUMNS))
    print(f"results: {save('media-jpeg', {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
