"""The broker's media lane on its own (zmeet/broker/media.py): the forwarding rule with no
traffic, and both forwarding loops and media demand over real sockets on loopback, with no
broker around it: what the lane is given (sessions by token, membership, a direct sender, a
clock) is plain data here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gevent
import gevent.queue
import msgpack
import pytest
import zmq
import zmq.green as zmq_green
from hypothesis import given
from hypothesis import strategies as st

from zmeet import protocol as p
from zmeet.broker import media
from zmeet.broker.media import MediaLane, native_forwarder, well_formed
from zmeet.clock import ManualClock
from zmeet.protocol import HEADER
from zmeet.protocol.limits import MAX_MEDIA_FRAME_BYTES, MAX_MEDIA_META_BYTES

WAIT_S = 5.0
TOKEN = b"m" + b"a" * 15
FIELDS = {"room": "room", "kind": "video", "seq": 0, "capture_ts_us": 1, "pts_ms": 0,
          "width": 1, "height": 1, "fps": 1.0, "codec": "jpeg"}


def meta(**changes: object) -> bytes:
    return msgpack.packb({**FIELDS, **changes})


@dataclass
class Sender:
    """What the lane reads of a broker session."""

    nick: str
    media_token: bytes
    last_seen: float = 0.0
    key_bytes: bytes = b""  # no CURVE on these sockets: no User-Id, as on an insecure broker


class Host:
    """What a broker gives the lane: sessions by token, rooms, and an outbox for directs."""

    def __init__(self) -> None:
        self.by_token: dict[bytes, Sender] = {}
        self.members: set[tuple[str, str]] = set()
        self.directs: gevent.queue.Queue = gevent.queue.Queue()
        self.clock = ManualClock()

    def is_member(self, room: str, nick: str) -> bool:
        return (room, nick) in self.members

    def send_direct(self, sender: Sender, message: p.Message) -> None:
        self.directs.put((sender.nick, message))

    def add(self, nick: str, token: bytes, *rooms: str) -> Sender:
        sender = self.by_token[token] = Sender(nick, token)
        self.members.update((room, nick) for room in rooms)
        return sender

    def lane(self, context: zmq_green.Context, native: bool = False) -> MediaLane:
        return MediaLane(context, native, by_token=self.by_token, is_member=self.is_member,
                         send_direct=self.send_direct, clock=self.clock)


@pytest.fixture
def context() -> Iterator[zmq_green.Context]:
    ctx = zmq_green.Context()
    yield ctx
    ctx.term()


def test_the_forwarder_choice() -> None:
    assert native_forwarder("python") is False
    assert native_forwarder("auto") is (media.MediaForwarder is not None)
    with pytest.raises(ValueError, match="media_forwarder 'fast'"):
        native_forwarder("fast")
    if media.MediaForwarder is not None:
        assert native_forwarder("native") is True


def test_well_formed_is_the_frame_shape() -> None:
    good = [TOKEN, HEADER, b"FRAME", meta(), b"payload"]
    assert well_formed(good)
    assert well_formed([TOKEN, HEADER, b"FRAME", b"x" * MAX_MEDIA_META_BYTES,
                        b"x" * MAX_MEDIA_FRAME_BYTES])
    for bad in (
        good[:4],
        [*good, b"more"],
        [TOKEN, HEADER[:-1] + b"\x09", b"FRAME", meta(), b"p"],
        [TOKEN, HEADER, b"SAY", meta(), b"p"],
        [TOKEN, HEADER, b"FRAME", b"x" * (MAX_MEDIA_META_BYTES + 1), b"p"],
        [TOKEN, HEADER, b"FRAME", meta(), b"x" * (MAX_MEDIA_FRAME_BYTES + 1)],
    ):
        assert not well_formed(bad)


def test_route_gives_the_topic_and_tells_demand_on_the_first_frame_in_a_room(context) -> None:
    host = Host()
    alice = host.add("alice", TOKEN, "room", "other")
    lane = host.lane(context)
    try:
        host.clock.advance(5)
        assert lane.route(TOKEN, meta()) == b"media/room/alice/video"
        assert alice.last_seen == host.clock.monotonic_s()
        # the first frame in the room: alice is told no one takes anything yet
        assert host.directs.get_nowait() == ("alice", p.MediaDemand(room="room", kinds=()))
        assert lane.route(TOKEN, meta(kind="audio", seq=1)) == b"media/room/alice/audio"
        assert host.directs.empty()  # not again in the same room
        assert lane.route(TOKEN, meta(room="other")) == b"media/other/alice/video"
        assert host.directs.get_nowait() == ("alice", p.MediaDemand(room="other", kinds=()))
    finally:
        lane.close()


def test_route_drops_what_the_rule_refuses(context) -> None:
    host = Host()
    alice = host.add("alice", TOKEN, "room")
    lane = host.lane(context)
    try:
        for token, octets in (
            (b"m" + b"x" * 15, meta()),  # unknown token
            (TOKEN, meta(**{"from": "bob"})),  # a sender stamped by the sender
            (TOKEN, meta(**{"from": 0})),
            (TOKEN, meta(kind="smell")),
            (TOKEN, meta(room="elsewhere")),  # not a member
            (TOKEN, meta(room=7)),
            (TOKEN, b"\xc1"),
            (TOKEN, msgpack.packb(["room", "video"])),
            (TOKEN, msgpack.packb({"room": "room"})),
        ):
            assert lane.route(token, octets) is None, octets
        assert alice.last_seen == 0.0 and host.directs.empty()
    finally:
        lane.close()


@given(octets=st.binary(max_size=64))
def test_route_never_raises_for_any_meta(octets: bytes) -> None:
    host = Host()
    host.add("alice", TOKEN, "room")
    ctx = zmq_green.Context()
    lane = host.lane(ctx)
    try:
        topic = lane.route(TOKEN, octets)
        assert topic is None or topic.startswith(b"media/room/alice/")
    finally:
        lane.close()
        ctx.term()


def _recv(sock: zmq.Socket) -> list[bytes]:
    with gevent.Timeout(WAIT_S):
        return sock.recv_multipart()


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_both_loops_forward_by_the_one_rule_and_tell_demand(context, native: bool) -> None:
    """The compiled loop and the Python loop call the same :meth:`MediaLane.route`: a spy on
    it sees each well-formed frame once, and nothing else reaches it."""
    if native and media.MediaForwarder is None:
        pytest.skip("zmeet.broker._mediafwd was not built")
    host = Host()
    host.add("alice", TOKEN, "room")
    lane = host.lane(context, native)
    assert lane.forwarder == ("native" if native else "python")
    routed: list[bytes] = []
    rule = lane.route

    def spy(token: bytes, octets: bytes, user_id: bytes = b"") -> bytes | None:
        routed.append(octets)
        return rule(token, octets, user_id)

    lane.route = spy  # type: ignore[method-assign]
    endpoints = lane.bind("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    greenlets = lane.start()
    sub = context.socket(zmq.SUB)
    dealer = context.socket(zmq.DEALER)
    try:
        for sock in (sub, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"media/room/alice/video")
        sub.connect(endpoints["media_out"])
        dealer.setsockopt(zmq.IDENTITY, TOKEN)
        dealer.connect(endpoints["media_in"])
        # the subscription reaches the XPUB; alice's first frame tells her it is wanted
        with gevent.Timeout(WAIT_S):
            while True:
                dealer.send_multipart([HEADER, b"FRAME", meta(), b"probe"])
                nick, demand = host.directs.get()
                if demand.kinds == ("video",):
                    break
                assert (nick, demand) == ("alice", p.MediaDemand(room="room", kinds=())), demand
        while sub.poll(200):
            sub.recv_multipart()
        del routed[:]
        dealer.send_multipart([HEADER, b"SAY", meta(), b"not a frame"])  # dropped before route
        dealer.send_multipart([HEADER, b"FRAME", meta(kind="smell"), b"refused by route"])
        dealer.send_multipart([HEADER, b"FRAME", meta(seq=1), b"good"])
        topic, header, command, got_meta, payload = _recv(sub)
        assert (topic, header, command, got_meta, payload) == (
            b"media/room/alice/video", HEADER, b"FRAME", meta(seq=1), b"good")
        assert routed == [meta(kind="smell"), meta(seq=1)]
        assert lane.stats["media_dropped"] >= 2
        assert lane.media_demand("room", "alice") == ("video",)
        # bob's session ends and his SUB goes: alice is told no one takes her video
        sub.close(linger=0)
        with gevent.Timeout(WAIT_S):
            assert host.directs.get() == ("alice", p.MediaDemand(room="room", kinds=()))
        assert lane.media_demand("room", "alice") == ()
    finally:
        gevent.killall(greenlets, block=True, timeout=2)
        for sock in (sub, dealer):
            sock.close(linger=0)
        lane.close()


def test_demand_forgets_senders_whose_session_ended(context) -> None:
    host = Host()
    carol_token = b"m" + b"c" * 15
    host.add("alice", TOKEN, "room")
    host.add("carol", carol_token, "room")
    lane = host.lane(context)
    endpoints = lane.bind("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    greenlets = lane.start()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        for token in (TOKEN, carol_token):  # first frames: each is told no one takes them
            assert lane.route(token, meta()) is not None
            assert host.directs.get_nowait()[1] == p.MediaDemand(room="room", kinds=())
        del host.by_token[TOKEN]  # the broker ended alice's session
        # one connection passes its subscriptions in order: carol's direct comes after the
        # lane has handled the one to alice's video
        sub.setsockopt(zmq.SUBSCRIBE, b"media/room/alice/video")
        sub.setsockopt(zmq.SUBSCRIBE, b"media/room/carol/video")
        sub.connect(endpoints["media_out"])
        with gevent.Timeout(WAIT_S):
            assert host.directs.get() == ("carol", p.MediaDemand(room="room", kinds=("video",)))
        assert host.directs.empty()  # alice, gone, was told nothing
        assert lane.media_demand("room", "alice") == ("video",)  # the XPUB's view is kept
    finally:
        gevent.killall(greenlets, block=True, timeout=2)
        sub.close(linger=0)
        lane.close()
