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

from benchmarks.common import MEDIA, proc_cpu_s, save
from zmeet.clock import now_us

ROOM = "bench"
FRAME_W, FRAME_H, FPS = 1280, 720, 30.0
FORWARD_PAYLOAD_BYTES = 100_000
FORWARD_FRAMES = 3000


# --- one participant (a child process) --------------------------------------------------------


def participant(control: str, nick: str, seconds: float, participants: int) -> None:
    """One participant, as ``Meeting`` runs it but without devices: 1280x720 frames of
    Megamind.avi JPEG-encoded off the hub (with the 320-pixel thumbnail: simulcast) at 30 fps,
    20 ms audio frames, per-stream subscriptions to the others' full video and audio (the
    layer a 2x2 gallery of 1280x720 takes), and a display thread that, like the viewer's
    window thread, decodes only the newest frame of each tile, reduced to the tile's size
    (:func:`~zmeet.media.tiling.decode_reduction`). A frame's age is taken when its decode
    ends: capture to display-ready."""
    import cv2
    import gevent

    from zmeet import protocol as p
    from zmeet.client.media import THUMB_WIDTH, MediaPublisher, MediaSubscriber
    from zmeet.client.session import Session
    from zmeet.devices import decode_jpeg, encode_jpeg
    from zmeet.devices.audio import AudioEncoder, default_codec
    from zmeet.media import LatestSlot, Pacer
    from zmeet.media.tiling import decode_reduction, meeting_layout

    session = Session(control, nick, timeout_s=30, insecure=True)
    session.connect()
    session.join(ROOM, history=0)
    ages: list[float] = []
    slot: LatestSlot = LatestSlot()
    wanted, stop = threading.Event(), threading.Event()
    shown = [0]
    tile = meeting_layout(participants, 1280, 720, stage=False)[1][0]
    reduce = decode_reduction(FRAME_W, FRAME_H, tile.w, tile.h)

    def display() -> None:  # the window thread: decode the newest of each tile, then stamp
        while not stop.is_set():
            if not wanted.wait(0.1):
                continue
            wanted.clear()
            for payload, capture_ts_us in slot.take_all().values():
                decode_jpeg(payload, reduce=reduce)
                ages.append((now_us() - capture_ts_us) / 1000)
                shown[0] += 1

    class HandOff:  # what MediaSubscriber calls; the frame goes to the display thread
        superseded = __import__("collections").Counter()

        def show(self, sender, kind, payload) -> None:
            pass

    def on_shown(frame, now_us) -> None:
        slot.put((frame.sender, frame.kind), (bytes(frame.payload), frame.capture_ts_us))
        wanted.set()

    sub = MediaSubscriber(session, [], viewer=HandOff(), handlers={"audio": lambda f: None})
    sub.on_shown = on_shown

    def subscribe(room: str = ROOM) -> None:
        sub.set_streams(ROOM, {m: ("video", "audio") for m in session.members(ROOM) if m != nick})

    session.member_listeners.append(subscribe)
    subscribe()
    sub.start()
    shower = threading.Thread(target=display, daemon=True)
    shower.start()
    pub = MediaPublisher(session, ROOM)
    cap = cv2.VideoCapture(str(MEDIA / "Megamind.avi"))
    frames = []
    while len(frames) < 60:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(img, (FRAME_W, FRAME_H)))
    codec = default_codec()
    enc = AudioEncoder(codec)
    block = (np.sin(np.arange(960) / 8) * 3000).astype(np.int16)
    sent = {"video": 0, "thumb": 0, "audio": 0}
    pool = gevent.get_hub().threadpool

    def encode(image, thumb: bool):  # the capture thread's work: full size and thumbnail
        return (encode_jpeg(image, quality=80, max_width=FRAME_W),
                encode_jpeg(image, quality=80, max_width=THUMB_WIDTH) if thumb else None)

    def video() -> None:
        pacer = Pacer(FPS, time.monotonic)
        for seq in range(10**9):
            gevent.sleep(pacer.delay_s())
            ts = now_us()  # capture
            full, small = pool.apply(encode, (frames[seq % len(frames)], pub.wanted("thumb")))
            for kind, layer in (("thumb", small), ("video", full)):
                if layer is None or not pub.wanted(kind):  # MEDIA-DEMAND: no one takes it
                    continue
                data, width, height = layer
                if pub.send_frame(p.MediaFrame(
                        room=ROOM, kind=kind, seq=seq, capture_ts_us=ts, pts_ms=seq * 33,
                        width=width, height=height, fps=FPS, codec="jpeg", payload=data)):
                    sent[kind] += 1

    def audio() -> None:
        pacer = Pacer(50, time.monotonic)
        for seq in range(10**9):
            gevent.sleep(pacer.delay_s())
            pub.send_frame(p.MediaFrame(room=ROOM, kind="audio", seq=seq,
                                        capture_ts_us=now_us(), pts_ms=seq * 20, width=0,
                                        height=0, fps=50.0, codec=codec,
                                        payload=enc.encode(block)))
            sent["audio"] += 1

    workers = [gevent.spawn(video), gevent.spawn(audio)]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    gevent.sleep(seconds)  # the benchmark's run time
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    gevent.killall(workers)
    stop.set()
    shower.join(5)
    stats = sub.stats()["streams"]
    sub.stop()
    pub.close()
    session.close()
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0)
    fps = [s["video"]["mean_fps"] for s in stats.values() if "video" in s]
    lost = sum(s["video"]["lost"] for s in stats.values() if "video" in s)
    thumbs = sum(s["thumb"]["frames"] for s in stats.values() if "thumb" in s)
    print(json.dumps({"nick": nick, "cpu": cpu, "ages_ms": ages[30:], "fps_received": fps,
                      "shown_fps": shown[0] / (t1 - t0), "sent": sent, "lost": lost,
                      "thumbs_received": thumbs, "own_received": sub.drops.own}))


def meeting(participants: int, seconds: float) -> dict:
    from benchmarks.common import broker_process

    with broker_process() as (endpoints, _broker):
        control = endpoints["entry"]
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.media_meeting",
                                   "--participant", f"p{i}", "--control", control,
                                   "--seconds", str(seconds), "--participants",
                                   str(participants)], stdout=subprocess.PIPE, text=True)
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
        "received_fps_per_stream": [r["fps_received"] for r in results],
        "video_frames_lost": [r["lost"] for r in results],
        "thumbs_received": sum(r["thumbs_received"] for r in results),
        "own_frames_received": sum(r["own_received"] for r in results),
    }


# --- forwarding ------------------------------------------------------------------------------
#
# The same sender and receiver, in this process, take turns with two forwarders, each in its own
# process with its own ZeroMQ context: the zmeet broker's media lane, and a bare ``zmq.proxy``
# from a ROUTER to a PUB with the broker's high-water marks (so both drop alike when a queue is
# full). Rounds alternate (broker, proxy, broker, ...) so that load from elsewhere on the machine
# falls on both; the figures are the medians. A round's rate is payload-frame bytes delivered
# over the time from the first delivered frame to the last.

PROBE_PAYLOAD_BYTES = 16
"""Probe frames (sent until one arrives: the subscription is live) are this small, not counted."""

FORWARD_ROUNDS = 7


def _receive(endpoint: str, count: int, out: dict, ready: threading.Event,
             live: threading.Event) -> None:
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
    while got < count and poller.poll(2000):
        parts = sub.recv_multipart(copy=False)
        if len(parts[-1]) <= PROBE_PAYLOAD_BYTES:
            live.set()
            continue
        t_last = time.perf_counter()
        if not got:
            t0 = t_last
        got += 1
        nbytes += len(parts[-1])
    out.update(delivered=got, mb_s=nbytes / max(1e-9, t_last - t0) / 1e6 if got > 1 else 0.0)
    sub.close(0)


def _forward_round(media_in: str, media_out: str, identity: bytes, frames: list[bytes],
                   probe: list[bytes], count: int, pid: int) -> dict:
    ctx = zmq.Context.instance()
    out: dict = {}
    ready, live = threading.Event(), threading.Event()
    recv = threading.Thread(target=_receive, args=(media_out, count, out, ready, live))
    recv.start()
    ready.wait(5)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, identity)
    dealer.setsockopt(zmq.SNDHWM, 100_000)
    dealer.connect(media_in)
    for _ in range(500):  # until the subscription is live: an event, not a sleep
        dealer.send_multipart(probe)
        if live.wait(0.01):
            break
    cpu0, main0 = proc_cpu_s(pid), proc_cpu_s(pid, pid)
    for _ in range(count):
        dealer.send_multipart(frames, copy=False)
    recv.join(60)
    out["forwarder_cpu_us_per_frame"] = (proc_cpu_s(pid) - cpu0) / count * 1e6
    # the forwarding loop's own thread (the main thread of both; libzmq's I/O threads apart)
    out["loop_cpu_us_per_frame"] = (proc_cpu_s(pid, pid) - main0) / count * 1e6
    dealer.close(linger=0)
    out["sent"] = count
    return out


def _bare_proxy_process() -> None:
    """``--bare-proxy``: ROUTER -> PUB ``zmq.proxy`` with the broker's media-lane options."""
    from zmeet.broker.media import MEDIA_IN_HWM, MEDIA_OUT_HWM
    from zmeet.protocol.limits import MEDIA_SOCKET_BUFFER_BYTES

    ctx = zmq.Context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    front.setsockopt(zmq.RCVHWM, MEDIA_IN_HWM)
    front.setsockopt(zmq.RCVBUF, MEDIA_SOCKET_BUFFER_BYTES)
    back.setsockopt(zmq.SNDHWM, MEDIA_OUT_HWM)
    back.setsockopt(zmq.SNDBUF, MEDIA_SOCKET_BUFFER_BYTES)
    fport = front.bind_to_random_port("tcp://127.0.0.1")
    bport = back.bind_to_random_port("tcp://127.0.0.1")
    print(json.dumps({"media_in": f"tcp://127.0.0.1:{fport}",
                      "media_out": f"tcp://127.0.0.1:{bport}"}), flush=True)
    zmq.proxy(front, back)  # until terminated


def forwarding(count: int = FORWARD_FRAMES, rounds: int = FORWARD_ROUNDS,
               payload_bytes: int = FORWARD_PAYLOAD_BYTES) -> dict:
    """MB/s delivered through the broker's media lane, with its compiled forwarder
    (``broker``) and its Python one (``broker_python``), and through a bare ROUTER->PUB proxy
    (each in its own process, the same socket options), alternating ``rounds`` times, with
    frames of ``payload_bytes``."""
    from contextlib import ExitStack

    from benchmarks.common import broker_process
    from zmeet import protocol as p
    from zmeet.client.session import Session

    def frame(nbytes: int) -> list[bytes]:
        return p.encode(p.MediaFrame(
            room=ROOM, kind="video", seq=0, capture_ts_us=1, pts_ms=0, width=1280, height=720,
            fps=30.0, codec="jpeg", payload=bytes(nbytes)))

    frames, probe = frame(payload_bytes), frame(PROBE_PAYLOAD_BYTES)
    # name: (media in, media out, routing id, pid)
    lanes: dict[str, tuple[str, str, bytes, int]] = {}
    result: dict = {"payload_bytes": payload_bytes, "frames_per_round": count}
    with ExitStack() as stack:
        proxy = subprocess.Popen([sys.executable, "-m", "benchmarks.media_meeting",
                                  "--bare-proxy"], stdout=subprocess.PIPE, text=True)
        stack.callback(proxy.wait, 10)
        stack.callback(proxy.terminate)
        proxy_endpoints = json.loads(proxy.stdout.readline())
        for name, forwarder in (("broker", "auto"), ("broker_python", "python")):
            ready, broker = stack.enter_context(
                broker_process("--media-forwarder", forwarder, ready_line=True))
            result[f"{name}_forwarder"] = ready["media_forwarder"]
            session = Session(ready["endpoints"]["entry"], "sender", timeout_s=30,
                              insecure=True)
            session.connect()
            stack.callback(session.close)
            session.join(ROOM, history=0)
            lanes[name] = (session.endpoints["media_in"], session.endpoints["media_out"],
                           session.welcome.media_token, broker.pid)
        lanes["bare_proxy"] = (proxy_endpoints["media_in"], proxy_endpoints["media_out"],
                               b"sender", proxy.pid)
        runs: dict[str, list[dict]] = {name: [] for name in lanes}
        for _ in range(rounds):
            for name, (media_in, media_out, identity, pid) in lanes.items():
                runs[name].append(_forward_round(media_in, media_out, identity, frames, probe,
                                                 count, pid))
    for name, rs in runs.items():
        result[name] = {
            "mb_s": float(np.median([r["mb_s"] for r in rs])),
            "delivered_fraction": float(np.median([r["delivered"] / r["sent"] for r in rs])),
            "cpu_us_per_frame": float(np.median([r["forwarder_cpu_us_per_frame"] for r in rs])),
            "loop_cpu_us_per_frame": float(np.median([r["loop_cpu_us_per_frame"] for r in rs])),
            "rounds_mb_s": [round(r["mb_s"], 1) for r in rs],
        }
    proxy_mb_s = max(1e-9, result["bare_proxy"]["mb_s"])
    result["ratio"] = result["broker"]["mb_s"] / proxy_mb_s
    result["ratio_python"] = result["broker_python"]["mb_s"] / proxy_mb_s
    return result


def summary(data: dict) -> str:
    """The figures as Markdown tables (the full JSON goes to ``benchmarks/results/``)."""
    from benchmarks.common import table

    fwd = data["forwarding"]
    rows = [{"forwarder": name, "MB/s delivered": fwd[name]["mb_s"],
             "delivered fraction": fwd[name]["delivered_fraction"],
             "CPU µs per frame": fwd[name]["cpu_us_per_frame"],
             "loop thread µs per frame": fwd[name]["loop_cpu_us_per_frame"],
             "rounds MB/s": " ".join(str(v) for v in fwd[name]["rounds_mb_s"])}
            for name in ("broker", "broker_python", "bare_proxy")]
    out = [f"Forwarding, {fwd['payload_bytes']} B frames, {fwd['frames_per_round']} a round "
           f"(medians): broker ({fwd['broker_forwarder']} forwarder) / bare proxy = "
           f"{fwd['ratio']:.2f}; with the Python forwarder {fwd['ratio_python']:.2f}", "",
           table(rows, list(rows[0])), ""]
    meet = data.get("meeting")
    if meet:
        g2g = meet["glass_to_glass_ms"]
        out += [f"Meeting of {meet['participants']} at {meet['size']}, {meet['target_fps']:g} fps "
                f"target: glass to glass p50 {g2g['p50']:.1f} ms, p99 {g2g['p99']:.1f} ms "
                f"({g2g['n']} frames); shown fps per tile {meet['shown_fps_per_receiver']}; "
                f"CPU per participant {meet['cpu_per_participant']} cores; video frames lost "
                f"{meet['video_frames_lost']}."]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participant")
    ap.add_argument("--control")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--participants", type=int, default=4)
    ap.add_argument("--bare-proxy", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_proxy:
        _bare_proxy_process()
        return
    if args.participant:
        participant(args.control, args.participant, args.seconds, args.participants)
        return
    data = {"forwarding": forwarding()}
    if args.participants:
        data["meeting"] = meeting(args.participants, args.seconds)
    print(summary(data))
    save("media_meeting", data)


if __name__ == "__main__":
    main()
