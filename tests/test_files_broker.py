"""Files through a real in-process broker over loopback: sizes, names, limits, resume in both
directions (cut-off client, restarted broker), corrupted chunks injected by raw sockets, two
receivers at once, files sent to one nick.

Nothing sleeps to wait: every wait is for a reply, an event or a progress callback, under a
bounded timeout. Big files are made in ``tmp_path`` and deleted at the end of their test.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.queue
import msgpack
import pytest
import zmq
import zmq.green as zmq_green
from filetools import MiB, make_file, sha256_path

import zmeet.broker.files as files_module
import zmeet.files.sink as sink_module
from zmeet import protocol as p
from zmeet.broker.files import FilesService
from zmeet.client.files import FileClient, TransferEvent
from zmeet.errors import Refused
from zmeet.files import FileMissing, FileTooLarge, IntegrityError, TransferFailed
from zmeet.files.transfer import Hashed, Upload
from zmeet.protocol import files as pf
from zmeet.protocol.limits import HEADER

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0


class Peer:
    """A session, its FileClient, and the queue of everything else it received."""

    def __init__(self, session) -> None:
        self.session = session
        self.files = FileClient(session)
        self.items: gevent.queue.Queue = gevent.queue.Queue()
        self.backlog: list[Any] = []
        self.files.start_pump(self.items.put)

    def wait(self, predicate: Callable[[Any], bool], timeout_s: float = WAIT_S) -> Any:
        """The first item received that matches (items that do not stay for later waits)."""
        for i, item in enumerate(self.backlog):
            if predicate(item):
                return self.backlog.pop(i)
        try:
            with gevent.Timeout(timeout_s):
                for _ in range(10_000):
                    item = self.items.get()
                    if predicate(item):
                        return item
                    self.backlog.append(item)
        except gevent.Timeout:
            pass
        raise AssertionError(f"{self.session.nick}: nothing matched in {timeout_s} s: "
                             f"{self.backlog!r}")

    def close(self, bye: bool = True) -> None:
        self.files.stop_pump()
        self.session.close(bye=bye)


@pytest.fixture
def peer(connect) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(nick: str, broker=None, room: str | None = "share") -> Peer:
        peer = Peer(connect(nick, broker))
        if room:
            peer.session.join(room)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.files.stop_pump()


def is_file_event(item: Any) -> bool:
    return isinstance(item, p.RoomEvent) and item.type == pf.FILE_EVENT_TYPE


def is_offer(item: Any) -> bool:
    return isinstance(item, pf.FileOffer)


class Cut(Exception):
    """Raised from a progress callback to cut a transfer off half-way."""


def cut_after(octets: int) -> Callable[[TransferEvent], None]:
    def on_progress(ev: TransferEvent) -> None:
        if ev.kind == "progress" and ev.done >= octets:
            raise Cut(ev.done)

    return on_progress


def recorder(events: list[TransferEvent]) -> Callable[[TransferEvent], None]:
    return events.append


def asker(roundtrip, dealer):
    """``ask(cls, **fields)``: one request on a raw DEALER, its reply (``req_id`` counted)."""
    ids = iter(range(1, 1000))

    def ask(cls, **fields):
        return roundtrip(dealer, p.encode(cls(req_id=next(ids), **fields)))

    return ask


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, MiB], ids=["0B", "1B", "1MiB"])
def test_a_file_goes_to_the_broker_once_and_to_each_receiver(broker, peer, tmp_path, size):
    alice, bob = peer("alice"), peer("bob")
    src = make_file(tmp_path / "data.bin", size)
    info = alice.files.upload(src, room="share")
    assert (info.size, info.sha256, info.sender, info.room) == (size, sha256_path(src), "alice",
                                                                "share")
    blob = Path(broker.config.data_dir) / "blobs" / info.sha256[:2] / info.sha256
    assert blob.read_bytes() == src.read_bytes()
    event = bob.wait(is_file_event)
    assert event.sender == "alice"
    assert json.loads(event.text) == {"id": info.id, "name": "data.bin", "size": size,
                                      "sha256": info.sha256}
    got, path = bob.files.download(info.id, tmp_path / "out")
    assert got == info and path == tmp_path / "out" / "data.bin"
    assert path.read_bytes() == src.read_bytes()
    assert not (tmp_path / "out" / ".zmeet-partial").exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private part
    (files,) = [s for s in broker.services if isinstance(s, FilesService)]
    assert files.stats()["uploads_open"] == 0


def test_200_mib_to_two_receivers_at_once(broker, peer, tmp_path):
    alice, bob, carol = peer("alice"), peer("bob"), peer("carol")
    src = make_file(tmp_path / "big.bin", 200 * MiB)
    try:
        want = sha256_path(src)
        info = alice.files.upload(src, room="share")
        assert info.sha256 == want
        jobs = [gevent.spawn(who.files.download, info.id, tmp_path / who.session.nick)
                for who in (bob, carol)]
        gevent.joinall(jobs, timeout=45, raise_error=True)
        for job in jobs:
            _, path = job.get(block=False)
            assert path.stat().st_size == 200 * MiB and sha256_path(path) == want
            path.unlink()
    finally:
        src.unlink()
        for blob in (Path(broker.config.data_dir) / "blobs").glob("??/*"):
            blob.unlink()


# --- names ---------------------------------------------------------------------------------------


def test_names_with_spaces_non_ascii_dotdot_and_absolute_paths_stay_in_the_folder(peer, tmp_path):
    alice, bob = peer("alice"), peer("bob")
    src = make_file(tmp_path / "src", 3)
    out = tmp_path / "deep" / "out"
    names = {
        "a b c.txt": "a b c.txt",
        "ünï cödé 文件.txt": "ünï cödé 文件.txt",
        "../../escape.txt": "escape.txt",
        "/etc/passwd": "etc/passwd",
        "folder/sub/../../../x.txt": "folder/sub/x.txt",
        ".bashrc": "_bashrc",
    }
    for sent, expected in names.items():
        info = alice.files.upload(src, room="share", name=sent)
        assert info.name == sent  # the broker keeps the name; receivers make it safe
        _, path = bob.files.download(info.id, out)
        assert path == out / expected
        assert out.resolve() in path.resolve().parents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broker-data", "deep", "src"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]


def test_an_existing_file_is_never_overwritten(peer, tmp_path):
    alice, bob = peer("alice"), peer("bob")
    info = alice.files.upload(make_file(tmp_path / "report.pdf", 100), room="share")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_text("my own report")
    paths = [bob.files.download(info.id, out)[1] for _ in range(2)]
    assert [p.name for p in paths] == ["report (1).pdf", "report (2).pdf"]
    assert (out / "report.pdf").read_text() == "my own report"


# --- limits and errors ----------------------------------------------------------------------------


def test_the_size_limit_is_told_at_hello_and_refuses_before_any_byte(make_broker, connect,
                                                                      tmp_path, raw_dealer,
                                                                      roundtrip):
    broker = make_broker(max_file_size=1000)
    alice = Peer(connect("alice", broker))
    alice.session.join("share")
    assert alice.session.welcome.limits["max_file_size"] == 1000
    src = make_file(tmp_path / "big", 1001)
    with pytest.raises(FileTooLarge, match="1000 B"):
        alice.files.upload(src, room="share")
    assert alice.files.upload(make_file(tmp_path / "ok", 1000), room="share").size == 1000
    # a client that ignores WELCOME's limit gets ERROR 413 at FILE-PUT, before any chunk
    dealer = raw_dealer(broker.endpoints["control"])
    assert isinstance(roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="raw"))), p.Welcome)
    roundtrip(dealer, p.encode(p.Join(req_id=2, room="share")))
    reply = roundtrip(dealer, p.encode(pf.FilePut(req_id=3, room="share", name="big", size=1001,
                                                  sha256="0" * 64)))
    assert isinstance(reply, p.Error) and reply.code == 413 and "1000 B" in reply.reason
    assert list((Path(broker.config.data_dir) / "blobs" / "partial").iterdir()) == []
    alice.close()


def test_a_missing_file_says_so(peer, tmp_path):
    alice = peer("alice")
    with pytest.raises(FileMissing, match="File doesn't exist"):
        alice.files.upload(tmp_path / "nope.txt", room="share")


def test_bad_file_requests_get_errors_and_the_broker_goes_on(broker, raw_dealer, roundtrip, peer,
                                                             tmp_path):
    bob = peer("bob")
    info = bob.files.upload(make_file(tmp_path / "x", 10), room="share")
    dealer = raw_dealer()
    ask = asker(roundtrip, dealer)

    assert isinstance(ask(p.Hello, nick="raw"), p.Welcome)
    good = {"name": "a", "size": 4, "sha256": hashlib.sha256(b"abcd").hexdigest()}

    def code(reply):
        assert isinstance(reply, p.Error), reply
        return reply.code

    assert code(ask(pf.FilePut, room="share", **good)) == 403  # not a member
    ask(p.Join, room="share")
    assert code(ask(pf.FilePut, room="share", **{**good, "sha256": "X" * 64})) == 422
    assert code(ask(pf.FilePut, room="share", **{**good, "size": -1})) == 400
    assert code(ask(pf.FilePut, room="share", **{**good, "name": ""})) == 422
    assert code(ask(pf.FilePut, room="share", **{**good, "name": "é" * 600})) == 413
    assert code(ask(pf.FilePut, room="share", to="bob", **good)) == 400  # both
    assert code(ask(pf.FilePut, **good)) == 400  # neither
    assert code(ask(pf.FilePut, to="nobody", **good)) == 404
    ready = ask(pf.FilePut, room="share", **good)
    assert isinstance(ready, pf.FileReady) and ready.offset == 0
    assert code(ask(pf.FileData, upload="nope", offset=0, data=b"ab")) == 404
    assert code(ask(pf.FileData, upload=ready.upload, offset=1, data=b"ab")) == 400
    assert code(ask(pf.FileData, upload=ready.upload, offset=0, data=b"")) == 400
    assert code(ask(pf.FileData, upload=ready.upload, offset=0, data=b"abcde")) == 400
    assert code(ask(pf.FileDone, upload=ready.upload)) == 400  # nothing received yet
    assert code(ask(pf.FileGet, id="000000000000")) == 404
    assert code(ask(pf.FileGet, id="../../etc/x")) == 404
    assert code(ask(pf.FileGet, id=info.id, offset=11)) == 400
    assert code(ask(pf.FileGet, id=info.id, credit=0)) == 400
    assert code(ask(pf.FileCredit, download="x", credit=0)) == 400
    assert isinstance(ask(pf.FileCredit, download="x", credit=1), p.Ok)
    assert isinstance(ask(pf.FileCancel, id="x"), p.Ok)
    assert code(ask(pf.FileList, room="share", limit=0)) == 429
    assert code(ask(pf.FileList, room="bad room!")) == 422
    # an upload chunk with no payload frame, or too big for the socket limits
    frames = p.encode(pf.FileData(req_id=900, upload=ready.upload, offset=0, data=b"ab"))
    reply = roundtrip(dealer, frames[:3])
    assert isinstance(reply, p.Error) and reply.code == 400  # req_id 0: frames unreadable
    frames[3] = bytes(pf.MAX_FILE_CHUNK_BYTES + 1)  # over MAXMSGSIZE: libzmq drops the peer
    dealer.send_multipart(frames)
    # the broker goes on serving everyone else
    assert bob.files.list("share")[0].id == info.id


def test_a_download_has_at_most_16_mib_of_chunks_in_flight(broker, raw_dealer, roundtrip, recv,
                                                           peer, tmp_path):
    alice = peer("alice")
    src = make_file(tmp_path / "c.bin", 32 * MiB + 3)
    info = alice.files.upload(src, room="share")
    dealer = raw_dealer()
    ask = asker(roundtrip, dealer)

    ask(p.Hello, nick="raw")
    (files,) = [s for s in broker.services if isinstance(s, FilesService)]
    stream = ask(pf.FileGet, id=info.id, credit=1000)
    assert isinstance(stream, pf.FileStream)
    assert stream.chunk_bytes == pf.MAX_FILE_CHUNK_BYTES  # the largest a control frame carries
    most = 16 * MiB // stream.chunk_bytes
    got = bytearray()

    def take(n: int) -> None:
        for _ in range(n):
            chunk = recv(dealer)
            assert isinstance(chunk, pf.FileChunk) and chunk.offset == len(got)
            assert len(chunk.data) == min(stream.chunk_bytes, info.size - len(got))
            got.extend(chunk.data)

    take(most)  # FILE-GET's credit was clipped: the broker waits for more
    assert files.downloads[stream.download].credit == 0
    assert isinstance(ask(pf.FileCredit, download=stream.download, credit=1000), p.Ok)
    take(most)  # and so was FILE-CREDIT's
    assert files.downloads[stream.download].credit == 0
    assert isinstance(ask(pf.FileCredit, download=stream.download, credit=1), p.Ok)
    take(1)
    assert len(got) == info.size and bytes(got) == src.read_bytes()


# --- integrity ------------------------------------------------------------------------------------


def test_a_corrupted_upload_chunk_is_caught_and_nothing_is_shared(broker, raw_dealer, roundtrip,
                                                                  peer, tmp_path):
    bob = peer("bob")
    data = os.urandom(3 * pf.FILE_CHUNK_BYTES + 5)
    sha = hashlib.sha256(data).hexdigest()
    dealer = raw_dealer()
    ask = asker(roundtrip, dealer)

    ask(p.Hello, nick="mallory")
    ask(p.Join, room="share")
    ready = ask(pf.FilePut, room="share", name="x.bin", size=len(data), sha256=sha)
    assert isinstance(ready, pf.FileReady)
    step = ready.chunk_bytes
    for offset in range(0, len(data), step):
        chunk = bytearray(data[offset:offset + step])
        if offset == step:
            chunk[17] ^= 0xFF  # one bit pattern flipped in the second chunk, on the wire
        ack = ask(pf.FileData, upload=ready.upload, offset=offset, data=bytes(chunk))
        assert isinstance(ack, pf.FileAck)
    reply = ask(pf.FileDone, upload=ready.upload)
    assert isinstance(reply, p.Error) and reply.code == 400 and "does not match" in reply.reason
    assert bob.files.list("share") == ()
    partials = Path(broker.config.data_dir) / "blobs" / "partial"
    assert list(partials.iterdir()) == []
    assert not (Path(broker.config.data_dir) / "blobs" / sha[:2] / sha).exists()
    # the same content, sent right, is then stored from offset 0
    src = tmp_path / "x.bin"
    src.write_bytes(data)
    events: list[TransferEvent] = []
    info = bob.files.upload(src, room="share", on_progress=recorder(events))
    assert info.sha256 == sha
    assert [e.offset for e in events if e.kind == "start"] == [0]


class FakeBroker:
    """A ROUTER that speaks just enough zmeet to serve one download with a corrupted chunk."""

    def __init__(self, data: bytes, corrupt_at: int) -> None:
        ctx = zmq_green.Context.instance()
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        events_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.events = f"tcp://127.0.0.1:{events_port}"
        self.data = data
        self.corrupt_at = corrupt_at
        self.info = pf.FileInfo(id="0123456789ab", name="photo.png", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest(), sender="eve",
                                room="share")
        self.greenlet = gevent.spawn(self._serve)

    def _serve(self) -> None:
        while True:
            routing_id, *frames = self.router.recv_multipart()
            req = p.decode(frames)
            out: list[p.Message] = []
            if isinstance(req, p.Discover):  # entry and control on one socket, no CURVE
                out.append(p.BrokerInfo(
                    req_id=req.req_id, key="", version=1,
                    endpoints={"control": self.endpoint, "events": self.events,
                               "media_in": self.endpoint, "media_out": self.events}))
            elif isinstance(req, p.Hello):
                out.append(p.Welcome(
                    req_id=req.req_id, nick=req.nick, epoch="fake", media_token=b"m" * 16,
                    endpoints={"control": self.endpoint, "events": self.events,
                               "media_in": self.endpoint, "media_out": self.events},
                    limits={"protocol_version": 1, "heartbeat_interval_ms": 60_000}))
            elif isinstance(req, pf.FileGet):
                out.append(pf.FileStream(req_id=req.req_id, download="d1", file=self.info,
                                         offset=req.offset, chunk_bytes=4096))
                for offset in range(req.offset, len(self.data), 4096):
                    chunk = bytearray(self.data[offset:offset + 4096])
                    if offset <= self.corrupt_at < offset + 4096:
                        chunk[self.corrupt_at - offset] ^= 0x01
                    out.append(pf.FileChunk(download="d1", offset=offset, data=bytes(chunk)))
            else:
                out.append(p.Ok(req_id=req.req_id))
            for message in out:
                self.router.send_multipart([routing_id, *p.encode(message)])

    def close(self) -> None:
        self.greenlet.kill()
        self.router.close(linger=0)
        self.pub.close(linger=0)


def test_a_corrupted_download_chunk_is_set_aside_never_delivered(connect, tmp_path):
    data = os.urandom(5 * 4096 + 3)
    fake = FakeBroker(data, corrupt_at=2 * 4096 + 100)
    try:
        client = Peer(connect("bob", fake.endpoint, insecure=True))
        out = tmp_path / "out"
        with pytest.raises(IntegrityError, match="does not match"):
            client.files.download(fake.info.id, out)
        assert sorted(p.name for p in out.iterdir()) == [".zmeet-partial"]
        rejected = out / ".zmeet-partial" / f"{fake.info.id}.rejected"
        assert rejected.stat().st_size == len(data)
        fake.corrupt_at = -1  # the next try gets good data: delivered, from offset 0
        _, path = client.files.download(fake.info.id, out)
        assert path.read_bytes() == data
        client.close(bye=False)
    finally:
        fake.close()


# --- resume ---------------------------------------------------------------------------------------


@pytest.mark.broker_config(heartbeat_interval_ms=100)
def test_an_upload_cut_off_goes_on_from_where_it_stopped(broker, peer, connect, tmp_path):
    alice, bob = peer("alice"), peer("bob")
    src = make_file(tmp_path / "movie.bin", 24 * MiB)
    with pytest.raises(Cut):
        alice.files.upload(src, room="share", on_progress=cut_after(2 * MiB))
    alice.close(bye=False)  # killed: no BYE; the broker finds out from the heartbeats
    bob.wait(lambda i: isinstance(i, p.RoomEvent) and i.type == "gone" and i.sender == "alice")
    again = peer("alice")  # the same nick, free again
    events: list[TransferEvent] = []
    info = again.files.upload(src, room="share", on_progress=recorder(events))
    start = next(e for e in events if e.kind == "start")
    assert 2 * MiB <= start.offset < 24 * MiB
    assert info.sha256 == sha256_path(src)
    _, path = bob.files.download(info.id, tmp_path / "out")
    assert sha256_path(path) == info.sha256


def test_an_upload_goes_on_after_the_broker_restarts(make_broker, connect, tmp_path):
    first = make_broker()
    src = make_file(tmp_path / "movie.bin", 24 * MiB)
    alice = Peer(connect("alice", first))
    alice.session.join("share")
    with pytest.raises(Cut):
        alice.files.upload(src, room="share", on_progress=cut_after(3 * MiB))
    alice.close(bye=False)
    first.stop()
    second = make_broker()  # the same data directory
    assert second.endpoints["control"] != first.endpoints["control"]
    alice = Peer(connect("alice", second))
    alice.session.join("share")
    events: list[TransferEvent] = []
    info = alice.files.upload(src, room="share", on_progress=recorder(events))
    start = next(e for e in events if e.kind == "start")
    assert 3 * MiB <= start.offset < 24 * MiB  # the partial survived, and was hashed again
    bob = Peer(connect("bob", second))
    _, path = bob.files.download(info.id, tmp_path / "out")
    assert sha256_path(path) == sha256_path(src)
    alice.close()
    bob.close()


def test_a_download_cut_off_goes_on_from_its_part_file(peer, tmp_path):
    alice, bob = peer("alice"), peer("bob")
    src = make_file(tmp_path / "movie.bin", 24 * MiB)
    info = alice.files.upload(src, room="share")
    out = tmp_path / "out"
    with pytest.raises(Cut):
        bob.files.download(info.id, out, on_progress=cut_after(2 * MiB))
    part = out / ".zmeet-partial" / f"{info.id}.part"
    have = part.stat().st_size
    assert 2 * MiB <= have < 24 * MiB
    assert not (out / "movie.bin").exists()
    events: list[TransferEvent] = []
    _, path = bob.files.download(info.id, out, on_progress=recorder(events))
    assert next(e for e in events if e.kind == "start").offset == have
    assert events[-1].kind == "done" and events[-1].path == path
    assert sha256_path(path) == info.sha256 and not part.exists()


def test_a_stale_part_longer_than_the_file_is_started_over(peer, tmp_path):
    alice, bob = peer("alice"), peer("bob")
    info = alice.files.upload(make_file(tmp_path / "small", 1000), room="share")
    part = tmp_path / "out" / ".zmeet-partial" / f"{info.id}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 5000)
    _, path = bob.files.download(info.id, tmp_path / "out")
    assert path.read_bytes() == (tmp_path / "small").read_bytes()


def test_a_part_longer_than_the_file_is_started_over_even_if_the_broker_streams_it(connect,
                                                                                  tmp_path):
    data = os.urandom(3 * 4096 + 1)
    fake = FakeBroker(data, corrupt_at=-1)  # answers FILE-GET from any offset, never 400
    try:
        client = Peer(connect("bob", fake.endpoint, insecure=True))
        client.files.chunk_timeout_s = 0.2
        part = tmp_path / ".zmeet-partial" / f"{fake.info.id}.part"
        part.parent.mkdir()
        part.write_bytes(b"x" * (len(data) + 10))
        _, path = client.files.download(fake.info.id, tmp_path)
        assert path.read_bytes() == data and not part.exists()
        client.close(bye=False)
    finally:
        fake.close()


def test_a_download_whose_chunks_stop_coming_fails_with_resume_advice(connect, tmp_path):
    fake = FakeBroker(b"", corrupt_at=-1)
    fake.info = pf.FileInfo(id="0123456789ab", name="n", size=10, sha256="0" * 64, sender="e")
    try:  # it announces 10 octets and sends none
        client = Peer(connect("bob", fake.endpoint, insecure=True))
        client.files.chunk_timeout_s = 0.2
        with pytest.raises(TransferFailed, match="run the same command again"):
            client.files.download(fake.info.id, tmp_path)
        client.close(bye=False)
    finally:
        fake.close()


# --- one to one, dedup, listing -------------------------------------------------------------------


def test_a_file_sent_to_one_nick_is_offered_and_shown_to_that_nick_only(peer, tmp_path):
    alice, bob, carol = peer("alice"), peer("bob"), peer("carol")
    info = alice.files.upload(make_file(tmp_path / "secret.txt", 42), to="bob")
    assert (info.to, info.room) == ("bob", "")
    assert bob.wait(is_offer).file == info
    assert bob.files.list() == (info,) and alice.files.list() == (info,)
    assert carol.files.list() == () and alice.files.list("share") == ()
    with pytest.raises(Refused) as refused:
        carol.files.download(info.id, tmp_path / "carol")
    assert refused.value.code == pf.NOT_FOUND
    assert not (tmp_path / "carol" / ".zmeet-partial" / f"{info.id}.part").exists()
    _, path = bob.files.download(info.id, tmp_path / "bob")
    assert path.read_bytes() == (tmp_path / "secret.txt").read_bytes()
    with pytest.raises(Refused) as refused:
        alice.files.upload(tmp_path / "secret.txt", to="nobody")
    assert refused.value.code == pf.NOT_FOUND and "nobody" in refused.value.reason


def test_the_same_content_is_stored_once_under_two_ids(broker, peer, tmp_path):
    alice = peer("alice")
    src = make_file(tmp_path / "a.bin", 300_000)
    first = alice.files.upload(src, room="share")
    events: list[TransferEvent] = []
    second = alice.files.upload(src, room="share", name="copy.bin", on_progress=recorder(events))
    assert first.id != second.id and first.sha256 == second.sha256
    assert next(e for e in events if e.kind == "start").offset == 300_000  # nothing re-sent
    assert len(list((Path(broker.config.data_dir) / "blobs").glob("??/*"))) == 1
    late = peer("late")  # joins after: lists and fetches both
    assert [f.name for f in late.files.list("share")] == ["a.bin", "copy.bin"]
    assert late.files.fetch_bytes(second.id, max_bytes=MiB)[1] == src.read_bytes()
    with pytest.raises(FileTooLarge):
        late.files.fetch_bytes(second.id, max_bytes=1000)


def test_chat_goes_on_during_a_transfer(peer, tmp_path, chat):
    alice, bob = peer("alice"), peer("bob")
    src = make_file(tmp_path / "big", 16 * MiB)
    progressed = gevent.event.Event()

    def on_progress(ev: TransferEvent) -> None:
        if ev.kind == "progress":
            progressed.set()

    job = gevent.spawn(alice.files.upload, src, room="share", on_progress=on_progress,
                       limit_rate_bps=16 * MiB)  # about a second
    assert progressed.wait(WAIT_S)
    posted = bob.session.say("share", "still talking")
    assert not job.ready()  # answered while the upload was going on
    assert bob.wait(chat("still talking")).seq == posted.seq
    assert job.get(timeout=WAIT_S).size == 16 * MiB


def test_the_file_store_refuses_a_file_that_is_not_one(tmp_path):
    import sqlite3

    from zmeet.broker.files import FileStore

    bad = tmp_path / "files.sqlite3"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        FileStore(bad)


def test_raw_body_with_wrong_types_is_refused(raw_dealer, roundtrip):
    dealer = raw_dealer()
    roundtrip(dealer, p.encode(p.Hello(req_id=1, nick="raw")))
    body = msgpack.packb({"req_id": 2, "name": "a", "size": "4", "sha256": "0" * 64,
                          "room": "share"})
    reply = roundtrip(dealer, [HEADER, b"FILE-PUT", body])
    assert isinstance(reply, p.Error) and reply.code == 400 and reply.req_id == 2


# --- the control loop never waits for a file ------------------------------------------------------


RESUMED_PARTIAL_BYTES = 1024 * MiB
"""A partial big enough that hashing it (at about 2 GB/s with SHA extensions) takes far longer
than the few round trips between FILE-PUT and FILE-DONE."""


def _files_service(broker) -> FilesService:
    (files,) = [s for s in broker.services if isinstance(s, FilesService)]
    return files


def test_chat_is_answered_while_a_resumed_uploads_final_hash_runs(make_broker, connect,
                                                                  raw_dealer, roundtrip, recv,
                                                                  tmp_path):
    # a partial upload found on disk (as after a broker restart): 1 GiB of zeros, sparse, that
    # the broker must hash before it can answer FILE-DONE; the last 1000 octets still to send
    tail = os.urandom(1000)
    hasher = hashlib.sha256()
    zeros = bytes(8 * MiB)
    for _ in range(RESUMED_PARTIAL_BYTES // len(zeros)):
        hasher.update(zeros)
    hasher.update(tail)
    sha = hasher.hexdigest()
    size = RESUMED_PARTIAL_BYTES + len(tail)
    partials = tmp_path / "broker-data" / "blobs" / "partial"
    partials.mkdir(parents=True)
    with open(partials / sha, "wb") as f:
        f.truncate(RESUMED_PARTIAL_BYTES)
    broker = make_broker()
    files = _files_service(broker)
    bob = connect("bob", broker, timeout_s=60)
    bob.join("share")
    alice = raw_dealer(broker.endpoints["control"])
    ask = asker(roundtrip, alice)
    ask(p.Hello, nick="alice")
    ask(p.Join, room="share")
    ready = ask(pf.FilePut, room="share", name="disk.img", size=size, sha256=sha)
    assert isinstance(ready, pf.FileReady) and ready.offset == RESUMED_PARTIAL_BYTES
    ack = ask(pf.FileData, upload=ready.upload, offset=ready.offset, data=tail)
    assert isinstance(ack, pf.FileAck) and ack.received == size
    alice.send_multipart(p.encode(pf.FileDone(req_id=999, upload=ready.upload)))
    posted = bob.say("share", "still talking")  # sent while the broker hashes the partial
    assert isinstance(posted, p.Posted)
    assert alice.poll(0) == 0, "FILE-DONE was answered before the chat message"
    upload = files.uploads[ready.upload]
    assert upload.sink is not None and upload.sink.hashed < size  # the hash goes on
    assert upload.machine.state.value == "finishing"
    shared = recv(alice, timeout_s=50)
    assert isinstance(shared, pf.FileShared) and shared.req_id == 999
    assert shared.file.sha256 == sha and shared.file.size == size
    blob = files.blob_path(sha)
    assert blob.stat().st_size == size
    blob.unlink()


def test_a_put_right_after_chunks_still_being_written_gets_ready_once_they_are(
        broker, raw_dealer, roundtrip, recv, tmp_path):
    """FILE-DATA x8, FILE-CANCEL and FILE-PUT again, sent at once: the FILE-PUT arrives while
    the chunks are being written and is answered (FILE-READY from all 8 MiB) when they are."""
    data = os.urandom(8 * MiB + 1)
    sha = hashlib.sha256(data).hexdigest()
    dealer = raw_dealer()
    ask = asker(roundtrip, dealer)
    ask(p.Hello, nick="quick")
    ask(p.Join, room="share")
    put = {"room": "share", "name": "q.bin", "size": len(data), "sha256": sha}
    ready = ask(pf.FilePut, **put)
    assert isinstance(ready, pf.FileReady) and ready.offset == 0
    step = ready.chunk_bytes
    messages = [pf.FileData(req_id=100 + i, upload=ready.upload, offset=i * step,
                            data=data[i * step:(i + 1) * step]) for i in range(8)]
    messages += [pf.FileCancel(req_id=200, id=ready.upload), pf.FilePut(req_id=201, **put)]
    for message in messages:
        dealer.send_multipart(p.encode(message))
    replies = [recv(dealer, timeout_s=WAIT_S) for _ in messages]
    assert [type(r) for r in replies] == [pf.FileAck] * 8 + [p.Ok, pf.FileReady]
    assert [r.received for r in replies[:8]] == [(i + 1) * step for i in range(8)]
    again = replies[-1]
    assert again.offset == 8 * step and again.upload != ready.upload
    last = ask(pf.FileData, upload=again.upload, offset=8 * step, data=data[8 * step:])
    assert isinstance(last, pf.FileAck) and last.received == len(data)
    shared = ask(pf.FileDone, upload=again.upload)
    assert isinstance(shared, pf.FileShared) and shared.file.sha256 == sha


def test_acks_held_back_for_the_disk_keep_the_order_of_the_chunks_and_done_comes_last(
        broker, raw_dealer, roundtrip, recv):
    """16 FILE-DATA and FILE-DONE sent at once: more than the write queue takes, so some
    FILE-ACKs wait for the disk (deferred); all come in the order of the chunks, and
    FILE-SHARED after them, once the content is stored."""
    data = os.urandom(16 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    dealer = raw_dealer()
    ask = asker(roundtrip, dealer)
    ask(p.Hello, nick="pipe")
    ask(p.Join, room="share")
    ready = ask(pf.FilePut, room="share", name="p.bin", size=len(data), sha256=sha)
    step = ready.chunk_bytes
    count = len(data) // step
    assert count > 8  # WRITE_QUEUE_CHUNKS
    for i in range(count):
        dealer.send_multipart(p.encode(pf.FileData(req_id=100 + i, upload=ready.upload,
                                                   offset=i * step,
                                                   data=data[i * step:(i + 1) * step])))
    dealer.send_multipart(p.encode(pf.FileDone(req_id=999, upload=ready.upload)))
    replies = [recv(dealer, timeout_s=WAIT_S) for _ in range(count + 1)]
    assert [r.req_id for r in replies] == [100 + i for i in range(count)] + [999]
    assert [r.received for r in replies[:-1]] == [(i + 1) * step for i in range(count)]
    shared = replies[-1]
    assert isinstance(shared, pf.FileShared) and shared.file.sha256 == sha
    blob = _files_service(broker).blob_path(sha)
    assert blob.read_bytes() == data


# --- deferred answers: faults, take-overs, leaving, stopping -------------------------------------


@pytest.fixture
def held_catch_up(monkeypatch, make_broker) -> Iterator[threading.Event]:
    """Catch-up hash jobs (``zmeet.files.sink.hash_range``, in the threadpool) wait until the
    event yielded is set: a slow disk under a resumed upload's final hash, which keeps its
    FILE-DONE deferred for as long as a test needs. Set at teardown, before any broker
    stops."""
    gate = threading.Event()
    real = sink_module.hash_range

    def held(*args: Any) -> int:
        gate.wait(WAIT_S * 2)
        return real(*args)

    monkeypatch.setattr(sink_module, "hash_range", held)
    yield gate
    gate.set()


def whole_partial(data_dir: Path, size: int = MiB) -> tuple[bytes, str]:
    """A partial upload left whole on disk (as after a broker restart): ``(data, sha256)``;
    its FILE-PUT gets FILE-READY at ``size``, and its FILE-DONE waits for the catch-up."""
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    partials = data_dir / "blobs" / "partial"
    partials.mkdir(parents=True, exist_ok=True)
    (partials / sha).write_bytes(data)
    return data, sha


def _fail_file_events(monkeypatch, broker) -> None:
    real = broker.store.append

    def append(events):
        events = list(events)
        if any(e.type == pf.FILE_EVENT_TYPE for e in events):
            raise sqlite3.OperationalError("disk full (simulated)")
        return real(events)

    monkeypatch.setattr(broker.store, "append", append)


def _fail_file_records(monkeypatch, broker) -> None:
    def add(info):
        raise sqlite3.OperationalError("disk full (simulated)")

    monkeypatch.setattr(_files_service(broker).store, "add", add)


@pytest.mark.parametrize("fault", [_fail_file_events, _fail_file_records],
                         ids=["room-event", "file-record"])
def test_a_store_that_fails_at_a_deferred_file_done_is_error_500_and_a_retry_shares(
        make_broker, connect, raw_dealer, roundtrip, recv, tmp_path, held_catch_up, monkeypatch,
        fault):
    _, sha = whole_partial(tmp_path / "broker-data")
    broker = make_broker()
    files = _files_service(broker)
    bob = Peer(connect("bob", broker))
    bob.session.join("share")
    alice = raw_dealer(broker.endpoints["control"])
    ask = asker(roundtrip, alice)
    ask(p.Hello, nick="alice")
    ask(p.Join, room="share")
    put = {"room": "share", "name": "f.bin", "size": MiB, "sha256": sha}
    ready = ask(pf.FilePut, **put)
    assert isinstance(ready, pf.FileReady) and ready.offset == MiB
    alice.send_multipart(p.encode(pf.FileDone(req_id=999, upload=ready.upload)))
    assert isinstance(ask(p.Ping), p.Pong)  # FILE-DONE was handled before it
    assert files.uploads[ready.upload].machine.waiting == 1  # deferred: the hash is held
    with monkeypatch.context() as patch:
        fault(patch, broker)
        held_catch_up.set()  # the share now runs in the sink's catch-up greenlet
        refused = recv(alice, timeout_s=WAIT_S)
        assert isinstance(refused, p.Error) and refused.req_id == 999
        assert refused.code == p.ErrorCode.INTERNAL_ERROR
        assert files.store.in_room("share", 10) == []  # no record of a file never announced
        alice.send_multipart(p.encode(pf.FileDone(req_id=999, upload=ready.upload)))
        again = recv(alice, timeout_s=WAIT_S)  # a retry of the req_id gets the same answer
        assert isinstance(again, p.Error) and again.code == p.ErrorCode.INTERNAL_ERROR
    ready = ask(pf.FilePut, **put)  # the store works again: the content is stored already
    assert isinstance(ready, pf.FileReady) and ready.offset == MiB
    shared = ask(pf.FileDone, upload=ready.upload)
    assert isinstance(shared, pf.FileShared) and shared.file.sha256 == sha
    assert [f.id for f in files.store.in_room("share", 10)] == [shared.file.id]
    event = bob.wait(is_file_event)
    assert json.loads(event.text)["id"] == shared.file.id
    bob.close(bye=False)


def test_a_bug_in_a_sink_callback_refuses_the_deferred_file_done_and_the_broker_goes_on(
        make_broker, raw_dealer, roundtrip, recv, tmp_path, held_catch_up, monkeypatch, caplog):
    _, sha = whole_partial(tmp_path / "broker-data")
    broker = make_broker()
    dealer = raw_dealer(broker.endpoints["control"])
    ask = asker(roundtrip, dealer)
    ask(p.Hello, nick="alice")
    ask(p.Join, room="share")
    put = {"room": "share", "name": "f.bin", "size": MiB, "sha256": sha}
    ready = ask(pf.FilePut, **put)
    dealer.send_multipart(p.encode(pf.FileDone(req_id=999, upload=ready.upload)))
    assert isinstance(ask(p.Ping), p.Pong)  # FILE-DONE was handled before it
    assert _files_service(broker).uploads[ready.upload].machine.waiting == 1
    real_handle = Upload.handle

    def buggy(self, event):
        if isinstance(event, Hashed):
            raise RuntimeError("a bug (simulated)")
        return real_handle(self, event)

    with monkeypatch.context() as patch:
        patch.setattr(Upload, "handle", buggy)
        held_catch_up.set()
        refused = recv(dealer, timeout_s=WAIT_S)
    assert isinstance(refused, p.Error) and refused.req_id == 999
    assert refused.code == p.ErrorCode.INTERNAL_ERROR
    assert "a bug (simulated)" in caplog.text
    ready = ask(pf.FilePut, **put)  # the partial stayed: a resume from where it is works
    assert isinstance(ready, pf.FileReady) and ready.offset == MiB
    shared = ask(pf.FileDone, upload=ready.upload)
    assert isinstance(shared, pf.FileShared) and shared.file.sha256 == sha


def _file_done_waiting(broker, session, upload: str) -> gevent.Greenlet:
    """Send ``session``'s FILE-DONE of ``upload`` from a greenlet and return it once the broker
    has handled it and holds its reply (the catch-up hash is held): the FILE-LIST sent after it
    on the same connection is answered after FILE-DONE was handled."""
    sending = gevent.event.Event()

    def done() -> p.Message:
        sending.set()  # set() does not yield: the request below is sent before anyone else runs
        return session.request(pf.FileDone, upload=upload)

    greenlet = gevent.spawn(done)
    sending.wait(timeout=WAIT_S)
    session.request(pf.FileList, room="share")
    assert _files_service(broker).uploads[upload].machine.waiting == 1
    return greenlet


def test_no_one_takes_over_an_upload_whose_owner_waits_for_file_done(
        make_broker, connect, tmp_path, held_catch_up, monkeypatch):
    monkeypatch.setattr(files_module, "UPLOAD_TAKEOVER_IDLE_S", 0.0)  # idle at once
    _, sha = whole_partial(tmp_path / "broker-data")
    broker = make_broker()
    alice, carol = connect("alice", broker), connect("carol", broker)
    alice.join("share")
    carol.join("share")
    put = {"room": "share", "to": "", "name": "x.bin", "size": MiB, "sha256": sha}
    ready = alice.request(pf.FilePut, **put)
    done = _file_done_waiting(broker, alice, ready.upload)
    with pytest.raises(Refused) as refused:
        carol.request(pf.FilePut, **put)
    assert refused.value.code == p.ErrorCode.TOO_MANY
    # nor dropped by one that claims another size for the same sha256 (one of them lies)
    with pytest.raises(Refused) as refused:
        carol.request(pf.FilePut, **{**put, "size": MiB + 1})
    assert refused.value.code == p.ErrorCode.TOO_MANY
    held_catch_up.set()
    shared = done.get(timeout=WAIT_S)
    assert isinstance(shared, pf.FileShared) and shared.file.sender == "alice"
    assert shared.file.sha256 == sha
    # an owner that waits for nothing may still be taken over once idle
    other = os.urandom(1000)
    put = {**put, "size": len(other), "sha256": hashlib.sha256(other).hexdigest()}
    first = alice.request(pf.FilePut, **put)
    taken = carol.request(pf.FilePut, **put)
    assert isinstance(taken, pf.FileReady) and taken.upload != first.upload


def test_a_sender_who_leaves_before_the_deferred_share_is_not_announced(
        make_broker, connect, tmp_path, held_catch_up):
    _, sha = whole_partial(tmp_path / "broker-data")
    broker = make_broker()
    bob = Peer(connect("bob", broker))
    bob.session.join("share")
    alice = connect("alice", broker)
    alice.join("share")
    ready = alice.request(pf.FilePut, room="share", name="x.bin", size=MiB, sha256=sha)
    done = _file_done_waiting(broker, alice, ready.upload)
    alice.leave("share")
    held_catch_up.set()
    with pytest.raises(Refused) as refused:
        done.get(timeout=WAIT_S)
    assert refused.value.code == p.ErrorCode.NOT_MEMBER
    assert _files_service(broker).store.in_room("share", 10) == []
    bob.session.say("share", "after")
    item = bob.wait(lambda i: is_file_event(i) or (isinstance(i, p.RoomEvent)
                                                    and i.text == "after"))
    assert not is_file_event(item)
    bob.close(bye=False)


def test_a_stopped_broker_waits_for_the_catch_ups_and_is_not_called_back(
        make_broker, raw_dealer, roundtrip, tmp_path, held_catch_up):
    _, sha = whole_partial(tmp_path / "broker-data")
    broker = make_broker()
    dealer = raw_dealer(broker.endpoints["control"])
    ask = asker(roundtrip, dealer)
    ask(p.Hello, nick="alice")
    ask(p.Join, room="share")
    ready = ask(pf.FilePut, room="share", name="f.bin", size=MiB, sha256=sha)
    sink = _files_service(broker).uploads[ready.upload].sink
    assert sink is not None and sink.catching_up
    called: list[int] = []
    real_on_hashed, real_stop = sink.on_hashed, sink.stop
    sink.on_hashed = lambda end: (called.append(end), real_on_hashed(end))
    stopped = gevent.event.Event()
    sink.stop = lambda: (real_stop(), stopped.set())  # type: ignore[method-assign]
    stopping = gevent.spawn(broker.stop)
    assert stopped.wait(WAIT_S)  # the files service dropped the upload; its hash job is held
    held_catch_up.set()
    stopping.get(timeout=WAIT_S)
    assert sink.idle  # stop() waited for the catch-up to end
    assert sink.wait_idle(WAIT_S) and called == []  # which called nothing back


def test_held_acks_of_an_upload_dropped_with_its_queue_are_refused_never_acked(
        broker, raw_dealer, roundtrip, recv, monkeypatch):
    """The disk holds every write: 8 FILE-ACKs go at once (the write queue), 2 wait. A FILE-PUT
    of the same sha256 with another size drops the upload and its queue: the 2 waiting get
    ERROR 500, not a FILE-ACK for octets that were never written."""
    gate = threading.Event()
    real = sink_module._write_batch

    def held(*args: Any) -> None:
        gate.wait(WAIT_S * 2)
        real(*args)

    monkeypatch.setattr(sink_module, "_write_batch", held)
    try:
        data = os.urandom(16 * MiB)
        sha = hashlib.sha256(data).hexdigest()
        dealer = raw_dealer()
        ask = asker(roundtrip, dealer)
        ask(p.Hello, nick="alice")
        ask(p.Join, room="share")
        put = {"room": "share", "name": "a.bin", "size": len(data), "sha256": sha}
        ready = ask(pf.FilePut, **put)
        step = ready.chunk_bytes
        for i in range(10):
            dealer.send_multipart(p.encode(pf.FileData(
                req_id=100 + i, upload=ready.upload, offset=i * step,
                data=data[i * step:(i + 1) * step])))
        acks = [recv(dealer, timeout_s=WAIT_S) for _ in range(8)]
        assert [a.req_id for a in acks] == list(range(100, 108))
        assert all(isinstance(a, pf.FileAck) for a in acks)
        dealer.send_multipart(p.encode(pf.FilePut(req_id=200, **{**put, "size": len(data) + 1})))
        replies = {r.req_id: r for r in (recv(dealer, timeout_s=WAIT_S) for _ in range(3))}
        assert isinstance(replies[200], pf.FileReady) and replies[200].offset == 0
        for req_id in (108, 109):
            assert isinstance(replies[req_id], p.Error), replies[req_id]
            assert replies[req_id].code == p.ErrorCode.INTERNAL_ERROR
    finally:
        gate.set()
