"""FileSink, the one write-and-hash helper (zmeet/files/sink.py), on real files in ``tmp_path``
with gevent's real threadpool and no sockets. Every wait is bounded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest

import zmeet.client.files as client_files
from zmeet.files import TransferFailed
from zmeet.files.sink import FileSink
from zmeet.protocol import files as pf

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0


def chunks_of(data: bytes, size: int, start: int = 0) -> list[tuple[int, bytes]]:
    return [(o, data[o:o + size]) for o in range(start, len(data), size)]


class HeldPool:
    """A threadpool whose jobs wait until :meth:`release` (a disk that stalls): the fault a
    real disk does not give on demand. Released jobs run on the calling greenlet."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple, gevent.event.AsyncResult]] = []
        self.arrived = gevent.event.Event()

    def spawn(self, fn: Any, *args: Any) -> gevent.event.AsyncResult:
        result = gevent.event.AsyncResult()
        self.jobs.append((fn, args, result))
        self.arrived.set()
        return result

    def wait_jobs(self, count: int) -> None:
        with gevent.Timeout(WAIT_S):
            while len(self.jobs) < count:
                self.arrived.clear()
                self.arrived.wait()

    def release(self) -> None:
        jobs, self.jobs = self.jobs, []
        for fn, args, result in jobs:
            try:
                result.set(fn(*args))
            except Exception as exc:
                result.set_exception(exc)


def test_chunks_are_written_in_order_and_hashed_as_they_go(tmp_path: Path):
    data = os.urandom(300_000)
    written: list[int] = []
    hashed: list[int] = []
    drained: list[int] = []
    sink = FileSink(tmp_path / "part", max_chunks=4, batch_chunks=2,
                    on_written=written.append, on_hashed=hashed.append,
                    on_drained=lambda: drained.append(sink.written))
    assert sink.open() == 0
    sink.truncate(0)
    for offset, chunk in chunks_of(data, 10_000):
        assert sink.wait_room(WAIT_S)
        sink.put(offset, chunk)
    assert sink.wait_idle(WAIT_S)
    assert (sink.queued, sink.written, sink.hashed) == (len(data),) * 3
    assert written == sorted(written) and written[-1] == len(data)
    assert hashed == written  # each batch hashed as it was written
    assert drained and drained[-1] == len(data) and not sink.writing
    assert sink.hexdigest() == hashlib.sha256(data).hexdigest()
    sink.close()
    assert sink.fd is None
    assert (tmp_path / "part").read_bytes() == data
    assert (tmp_path / "part").stat().st_mode & 0o777 == 0o600


def test_the_queue_is_bounded_and_chunks_must_follow_each_other(tmp_path: Path):
    sink = FileSink(tmp_path / "part", max_chunks=2)
    with pytest.raises(ValueError, match="not open"):
        sink.put(0, b"a")
    sink.open()
    sink.truncate(0)
    with pytest.raises(ValueError, match="expected 0"):
        sink.put(1, b"a")
    with pytest.raises(ValueError, match="expected 0"):
        sink.put(0, b"")
    sink.put(0, b"a")  # the writer greenlet has not run yet: both wait
    sink.put(1, b"b")
    assert sink.full
    with pytest.raises(ValueError, match="2 chunks wait"):
        sink.put(2, b"c")
    assert sink.wait_room(WAIT_S) and not sink.full
    assert sink.wait_drained(WAIT_S)
    assert sink.written == 2


def test_a_resumed_file_is_hashed_from_the_disk_while_new_chunks_are_written(tmp_path: Path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    have = 2 * 1024 * 1024 + 5
    path = tmp_path / "partial"
    path.write_bytes(data[:have])
    hashed: list[int] = []
    sink = FileSink(path, catch_up_bytes=256 * 1024, on_hashed=hashed.append)
    assert sink.open() == have
    sink.truncate(have)
    sink.catch_up()
    assert sink.catching_up
    for offset, chunk in chunks_of(data, 100_000, have):
        assert sink.wait_room(WAIT_S)
        sink.put(offset, chunk)
    assert sink.wait_idle(WAIT_S)
    assert sink.hashed == sink.written == len(data)
    assert sink.hexdigest() == hashlib.sha256(data).hexdigest()
    assert hashed == sorted(hashed) and hashed[-1] == len(data)
    assert path.read_bytes() == data


def test_truncate_starts_a_hash_past_the_cut_over(tmp_path: Path):
    path = tmp_path / "partial"
    path.write_bytes(b"x" * 100)
    sink = FileSink(path)
    sink.open()
    sink.truncate(100)
    sink.catch_up()
    assert sink.wait_idle(WAIT_S) and sink.hashed == 100
    sink.truncate(40)
    assert (sink.hashed, sink.written, path.stat().st_size) == (0, 40, 40)
    sink.catch_up()
    assert sink.wait_idle(WAIT_S)
    assert sink.hexdigest() == hashlib.sha256(b"x" * 40).hexdigest()


def test_a_failed_write_is_told_and_stops_the_sink(tmp_path: Path):
    if not os.path.exists("/dev/full"):  # pragma: no cover - Linux has it
        pytest.skip("needs /dev/full")
    errors: list[tuple[str, OSError]] = []
    sink = FileSink("/dev/full", on_error=lambda where, exc: errors.append((where, exc)))
    sink.open()  # a device: no truncate, the sink starts at 0
    sink.put(0, b"a" * 5000)
    sink.put(5000, b"b" * 5000)
    assert sink.wait_idle(WAIT_S)
    ((where, exc),) = errors
    assert where == "write" and isinstance(exc, OSError) and sink.error is exc
    assert (sink.queued, sink.written, sink.hashed) == (0, 0, 0)
    with pytest.raises(ValueError, match="a write failed"):
        sink.put(0, b"c")
    sink.close()


def test_a_file_cut_short_under_the_catch_up_is_told(tmp_path: Path):
    path = tmp_path / "partial"
    path.write_bytes(b"y" * 1000)
    errors: list[str] = []
    sink = FileSink(path, on_error=lambda where, exc: errors.append(where))
    sink.open()
    sink.truncate(1000)
    os.truncate(path, 10)  # someone else cuts it
    sink.catch_up()
    assert sink.wait_idle(WAIT_S)
    assert errors == ["hash"]
    with pytest.raises(ValueError, match="not open"):
        sink.put(1000, b"z")  # a sink whose file was lost takes nothing more


def test_close_waits_for_the_queue_and_stop_drops_it(tmp_path: Path):
    sink = FileSink(tmp_path / "a")
    sink.open()
    sink.truncate(0)
    sink.put(0, b"abc")
    sink.close()  # the queued chunk still reaches the file
    assert sink.wait_idle(WAIT_S) and sink.fd is None
    assert (tmp_path / "a").read_bytes() == b"abc"
    assert sink.open() == 3  # it opens again
    sink.truncate(3)
    sink.put(3, b"def")
    sink.stop()
    assert sink.wait_idle(WAIT_S) and sink.fd is None
    assert (tmp_path / "a").read_bytes() == b"abc"


def test_stop_during_a_job_ends_the_writer_and_the_catch_up_with_no_callback_after(
        tmp_path: Path):
    path = tmp_path / "partial"
    path.write_bytes(b"y" * 1000)
    calls: list[tuple[str, Any]] = []
    pool = HeldPool()
    sink = FileSink(path, pool=pool, catch_up_bytes=100,
                    on_written=lambda end: calls.append(("written", end)),
                    on_hashed=lambda end: calls.append(("hashed", end)),
                    on_error=lambda where, exc: calls.append(("error", where)))
    sink.open()
    sink.truncate(1000)
    sink.catch_up()
    sink.put(1000, b"z" * 10)
    pool.wait_jobs(2)  # the catch-up's first job and the write, both under way
    sink.stop()
    pool.release()
    assert sink.wait_idle(WAIT_S)
    assert calls == []  # nothing told after stop(): a closed service is not called back
    assert pool.jobs == [] and sink.fd is None


def test_a_download_part_on_a_disk_that_stalls_fails_with_advice_to_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client_files, "DONE_TIMEOUT_S", 0.05)
    pool = HeldPool()
    target = client_files._PartTarget(tmp_path / "f.part", pool, credit=1)
    target.begin(pf.FileInfo(id="0123456789ab", name="f.bin", size=1000, sha256="ab" * 32,
                             sender="eve", room="share"))
    assert target.sink is not None
    with pytest.raises(TransferFailed, match="the disk wrote nothing for 0.05 s.*resume"):
        for offset in range(0, 1000, 10):  # the writer's first job never returns
            target.put(offset, b"a" * 10)
    pool.release()
    target.close()
    assert target.sink.idle
