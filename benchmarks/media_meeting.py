"""A meeting under load: glass-to-glass latency and fps of 4 participants sending 1280x720 video
at 30 fps and 20 ms audio, CPU per participant; and media-lane forwarding next to a bare
``zmq.proxy`` between the same socket types (ROUTER in, PUB out), in the same run.

    .venv/bin/python -m benchmarks.media_meeting [--seconds 10] [--participants 4]

Glass to glass here is capture (the frame read from the source) to display-ready (the JPEG
decoded in the receiver's viewer path, the moment a window would be painted with it), both on
one machine's wall clock. Each participant is its own process (``--participant``): a gevent
Meeting-like loop with MediaPublisher and MediaSubscriber, no window (no X here).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

from benchmarks.common import save

ROOM = "bench"
FRAME_W, FRAME_H, FPS = 1280, 720, 30.0
FORWARD_PAYLOAD_BYTES = 100_000
FORWARD_FRAMES = 3000


def _now_us() -> int:
    return time.time_ns() // 1000


# --- one participant (a child process) --------------------------------------------------------


def participant(control: str, nick: str, seconds: float) -> None:
    import gevent

    from zmeet import protocol as p
    from zmeet.client.media import MediaPublisher, MediaSubscriber
    from zmeet.client.session import Session
    from zmeet.devices import decode_jpeg, encode_jpeg
    from zmeet.devices.audio import AudioEncoder, default_codec
    from zmeet.media import Pacer

    session = Session(control, nick, timeout_s=30)
    session.connect()
    session.join(ROOM, history=0)
    ages: list[float] = []

    class DecodingViewer:  # the display path without a window: decode, then stamp
        superseded = __import__("collections").Counter()

        def show(self, sender, kind, payload) -> None:
            decode_jpeg(payload)

    viewer = DecodingViewer()
    sub = MediaSubscriber(session, [ROOM], viewer=viewer, handlers={"audio": lambda f: None})
    sub.on_shown = lambda frame, now_us: ages.append((_now_us() - frame.capture_ts_us) / 1000)
    sub.start()
    pub = MediaPublisher(session, ROOM)
    cap = __import__("cv2").VideoCapture("../shared/media/Megamind.avi")
    frames = []
    while len(frames) < 60:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(__import__("cv2").resize(img, (FRAME_W, FRAME_H)))
    codec = default_codec()
    enc = AudioEncoder(codec)
    block = (np.sin(np.arange(960) / 8) * 3000).astype(np.int16)
    sent = {"video": 0, "audio": 0}

    def video() -> None:
        pacer = Pacer(FPS, time.monotonic)
        for seq in range(10**9):
            gevent.sleep(pacer.delay_s())
            ts = _now_us()  # capture
            jpeg, w, h = encode_jpeg(frames[seq % len(frames)], quality=80, max_width=FRAME_W)
            pub.send_frame(p.MediaFrame(room=ROOM, kind="video", seq=seq, capture_ts_us=ts,
                                        pts_ms=seq * 33, width=w, height=h, fps=FPS,
                                        codec="jpeg", payload=jpeg))
            sent["video"] += 1

    def audio() -> None:
        pacer = Pacer(50, time.monotonic)
        for seq in range(10**9):
            gevent.sleep(pacer.delay_s())
            pub.send_frame(p.MediaFrame(room=ROOM, kind="audio", seq=seq,
                                        capture_ts_us=_now_us(), pts_ms=seq * 20, width=0,
                                        height=0, fps=50.0, codec=codec,
                                        payload=enc.encode(block)))
            sent["audio"] += 1

    workers = [gevent.spawn(video), gevent.spawn(audio)]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    gevent.sleep(seconds)  # the benchmark's run time
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    gevent.killall(workers)
    stats = sub.stats()["streams"]
    sub.stop()
    pub.close()
    session.close()
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0)
    fps = [s["video"]["mean_fps"] for s in stats.values() if "video" in s]
    shown = sum(s["video"]["shown"] for s in stats.values() if "video" in s)
    print(json.dumps({"nick": nick, "cpu": cpu, "ages_ms": ages[30:], "fps_received": fps,
                      "shown_fps": shown / (t1 - t0), "sent": sent}))


def meeting(participants: int, seconds: float) -> dict:
    from benchmarks.common import broker_process

    with broker_process() as (endpoints, _broker):
        control = endpoints["control"]
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.media_meeting",
                                   "--participant", f"p{i}", "--control", control,
                                   "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
                 for i in range(participants)]
        results = [json.loads(proc.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])
                   for proc in procs]
    ages = np.array([a for r in results for a in r["ages_ms"]])
    return {
        "participants": participants, "size": f"{FRAME_W}x{FRAME_H}", "target_fps": FPS,
        "glass_to_glass_ms": {"p50": float(np.percentile(ages, 50)),
                              "p99": float(np.percentile(ages, 99)), "n": int(ages.size)},
        "shown_fps_per_receiver": [round(r["shown_fps"] / max(1, participants - 1), 1)
                                   for r in results],
        "cpu_per_participant": [round(r["cpu"], 3) for r in results],
    }


# --- forwarding ------------------------------------------------------------------------------


def _receive(endpoint: str, count: int, out: dict, ready: threading.Event) -> None:
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(endpoint)
    ready.set()
    got = nbytes = 0
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    t0 = t_last = 0.0
    while got < count and poller.poll(3000):
        parts = sub.recv_multipart(copy=False)
        t_last = time.perf_counter()
        if not got:
            t0 = t_last
        got += 1
        nbytes += sum(len(f) for f in parts)
    out.update(got=got, mb_s=nbytes / max(1e-9, t_last - t0) / 1e6 if got > 1 else 0.0)
    sub.close(0)


def _send(endpoint: str, identity: bytes, frames: list[bytes], count: int) -> None:
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, identity)
    dealer.setsockopt(zmq.SNDHWM, 100_000)
    dealer.connect(endpoint)
    for _ in range(count):
        dealer.send_multipart(frames, copy=False)
    dealer.close(linger=5000)


def forwarding(count: int = FORWARD_FRAMES) -> dict:
    """MB/s out of the broker's media lane, and out of a bare ROUTER->PUB zmq.proxy."""
    from benchmarks.common import broker_process
    from zmeet import protocol as p
    from zmeet.client.session import Session

    payload = bytes(FORWARD_PAYLOAD_BYTES)
    frame = p.MediaFrame(room=ROOM, kind="video", seq=0, capture_ts_us=1, pts_ms=0, width=1280,
                         height=720, fps=30.0, codec="jpeg", payload=payload)
    frames = p.encode(frame)
    result = {}
    with broker_process() as (endpoints, _broker):
        control = endpoints["control"]
        session = Session(control, "sender", timeout_s=30)
        session.connect()
        session.join(ROOM, history=0)
        out: dict = {}
        ready = threading.Event()
        recv = threading.Thread(target=_receive, args=(session.endpoints["media_out"], count,
                                                       out, ready))
        recv.start()
        ready.wait(5)
        # the subscription must be live before counting: probe until the first one arrives
        _send(session.endpoints["media_in"], session.welcome.media_token, frames, 50)
        _send(session.endpoints["media_in"], session.welcome.media_token, frames, count)
        recv.join(60)
        session.close()
        result["broker"] = out
    ctx = zmq.Context.instance()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    fport = front.bind_to_random_port("tcp://127.0.0.1")
    bport = back.bind_to_random_port("tcp://127.0.0.1")
    proxy = threading.Thread(target=lambda: _proxy(front, back), daemon=True)
    proxy.start()
    out = {}
    ready = threading.Event()
    recv = threading.Thread(target=_receive, args=(f"tcp://127.0.0.1:{bport}", count, out, ready))
    recv.start()
    ready.wait(5)
    _send(f"tcp://127.0.0.1:{fport}", b"probe", frames, 50)  # distinct ids: ROUTER refuses a
    _send(f"tcp://127.0.0.1:{fport}", b"sender", frames, count)  # second peer with one id
    recv.join(60)
    result["bare_proxy"] = out
    result["ratio"] = result["broker"]["mb_s"] / max(1e-9, out["mb_s"])
    return result


def _proxy(front: zmq.Socket, back: zmq.Socket) -> None:
    try:
        zmq.proxy(front, back)
    except zmq.ContextTerminated:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participant")
    ap.add_argument("--control")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--participants", type=int, default=4)
    args = ap.parse_args()
    if args.participant:
        participant(args.control, args.participant, args.seconds)
        return
    data = {"forwarding": forwarding()}
    if args.participants:
        data["meeting"] = meeting(args.participants, args.seconds)
    print(json.dumps(data, indent=2))
    save("media_meeting", data)


if __name__ == "__main__":
    main()
