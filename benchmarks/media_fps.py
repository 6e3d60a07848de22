"""Media lane: frames per second and capture-to-receive latency through a real broker.

alice publishes ``vtest.avi`` (768x576, 10 fps) as video and ``Megamind.avi`` (720x528,
24 fps) as a second stream; bob receives. Latency is bob's receive time minus alice's
capture time (one machine, one clock), so it covers encode, both hops and the broker.

    python -m benchmarks.media_fps [--seconds S]
"""

from __future__ import annotations

import argparse
import time

import gevent

from zmeet.client import Session
from zmeet.client.media import MediaPublisher, MediaSubscriber
from zmeet.devices import VideoFileSource

from .common import MEDIA, broker_process, histogram, percentiles_ms, save, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with broker_process() as (endpoints, _proc):
        alice = Session(endpoints["entry"], "alice", insecure=True)
        bob = Session(endpoints["entry"], "bob", insecure=True)
        for s in (alice, bob):
            s.connect()
            s.join("bench", history=0)
        hists = {"video": histogram(), "screen": histogram()}

        def on_frame(frame) -> None:
            age_us = time.time_ns() // 1000 - frame.capture_ts_us
            hists[frame.kind].record_value(max(1, age_us))

        sub = MediaSubscriber(bob, ["bench"], on_frame=on_frame)
        sub.start()
        pub = MediaPublisher(alice, "bench")
        sources = [VideoFileSource(MEDIA / "vtest.avi"), VideoFileSource(MEDIA / "Megamind.avi")]
        pub.publish_source(sources[0], "video")
        pub.publish_source(sources[1], "screen")  # a second stream, at the file's 24 fps
        sub.first_frame.wait(timeout=10)
        gevent.sleep(args.seconds)  # a benchmark runs for a set time; this is no readiness wait
        stats = sub.stats()["streams"].get("alice", {})
        sent = pub.stats()
        pub.close()
        sub.stop()
        for s in sources:
            s.close()
        alice.close()
        bob.close()
    rows = []
    for kind, source in (("video", "vtest.avi 10 fps"), ("screen", "Megamind.avi 24 fps")):
        got = stats.get(kind, {})
        rows.append({"stream": source, "sent": sent.get(kind, {}).get("sent", 0),
                     "received": got.get("frames", 0), "lost": got.get("lost", 0),
                     "mean_fps": float(got.get("mean_fps", 0.0)),
                     **percentiles_ms(hists[kind])})
    print(table(rows, ["stream", "sent", "received", "lost", "mean_fps", "p50_ms", "p99_ms",
                       "max_ms"]))
    print(f"results: {save('media-fps', {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
