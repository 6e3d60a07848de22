"""The sans-IO transfer machines (zmeet/files/transfer.py) with no sockets, no threads, no
clock: events in, effects out, as h11's tests drive a Connection. A fake sink (a bytearray) and
a fake link stand for the disk and the control lane; Hypothesis picks chunk orders, duplicates,
offsets beyond the size, lies about the size and when the disk gets to write."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from zmeet.errors import RemoteProtocolError
from zmeet.files import UploadWindow, chunk_spans
from zmeet.files.transfer import (
    Aborted,
    Ack,
    Ask,
    Cancel,
    CatchUp,
    ChunkReceived,
    DataReceived,
    Deliver,
    Discard,
    DoneAsked,
    Download,
    DownloadState,
    Fail,
    GiveCredit,
    Hashed,
    HashFailed,
    Refuse,
    Reject,
    Restart,
    Share,
    Stalled,
    StreamOpened,
    StreamRefused,
    Upload,
    UploadState,
    Verified,
    Verify,
    Write,
    WriteFailed,
    Written,
)

pytestmark = pytest.mark.timeout(60)

SHA = "ab" * 32


def kinds(effects: list[Any]) -> list[type]:
    return [type(e) for e in effects]


# --- upload ---------------------------------------------------------------------------------------


def test_an_upload_in_order_is_acked_at_once_written_verified_and_shared():
    up = Upload(10, SHA, queue_chunks=8, window=8)
    assert up.handle(DataReceived("a", 0, 4)) == [Write(0, 4), Ack("a", 4)]
    assert up.handle(DataReceived("b", 4, 6)) == [Write(4, 6), Ack("b", 10)]
    assert up.handle(DoneAsked("done")) == []  # the writes are not on the disk yet
    assert up.state is UploadState.FINISHING and up.waiting == 1
    assert up.handle(Written(4)) == []
    assert up.handle(Hashed(4)) == []
    assert up.handle(Written(10)) == [CatchUp()]  # (the sink's own hash follows each write)
    assert up.handle(Hashed(10)) == [Verify()]
    assert up.handle(Verified(SHA)) == [Share("done")]
    assert up.state is UploadState.VERIFIED and up.waiting == 0


def test_acks_wait_while_the_write_queue_is_full_and_go_in_order():
    up = Upload(100, SHA, queue_chunks=2, window=8)
    effects = [up.handle(DataReceived(i, i * 10, 10)) for i in range(5)]
    assert effects[0] == [Write(0, 10), Ack(0, 10)]
    assert effects[1] == [Write(10, 10), Ack(1, 20)]
    assert effects[2:] == [[Write(20, 10)], [Write(30, 10)], [Write(40, 10)]]  # held back
    assert up.waiting == 3
    assert up.handle(Written(10)) == [Ack(2, 30)]
    assert up.handle(Written(40)) == [Ack(3, 40), Ack(4, 50)]
    assert up.waiting == 0


def test_more_than_the_window_without_acks_is_refused():
    up = Upload(100, SHA, queue_chunks=1, window=2)
    for i in range(3):
        up.handle(DataReceived(i, i, 1))
    (refused,) = up.handle(DataReceived("x", 3, 1))
    assert isinstance(refused, Refuse) and refused.code == 429
    assert up.accepted == 3


@pytest.mark.parametrize(("offset", "length", "why"), [
    (1, 2, "expected 0"), (0, 0, "empty"), (0, 11, "past the size"),
])
def test_bad_chunks_are_refused_and_change_nothing(offset, length, why):
    up = Upload(10, SHA)
    (refused,) = up.handle(DataReceived("t", offset, length))
    assert isinstance(refused, Refuse) and refused.code == 400 and why in refused.reason
    assert (up.state, up.accepted) == (UploadState.RECEIVING, 0)


def test_done_before_all_octets_is_refused_once_the_writes_are_done():
    up = Upload(10, SHA)
    up.handle(DataReceived("a", 0, 4))
    assert up.handle(DoneAsked("d")) == []
    (refused,) = up.handle(Written(4))
    assert isinstance(refused, Refuse) and refused.token == "d" and "4 of 10" in refused.reason
    assert up.state is UploadState.RECEIVING  # the rest may still come
    assert up.handle(DataReceived("b", 4, 6))[0] == Write(4, 6)


def test_a_resumed_upload_catches_its_hash_up_before_it_verifies():
    up = Upload(100, SHA, received=90, hashed=0)
    assert up.accepted == 90
    up.handle(DataReceived("a", 90, 10))
    up.handle(Written(100))
    assert up.handle(DoneAsked("d")) == [CatchUp()]
    assert up.handle(Hashed(50)) == []
    assert up.state is UploadState.FINISHING
    assert up.handle(Hashed(100)) == [Verify()]
    assert up.handle(Verified("00" * 32)) == [
        Refuse("d", 400, up._mismatch()), Discard()]
    assert up.state is UploadState.FAILED


def test_data_or_done_after_finishing_was_asked_is_refused():
    up = Upload(10, SHA)
    up.handle(DataReceived("a", 0, 10))
    up.handle(DoneAsked("d"))
    assert kinds(up.handle(DataReceived("b", 10, 1))) == [Refuse]
    assert kinds(up.handle(DoneAsked("e"))) == [Refuse]


def test_a_write_failure_refuses_what_waits_and_what_comes():
    up = Upload(100, SHA, queue_chunks=1)
    up.handle(DataReceived("a", 0, 10))
    up.handle(DataReceived("b", 10, 10))  # held
    assert up.handle(WriteFailed("No space left on device")) == [
        Refuse("b", 500, "the broker could not store the file: No space left on device")]
    assert up.accepted == up.written == 0
    assert [e.code for e in up.handle(DataReceived("c", 0, 10))] == [500]
    assert [e.code for e in up.handle(DoneAsked("d"))] == [500]


def test_a_lost_partial_is_discarded():
    up = Upload(100, SHA, received=50)
    assert up.handle(HashFailed("cut short")) == []
    refused, discard = up.handle(DataReceived("a", 50, 10))
    assert refused.code == 400 and "lost" in refused.reason and discard == Discard()


def test_a_lost_partial_while_finishing_refuses_done_as_a_mismatch():
    up = Upload(100, SHA, received=100)
    assert up.handle(DoneAsked("d")) == [CatchUp()]
    refused, discard = up.handle(HashFailed("gone"))
    assert refused.token == "d" and "does not match" in refused.reason and discard == Discard()


def test_stored_content_is_shared_at_once():
    up = Upload(10, SHA, received=10, stored=True)
    assert up.accepted == 10
    assert kinds(up.handle(DataReceived("a", 10, 1))) == [Refuse]
    assert up.handle(DoneAsked("d")) == [Share("d")]


def test_release_acks_what_was_accepted_and_refuses_done():
    up = Upload(100, SHA, queue_chunks=1)
    up.handle(DataReceived("a", 0, 10))
    up.handle(DataReceived("b", 10, 10))
    assert up.release() == [Ack("b", 20)]
    up2 = Upload(10, SHA)
    up2.handle(DataReceived("a", 0, 10))
    up2.handle(DoneAsked("d"))
    assert kinds(up2.release()) == [Refuse] and up2.state is UploadState.RECEIVING


def test_abort_refuses_every_held_ack_and_done_and_what_comes_after():
    up = Upload(100, SHA, queue_chunks=1)
    up.handle(DataReceived("a", 0, 10))
    up.handle(DataReceived("b", 10, 10))  # held: its chunk is dropped with the queue
    assert up.abort(500, "dropped") == [Refuse("b", 500, "dropped")]
    assert up.state is UploadState.FAILED and up.waiting == 0 and up.accepted == 0
    assert up.handle(DataReceived("c", 0, 10)) == [Refuse("c", 500, "dropped")]
    assert up.handle(DoneAsked("e")) == [Refuse("e", 500, "dropped")]
    up2 = Upload(10, SHA, received=10)
    assert up2.handle(DoneAsked("d")) == [CatchUp()]
    assert up2.abort(500, "bug") == [Refuse("d", 500, "bug")] and up2.waiting == 0
    up3 = Upload(10, SHA, received=10, stored=True)
    assert up3.handle(DoneAsked("d")) == [Share("d")]
    assert up3.abort(500, "late") == [] and up3.state is UploadState.VERIFIED


def test_the_machine_refuses_events_it_does_not_know():
    with pytest.raises(TypeError):
        Upload(1, SHA).handle(object())
    with pytest.raises(TypeError):
        Upload(1, SHA).handle(Verified(SHA))
    with pytest.raises(ValueError):
        Upload(1, SHA, received=2)


class FakeDisk:
    """A sink in memory: chunks wait in ``queue`` until :meth:`write` takes some."""

    def __init__(self, have: bytes = b"") -> None:
        self.data = bytearray(have)
        self.queue: list[tuple[int, bytes]] = []

    def write(self, n: int) -> int:
        for _ in range(min(n, len(self.queue))):
            offset, chunk = self.queue.pop(0)
            assert offset == len(self.data)
            self.data += chunk
        return len(self.data)


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(min_size=0, max_size=300),
    have=st.integers(0, 300),
    steps=st.lists(st.tuples(st.sampled_from(["next", "dup", "skip", "beyond", "disk",
                                              "done"]),
                             st.integers(1, 64)), max_size=60),
    queue_chunks=st.integers(1, 4),
    lie=st.booleans(),
)
def test_any_order_of_chunks_and_writes_keeps_acks_in_order_and_shares_only_the_content(
        content, have, steps, queue_chunks, lie):
    have = min(have, len(content))
    sha = hashlib.sha256(content).hexdigest()
    size = len(content) + (7 if lie else 0)  # a client that lies about the size
    disk = FakeDisk(content[:have])
    up = Upload(size, sha, received=have, queue_chunks=queue_chunks, window=4)
    acked: list[int] = []  # received of each FILE-ACK, in the order they went out
    refused: list[Any] = []
    shared = []
    sent: list[tuple[Any, int]] = []  # (token, end) of chunks we sent that were accepted
    offset = have
    tokens = iter(range(10**6))

    def run(effects, chunk=None):
        for e in effects:
            if isinstance(e, Write):
                assert chunk is not None and len(chunk) == e.length
                disk.queue.append((e.offset, chunk))
            elif isinstance(e, Ack):
                acked.append(e.received)
                assert e.received == dict(sent)[e.token]
            elif isinstance(e, Refuse):
                refused.append(e)
            elif isinstance(e, CatchUp):
                run(up.handle(Hashed(len(disk.data))))
            elif isinstance(e, Verify):
                run(up.handle(Verified(hashlib.sha256(disk.data).hexdigest())))
            elif isinstance(e, Share):
                shared.append(bytes(disk.data))

    for what, n in steps:
        if up.state in (UploadState.VERIFIED, UploadState.FAILED):
            break
        if what == "disk":
            run(up.handle(Written(disk.write(n))))
            continue
        if what == "done":
            run(up.handle(DoneAsked(next(tokens))))
            continue
        at = {"next": offset, "dup": max(have, offset - n), "skip": offset + n,
              "beyond": size}[what]
        chunk = (content + bytes(7))[at:at + n] if at < size else b"x" * n
        token = next(tokens)
        before = up.accepted
        sent.append((token, at + len(chunk)))
        run(up.handle(DataReceived(token, at, len(chunk))), chunk)
        if up.accepted > before:
            assert at == before and up.accepted == at + len(chunk)
            offset = up.accepted
        # never more chunks acked than the disk may still be behind with
        unwritten_acked = sum(1 for end in acked if end > len(disk.data))
        assert unwritten_acked <= queue_chunks
    assert acked == sorted(acked) and len(set(acked)) == len(acked)  # in order, each once
    assert bytes(disk.data) + b"".join(c for _, c in disk.queue) == \
        (content + bytes(7))[:up.accepted]  # what was accepted is the content, in order
    event("shared" if shared else f"ended in {up.state.value}")
    for data in shared:
        assert data == content and not lie


def test_an_upload_window_and_the_machine_agree_over_a_fake_link():
    """ConnectionPair style: the client's UploadWindow on one side, the broker's Upload on
    the other, a link that delivers in order and a disk that writes one chunk per turn."""
    content = bytes(range(256)) * 40
    up = Upload(len(content), hashlib.sha256(content).hexdigest(), queue_chunks=2, window=4)
    window = UploadWindow(4)
    disk = FakeDisk()
    link: list[Any] = []  # acks on their way back
    spans = list(chunk_spans(len(content), 1000))
    shared = []
    while spans or window.in_flight:
        while spans and window.can_send():
            offset, length = spans.pop(0)
            window.sent(offset, length)
            for e in up.handle(DataReceived(offset, offset, length)):
                if isinstance(e, Write):
                    disk.queue.append((offset, content[offset:offset + length]))
                else:
                    link.append(e)
        for e in up.handle(Written(disk.write(1))):
            link.append(e)
        for ack in link:
            window.acked(ack.received)  # raises if out of order or wrong
        link.clear()
    effects = up.handle(DoneAsked("done"))
    while Verify() not in effects and Share("done") not in effects:
        effects = up.handle(Written(disk.write(10)))
        effects += up.handle(Hashed(len(disk.data)))
    assert up.handle(Verified(hashlib.sha256(disk.data).hexdigest())) == [Share("done")]
    assert bytes(disk.data) == content and not shared


# --- download -------------------------------------------------------------------------------------


def opened(dl: Download, size: int, download: str = "d1") -> list[Any]:
    return dl.handle(StreamOpened(download, size, dl.offset))


def test_a_download_in_order_gives_credit_back_as_chunks_are_written():
    dl = Download(credit=4)
    dl.expected_sha256 = SHA
    assert dl.start() == [Ask(0)]
    assert opened(dl, 50) == []
    assert dl.state is DownloadState.RECEIVING
    for i in range(5):
        assert dl.handle(ChunkReceived("d1", i * 10, 10)) == [Write(i * 10, 10)]
    assert dl.handle(Written(10)) == []
    assert dl.handle(Written(20)) == [GiveCredit("d1", 2)]  # half the credit at a time
    assert dl.handle(Written(40)) == [GiveCredit("d1", 2)]
    assert dl.handle(Written(50)) == []  # the end: no credit wanted
    assert dl.handle(Hashed(50)) == [Verify()]
    assert dl.handle(Verified(SHA)) == [Deliver()]
    assert dl.state is DownloadState.DONE


def test_a_gap_or_a_stall_asks_again_from_where_it_is_until_attempts_run_out():
    dl = Download(credit=4, attempts=3)
    dl.start()
    opened(dl, 100)
    dl.handle(ChunkReceived("d1", 0, 10))
    assert dl.handle(ChunkReceived("d1", 20, 10)) == [Cancel("d1"), Ask(10)]
    assert dl.handle(ChunkReceived("d1", 10, 10)) == []  # a late chunk of the old stream
    opened(dl, 100, "d2")
    assert dl.handle(Stalled()) == [Cancel("d2"), Ask(10)]
    opened(dl, 100, "d3")
    effects = dl.handle(Stalled())
    assert effects == [Cancel("d3"), Fail("stopped", "the broker stopped sending")]
    assert dl.state is DownloadState.FAILED


def test_chunks_of_an_old_stream_written_late_give_no_credit():
    dl = Download(credit=2)
    dl.start()
    opened(dl, 100)
    dl.handle(ChunkReceived("d1", 0, 10))
    dl.handle(Stalled())
    opened(dl, 100, "d2")
    assert dl.handle(Written(10)) == []  # d1's chunk
    dl.handle(ChunkReceived("d2", 10, 10))
    assert dl.handle(Written(20)) == [GiveCredit("d2", 1)]


def test_a_part_longer_than_the_file_starts_over():
    dl = Download(500, hashed=500)
    assert dl.start() == [Ask(500)]
    assert dl.handle(StreamRefused(400, "offset must be 0 to 100")) == [Restart(), Ask(0)]
    assert (dl.offset, dl.written, dl.hashed) == (0, 0, 0)
    assert opened(dl, 100) == []


def test_a_refusal_fails_the_download():
    dl = Download()
    dl.start()
    assert dl.handle(StreamRefused(404, "no file")) == [Fail("refused", "no file", 404)]


def test_a_resumed_download_catches_its_hash_up_and_verifies_after():
    dl = Download(30)
    dl.expected_sha256 = SHA
    assert dl.start() == [Ask(30)]
    assert opened(dl, 40) == [CatchUp()]
    dl.handle(ChunkReceived("d1", 30, 10))
    assert dl.handle(Written(40)) == []
    assert dl.handle(Hashed(30)) == []
    assert dl.handle(Hashed(40)) == [Verify()]
    assert dl.handle(Verified("00" * 32)) == [Reject()]


def test_a_complete_part_needs_no_chunk():
    dl = Download(10)
    dl.expected_sha256 = SHA
    dl.start()
    assert opened(dl, 10) == [CatchUp()]
    assert dl.handle(Hashed(10)) == [Verify()]
    empty = Download()
    empty.start()
    assert opened(empty, 0) == [Verify()]


def test_abort_and_write_failure_fail_the_download():
    dl = Download()
    dl.start()
    opened(dl, 10)
    assert dl.handle(Aborted("other", "x")) == []
    assert dl.handle(Aborted("d1", "cannot read")) == [Cancel("d1"), Fail("aborted", "cannot read")]
    dl2 = Download()
    dl2.start()
    opened(dl2, 10)
    assert dl2.handle(WriteFailed("disk full")) == [Cancel("d1"), Fail("io", "disk full")]


def test_a_stream_from_another_offset_is_a_protocol_error():
    dl = Download(5)
    dl.start()
    with pytest.raises(RemoteProtocolError):
        dl.handle(StreamOpened("d1", 10, 0))


@settings(max_examples=300, deadline=None)
@given(
    content=st.binary(min_size=0, max_size=200),
    have=st.integers(0, 250),
    faults=st.lists(st.sampled_from(["ok", "drop", "dup", "beyond", "corrupt", "stall",
                                     "disk"]), max_size=80),
    credit=st.integers(1, 6),
)
def test_a_download_over_a_faulty_link_delivers_only_the_content(content, have, faults, credit):
    """A fake broker sends chunks of 16 octets while credit lasts, through a link that drops,
    repeats, corrupts or stalls; the disk writes when told. Whatever happens the machine never
    delivers anything but the content, never gets chunks beyond its credit, and the part stays
    the prefix it received in order."""
    chunk = 16
    part = bytearray((content + b"\xff" * 250)[:have])  # a part, maybe longer than the file
    queue: list[tuple[int, bytes]] = []
    dl = Download(len(part), hashed=0, credit=credit, attempts=4)
    dl.expected_sha256 = hashlib.sha256(content).hexdigest()
    effects = dl.start()
    stream = {"id": "", "offset": 0, "credit": 0}
    streams = iter(range(10**6))
    delivered: list[bytes] = []
    ended = False

    def run(effects):
        nonlocal ended
        for e in effects:
            if isinstance(e, Ask):
                if e.offset > len(content):
                    run(dl.handle(StreamRefused(400, "offset")))
                    continue
                stream.update(id=f"d{next(streams)}", offset=e.offset, credit=credit)
                run(dl.handle(StreamOpened(stream["id"], len(content), e.offset)))
            elif isinstance(e, Restart):
                part.clear()
                queue.clear()
            elif isinstance(e, Write):
                queue.append((e.offset, pending_chunk[0]))
            elif isinstance(e, GiveCredit):
                if e.download == stream["id"]:
                    stream["credit"] += e.credit
            elif isinstance(e, CatchUp):
                run(dl.handle(Hashed(len(part))))
            elif isinstance(e, Verify):
                run(dl.handle(Verified(hashlib.sha256(part).hexdigest())))
            elif isinstance(e, Deliver):
                delivered.append(bytes(part))
                ended = True
            elif isinstance(e, Reject | Fail):
                ended = True

    pending_chunk: list[bytes] = [b""]

    def write(n: int) -> None:
        for _ in range(min(n, len(queue))):
            offset, data = queue.pop(0)
            assert offset == len(part)
            part.extend(data)
        run(dl.handle(Written(len(part))))
        run(dl.handle(Hashed(len(part))))

    run(effects)
    for fault in faults:
        if ended:
            break
        if fault == "disk":
            write(2)
            continue
        if fault == "stall":
            run(dl.handle(Stalled()))
            continue
        if stream["credit"] <= 0 or stream["offset"] >= len(content):
            write(1)
            continue
        at = stream["offset"]
        data = content[at:at + chunk]
        stream["offset"] += len(data)
        stream["credit"] -= 1
        if fault == "drop":
            continue
        if fault == "corrupt":
            data = bytes([data[0] ^ 1]) + data[1:]
        if fault == "beyond":
            data = data + b"!"
        for _ in range(2 if fault == "dup" else 1):
            pending_chunk[0] = data
            run(dl.handle(ChunkReceived(stream["id"], at, len(data))))
    for _ in range(100):
        if ended or dl.state is not DownloadState.RECEIVING or dl.written >= dl.offset:
            break
        write(8)
    event("delivered" if delivered else f"ended in {dl.state.value}")
    for data in delivered:
        assert data == content
    assert len(delivered) <= 1
    assert dl.written <= len(content) or dl.state is DownloadState.ASKING or not part
