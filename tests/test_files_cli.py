"""File sharing as a user runs it: ``zmeet send``, ``zmeet files``, ``zmeet fetch`` and the chat
commands in real subprocesses against a real broker subprocess; click's CliRunner for usage
errors; the meeting window's preview tile through the chat terminal's event handler.

Nothing sleeps to wait: tests wait for lines the processes print (bounded), and kill them
mid-transfer once a JSON progress event proves the transfer is under way (``--limit-rate``
keeps it under way long enough).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import gevent
import pytest
from click.testing import CliRunner
from filetools import MiB, make_file, sha256_path
from proc import ZMEET, Proc, start_broker

from zmeet import protocol as p
from zmeet.protocol import files as pf

pytestmark = pytest.mark.timeout(90)


def zmeet(*args: str, broker: str, nick: str, cwd: Path | None = None,
          stdin: bool = False) -> Proc:
    return Proc([*ZMEET, *args, "--broker", broker, "--nick", nick], cwd=cwd, stdin=stdin)


def json_lines(proc: Proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout if line.startswith("{")]


def expect_json(proc: Proc, predicate, timeout_s: float = 20.0) -> dict:
    """The first JSON line of ``proc`` that ``predicate`` accepts."""
    for _ in range(10_000):
        event = json.loads(proc.expect(r"^\{", timeout_s=timeout_s).string)
        if predicate(event):
            return event
    raise AssertionError("no matching JSON line")


@pytest.fixture
def broker(tmp_path):
    proc, endpoints = start_broker(tmp_path / "data")
    yield endpoints["entry"]
    proc.stop()


# --- arguments ------------------------------------------------------------------------------------


def test_help_lists_the_file_commands_and_options():
    runner = CliRunner()
    result = runner.invoke(_main_group(), ["--help"])
    for command in ("send", "files", "fetch"):
        assert command in result.output
    assert "--accept-files" in runner.invoke(_main_group(), ["join", "--help"]).output
    assert "--max-file-size" in runner.invoke(_main_group(), ["broker", "--help"]).output


def _main_group():
    from zmeet_cli.main import main

    return main


def test_send_needs_a_room_or_a_nick_and_an_existing_file(tmp_path):
    runner = CliRunner()
    result = runner.invoke(_main_group(), ["send", str(tmp_path), "--nick", "a"])
    assert result.exit_code == 2 and "--room ROOM or --to NICK" in result.output
    result = runner.invoke(_main_group(), ["send", str(tmp_path / "nope.txt"), "--room", "r",
                                           "--nick", "a"])
    assert result.exit_code == 1 and "File doesn't exist" in result.output
    result = runner.invoke(_main_group(), ["fetch", "x", "--nick", "a", "--limit-rate", "fast"])
    assert result.exit_code == 2


def test_broker_refuses_a_bad_max_file_size():
    result = CliRunner().invoke(_main_group(), ["broker", "--max-file-size", "lots"])
    assert result.exit_code == 2 and "--max-file-size" in result.output


# --- send, files, fetch ---------------------------------------------------------------------------


def test_send_a_folder_list_it_and_fetch_it_with_relative_paths(broker, tmp_path):
    top = tmp_path / "trip photos"
    (top / "día 2").mkdir(parents=True)
    (top / "a b.txt").write_text("first")
    (top / "día 2" / "ünï.txt").write_text("second ✓")
    make_file(top / "día 2" / "big.bin", 3 * MiB)
    send = zmeet("send", str(top), "--room", "r", "--json", broker=broker, nick="alice")
    assert send.wait() == 0, send.stderr
    done = [e for e in json_lines(send) if e["type"] == "done"]
    assert [e["file"] for e in done] == ["trip photos/a b.txt", "trip photos/día 2/big.bin",
                                         "trip photos/día 2/ünï.txt"]
    listing = zmeet("files", "r", "--json", broker=broker, nick="bob")
    assert listing.wait() == 0
    listed = json_lines(listing)
    assert [(f["id"], f["name"], f["from"]) for f in listed] == [
        (e["id"], e["file"], "alice") for e in done]
    ids = [f["id"] for f in listed]
    out = tmp_path / "received"
    fetch = zmeet("fetch", *ids, "--out", str(out), broker=broker, nick="bob")
    assert fetch.wait() == 0, fetch.stderr
    assert sum("sha256 verified" in line for line in fetch.stdout) == 3
    for name in ("a b.txt", "día 2/ünï.txt", "día 2/big.bin"):
        assert (out / "trip photos" / name).read_bytes() == (top / name).read_bytes()
    again = zmeet("fetch", ids[0], "--out", str(out), "--json", broker=broker, nick="bob")
    assert again.wait() == 0
    assert json_lines(again)[-1]["path"] == str(out / "trip photos" / "a b (1).txt")
    assert (out / "trip photos" / "a b.txt").read_text() == "first"
    plain = zmeet("files", "r", broker=broker, nick="bob")
    assert plain.wait() == 0
    assert any(ids[0] in line and "trip photos/a b.txt" in line for line in plain.stdout)


def test_tail_reads_a_shared_file_as_the_files_feature_renders_it(broker, tmp_path):
    assert zmeet("say", "r", "marker", broker=broker, nick="alice").wait() == 0
    tail = zmeet("tail", "r", "--history", "1", "--timeout", "60", broker=broker, nick="watcher")
    tail.expect(r"<alice> marker")  # printed after JOINED: the watcher is in the room
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    send = zmeet("send", str(src), "--room", "r", broker=broker, nick="alice")
    assert send.wait() == 0, send.stderr
    file_id = send.stdout[-1].rsplit(" as ", 1)[1]
    tail.expect(rf"\* alice shared notes\.txt \(5 B\) as {file_id}$")
    tail.signal(signal.SIGINT)
    assert tail.wait() == 0


def test_progress_is_json_for_scripts_and_no_bar_when_output_is_not_a_terminal(broker, tmp_path):
    src = make_file(tmp_path / "f.bin", 2 * MiB)
    plain = zmeet("send", str(src), "--room", "r", broker=broker, nick="alice")
    assert plain.wait() == 0
    assert len(plain.stdout) == 1 and plain.stdout[0].startswith("sent f.bin (2.0 MiB) to #r as ")
    assert "%|" not in "\n".join(plain.stderr)
    scripted = zmeet("send", str(src), "--room", "r", "--json", broker=broker, nick="alice")
    assert scripted.wait() == 0
    events = json_lines(scripted)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "hashing" and "start" in kinds and kinds[-1] == "done"
    done = events[-1]
    assert {"file", "size", "done", "rate_bps", "eta_s", "elapsed_s", "id", "sha256"} <= done.keys()
    assert done["sha256"] == sha256_path(src) and done["size"] == done["done"] == 2 * MiB


def test_send_to_one_nick(broker, tmp_path):
    bob = zmeet("join", "lobby", "--no-display", broker=broker, nick="bob", stdin=True)
    bob.expect("joined #lobby")
    src = tmp_path / "note.txt"
    src.write_text("for bob only")
    send = zmeet("send", str(src), "--to", "bob", broker=broker, nick="alice")
    assert send.wait() == 0, send.stderr
    offer = bob.expect(r"alice sent you note\.txt \(12 B\): /get ([0-9a-f]{12}) saves it")
    listing = zmeet("files", "--direct", "--json", broker=broker, nick="carol")
    assert listing.wait() == 0 and json_lines(listing) == []
    bob.send(f"/get {offer.group(1)} {tmp_path / 'bob'}")
    bob.expect(r"saved note\.txt \(12 B\) from alice to .* \(sha256 verified\)")
    assert (tmp_path / "bob" / "note.txt").read_text() == "for bob only"
    bob.close_stdin()
    bob.stop()


def test_the_broker_size_limit_refuses_before_any_byte(tmp_path):
    proc, endpoints = start_broker(tmp_path / "data", "--max-file-size", "1K")
    try:
        src = make_file(tmp_path / "two.bin", 2048)
        send = zmeet("send", str(src), "--room", "r", broker=endpoints["entry"], nick="a")
        assert send.wait() == 1
        err = "\n".join(send.stderr)
        assert "2.0 KiB" in err and "1.0 KiB" in err and "nothing was sent" in err
        assert list((tmp_path / "data" / "blobs" / "partial").iterdir()) == []
    finally:
        proc.stop()


# --- resume ---------------------------------------------------------------------------------------


def _sending(broker: str, src: Path, nick: str, *extra: str) -> Proc:
    return zmeet("send", str(src), "--room", "r", "--json", "--connect-timeout", "2", *extra,
                 broker=broker, nick=nick)


def _under_way(proc: Proc, octets: int) -> dict:
    return expect_json(proc, lambda e: e["type"] == "progress" and e["done"] >= octets)


def test_send_resumes_after_the_sender_is_killed(tmp_path):
    proc, endpoints = start_broker(tmp_path / "data", heartbeat_ms=200)
    broker = endpoints["entry"]
    try:
        src = make_file(tmp_path / "movie.bin", 24 * MiB)
        watcher = zmeet("join", "r", "--no-display", broker=broker, nick="watch", stdin=True)
        watcher.expect("joined #r")
        first = _sending(broker, src, "alice", "--limit-rate", "8M")
        watcher.expect(r"\* alice joined")
        _under_way(first, 4 * MiB)
        first.signal(signal.SIGKILL)
        first.wait()
        watcher.expect(r"\* alice is gone")  # its nick is free again
        second = _sending(broker, src, "alice")
        assert second.wait(timeout_s=60) == 0, second.stderr
        events = json_lines(second)
        start = next(e for e in events if e["type"] == "start")
        assert 4 * MiB <= start["offset"] < 24 * MiB
        done = events[-1]
        assert done["type"] == "done" and done["sha256"] == sha256_path(src)
        watcher.stop()
    finally:
        proc.stop()


def test_send_resumes_after_the_broker_restarts(tmp_path):
    data = tmp_path / "data"
    proc, endpoints = start_broker(data)
    src = make_file(tmp_path / "movie.bin", 24 * MiB)
    try:
        first = _sending(endpoints["entry"], src, "alice", "--limit-rate", "8M")
        _under_way(first, 4 * MiB)
        proc.signal(signal.SIGKILL)  # the broker dies mid-transfer
        proc.wait()
        assert first.wait(timeout_s=30) == 1
        assert "broker" in "\n".join(first.stdout + first.stderr)
    finally:
        proc.stop()
    proc, endpoints = start_broker(data)
    try:
        second = _sending(endpoints["entry"], src, "alice")
        assert second.wait(timeout_s=60) == 0, second.stderr
        events = json_lines(second)
        start = next(e for e in events if e["type"] == "start")
        # the chunks written before the kill; acked ones still queued for the disk are lost
        assert 0 < start["offset"] < 24 * MiB
        assert events[-1]["sha256"] == sha256_path(src)
        fetch = zmeet("fetch", events[-1]["id"], "--out", str(tmp_path / "out"),
                      broker=endpoints["entry"], nick="bob")
        assert fetch.wait() == 0
        assert sha256_path(tmp_path / "out" / "movie.bin") == sha256_path(src)
    finally:
        proc.stop()


def test_fetch_resumes_after_being_killed(broker, tmp_path):
    src = make_file(tmp_path / "movie.bin", 24 * MiB)
    send = zmeet("send", str(src), "--room", "r", "--json", broker=broker, nick="alice")
    assert send.wait() == 0
    file_id = json_lines(send)[-1]["id"]
    out = tmp_path / "out"
    first = zmeet("fetch", file_id, "--out", str(out), "--json", "--limit-rate", "8M",
                  broker=broker, nick="bob")
    _under_way(first, 4 * MiB)
    first.signal(signal.SIGKILL)
    first.wait()
    part = out / ".zmeet-partial" / f"{file_id}.part"
    have = part.stat().st_size
    assert 4 * MiB <= have < 24 * MiB and not (out / "movie.bin").exists()
    second = zmeet("fetch", file_id, "--out", str(out), "--json", broker=broker, nick="bob2")
    assert second.wait() == 0, second.stderr
    events = json_lines(second)
    assert next(e for e in events if e["type"] == "start")["offset"] == have
    assert events[-1]["resumed_from"] == have
    assert sha256_path(out / "movie.bin") == sha256_path(src)
    assert not (out / ".zmeet-partial").exists()


# --- in a meeting ---------------------------------------------------------------------------------


def test_file_commands_in_a_meeting(broker, tmp_path):
    for who in ("alice", "bob", "carol"):
        (tmp_path / who).mkdir()
    photo = tmp_path / "alice" / "holiday photo.txt"
    photo.write_text("pretend this is a photo")
    joins = {}
    for who, extra in (("bob", ["--accept-files"]), ("carol", []), ("alice", [])):
        joins[who] = zmeet("join", "meet", "--no-display", *extra, broker=broker, nick=who,
                           cwd=tmp_path / who, stdin=True)
        joins[who].expect("joined #meet")
    alice, bob, carol = joins["alice"], joins["bob"], joins["carol"]
    alice.send("!FILE no such file.txt")
    alice.expect(r"-- error: File doesn't exist: no such file\.txt")
    alice.send(f"/file {photo.name}")
    alice.expect(r"-- shared holiday photo\.txt as [0-9a-f]{12}")
    for who in (bob, carol):
        who.expect(r"\* alice shared holiday photo\.txt \(23 B\) as [0-9a-f]{12}")
    bob.expect(r"alice sent #meet holiday photo\.txt \(23 B\): fetching it")
    bob.expect(r"-- saved holiday photo\.txt .* \(sha256 verified\)")
    assert (tmp_path / "bob" / "holiday photo.txt").read_text() == photo.read_text()
    offer = carol.expect(r"alice sent #meet holiday photo\.txt \(23 B\): /get ([0-9a-f]{12})")
    assert not (tmp_path / "carol" / "holiday photo.txt").exists()
    carol.send(f"/get {offer.group(1)}")
    carol.expect(r"-- saved holiday photo\.txt .* \(sha256 verified\)")
    assert (tmp_path / "carol" / "holiday photo.txt").read_text() == photo.read_text()
    carol.send("/files")
    carol.expect(rf"-- {offer.group(1)} .* holiday photo\.txt")
    carol.send("/help")
    carol.expect(r"/file PATH")
    for proc in joins.values():
        proc.send("/quit")
        assert proc.wait() == 0


# --- the meeting window's preview tile ------------------------------------------------------------


class FakeViewer:
    def __init__(self) -> None:
        self.shown: list[tuple[str, str, object]] = []
        self.event = gevent.event.Event()

    def show(self, sender, kind, image) -> None:
        self.shown.append((sender, kind, image))
        self.event.set()


class FakeMeeting:
    def __init__(self) -> None:
        self.viewer = FakeViewer()


def test_a_shared_image_shows_a_preview_tile(connect, tmp_path):
    import cv2
    import numpy as np
    import zmeet_cli.files as cli_files
    from zmeet_cli.terminal import ChatTerminal

    from zmeet.client.files import FileClient

    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :, 1] = 200
    ok, png = cv2.imencode(".png", image)
    src = tmp_path / "shot.png"
    src.write_bytes(png.tobytes())
    alice, bob = connect("alice"), connect("bob")
    for session in (alice, bob):
        session.join("meet")
    lines: list[str] = []
    term = ChatTerminal(bob, "meet", gevent.event.Event(), plugins=[cli_files.FilesChat()],
                        out=lines.append)
    term.meeting = FakeMeeting()

    def pump() -> None:  # as ChatTerminal.pump_events does, bounded
        for _ in range(100):
            term.dispatch(bob.events.get())

    pumper = gevent.spawn(pump)
    uploader = FileClient(alice)
    uploader.start_pump()
    info = uploader.upload(src, room="meet")
    assert term.meeting.viewer.event.wait(10)
    sender, kind, tile = term.meeting.viewer.shown[0]
    assert (sender, kind) == ("alice", "image")
    assert max(tile.shape[:2]) <= 320 and tile[10, 10].tolist() == [0, 200, 0]
    assert any("shared shot.png (" in line and info.id in line for line in lines)
    assert any(f"/get {info.id} saves it" in line for line in lines)
    assert not (tmp_path / "bob").exists()  # a preview is fetched into memory, not saved
    pumper.kill()
    uploader.stop_pump()


def test_a_file_event_reads_well_and_a_bad_one_falls_back():
    import zmeet_cli.files as cli_files
    from zmeet_cli.render import event_line as plain_event_line

    def event_line(event, show_room=True):
        return plain_event_line(event, show_room=show_room, renderers=cli_files.RENDERERS)

    event = p.RoomEvent(room="r", seq=3, id="x", ts_ms=0, type="file", sender="alice",
                        text=json.dumps({"id": "0123456789ab", "name": "a\x1b[2Jb.txt",
                                         "size": 2048, "sha256": "0" * 64}))
    line = event_line(event, show_room=False)
    assert line.endswith("* alice shared a\\x1b[2Jb.txt (2.0 KiB) as 0123456789ab")
    bad = p.RoomEvent(room="r", seq=4, id="y", ts_ms=0, type="file", sender="alice", text="{")
    assert event_line(bad).endswith("* alice file {")
    assert cli_files.file_event_fields(bad) is None
    assert pf.FILE_EVENT_TYPE == "file"


def test_the_meeting_gallery_shows_an_image_preview_tile():
    from types import SimpleNamespace

    import numpy as np

    from zmeet.devices.viewer import Viewer

    viewer = Viewer("preview", canvas_w=640, canvas_h=360)  # not started: no window
    preview = np.full((90, 160, 3), (40, 160, 240), np.uint8)
    view = {"nick": "bob", "own": SimpleNamespace(muted=False, video=False), "states": {},
            "active": None}
    colour = np.array([40, 160, 240], np.uint8)
    without = viewer._gallery({}, view)
    shown = viewer._gallery({("alice", cli_preview_kind()): preview}, view)
    assert not (without == colour).all(axis=2).any()
    assert (shown == colour).all(axis=2).sum() > 5000  # the tile, scaled up, not a speck


def cli_preview_kind() -> str:
    import zmeet_cli.files as cli_files

    return cli_files.PREVIEW_KIND
