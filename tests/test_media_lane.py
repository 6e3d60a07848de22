"""The media lane for real: a broker, sessions over loopback TCP, real video files, an Xvfb
screen, the recorder's files, the viewer's window. The broker and sessions come from
conftest's ``broker`` and ``connect`` fixtures.

Nothing here sleeps to wait: tests wait for frames received or recorded (with a bound), for
Xvfb's ``-displayfd`` answer, and for the viewer's tiles to be on the screen (looked at again
after each turn of its window loop, a bounded number of times).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import gevent
import msgpack
import numpy as np
import pytest
import zmq
import zmq.green as zmq_green
from testmedia import VTEST, speech_wav
from xvfb import xvfb_display

from zmeet.broker import media as broker_media
from zmeet.client.media import SUBSCRIBE_RCVHWM, MediaSubscriber, Meeting, MeetingOptions
from zmeet.client.session import Session
from zmeet.devices import Recorder, ScreenSource, VideoFileSource, decode_jpeg, encode_jpeg
from zmeet.errors import DeviceError, RemoteProtocolError
from zmeet.media import KIND_COLOURS_BGR
from zmeet.media.tiling import decode_reduction
from zmeet.protocol import HEADER, MediaFrame, decode_published, encode_published
from zmeet.protocol.limits import MAX_MEDIA_META_BYTES

pytestmark = pytest.mark.media

SCREEN_W, SCREEN_H = 1280, 720
KNOWN_BGR = (40, 200, 240)  # painted on the Xvfb screen
WAIT_S = 60.0  # bound of every wait for frames (pytest-timeout is 120 s)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def make_session(connect: Callable[..., Session]) -> Callable[..., Session]:
    """A connected session (conftest's ``connect``: the ``broker`` fixture, closed at
    teardown) that has joined ``rooms``."""

    def make(nick: str, *rooms: str) -> Session:
        s = connect(nick)
        for room in rooms:
            s.join(room)
        return s

    return make


@pytest.fixture
def make_meeting(make_session: Callable[..., Session]) -> Iterator[Callable[..., Meeting]]:
    """Meetings started by the test, stopped before the sessions close (and before an Xvfb
    fixture requested earlier is killed)."""
    meetings: list[Meeting] = []

    def make(session: Session, room: str, **options) -> Meeting:
        meeting = Meeting(session, room, MeetingOptions(**options))
        meetings.append(meeting)
        meeting.start()
        return meeting

    yield make
    for meeting in reversed(meetings):
        meeting.stop()


@pytest.fixture
def xvfb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private Xvfb screen; DISPLAY points at it for this test only."""
    with xvfb_display(tmp_path / "xvfb.log", SCREEN_W, SCREEN_H) as display:
        monkeypatch.setenv("DISPLAY", display)
        yield display


def paint_root(tmp_path: Path, colour_bgr: tuple[int, int, int]) -> None:
    """Fill the X root window (of $DISPLAY) with one colour, with ImageMagick's ``display``."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = colour_bgr
    png = tmp_path / "paint.png"
    cv2.imwrite(str(png), image)
    # it paints, then exits with status 1 when drawing on the root window: the frames are
    # what the tests check
    subprocess.run(["display", "-window", "root", str(png)], check=False, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a video file (fewer if it is shorter)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    for _ in range(count):
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def read_sidecar(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the lane, end to end ----------------------------------------------------------------------

both_forwarders = pytest.mark.parametrize(
    "broker", [{"media_forwarder": "native"}, {"media_forwarder": "python"}],
    indirect=True, ids=["native", "python"])
"""The broker's two media forwarders (docs/architecture.md, "Media forwarding") must behave
alike: the tests of what the broker forwards and drops run with each."""


def test_bob_records_alices_video_and_screen(
    xvfb: str, tmp_path: Path, make_session, make_meeting
) -> None:
    paint_root(tmp_path, KNOWN_BGR)
    alice = make_session("alice", "room")
    bob = make_session("bob", "room")
    rec = tmp_path / "rec"
    bob_meeting = make_meeting(
        bob, "room", video_file=str(VTEST), max_width=160, display=False, record_dir=str(rec)
    )
    alice_meeting = make_meeting(
        alice, "room", video_file=str(VTEST), screen=True, fps=10, display=False
    )
    bob_sub, alice_sub = bob_meeting.subscriber, alice_meeting.subscriber
    assert bob_sub is not None and alice_sub is not None

    def enough() -> bool:
        return (bob_sub.recorded("alice", "video") >= 15
                and bob_sub.recorded("alice", "screen") >= 5
                and alice_sub.received("bob", "video") >= 3)

    assert bob_meeting.wait_until(enough, WAIT_S), json.dumps(bob_meeting.stats())
    # a meeting subscribes to the others' streams only: its own never come back
    assert bob_sub.drops.own == 0 and alice_sub.drops.own == 0
    # without a window, and recording, the full layer only: alice's thumbs stay at the broker
    assert "thumb" not in bob_meeting.stats()["received"]["alice"]
    alice_stats, bob_stats = alice_meeting.stats(), bob_meeting.stats()
    json.dumps(alice_stats)  # JSON-able
    bob_meeting.stop()  # flushes the recordings
    alice_meeting.stop()

    assert alice_stats["sent"]["video"]["sent"] >= 15
    assert alice_stats["sent"]["screen"]["sent"] >= 5
    assert set(bob_stats["received"]) == {"alice"}  # not bob himself
    assert set(alice_stats["received"]) == {"bob"}
    assert sorted(p.name for p in rec.iterdir()) == [
        "alice-screen.avi", "alice-screen.jsonl", "alice-video.avi", "alice-video.jsonl",
    ]

    # video: each recorded frame is its source frame (found by pts_ms) to within JPEG's loss
    lines = read_sidecar(rec / "alice-video.jsonl")
    assert [line["index"] for line in lines] == list(range(len(lines)))
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    recorded = read_frames(rec / "alice-video.avi", len(lines))
    assert len(recorded) == len(lines)
    source_index = [round(line["pts_ms"] * 10 / 1000) for line in lines]
    source = read_frames(VTEST, max(source_index) + 1)
    for i in (0, len(lines) // 2, len(lines) - 1):
        assert lines[i]["width"] == 768 and lines[i]["height"] == 576
        psnr = cv2.PSNR(source[source_index[i]], recorded[i])
        assert psnr > 30, f"frame {i} (pts {lines[i]['pts_ms']} ms): PSNR {psnr:.1f} dB"
    # ... and not just any frame of the file: a neighbour matches worse
    i = len(lines) // 2
    if source_index[i] + 5 < len(source):
        assert cv2.PSNR(source[source_index[i] + 5], recorded[i]) < cv2.PSNR(
            source[source_index[i]], recorded[i])

    # screen: full size, the colour painted on the root window
    screen_lines = read_sidecar(rec / "alice-screen.jsonl")
    assert screen_lines[0]["width"] == SCREEN_W and screen_lines[0]["height"] == SCREEN_H
    screen = read_frames(rec / "alice-screen.avi", 1)[0]
    assert screen.shape == (SCREEN_H, SCREEN_W, 3)
    mean = screen.reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(mean - np.array(KNOWN_BGR)) < 6), mean


@both_forwarders
def test_frames_stay_in_their_room(broker, make_session, make_meeting) -> None:
    alice = make_session("alice", "room")
    bob = make_session("bob", "room")
    carol = make_session("carol", "other")
    dave = make_session("dave", "other")
    small = {"max_width": 160, "display": False}
    bob_meeting = make_meeting(bob, "room", **small)
    dave_meeting = make_meeting(dave, "other", **small)
    make_meeting(carol, "other", video_file=str(VTEST), **small)
    make_meeting(alice, "room", video_file=str(VTEST), **small)
    bob_sub, dave_sub = bob_meeting.subscriber, dave_meeting.subscriber
    assert bob_sub is not None and dave_sub is not None

    # carol's frames are flowing (dave gets them) while bob gets alice's
    assert bob_meeting.wait_until(lambda: bob_sub.received("alice", "video") >= 5, WAIT_S)
    assert dave_meeting.wait_until(lambda: dave_sub.received("carol", "video") >= 5, WAIT_S)
    assert bob_meeting.wait_until(lambda: bob_sub.received("alice", "video") >= 8, WAIT_S)

    bob_stats, dave_stats = bob_meeting.stats(), dave_meeting.stats()
    assert set(bob_stats["received"]) == {"alice"}
    assert set(dave_stats["received"]) == {"carol"}
    # nothing of the other room reached bob's socket at all, not even to be filtered
    assert bob_stats["dropped"]["foreign_room"] == 0
    assert dave_stats["dropped"]["foreign_room"] == 0


@both_forwarders
def test_the_broker_forwards_only_well_formed_frames_of_members(broker, make_session) -> None:
    """The media fast path (docs/protocol.md, 3.9): the broker reads only what routing needs,
    forwards the meta octets untouched under a topic that names the sender, and drops (and
    counts) anything else, from a spoofed ``from`` to a missing payload."""
    alice = make_session("alice", "room")
    make_session("bob", "room")
    ctx = zmq_green.Context.instance()
    sub = alice.secure(ctx.socket(zmq.SUB))  # CURVE clients with alice's key
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"media/")
    sub.connect(alice.endpoints["media_out"])
    dealer = alice.secure(ctx.socket(zmq.DEALER))
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.IDENTITY, alice.welcome.media_token)
    dealer.connect(alice.endpoints["media_in"])
    stranger = alice.secure(ctx.socket(zmq.DEALER))
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.setsockopt(zmq.IDENTITY, b"m" + b"x" * 15)
    stranger.connect(alice.endpoints["media_in"])
    assert broker.media_forwarder == broker.config.media_forwarder
    try:
        fields = {"room": "room", "kind": "video", "seq": 0, "capture_ts_us": 1, "pts_ms": 0,
                  "width": 1, "height": 1, "fps": 1.0, "codec": "jpeg", "x-extra": [1, 2]}

        def meta(**changes) -> bytes:
            return msgpack.packb({**fields, **changes})

        def recv_one() -> list[bytes]:
            with gevent.Timeout(WAIT_S):
                return sub.recv_multipart()

        # the subscription is live once a probe comes back (never a sleep)
        with gevent.Timeout(WAIT_S):
            while True:
                dealer.send_multipart([HEADER, b"FRAME", meta(), b"probe"])
                if sub.poll(50):
                    break
        while sub.poll(200):
            sub.recv_multipart()
        dropped_before = broker.stats["media_dropped"]
        bad = [
            [HEADER, b"FRAME", meta(**{"from": "bob"}), b"spoofed sender"],
            [HEADER, b"FRAME", meta(kind="smell"), b"unknown kind"],
            [HEADER, b"FRAME", meta(room="other"), b"not a member"],
            [HEADER, b"FRAME", meta(room=7), b"room not a string"],
            [HEADER[:-1] + b"\x09", b"FRAME", meta(), b"another version"],
            [HEADER, b"SAY", meta(), b"another command"],
            [HEADER, b"FRAME", meta()],
            [HEADER, b"FRAME", meta(), b"one", b"too many"],
            [HEADER, b"FRAME", b"\xc1", b"not msgpack"],
            [HEADER, b"FRAME", msgpack.packb(["room", "video"]), b"not a map"],
            [HEADER, b"FRAME", meta(pad="x" * MAX_MEDIA_META_BYTES), b"meta too large"],
        ]
        for frames in bad:
            dealer.send_multipart(frames)
        stranger.send_multipart([HEADER, b"FRAME", meta(), b"unknown token"])
        good_meta = meta(seq=1)
        dealer.send_multipart([HEADER, b"FRAME", good_meta, b"good"])
        topic, header, command, got_meta, payload = recv_one()
        assert payload == b"good"  # sent last on the same connection: every bad one was seen
        assert (topic, header, command) == (b"media/room/alice/video", HEADER, b"FRAME")
        assert got_meta == good_meta  # untouched, unknown key and all
        _, frame = decode_published([topic, header, command, got_meta, payload])
        assert frame.sender == "alice" and frame.seq == 1

        def all_dropped() -> bool:
            return broker.stats["media_dropped"] - dropped_before == len(bad) + 1

        # the stranger's connection is not ordered with alice's: each probe alice sends and
        # gets back is one more turn of the broker's media loop, until the stranger's drop
        for _ in range(1000):
            if all_dropped():
                break
            dealer.send_multipart([HEADER, b"FRAME", meta(seq=2), b"probe"])
            assert recv_one()[-1] == b"probe"
        assert all_dropped()
        assert not sub.poll(0)
    finally:
        for sock in (sub, dealer, stranger):
            sock.close(linger=0)


def test_the_native_forwarder_is_built_where_it_can_be(make_broker) -> None:
    """setup.py builds it as optional: where a C compiler and Python's headers exist, a missing
    module is a broken install, not a fallback to accept quietly."""
    can_build = shutil.which(os.environ.get("CC", "cc")) and Path(
        sysconfig.get_paths()["include"], "Python.h").exists()
    if not can_build:
        pytest.skip("no C compiler or no Python headers: the broker forwards media in Python")
    assert broker_media.MediaForwarder is not None
    with pytest.raises(ValueError, match="media_forwarder"):
        make_broker(media_forwarder="fast")


def test_last_n_receives_only_the_latest_speakers_video(make_session, make_meeting) -> None:
    """``max_streams=1``: dave subscribes to one sender's video, so the broker sends him no
    other (bandwidth is shed, not just pixels); when carol speaks (real speech through the
    broker into dave's mixer) her video replaces alice's."""
    senders = {nick: make_session(nick, "room") for nick in ("alice", "bob", "carol")}
    dave = make_session("dave", "room")
    small = {"max_width": 160, "display": False}
    meetings = {nick: make_meeting(s, "room", video_file=str(VTEST), **small)
                for nick, s in senders.items()}
    dave_meeting = make_meeting(dave, "room", display=False, listen=True, output_device=False,
                                max_streams=1)
    sub = dave_meeting.subscriber
    assert sub is not None

    def video(nick: str) -> bytes:
        return b"media/room/%s/video" % nick.encode()

    # nobody spoke yet: the first to join is shown, the others are not even sent
    assert dave_meeting.wait_until(lambda: sub.received("alice", "video") >= 5, WAIT_S)
    assert video("alice") in sub.topics("room")
    assert not {video("bob"), video("carol")} & sub.topics("room")
    assert sub.received("bob", "video") == sub.received("carol", "video") == 0
    # bob is there (his state comes, once a second): only his video is not taken
    assert dave_meeting.wait_until(lambda: sub.received("bob", "state") > 0, WAIT_S)

    # carol speaks, paced like a microphone (20 ms blocks), through her own publisher
    with wave.open(str(speech_wav()), "rb") as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    publisher = meetings["carol"].publisher
    assert publisher is not None

    def speak() -> None:
        for seq in range(min(150, speech.size // 960)):
            block = speech[seq * 960:(seq + 1) * 960]
            publisher.send_frame(MediaFrame(
                room="room", kind="audio", seq=seq, capture_ts_us=time.time_ns() // 1000,
                pts_ms=seq * 20, width=0, height=0, fps=50.0, codec="pcm",
                payload=block.tobytes()))
            gevent.sleep(0.02)  # pacing: the microphone's block time, not a wait

    speaker = gevent.spawn(speak)
    try:
        assert dave_meeting.wait_until(lambda: sub.received("carol", "video") >= 5, WAIT_S), \
            dave_meeting.stats()
        assert dave_meeting.active_speaker() == "carol"
        assert video("carol") in sub.topics("room") and video("alice") not in sub.topics("room")
        alice_frames = sub.received("alice", "video")
        carol_frames = sub.received("carol", "video")
        assert dave_meeting.wait_until(
            lambda: sub.received("carol", "video") >= carol_frames + 10, WAIT_S)
        assert sub.received("alice", "video") == alice_frames  # no longer sent to dave
        assert sub.received("bob", "video") == 0
    finally:
        speaker.kill()


@pytest.mark.broker_config(heartbeat_interval_ms=100)
def test_a_meeting_follows_a_broker_that_restarts_on_other_media_ports(
    make_broker, connect, make_meeting
) -> None:
    """The control endpoint stays, the media endpoints change: the publisher reopens with its
    new token at the new media_in, the subscriber reconnects to the new media_out, and the
    member list (rejoined) gives the same streams again."""
    first = make_broker(heartbeat_interval_ms=100)
    alice, bob = connect("alice", first), connect("bob", first)
    for session in (alice, bob):
        session.join("room")
    small = {"max_width": 160, "display": False}
    make_meeting(alice, "room", video_file=str(VTEST), **small)
    bob_meeting = make_meeting(bob, "room", **small)
    sub = bob_meeting.subscriber
    assert sub is not None
    assert bob_meeting.wait_until(lambda: sub.received("alice", "video") >= 3, WAIT_S)
    old = dict(first.endpoints)
    first.stop()

    # the address (and control) stay; the other lanes take ports of the system's choosing
    # (address + 2 to + 4 could be in use by any socket of this machine by now)
    second = make_broker(heartbeat_interval_ms=100, address=old["entry"], control=old["control"],
                         events="tcp://127.0.0.1:*", media_in="tcp://127.0.0.1:*",
                         media_out="tcp://127.0.0.1:*")
    assert second.endpoints["media_out"] != old["media_out"]
    before = sub.received("alice", "video")
    assert bob_meeting.wait_until(lambda: sub.received("alice", "video") >= before + 5, WAIT_S), \
        bob_meeting.stats()
    assert bob.endpoints["media_out"] == second.endpoints["media_out"]


@both_forwarders
def test_a_sender_sends_only_the_layers_someone_receives(
    broker, make_session, make_meeting
) -> None:
    """MEDIA-DEMAND (docs/protocol.md, 3.9.5): the broker's XPUB sees which of alice's
    streams have subscribers, and her publisher suspends the others: the thumbnail while bob
    takes the full video, the full video while he takes the thumbnail, both when he goes."""
    alice = make_session("alice", "room")
    bob = make_session("bob", "room")
    meeting = make_meeting(alice, "room", video_file=str(VTEST), max_width=640, display=False)
    publisher = meeting.publisher
    assert publisher is not None
    sub = MediaSubscriber(bob, [])
    sub.set_streams("room", {"alice": {"video"}})
    sub.start()
    try:
        def sent(kind: str) -> int:
            stats = publisher.stats()["video"]
            return stats["sent"] if kind == "video" else stats["thumb_sent"]

        def suspended(kind: str) -> int:
            stats = publisher.stats()["video"]
            return stats["suspended"] if kind == "video" else stats["thumb_suspended"]

        for wanted, unwanted in (("video", "thumb"), ("thumb", "video")):
            sub.set_streams("room", {"alice": {wanted}})
            assert publisher.wait_until(lambda: publisher.demand == {wanted}, WAIT_S), \
                publisher.demand  # noqa: B023 (the lambdas run before the loop goes on)
            held, flowing = sent(unwanted), sent(wanted)
            assert publisher.wait_until(
                lambda: sent(wanted) >= flowing + 5 and suspended(unwanted) >= 5, WAIT_S)  # noqa: B023
            assert sent(unwanted) == held  # not one more frame of the layer no one takes
            assert sub.received("alice", wanted) > 0
        sub.stop()  # bob's SUB goes: the broker sees its last unsubscription
        assert publisher.wait_until(lambda: publisher.demand == frozenset(), WAIT_S)
        video, thumb = sent("video"), sent("thumb")
        assert publisher.wait_until(lambda: suspended("video") >= 5 + video, WAIT_S)
        assert (sent("video"), sent("thumb")) == (video, thumb)
    finally:
        sub.stop()


class _FakeSession:
    """What MediaSubscriber uses of a Session, pointing at a test's own PUB."""

    def __init__(self, context, media_out: str, nick: str) -> None:
        self.context = context
        self.nick = nick
        self.welcome = object()
        self.endpoints = {"media_out": media_out}
        self.welcome_listeners: list = []

    def secure(self, sock):  # the test's own PUB has no CURVE
        return sock


class _FakeViewer:
    def __init__(self) -> None:
        self.shown: list[tuple[str, str, bytes]] = []
        self.superseded: Counter[tuple[str, str]] = Counter()  # none: it keeps every call

    def show(self, sender: str, kind: str, image) -> None:
        self.shown.append((sender, kind, bytes(image)))


def _published(sender: str, seq: int) -> list[bytes]:
    # a real capture time: the subscriber drops frames much later than their stream's quickest
    frame = MediaFrame(room="room", kind="video", seq=seq, capture_ts_us=time.time_ns() // 1000,
                       pts_ms=seq,
                       width=1, height=1, fps=30.0, codec="jpeg", sender=sender,
                       payload=b"seq %d" % seq)
    return encode_published(frame)


def test_a_receiver_that_falls_behind_gets_the_newest_frame_not_a_backlog() -> None:
    """While the receiver's greenlet cannot run, 200 frames are published: it then gets at
    most what the two queues hold (PUB's SNDHWM plus its RCVHWM), counts the rest as lost,
    and the viewer is handed only the newest frame of what it drained."""
    context = zmq_green.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 16)
    endpoint = f"inproc://media-behind-{os.getpid()}-{id(pub)}"
    pub.bind(endpoint)
    raw_pub = zmq.Socket.shadow(pub.underlying)
    viewer = _FakeViewer()
    sub = MediaSubscriber(_FakeSession(context, endpoint, "bob"), ["room"], viewer=viewer)
    try:
        sub.start()
        # the subscription is live once a probe gets through
        for seq in range(200):
            raw_pub.send_multipart(_published("probe", seq), zmq.NOBLOCK)
            if sub.first_frame.wait(timeout=0.05):
                break
        assert sub.first_frame.is_set()
        # the burst, without yielding to the hub: the subscriber's greenlet cannot run
        burst = 200
        for seq in range(burst):
            raw_pub.send_multipart(_published("alice", seq), zmq.NOBLOCK)
        assert sub.wait_until(lambda: sub.received("alice", "video") >= 1, WAIT_S)
        # once drained, a live frame gets through at once (reading EVENTS makes the PUB take
        # the reader's "room again" notices now: libzmq looks at them at most once a
        # millisecond on send, and till then drops into a pipe it thinks full)
        raw_pub.getsockopt(zmq.EVENTS)
        raw_pub.send_multipart(_published("alice", 1000), zmq.NOBLOCK)
        assert sub.wait_until(lambda: sub.seqs.last_seq(("alice", "video")) == 1000, WAIT_S)
    finally:
        sub.stop()
        pub.close(linger=0)
    received = sub.received("alice", "video")
    queues = 16 + SUBSCRIBE_RCVHWM
    assert received <= queues + 1 + 2, received  # the live frame, and libzmq's slack
    assert sub.seqs.lost[("alice", "video")] >= 1000 - received - 2
    stats = sub.stats()["streams"]["alice"]["video"]
    shown = [payload for sender, _kind, payload in viewer.shown if sender == "alice"]
    assert shown[-1] == b"seq 1000"
    assert len(shown) < received  # older frames of a batch never reached the viewer
    assert stats["superseded"] == received - len(shown)
    newest_of_burst = max(int(p.split()[1]) for p in shown[:-1])
    assert shown[0] == b"seq %d" % newest_of_burst


def test_meeting_refuses_sources_it_cannot_open(
    tmp_path: Path, make_session, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = make_session("alice", "room")
    with pytest.raises(ValueError, match="not both"):
        Meeting(alice, "room", MeetingOptions(camera=0, video_file=str(VTEST)))
    with pytest.raises(ValueError):
        Meeting(alice, "room", MeetingOptions(quality=0))
    with pytest.raises(ValueError):
        Meeting(alice, "room", MeetingOptions(max_width=0))

    missing = tmp_path / "missing.avi"
    meeting = Meeting(alice, "room", MeetingOptions(video_file=str(missing), display=False))
    with pytest.raises(DeviceError, match="missing.avi"):
        meeting.start()
    assert meeting.publisher is None and meeting.subscriber is None
    meeting.stop()  # idempotent after a failed start

    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(DeviceError, match="junk.avi"):
        Meeting(alice, "room", MeetingOptions(video_file=str(junk), display=False)).start()

    with pytest.raises(DeviceError, match="camera"):
        Meeting(alice, "room", MeetingOptions(camera=63, display=False)).start()

    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(DeviceError, match="DISPLAY"):
        Meeting(alice, "room", MeetingOptions(screen=True, display=False)).start()
    with pytest.raises(DeviceError, match="DISPLAY"):
        Meeting(alice, "room", MeetingOptions(display=True)).start()  # a window without a display


# --- devices -----------------------------------------------------------------------------------


def _write_video(path: Path, count: int, size: tuple[int, int] = (64, 48), fps: float = 20.0):
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"),
                             fps, size)
    assert writer.isOpened()
    for i in range(count):
        frame = np.full((size[1], size[0], 3), 40 * i % 256, np.uint8)
        writer.write(frame)
    writer.release()


def test_video_file_source_positions_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "three.avi"
    _write_video(path, 3)
    with VideoFileSource(path, loop=False) as once:
        assert once.native_fps == pytest.approx(20.0)
        assert (once.width, once.height) == (64, 48)
        got = [once.read() for _ in range(4)]
        assert [f.pts_ms for f in got[:3]] == [0, 50, 100]
        assert got[3] is None
        assert got[0].image.shape == (48, 64, 3) and got[0].image.dtype == np.uint8
    with VideoFileSource(path, loop=True) as looping:
        pts = [looping.read_jpeg(quality=90, max_width=32).pts_ms for _ in range(5)]
        assert pts == [0, 50, 100, 0, 50]
        assert looping.loops == 1
    with VideoFileSource(VTEST) as vtest:
        frames = [vtest.read() for _ in range(3)]
    direct = read_frames(VTEST, 3)
    for frame, expected in zip(frames, direct, strict=True):
        assert np.array_equal(frame.image, expected)
    assert [f.pts_ms for f in frames] == [0, 100, 200]


def test_jpeg_scales_to_max_width_and_refuses_junk() -> None:
    image = np.zeros((1080, 1920, 3), np.uint8)
    image[:, :960] = (0, 0, 255)
    data, width, height = encode_jpeg(image, quality=80, max_width=1280)
    assert (width, height) == (1280, 720)
    decoded = decode_jpeg(data)
    assert decoded.shape == (720, 1280, 3)
    assert cv2.PSNR(cv2.resize(image, (1280, 720), interpolation=cv2.INTER_AREA), decoded) > 30
    with pytest.raises(ValueError):
        encode_jpeg(image, quality=101)
    with pytest.raises(RemoteProtocolError):
        decode_jpeg(b"not a jpeg")
    with pytest.raises(RemoteProtocolError):
        decode_jpeg(b"")


def test_a_jpeg_is_decoded_no_larger_than_its_tile_needs() -> None:
    image = np.zeros((720, 1280, 3), np.uint8)
    image[:, 640:] = (255, 255, 255)
    data, _, _ = encode_jpeg(image, quality=90)
    half = decode_jpeg(data, reduce=2)
    assert half.shape == (360, 640, 3)
    assert half[:, :300].mean() < 5 and half[:, 340:].mean() > 250  # the same picture
    assert decode_jpeg(data, reduce=8).shape == (90, 160, 3)
    with pytest.raises(ValueError):
        decode_jpeg(data, reduce=3)
    # the largest reduction that still fills the tile, never one that is scaled up again
    assert decode_reduction(1280, 720, 1280, 720) == 1
    assert decode_reduction(1280, 720, 640, 360) == 2
    assert decode_reduction(1280, 720, 641, 361) == 1
    assert decode_reduction(1280, 720, 316, 400) == 4  # letterboxed: the width decides
    assert decode_reduction(1280, 720, 100, 50) == 8
    assert decode_reduction(320, 180, 636, 334) == 1
    assert decode_reduction(0, 720, 10, 10) == 1


def _frame(sender: str, seq: int, image: np.ndarray, kind: str = "video") -> MediaFrame:
    data, width, height = encode_jpeg(image, quality=90)
    return MediaFrame(room="room", kind=kind, seq=seq, capture_ts_us=1_000_000 + seq,
                      pts_ms=seq * 100, width=width, height=height, fps=10.0, codec="jpeg",
                      sender=sender, payload=data)


def test_recorder_writes_files_and_sidecars(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "rec")
    recorder.open()
    grey = np.full((60, 80, 3), 128, np.uint8)
    bigger = np.full((120, 160, 3), 200, np.uint8)
    recorder.write(_frame("alice", 0, grey), 5)
    recorder.write(_frame("alice", 2, bigger), 6)  # another size: resized to the first
    recorder.write(_frame("bob", 7, grey, kind="screen"), 7)
    with pytest.raises(RemoteProtocolError):
        recorder.write(_frame("../etc", 0, grey))
    with pytest.raises(RemoteProtocolError):
        recorder.write(MediaFrame(room="room", kind="video", seq=3, capture_ts_us=0, pts_ms=0,
                                  width=1, height=1, fps=10.0, codec="jpeg", sender="alice",
                                  payload=b"garbage"))
    assert recorder.stats()["streams"]["alice/video"]["resized"] == 1
    recorder.close()
    recorder.close()  # idempotent
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["alice-video.avi", "alice-video.jsonl", "bob-screen.avi", "bob-screen.jsonl"]
    lines = read_sidecar(tmp_path / "rec" / "alice-video.jsonl")
    assert lines == [
        {"index": 0, "seq": 0, "pts_ms": 0, "capture_ts_us": 1_000_000, "received_ts_us": 5,
         "width": 80, "height": 60},
        {"index": 1, "seq": 2, "pts_ms": 200, "capture_ts_us": 1_000_002, "received_ts_us": 6,
         "width": 160, "height": 120},
    ]
    frames = read_frames(tmp_path / "rec" / "alice-video.avi", 5)
    assert len(frames) == 2 and frames[1].shape == (60, 80, 3)
    assert abs(float(frames[1].mean()) - 200) < 3


def test_screen_source_grabs_the_xvfb_screen(xvfb: str, tmp_path: Path) -> None:
    paint_root(tmp_path, KNOWN_BGR)
    with ScreenSource(1) as screen:
        assert (screen.width, screen.height) == (SCREEN_W, SCREEN_H)
        frame = screen.read()
        encoded = screen.read_jpeg(quality=80, max_width=640)
    assert frame.image.shape == (SCREEN_H, SCREEN_W, 3) and frame.image.dtype == np.uint8
    assert tuple(int(v) for v in frame.image[SCREEN_H // 2, SCREEN_W // 2]) == KNOWN_BGR
    assert (encoded.width, encoded.height) == (640, 360)
    with pytest.raises(DeviceError, match="no monitor 9"), ScreenSource(9):
        pass


# --- the viewer, in its own process ------------------------------------------------------------

VIEWER_SCRIPT = r"""
import json, sys
import cv2, mss, numpy as np
from zmeet.devices import Viewer
from zmeet.errors import DeviceError

out = sys.argv[1]
viewer = Viewer("zmeet test", canvas_w=640, canvas_h=360, refresh_ms=10)
viewer.start()
red = np.zeros((180, 320, 3), np.uint8); red[:] = (0, 0, 255)
blue = np.zeros((720, 1280, 3), np.uint8); blue[:] = (255, 0, 0)
blue_jpeg = cv2.imencode(".jpg", blue)[1].tobytes()
viewer.show("carol", "video", b"not a jpeg")  # first: taken no later than bob's
viewer.show("alice", "video", red)
viewer.show("bob", "screen", blue_jpeg)  # decoded by the viewer
shown = viewer.wait_shown([("alice", "video"), ("bob", "screen")], 30)
# its tile is a quarter of its size: the next frame is decoded at 1/2 in libjpeg
viewer.show("bob", "screen", blue_jpeg)
for _ in range(100):
    if viewer.decoded_reduced or not viewer.wait_turn(5):
        break
red_bgra = np.array([0, 0, 255])

def grab(sct):
    return np.asarray(sct.grab(sct.monitors[1]))[:, :, :3]

# the X server paints the window a little after Qt shows it: look again after each turn of
# the window loop, until the red tile is on the screen (bounded in turns and time)
with mss.MSS() as sct:
    for turns in range(500):
        shot = grab(sct)
        if np.all(shot[:360, :320] == red_bgra, axis=2).sum() > 20000:
            break
        if not viewer.wait_turn(5):
            break
    cv2.imwrite(out + "/open.png", shot)
    viewer.close()
    for gone in range(500):  # and until the window is off the screen
        shot = grab(sct)
        if not np.all(shot == red_bgra, axis=2).any():
            break
    cv2.imwrite(out + "/closed.png", shot)
try:
    Viewer("second").start()
    second = "started"
except DeviceError as exc:
    second = str(exc)
print(json.dumps({"shown": shown, "running": viewer.running, "stats": viewer.stats(),
                  "second": second, "turns": turns, "gone": gone}))
"""


def _pixels_near(image: np.ndarray, bgr: tuple[int, int, int], tolerance: int = 24) -> int:
    return int(np.all(np.abs(image.astype(int) - np.array(bgr)) <= tolerance, axis=2).sum())


def test_viewer_shows_labelled_tiles_on_xvfb(xvfb: str, tmp_path: Path) -> None:
    # OpenCV's Qt binds its windows to one thread for the life of a process, and aborts the
    # process if its X server goes away: so the window lives in a child process
    done = subprocess.run(
        [sys.executable, "-c", VIEWER_SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=90, env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["shown"] is True, report
    assert report["running"] is False  # closing stopped the thread
    assert report["stats"]["bad"] == {"carol/video": 1}, report
    assert report["stats"]["decoded_reduced"] >= 1, report  # a big picture in a small tile
    assert "one viewer per process" in report["second"], report

    shot = cv2.imread(str(tmp_path / "open.png"))
    window = shot[:360, :640]  # the window sits at (0, 0): Xvfb has no window manager
    # two tiles side by side, in name order: alice's red on the left, bob's blue on the right
    counts = {
        "red left": _pixels_near(window[:, :320], (0, 0, 255)),
        "blue right": _pixels_near(window[:, 320:], (255, 0, 0)),
        "video label": _pixels_near(window, KIND_COLOURS_BGR["video"], 8),
        "screen label": _pixels_near(window, KIND_COLOURS_BGR["screen"], 8),
    }
    assert counts["red left"] > 20_000 and counts["blue right"] > 20_000, counts
    assert counts["video label"] > 2_000 and counts["screen label"] > 2_000, counts
    closed = cv2.imread(str(tmp_path / "closed.png"))
    assert _pixels_near(closed, (0, 0, 255)) == 0, "the window is still on the screen"
