"""Helpers shared by the benchmarks: a broker subprocess, histograms, the report table."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from hdrh.histogram import HdrHistogram

RESULTS = Path(__file__).resolve().parent / "results"

MEDIA = Path("/usr/share/doc/opencv-doc/examples/data")
"""OpenCV's sample videos (Debian's ``opencv-doc``, which ``make test`` installs): vtest.avi,
Megamind.avi."""


@contextmanager
def broker_process(*extra: str, ready_line: bool = False, secure: bool = False,
                   rate_limits: bool = False):
    """A ``zmeet broker`` on random loopback ports in a temporary data dir; yields its
    endpoints (or, with ``ready_line``, its whole JSON ready line) and its process.

    ``--insecure`` (no CURVE) unless ``secure``: these benchmarks' raw clients speak NULL, and
    their figures are the ones measured before CURVE; the cost of encryption is measured
    beside them where a benchmark passes ``secure=True``. Its flood limits are lifted
    (``--no-rate-limits``, and a line says so) unless ``rate_limits``: a benchmark measures
    full speed, which the limits exist to refuse."""
    if not secure:
        extra = ("--insecure", *extra)
    if not rate_limits:
        extra = ("--no-rate-limits", *extra)
        print("benchmark broker: rate limits lifted (zmeet broker --no-rate-limits)",
              flush=True)
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zmeet_cli.main", "broker", "--bind", "tcp://127.0.0.1:*",
             "--json", "--data-dir", data, "--log-level", "WARNING", *extra],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the broker did not start")
            ready = json.loads(line)
            yield (ready if ready_line else ready["endpoints"]), proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def histogram() -> HdrHistogram:
    """Microseconds from 1 µs to 60 s, 3 significant digits."""
    return HdrHistogram(1, 60_000_000, 3)


def percentiles_ms(h: HdrHistogram) -> dict[str, float]:
    return {
        "p50_ms": h.get_value_at_percentile(50) / 1000,
        "p99_ms": h.get_value_at_percentile(99) / 1000,
        "p99_9_ms": h.get_value_at_percentile(99.9) / 1000,
        "max_ms": h.get_max_value() / 1000,
        "count": h.get_total_count(),
    }


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns``."""
    def fmt(v):
        return f"{v:,.3f}" if isinstance(v, float) else str(v)
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def save(name: str, data: dict) -> Path:
    """Write ``data`` with machine info to ``benchmarks/results/<date>-<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-{name}.json"
    data = {"machine": {"python": platform.python_version(), "platform": platform.platform()},
            **data}
    path.write_text(json.dumps(data, indent=2))
    return path


# --- shared by the suite (issue 6) ------------------------------------------------------------

DISTRIBUTION_PERCENTILES = (0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100)
"""Points of a latency distribution kept in the results JSON (for the plots)."""


def distribution_ms(h: HdrHistogram) -> list[list[float]]:
    """``[[percentile, ms], ...]`` at :data:`DISTRIBUTION_PERCENTILES` (empty if no values)."""
    if h.get_total_count() == 0:
        return []
    return [[q, h.get_value_at_percentile(q) / 1000] for q in DISTRIBUTION_PERCENTILES]


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (at most the hard limit);
    returns the soft limit now in force. Each zmq socket with a TCP peer costs descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (there is a small race; fine for a benchmark)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server():
    """``redis-server`` on a free loopback port, no persistence, in a temporary folder; yields
    the port and the Popen. Raises RuntimeError if redis-server is missing or does not start."""
    import shutil
    import socket

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", tmp, "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:  # ready when it answers PING
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield port, proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


_CLK_TCK = None


def proc_cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), or of its thread
    ``tid`` only, from /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat."""
    import os

    global _CLK_TCK
    if _CLK_TCK is None:
        _CLK_TCK = os.sysconf("SC_CLK_TCK")
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def proc_rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_percent(pid: int, window_s: float) -> float:
    """CPU of ``pid`` over the next ``window_s`` seconds, in percent of one core."""
    c0, t0 = proc_cpu_s(pid), time.monotonic()
    time.sleep(window_s)
    return 100 * (proc_cpu_s(pid) - c0) / (time.monotonic() - t0)


@contextmanager
def py_spy(pid: int, out: Path, rate_hz: int = 250):
    """Sample process ``pid`` with py-spy while the block runs; collapsed stacks to ``out``.
    Yields False (and does nothing) if py-spy is not installed or may not attach."""
    import shutil
    import signal

    exe = Path(sys.executable).with_name("py-spy")
    exe = str(exe) if exe.exists() else shutil.which("py-spy")
    if exe is None:
        yield False
        return
    out.parent.mkdir(exist_ok=True)
    import os

    native = ["--native"] if os.environ.get("BENCH_PROFILE_NATIVE") else []  # C frames too
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate_hz),
                             "--format", "raw", "--output", str(out), "--nonblocking", *native],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attached
    try:
        yield proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def profile_summary(raw: Path, top: int = 15) -> dict:
    """From py-spy's collapsed stacks: the ``top`` functions by own (leaf) samples and by
    samples under them (inclusive), each as ``[function (file), percent]`` (lines merged)."""
    import re

    merge = re.compile(r":\d+\)$")
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [merge.sub(")", f.strip()) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + count
        for f in set(frames):
            under[f] = under.get(f, 0) + count

    def pct(d: dict[str, int]) -> list:
        return [[k, round(100 * v / total, 1)]
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "own": pct(own), "inclusive": pct(under)} if total else {}
