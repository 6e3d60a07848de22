"""File sharing without sockets: safe names, delivery without overwrite, chunking, credit,
hashing, progress with a fake clock, sources, previews, and the codec's file messages."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmeet import protocol as p
from zmeet.errors import RemoteProtocolError
from zmeet.files import (
    DownloadCredit,
    FileMissing,
    FileUnreadable,
    Progress,
    RateLimiter,
    UnsafeDestination,
    UploadWindow,
    chunk_spans,
    collect,
    deliver,
    destination_folder,
    format_size,
    hash_range,
    is_sha256,
    numbered,
    parse_size,
    part_path,
    rejected_path,
    resume_offset,
    safe_basename,
    safe_component,
    safe_relpath,
    sha256_file,
)
from zmeet.files.hashing import read_exact, write_and_hash
from zmeet.files.names import MAX_COMPONENT_BYTES, MAX_DEPTH
from zmeet.files.preview import image_preview, is_previewable
from zmeet.protocol import files as pf
from zmeet.protocol.limits import HEADER

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- safe names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", ("report.pdf",)),
        ("a b c.txt", ("a b c.txt",)),
        ("ünïcödé 文件.txt", ("ünïcödé 文件.txt",)),
        ("photos/2024/x.jpg", ("photos", "2024", "x.jpg")),
        ("../../etc/passwd", ("etc", "passwd")),
        ("/etc/passwd", ("etc", "passwd")),
        ("a/../../b", ("a", "b")),
        ("..\\..\\windows\\system32", ("windows", "system32")),
        ("C:\\Users\\x.txt", ("C:", "Users", "x.txt")),
        ("..", ("file",)),
        (".", ("file",)),
        ("", ("file",)),
        ("////", ("file",)),
        (".bashrc", ("_bashrc",)),
        ("  spaced  ", ("spaced",)),
        ("evil\x1b[31m.txt", ("evil[31m.txt",)),
        ("nul\x00byte", ("nulbyte",)),
        ("abc\u202etxt.exe", ("abctxt.exe",)),
        ("bad\udcffbyte", ("badbyte",)),
    ],
)
def test_received_names_are_reduced_to_safe_components(name, expected):
    assert safe_relpath(name) == expected
    assert safe_basename(name) == expected[-1]


def test_long_components_are_cut_to_255_octets_keeping_the_extension():
    component = safe_component("é" * 300 + ".txt")
    assert component is not None and component.endswith(".txt")
    assert len(component.encode()) <= MAX_COMPONENT_BYTES
    deep = "/".join(["d"] * 100) + "/f"
    assert len(safe_relpath(deep)) == MAX_DEPTH


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_name_gives_safe_components(name):
    parts = safe_relpath(name)
    assert 1 <= len(parts) <= MAX_DEPTH
    for part in parts:
        assert part not in ("", ".", "..") and not part.startswith(".")
        assert "/" not in part and "\\" not in part and "\x00" not in part
        assert len(part.encode("utf-8")) <= MAX_COMPONENT_BYTES


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_any_name_is_delivered_inside_the_folder(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp("out")
    part = folder / "x.part"
    part.write_bytes(b"data")
    final = deliver(part, folder, name)
    assert folder.resolve() in final.resolve().parents
    assert final.read_bytes() == b"data" and not part.exists()


def test_numbered_names_keep_the_extension():
    assert numbered("a.txt", 0) == "a.txt"
    assert numbered("a.txt", 2) == "a (2).txt"
    assert numbered("archive.tar.gz", 1) == "archive (1).tar.gz"
    assert numbered("README", 3) == "README (3)"
    assert numbered("_hidden", 1) == "_hidden (1)"


def test_deliver_never_overwrites(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("mine")
    paths = []
    for i in range(3):
        part = tmp_path / f"p{i}"
        part.write_text(f"received {i}")
        paths.append(deliver(part, out, "a.txt"))
    assert [p.name for p in paths] == ["a (1).txt", "a (2).txt", "a (3).txt"]
    assert (out / "a.txt").read_text() == "mine"
    assert paths[2].read_text() == "received 2"


def test_deliver_keeps_relative_folders_and_goes_around_a_file_in_the_way(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "photos").write_text("a file, not a folder")
    part = tmp_path / "p"
    part.write_text("jpeg")
    final = deliver(part, out, "photos/2024/x.jpg")
    assert final == out / "photos (1)" / "2024" / "x.jpg"
    assert (out / "photos").read_text() == "a file, not a folder"


def test_a_symlink_in_the_target_folder_does_not_lead_outside(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "docs").symlink_to(outside, target_is_directory=True)
    part = tmp_path / "p"
    part.write_text("x")
    final = deliver(part, out, "docs/evil.txt")
    assert final == out / "evil.txt"
    assert list(outside.iterdir()) == []


def test_a_dangling_symlink_at_the_final_name_is_not_followed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").symlink_to(tmp_path / "elsewhere.txt")
    part = tmp_path / "p"
    part.write_text("x")
    assert deliver(part, out, "a.txt") == out / "a (1).txt"
    assert not (tmp_path / "elsewhere.txt").exists()


def test_destination_folder_must_exist(tmp_path):
    with pytest.raises(UnsafeDestination):
        destination_folder(tmp_path / "missing", "a")


# --- parts --------------------------------------------------------------------------------------


def test_part_paths_take_only_file_ids(tmp_path):
    part = part_path(tmp_path, "0123456789ab")
    assert part == tmp_path / ".zmeet-partial" / "0123456789ab.part"
    assert rejected_path(part).name == "0123456789ab.rejected"
    for bad in ("../../x", "0123456789AB", "0123", "0123456789ab/"):
        with pytest.raises(ValueError):
            part_path(tmp_path, bad)


def test_resume_offset_is_the_part_length_unless_it_is_too_long(tmp_path):
    part = tmp_path / "x.part"
    assert resume_offset(part, 10) == 0
    part.write_bytes(b"12345")
    assert resume_offset(part, 10) == 5
    assert resume_offset(part, 4) == 0


# --- chunking and credit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "start", "expected"),
    [
        (0, 0, []),
        (1, 0, [(0, 1)]),
        (4, 0, [(0, 4)]),
        (5, 0, [(0, 4), (4, 1)]),
        (9, 4, [(4, 4), (8, 1)]),
        (8, 8, []),
    ],
)
def test_chunk_spans(size, start, expected):
    assert list(chunk_spans(size, 4, start)) == expected


def test_chunk_spans_refuse_nonsense():
    with pytest.raises(ValueError):
        list(chunk_spans(10, 0))
    with pytest.raises(ValueError):
        list(chunk_spans(10, 4, 11))


def test_upload_window_bounds_chunks_in_flight_and_checks_acks():
    window = UploadWindow(2, start=10)
    window.sent(10, 4)
    window.sent(14, 4)
    assert not window.can_send() and window.in_flight == 2
    with pytest.raises(ValueError):
        window.sent(18, 4)
    window.acked(14)
    assert window.confirmed == 14 and window.can_send()
    with pytest.raises(ValueError):
        window.sent(20, 4)  # not the next offset
    with pytest.raises(RemoteProtocolError):
        window.acked(17)  # not the end of the oldest chunk
    with pytest.raises(RemoteProtocolError):
        window.acked(30)  # nothing in flight any more


def test_download_credit_is_given_back_in_batches_and_checks_order():
    credit = DownloadCredit(4, offset=0, size=10 * 4)
    grants = []
    for i in range(10):
        credit.check(i * 4, 4)
        grants.append(credit.written(4))
    assert grants == [0, 2, 0, 2, 0, 2, 0, 2, 0, 0]  # every 2 chunks, none once done
    assert credit.done
    credit = DownloadCredit(4, offset=8, size=20)
    with pytest.raises(RemoteProtocolError):
        credit.check(12, 4)  # a gap
    with pytest.raises(RemoteProtocolError):
        credit.check(8, 13)  # past the end
    with pytest.raises(RemoteProtocolError):
        credit.check(8, 0)


# --- hashing ------------------------------------------------------------------------------------


def test_hash_helpers(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    path = tmp_path / "x"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    assert hash_range(h, path, 5, 100, block_bytes=16) == 100
    assert h.hexdigest() == hashlib.sha256(data[5:105]).hexdigest()
    assert hash_range(hashlib.sha256(), path, len(data) - 3, 100) == 3
    assert is_sha256(hashlib.sha256(b"").hexdigest())
    assert not is_sha256("A" * 64) and not is_sha256("0" * 63) and not is_sha256(None)


def test_write_and_hash_then_read_back(tmp_path):
    fd = os.open(tmp_path / "y", os.O_RDWR | os.O_CREAT)
    try:
        h = hashlib.sha256()
        write_and_hash(fd, b"hello ", 0, h)
        write_and_hash(fd, b"world", 6, h)
        assert h.hexdigest() == hashlib.sha256(b"hello world").hexdigest()
        assert read_exact(fd, 5, 6) == b"world"
        assert read_exact(fd, 100, 6) == b"world"
    finally:
        os.close(fd)


# --- progress, sizes, rate ------------------------------------------------------------------------


def test_progress_rate_and_time_left_with_a_fake_clock():
    clock = FakeClock()
    progress = Progress(1000, start=200, clock=clock)
    assert progress.rate_bps == 0.0 and progress.eta_s is None
    clock.t += 1
    progress.update(300)
    assert progress.rate_bps == pytest.approx(100)
    assert progress.eta_s == pytest.approx(7)
    assert progress.average_bps == pytest.approx(100)
    for _ in range(10):  # the rate follows recent samples
        clock.t += 1
        progress.update(progress.done + 50)
    assert progress.rate_bps == pytest.approx(50)
    progress.update(1000)
    assert progress.eta_s == 0.0


def test_progress_reports_are_throttled_but_the_end_always_shows():
    clock = FakeClock()
    progress = Progress(100, clock=clock)
    assert progress.due(1.0)
    assert not progress.due(1.0)
    clock.t += 1
    assert progress.due(1.0)
    progress.update(100)
    assert progress.due(1.0)


def test_rate_limiter_keeps_the_average_rate():
    clock = FakeClock()
    limiter = RateLimiter(1000, burst=100, clock=clock)
    assert limiter.delay_s(100) == 0.0
    assert limiter.delay_s(100) == pytest.approx(0.1)
    clock.t += 0.1
    assert limiter.delay_s(100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        RateLimiter(0, burst=1, clock=clock)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1024", 1024), ("1k", 1024), ("1.5K", 1536), ("500M", 500 * 2**20), ("4G", 4 * 2**30),
     ("4GiB", 4 * 2**30), ("2gb", 2 * 2**30), ("1T", 2**40)],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "x", "-1", "4X", "1..2M"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size():
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(200 * 2**20) == "200.0 MiB"


# --- sources ------------------------------------------------------------------------------------


def test_collect_files_and_folders_with_travel_names(tmp_path):
    top = tmp_path / "my stuff"
    (top / "sub dir").mkdir(parents=True)
    (top / "a.txt").write_text("a")
    (top / "sub dir" / "ünï.txt").write_text("u")
    (top / "link").symlink_to(tmp_path)
    os.mkfifo(top / "fifo")
    single = tmp_path / "single.bin"
    single.write_bytes(b"12345")
    sources, skipped = collect([single, top])
    assert [(s.name, s.size) for s in sources] == [
        ("single.bin", 5), ("my stuff/a.txt", 1), ("my stuff/sub dir/ünï.txt", 1)]
    assert any("symbolic link" in note for note in skipped)
    assert any("not a regular file" in note for note in skipped)


def test_collect_says_file_doesnt_exist(tmp_path):
    with pytest.raises(FileMissing, match="File doesn't exist: .*nope"):
        collect([tmp_path / "nope"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_collect_says_unreadable(tmp_path):  # pragma: no cover - CI runs as root
    path = tmp_path / "secret"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(FileUnreadable):
        collect([path])


def test_collect_refuses_a_device(tmp_path):
    with pytest.raises(FileUnreadable):
        collect([Path("/dev/null")])


# --- previews -----------------------------------------------------------------------------------


def test_image_preview_is_a_small_bgr_array():
    import cv2
    import numpy as np

    image = np.zeros((600, 900, 3), np.uint8)
    image[:, :, 2] = 255
    ok, png = cv2.imencode(".png", image)
    assert ok
    preview = image_preview(png.tobytes(), 300)
    assert preview.shape == (200, 300, 3) and preview.dtype == np.uint8
    assert preview[100, 150].tolist() == [0, 0, 255]
    assert image_preview(b"not an image") is None
    assert image_preview(b"") is None
    assert is_previewable("Photo.JPG", 10) and not is_previewable("a.txt", 10)
    assert not is_previewable("a.png", 0)


# --- codec: file messages -------------------------------------------------------------------------

INFO = pf.FileInfo(id="0123456789ab", name="dir/ä b.txt", size=5, sha256="a" * 64,
                   sender="alice", room="lobby", ts_ms=1)

MESSAGES = [
    pf.FilePut(req_id=1, name="x", size=3, sha256="b" * 64, room="lobby"),
    pf.FileData(req_id=2, upload="u", offset=0, data=b"\x00\x01\x02"),
    pf.FileDone(req_id=3, upload="u"),
    pf.FileGet(req_id=4, id="0123456789ab", offset=2, credit=3),
    pf.FileCredit(req_id=5, download="d", credit=2),
    pf.FileCancel(req_id=6, id="d"),
    pf.FileList(req_id=7, room="lobby", limit=10),
    pf.FileReady(req_id=1, upload="u", offset=0, chunk_bytes=4, window=2),
    pf.FileAck(req_id=2, upload="u", received=3),
    pf.FileShared(req_id=3, file=INFO),
    pf.FileStream(req_id=4, download="d", file=INFO, offset=2, chunk_bytes=4),
    pf.FileListed(req_id=7, room="lobby", files=(INFO, INFO)),
    pf.FileChunk(download="d", offset=4, data=b"xyz"),
    pf.FileAbort(download="d", code=500, reason="gone"),
    pf.FileOffer(file=INFO),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_file_messages_round_trip(message):
    frames = p.encode(message)
    has_payload = isinstance(message, pf.FileData | pf.FileChunk)
    assert len(frames) == (4 if has_payload else 3)
    decoded = p.decode(frames)
    assert decoded == message
    if has_payload:
        assert decoded.data == message.data
        assert b"xyz" not in frames[2] and b"\x00\x01\x02" not in frames[2]  # not in the body


def test_chunk_payload_over_the_limit_is_refused_with_its_req_id():
    frames = p.encode(pf.FileData(req_id=9, upload="u", offset=0, data=b""))
    frames[3] = bytes(pf.MAX_FILE_CHUNK_BYTES + 1)
    with pytest.raises(RemoteProtocolError) as info:
        p.decode(frames)
    assert info.value.code == p.ErrorCode.MESSAGE_TOO_LARGE and info.value.req_id == 9
    frames[3] = bytes(pf.MAX_FILE_CHUNK_BYTES)
    assert len(p.decode(frames).data) == pf.MAX_FILE_CHUNK_BYTES


def test_chunk_without_its_payload_frame_is_refused():
    frames = p.encode(pf.FileData(req_id=9, upload="u", offset=0, data=b"x"))
    with pytest.raises(RemoteProtocolError) as info:
        p.decode(frames[:3])
    assert info.value.code == p.ErrorCode.BAD_REQUEST
    with pytest.raises(RemoteProtocolError):
        p.decode(p.encode(pf.FileDone(req_id=1, upload="u")) + [b"extra"])


def test_media_frames_still_carry_their_payload():
    frame = p.MediaFrame(room="r", kind="video", seq=1, capture_ts_us=2, pts_ms=3, width=4,
                         height=5, fps=6.0, codec="jpeg", payload=b"jpeg!")
    frames = p.encode(frame)
    assert frames[3] == b"jpeg!" and p.decode(frames).payload == b"jpeg!"


def test_nested_file_info_is_type_checked():
    good = msgpack.unpackb(p.encode(pf.FileShared(req_id=3, file=INFO))[2])
    for field, bad in (("id", 5), ("size", "5"), ("size", True), ("from", None)):
        body = {**good, "file": {**good["file"], field: bad}}
        with pytest.raises(RemoteProtocolError) as info:
            p.decode([HEADER, b"FILE-SHARED", msgpack.packb(body)])
        assert info.value.code == p.ErrorCode.BAD_REQUEST


INTS = st.integers(-(2**63), 2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(
    command=st.sampled_from([cls.COMMAND for cls in
                             (*pf.FILE_REQUESTS, *pf.FILE_REPLIES, *pf.FILE_DIRECTS)]),
    body=st.dictionaries(
        st.sampled_from(["req_id", "name", "size", "sha256", "room", "to", "upload", "offset",
                         "download", "credit", "id", "file", "files", "limit", "code", "reason",
                         "window", "chunk_bytes", "received"]),
        st.one_of(INTS, st.text(max_size=5), st.binary(max_size=5),
                  st.none(), st.booleans(), st.lists(INTS, max_size=2),
                  st.dictionaries(st.text(max_size=3), INTS, max_size=2)),
        max_size=8,
    ),
    extra=st.lists(st.binary(max_size=8), max_size=2),
)
def test_decode_of_any_file_message_raises_only_remote_protocol_error(command, body, extra):
    frames = [HEADER, command, msgpack.packb(body), *extra]
    try:
        p.decode(frames)
    except RemoteProtocolError:
        pass
