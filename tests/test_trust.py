"""Trust on every lane (docs/protocol.md 5): CurveZMQ and ZAP, keys that own nicks and
sessions, impersonation attempts that must all fail, key pinning, and what travels on the wire.

Real brokers on loopback with real CURVE handshakes; an eavesdropper is a real ``tcpdump`` on
``lo``. Each impersonation attempt is its own test and asserts that it got nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import gevent
import msgpack
import pytest
import zmq
import zmq.green as zmq_green
from conftest import WAIT_S, curve_client, is_chat

from zmeet import keys
from zmeet import protocol as p
from zmeet.client import Session
from zmeet.errors import BrokerKeyChanged, BrokerUnavailable, InsecureBroker, Refused
from zmeet.protocol.limits import HEADER

pytestmark = pytest.mark.timeout(60)


def _no_reply(dealer: zmq_green.Socket, timeout_s: float = 1.0) -> bool:
    """Whether nothing arrives on ``dealer`` within ``timeout_s`` (a bounded wait for a reply
    that must not come: the broker refused the connection, or answers nothing)."""
    return not dealer.poll(int(timeout_s * 1000))


# --- the broker's identity ------------------------------------------------------------------


def test_the_broker_makes_its_key_pair_once_readable_by_its_owner_only(make_broker, tmp_path):
    first = make_broker()
    secret = tmp_path / "broker-data" / "broker.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    key = first.public_key
    assert len(key) == 40 and keys.parse_key(key) == key.encode()
    first.stop()
    assert make_broker().public_key == key  # the same data directory: the same broker


def test_discover_tells_the_key_and_lanes_and_the_client_pins_it(broker, connect):
    alice = connect("alice")
    assert alice.first_contact and alice.broker_key == broker.public_key.encode()
    assert keys.KnownBrokers().lookup(broker.address)[0] == broker.public_key.encode()
    again = connect("alice2")
    assert not again.first_contact  # remembered, said once


def test_a_broker_with_another_key_at_a_known_address_is_a_hard_error(broker, connect):
    connect("alice")
    known = keys.KnownBrokers()
    known.forget(broker.address)
    known.remember(broker.address, keys.KeyPair.generate().public)  # what was seen before
    with pytest.raises(BrokerKeyChanged) as caught:
        connect("bob")
    text = str(caught.value)
    assert keys.fingerprint(broker.public_key) in text and "zmeet keys --forget" in text


def test_a_pinned_key_is_checked(broker, connect):
    assert connect("alice", broker_key=broker.public_key).broker_key == broker.public_key.encode()
    url = broker.address.replace("tcp://", "zmeet://") + "/" + broker.public_key
    assert connect("bob", broker=url).first_contact is False
    with pytest.raises(BrokerKeyChanged):
        connect("carol", broker_key=keys.KeyPair.generate().public)


def test_an_insecure_broker_needs_the_client_to_say_so(make_broker, connect):
    insecure = make_broker(insecure=True)
    assert insecure.public_key == ""
    with pytest.raises(InsecureBroker):
        connect("alice", insecure, insecure=False)
    assert connect("bob", insecure, insecure=True).broker_key is None


def test_a_client_without_the_key_cannot_even_connect(broker):
    """A plain (NULL) DEALER on the control lane: the CURVE server never lets it in."""
    dealer = zmq_green.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(broker.endpoints["control"])
        dealer.send_multipart(p.encode(p.Hello(req_id=1, nick="mallory")))
        assert _no_reply(dealer)
    finally:
        dealer.close(linger=0)
    assert broker.rooms.holder("mallory") is None


# --- nicks belong to keys -------------------------------------------------------------------


def test_a_nick_belongs_to_the_key_that_registered_it_even_offline(broker, connect, wait_for):
    bob = connect("bob")
    bob.close()  # BYE: bob is offline
    with pytest.raises(Refused) as caught:
        connect("bob", identity=keys.KeyPair.generate())
    assert caught.value.code == p.ErrorCode.NICK_REGISTERED
    assert connect("bob").nick == "bob"  # bob's own key: welcome back


def test_a_nick_cannot_be_taken_during_its_owners_reconnect_window(broker, connect, person):
    alice = connect("alice")
    alice.close(bye=False)  # gone without BYE: the session waits for heartbeats
    for _ in range(3):
        with pytest.raises(Refused) as caught:
            connect("alice", identity=keys.KeyPair.generate())
        assert caught.value.code == p.ErrorCode.NICK_REGISTERED


def test_allow_keys_admits_listed_keys_only(make_broker, connect, person, raw_dealer):
    listed = person("alice")
    closed = make_broker(allow_keys=frozenset({listed.public}))
    assert connect("alice", closed).nick == "alice"
    stranger = raw_dealer(closed.endpoints["control"], identity=keys.KeyPair.generate())
    stranger.send_multipart(p.encode(p.Hello(req_id=1, nick="mallory")))
    assert _no_reply(stranger)
    assert closed.stats["zap_refused"] >= 1
    assert closed.rooms.holder("mallory") is None


# --- impersonation: 0 succeed ---------------------------------------------------------------


def test_a_routing_id_is_not_a_credential(broker, connect, wait_for, person, recv):
    """mallory's DEALER names alice's routing id: refused while alice is connected (no
    handover), and once alice's connection is gone but her session waits, every request of
    mallory's, a low req_id that would replay alice's cached WELCOME included, gets 401."""
    alice = connect("alice", reconnect=False)
    watcher = connect("watcher")
    for s in (alice, watcher):
        s.join("lobby")
    victim_id = alice._dealer.getsockopt(zmq.IDENTITY)
    ctx = zmq_green.Context.instance()

    def mallory() -> zmq_green.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, victim_id)
        curve_client(sock, broker.endpoints["control"])
        sock.connect(broker.endpoints["control"])
        return sock

    first = mallory()
    try:
        first.send_multipart(p.encode(p.Say(req_id=100, room="lobby", text="from mallory")))
        assert _no_reply(first)  # libzmq refused the connection: the id is in use
    finally:
        first.close(linger=0)
    alice.say("lobby", "alice is still alice")
    wait_for(watcher, is_chat("alice is still alice"))

    alice._dealer.close(linger=0)  # alice's link dies; her session waits for heartbeats
    second = mallory()
    try:
        with gevent.Timeout(WAIT_S):
            while True:  # until the old connection is gone at the broker and this one is in
                second.send_multipart(p.encode(p.Hello(req_id=1, nick="alice")))
                if second.poll(200):
                    break
        reply = p.decode(second.recv_multipart())
        assert isinstance(reply, p.Error) and reply.code == p.ErrorCode.NO_SESSION
        for request in (p.Say(req_id=2, room="lobby", text="forged"),
                        p.History(req_id=3, room="lobby", after_seq=0, limit=10)):
            second.send_multipart(p.encode(request))
            reply = recv(second)
            assert isinstance(reply, p.Error) and reply.code == p.ErrorCode.NO_SESSION, reply
    finally:
        second.close(linger=0)
    assert broker.stats["wrong_key"] >= 3
    watcher.say("lobby", "done")
    seen = wait_for(watcher, is_chat("done"))
    assert not any(getattr(e, "text", "") == "forged" for e in seen)


def test_a_media_token_is_not_a_credential(broker, connect, person):
    """mallory sends frames with alice's media token on her own key: dropped, counted; alice's
    own frames pass."""
    alice = connect("alice")
    bob = connect("bob")
    for s in (alice, bob):
        s.join("meet")
    token = alice.welcome.media_token
    ctx = zmq_green.Context.instance()
    endpoint = broker.endpoints["media_in"]
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    curve_client(sub, broker.endpoints["media_out"], person("bob"))
    sub.setsockopt(zmq.SUBSCRIBE, p.media_topic("meet", "alice", "video"))
    sub.connect(broker.endpoints["media_out"])
    socks = []

    def sender(identity: keys.KeyPair) -> zmq_green.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, token)
        curve_client(sock, endpoint, identity)
        sock.connect(endpoint)
        socks.append(sock)
        return sock

    def frame(payload: bytes) -> list[bytes]:
        meta = msgpack.packb({"room": "meet", "kind": "video", "seq": 0, "capture_ts_us": 0,
                              "pts_ms": 0, "width": 1, "height": 1, "fps": 1.0,
                              "codec": "jpeg"})
        return [HEADER, b"FRAME", meta, payload]

    try:
        forged = sender(keys.KeyPair.generate())
        with gevent.Timeout(WAIT_S):
            while broker.stats.get("media_wrong_key", 0) < 20:
                forged.send_multipart(frame(b"forged"))
                gevent.sleep(0.01)  # pacing: a sender at 100 fps
        forged.close(linger=0)
        real = sender(person("alice"))
        with gevent.Timeout(WAIT_S):
            while True:
                real.send_multipart(frame(b"real"))
                if sub.poll(50):
                    parts = sub.recv_multipart()
                    assert parts[-1] == b"real", parts[-1]
                    break
    finally:
        for sock in (sub, *socks):
            sock.close(linger=0)


def test_the_sender_is_the_keys_nick_never_the_payloads(broker, connect, wait_for, raw_dealer,
                                                        person, roundtrip):
    connect("bob")
    watcher = connect("watcher")
    watcher.join("lobby")
    dealer = raw_dealer(identity=person("alice"))
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="alice"))), p.Welcome)
    assert isinstance(roundtrip(dealer, p.encode(p.Join(req_id=2, room="lobby"))), p.Joined)
    header, command, _body = p.encode(p.Say(req_id=3, room="lobby", text="who am i"))
    body = msgpack.packb({"req_id": 3, "room": "lobby", "text": "who am i", "from": "bob"})
    roundtrip(dealer, [header, command, body])
    event = wait_for(watcher, is_chat("who am i"))[-1]
    assert event.sender == "alice"


def test_a_client_that_loses_its_link_resumes_its_session_on_a_new_connection(
        broker, connect, wait_for):
    """The client opens a new DEALER and says HELLO with ``resume``: the same session (rooms
    kept, no leave or join events), a new routing id and a new media token."""
    alice = connect("alice")
    bob = connect("bob")
    for s in (alice, bob):
        s.join("lobby")
    old_id = alice._dealer.getsockopt(zmq.IDENTITY)
    old_token = alice.welcome.media_token
    session = broker.sessions[old_id]
    alice._recover("broker-lost", "test: the link died")
    wait_for(alice, lambda e: getattr(e, "kind", "") == "reconnected")
    new_id = alice._dealer.getsockopt(zmq.IDENTITY)
    assert new_id != old_id and broker.sessions[new_id] is session
    assert old_id not in broker.sessions
    assert alice.welcome.media_token != old_token
    alice.say("lobby", "still here")
    seen = wait_for(bob, is_chat("still here"))
    assert not any(isinstance(e, p.RoomEvent) and e.type in ("leave", "gone", "join")
                   and e.sender == "alice" for e in seen)


# --- what travels on the wire ---------------------------------------------------------------


def _capture(port_filter: str, path: Path) -> subprocess.Popen:
    """A ``tcpdump`` of ``lo`` into ``path``, once it says it is listening. ``-Z root`` and
    ``--immediate-mode``: with the default privilege drop and buffering, captures here came
    out empty."""
    proc = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-Z", "root", "--immediate-mode", "-U", "-w", str(path),
         port_filter], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "tcpdump: listening on lo, ...": the capture is on
    if b"listening" not in line:
        proc.kill()
        pytest.fail(f"tcpdump did not start: {line!r}")
    return proc


def _ports(broker) -> str:
    """The capture filter of the broker's lanes but entry (whose DISCOVER is in clear, and
    says only the broker's public key and lanes)."""
    ports = sorted({e.rsplit(":", 1)[1] for lane, e in broker.endpoints.items()
                    if lane != "entry"})
    return " or ".join(f"port {port}" for port in ports)


@pytest.mark.skipif(shutil.which("tcpdump") is None or os.geteuid() != 0,
                    reason="needs tcpdump and root (make test installs it; CI runs as root)")
@pytest.mark.parametrize("insecure", [False, True], ids=["curve", "insecure"])
def test_an_eavesdropper_on_loopback_reads_no_chat(make_broker, connect, wait_for, tmp_path,
                                                  insecure):
    """With CURVE, a capture of every lane holds no chat text and every handshake is CURVE;
    the same capture of an ``--insecure`` broker holds the text (which proves the capture
    sees the traffic)."""
    broker = make_broker(insecure=insecure)
    pcap = tmp_path / "lo.pcap"
    capture = _capture(_ports(broker), pcap)
    try:
        alice = connect("alice", broker)
        bob = connect("bob", broker)
        for s in (alice, bob):
            s.join("secret-room")
        secret = "the exam answers are 42 and 17"
        alice.say("secret-room", secret)
        wait_for(bob, is_chat(secret))
        pixels = b"PIXELS-OF-THE-WHITEBOARD-" * 40  # a media frame's payload
        _one_frame_through(alice, bob, broker, pixels)
        alice.close()
        bob.close()
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    data = pcap.read_bytes()
    assert len(data) > 1000
    if insecure:
        assert secret.encode() in data and pixels[:50] in data and b"NULL" in data
    else:
        assert secret.encode() not in data and b"secret-room" not in data
        assert b"PIXELS-OF-THE" not in data
        assert b"CURVE" in data and b"NULL\x00" not in data.replace(b"CURVE", b"")


def _one_frame_through(alice: Session, bob: Session, broker, payload: bytes) -> None:
    """alice sends one video frame with ``payload`` in ``secret-room`` (on her own media
    DEALER, with her token and key) until bob's SUB receives it."""
    ctx = zmq_green.Context.instance()
    sub = bob.secure(ctx.socket(zmq.SUB))
    sender = alice.secure(ctx.socket(zmq.DEALER))
    try:
        for sock in (sub, sender):
            sock.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, p.media_topic("secret-room", "alice", "video"))
        sub.connect(broker.endpoints["media_out"])
        sender.setsockopt(zmq.IDENTITY, alice.welcome.media_token)
        sender.connect(broker.endpoints["media_in"])
        meta = msgpack.packb({"room": "secret-room", "kind": "video", "seq": 0,
                              "capture_ts_us": 0, "pts_ms": 0, "width": 1, "height": 1,
                              "fps": 1.0, "codec": "jpeg"})
        with gevent.Timeout(WAIT_S):
            while True:  # until the subscription is live: the frame comes back
                sender.send_multipart([HEADER, b"FRAME", meta, payload])
                if sub.poll(50):
                    assert sub.recv_multipart()[-1] == payload
                    return
    finally:
        sub.close(linger=0)
        sender.close(linger=0)


def test_request_to_a_dead_address_is_broker_unavailable(tmp_path):
    session = Session("tcp://127.0.0.1:9", "alice", timeout_s=0.3,
                      identity=keys.KeyPair.generate())
    with pytest.raises(BrokerUnavailable):
        session.connect()


# --- the command line -----------------------------------------------------------------------


def test_zmeet_keys_shows_the_key_made_on_first_use_and_the_same_after():
    from proc import ZMEET
    first = subprocess.run([*ZMEET, "keys", "--json"], capture_output=True, text=True,
                           timeout=60)
    assert first.returncode == 0, first.stderr
    shown = json.loads(first.stdout)
    assert shown["made"] is True and keys.fingerprint(shown["key"]) == shown["fingerprint"]
    assert Path(shown["file"]).stat().st_mode & 0o777 == 0o600
    again = json.loads(subprocess.run([*ZMEET, "keys", "--json"], capture_output=True,
                                      text=True, timeout=60).stdout)
    assert (again["key"], again["made"]) == (shown["key"], False)


def test_the_cli_pins_on_first_contact_and_refuses_a_changed_key(tmp_path):
    from proc import ZMEET, start_broker
    broker, ready = start_broker(tmp_path / "data", ready=True)
    address = ready["address"]
    try:
        say = [*ZMEET, "say", "lobby", "hi", "--nick", "alice", "--broker", address]
        first = subprocess.run(say, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert "first contact" in first.stderr and ready["fingerprint"] in first.stderr
        second = subprocess.run(say, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0 and "first contact" not in second.stderr
        known = keys.KnownBrokers()
        known.forget(address)
        known.remember(address, keys.KeyPair.generate().public)
        third = subprocess.run(say, capture_output=True, text=True, timeout=60)
        assert third.returncode == 1
        assert "zmeet keys --forget" in third.stderr and ready["fingerprint"] in third.stderr
        pinned = subprocess.run([*say[:-2], "--broker", address, "--broker-key", ready["key"]],
                                capture_output=True, text=True, timeout=60)
        assert pinned.returncode == 0, pinned.stderr
    finally:
        broker.stop()


def test_an_insecure_broker_says_so_and_clients_need_insecure_too(tmp_path):
    from proc import ZMEET, start_broker
    broker, ready = start_broker(tmp_path / "data", "--insecure", ready=True)
    try:
        assert ready["secure"] is False and ready["key"] == ""
        say = [*ZMEET, "say", "lobby", "hi", "--nick", "alice", "--broker", ready["address"]]
        refused = subprocess.run(say, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "--insecure" in refused.stderr
        allowed = subprocess.run([*say, "--insecure"], capture_output=True, text=True,
                                 timeout=60)
        assert allowed.returncode == 0, allowed.stderr
        assert "WITHOUT encryption" in allowed.stderr
    finally:
        broker.stop()


def test_the_broker_will_not_start_without_its_own_zap_handler(tmp_path):
    """libzmq lets every peer in when no ZAP handler answers: a broker whose context already
    has a handler bound (not its own) refuses to start, and binds nothing."""
    from zmeet.broker import Broker, BrokerConfig
    from zmeet.broker.zap import ZAP_ENDPOINT
    context = zmq_green.Context()
    squatter = context.socket(zmq.REP)
    squatter.bind(ZAP_ENDPOINT)
    broker = Broker(BrokerConfig(address="tcp://127.0.0.1:*", data_dir=tmp_path), context)
    try:
        with pytest.raises(zmq.ZMQError):
            broker.start()
        assert broker.endpoints == {}
    finally:
        squatter.close(linger=0)
        context.term()


def test_one_key_holds_a_bounded_number_of_sessions(connect, person, monkeypatch):
    import zmeet.broker.chat as chat_service
    monkeypatch.setattr(chat_service, "MAX_SESSIONS_PER_KEY", 2)
    alice = person("alice")
    connect("alice")
    connect("alice-too", identity=alice)
    with pytest.raises(Refused) as caught:
        connect("alice", identity=alice)
    assert caught.value.code == p.ErrorCode.TOO_MANY and "close one" in caught.value.reason
    assert connect("bob").nick == "bob"  # another key is not affected
