"""File transfer through a real broker, beside a plain TCP socket copy in the same run.

zmeet: a ``zmeet broker`` subprocess; ``zmeet send FILE --room bench --json`` uploads the file
(a subprocess), then ``zmeet fetch ID --json`` downloads it (another). The rates come from the
commands' own ``start`` and ``done`` events (the transfer and its SHA-256 check, after the
sender's own SHA-256 pass), and, in ``*_wall``, from the whole command (start-up, hashing and
verifying included).

Baseline, in the same run: a plain TCP copy on loopback, one process reading the file and
``sendall``-ing it in blocks of zmeet's chunk (the broker's ``CHUNK_BYTES``), another
receiving and writing it to a file, no hashing; timed inside the processes from the accepted
connection to the written file's close (zmeet's rates leave out start-up too), and the file is
read once, untimed, before it (as zmeet's sender hashes it before it sends).

Each round is a TCP copy, an upload and a download, these two through a fresh broker (its data
directory is removed after the round); the report gives the medians of the rounds and each
round's figures. Before each timed phase: ``os.sync()``, so none pays for another's dirty
pages, and :func:`prewarm`, so each phase writes its file into memory the machine used a moment
ago. On a VM whose host takes back memory the guest leaves idle (a balloon with free page
reporting, DAMON paging out idle pages: the 2-core development VM has both), writing into
memory untouched for a few seconds costs a fault on the host per page and runs at a fraction
of the speed (250 MB/s against 4 GB/s for ``pwrite`` into the page cache): without the prewarm,
which phase got fresh memory decided the figures (the TCP copy ran at 250 MB/s to 1.7 GB/s in
one run). A phase that lasts longer still finds more of its memory cold: part of the price of
being slower. ``others' CPU`` is what the rest of the machine used during each phase (another
user, writeback): a round where it is large was disturbed.

Peak RSS: the broker's ``VmHWM`` from ``/proc/<pid>/status`` before it stops, each client's
``ru_maxrss`` from ``os.wait4``. CPU seconds of each process per phase (``cpu_s``) tell which
side limits. Goal (issue 5): at least half the plain TCP rate, and peak RSS under 100 MB
whatever the file size.

    python -m benchmarks.files_throughput [--size-mib 1024] [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zmeet.broker.files import CHUNK_BYTES

from .common import broker_process, proc_cpu_s, save, table

MIB = 1024 * 1024
BLOCK = CHUNK_BYTES
"""The TCP copy's block: the chunk zmeet's broker asks for and sends."""
PREWARM_EXTRA = 64 * MIB
ZMEET = [sys.executable, "-m", "zmeet_cli.main"]


def make_file(path: Path, size_mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))


def read_through(path: Path) -> None:
    """Read the whole file once, untimed, as zmeet's sender does when it hashes it."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(MIB)
        while f.readinto(buf):
            pass


def prewarm(folder: Path, nbytes: int) -> None:
    """Write a scratch file of ``nbytes`` (plus a little) in ``folder`` and delete it, so the
    page cache the next phase writes lands on pages the host has backed a moment ago."""
    scratch = folder / "prewarm.tmp"
    block = bytes(MIB)
    try:
        with open(scratch, "wb", buffering=0) as f:
            for _ in range(0, nbytes + PREWARM_EXTRA, MIB):
                f.write(block)
    finally:
        scratch.unlink(missing_ok=True)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tcp_receiver(port_queue, result_queue, out: str, block: int) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port_queue.put(server.getsockname()[1])
    conn, _ = server.accept()
    start_s, cpu_start_s = time.perf_counter(), _cpu_s()
    with open(out, "wb") as f:
        while True:
            data = conn.recv(block)
            if not data:
                break
            f.write(data)
    end_s = time.perf_counter()
    result_queue.put(("receiver", start_s, end_s, _cpu_s() - cpu_start_s))
    conn.close()
    server.close()


def _tcp_sender(port: int, src: str, result_queue, block: int) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    cpu_start_s = _cpu_s()
    with open(src, "rb") as f:
        while True:
            data = f.read(block)
            if not data:
                break
            conn.sendall(data)
    conn.close()
    result_queue.put(("sender", 0.0, 0.0, _cpu_s() - cpu_start_s))


def tcp_copy(src: Path, out: Path) -> dict:
    """Copy ``src`` to ``out`` through a loopback TCP socket (two processes): ``seconds``
    from the accepted connection to the written file's close, ``cpu_s`` of both processes."""
    ctx = multiprocessing.get_context("spawn")
    ports, results = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=_tcp_receiver, args=(ports, results, str(out), BLOCK))
    receiver.start()
    port = ports.get(timeout=30)
    sender = ctx.Process(target=_tcp_sender, args=(port, str(src), results, BLOCK))
    sender.start()
    got = {}
    for _ in range(2):
        role, start_s, end_s, cpu_s = results.get(timeout=600)
        got[role] = (start_s, end_s, cpu_s)
    sender.join(timeout=60)
    receiver.join(timeout=60)
    if sender.exitcode != 0 or receiver.exitcode != 0 or out.stat().st_size != src.stat().st_size:
        raise RuntimeError("the plain TCP copy failed")
    start_s, end_s, receiver_cpu_s = got["receiver"]
    return {"seconds": end_s - start_s, "sender_cpu_s": got["sender"][2],
            "receiver_cpu_s": receiver_cpu_s}


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set of a running process, in KiB (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def system_busy_s() -> tuple[float, float]:
    """CPU seconds the whole machine was busy (user, system, interrupts) so far, and the
    seconds a hypervisor kept its CPUs from running (steal), from ``/proc/stat``."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = cpu
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class Others:
    """CPU seconds used during a phase by everything but the benchmark's own processes (the
    broker, given by pid, and this process's children once waited for): another user of the
    machine, writeback; and the steal time. Taken for each phase, so a disturbed round shows."""

    def __init__(self, broker_pid: int | None = None) -> None:
        self.broker_pid = broker_pid

    def __enter__(self) -> Others:
        self._busy, self._steal = system_busy_s()
        self._broker = self._broker_s()
        self._ours = self._ours_s() + self._broker
        return self

    def _broker_s(self) -> float:
        return proc_cpu_s(self.broker_pid) if self.broker_pid else 0.0

    @staticmethod
    def _ours_s() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def __exit__(self, *exc: object) -> None:
        busy, steal = system_busy_s()
        broker = self._broker_s()
        self.broker_cpu_s = broker - self._broker  # the broker's CPU seconds in the phase
        self.cpu_s = max(0.0, busy - self._busy - (self._ours_s() + broker - self._ours))
        self.steal_s = steal - self._steal


def run_client(args: list[str]) -> tuple[list[dict], float, int, float]:
    """Run a zmeet command; its JSON lines, wall seconds, peak RSS (KiB) and CPU seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen([*ZMEET, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout if line.startswith("{")]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {lines[-3:]}")
    return lines, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def one_round(src: Path, tmp: Path, size: int) -> dict:
    """A TCP copy, an upload and a download through a fresh broker; their figures."""
    mb = size / 1e6
    copy = tmp / "tcp-copy.bin"
    read_through(src)
    os.sync()
    prewarm(tmp, size)
    with Others() as tcp_others:
        tcp = tcp_copy(src, copy)
    copy.unlink()
    out = tmp / "fetched"
    with broker_process("--max-file-size", str(max(size, 1) * 2)) as (endpoints, broker):
        common = ["--broker", endpoints["entry"], "--insecure", "--json"]
        os.sync()
        prewarm(tmp, size)
        with Others(broker.pid) as up_others:
            up_lines, up_wall, up_rss, up_cpu_s = run_client(
                ["send", str(src), "--room", "bench", "--nick", "uploader", *common])
        broker_up_cpu_s = up_others.broker_cpu_s
        up = next(e for e in up_lines if e["type"] == "done")
        os.sync()
        prewarm(tmp, size)
        with Others(broker.pid) as down_others:
            down_lines, down_wall, down_rss, down_cpu_s = run_client(
                ["fetch", up["id"], "--out", str(out), "--nick", "downloader", *common])
        broker_down_cpu_s = down_others.broker_cpu_s
        down = next(e for e in down_lines if e["type"] == "done")
        broker_hwm = vm_hwm_kib(broker.pid)
        fetched = Path(down["path"])
        assert fetched.stat().st_size == size
        fetched.unlink()
    return {
        "tcp_MB_per_s": mb / tcp["seconds"], "tcp_s": tcp["seconds"],
        "tcp_cpu_s": tcp["sender_cpu_s"] + tcp["receiver_cpu_s"],
        "up_MB_per_s": mb / up["elapsed_s"], "up_s": up["elapsed_s"],
        "up_wall_MB_per_s": mb / up_wall, "up_rss_MB": up_rss / 1024,
        "up_client_cpu_s": up_cpu_s, "up_broker_cpu_s": broker_up_cpu_s,
        "down_MB_per_s": mb / down["elapsed_s"], "down_s": down["elapsed_s"],
        "down_wall_MB_per_s": mb / down_wall, "down_rss_MB": down_rss / 1024,
        "down_client_cpu_s": down_cpu_s, "down_broker_cpu_s": broker_down_cpu_s,
        "broker_rss_MB": broker_hwm / 1024,
        "others_cpu_s": {"tcp": tcp_others.cpu_s, "up": up_others.cpu_s,
                         "down": down_others.cpu_s},
        "steal_s": {"tcp": tcp_others.steal_s, "up": up_others.steal_s,
                    "down": down_others.steal_s},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Rounds of TCP copy, upload and download; medians are reported.")
    parser.add_argument("--dir", default=None, help="Where the test files go [a temp folder].")
    args = parser.parse_args()
    size = args.size_mib * MIB
    rounds = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "payload.bin"
        print(f"making {args.size_mib} MiB of random data in {src} ...", file=sys.stderr)
        make_file(src, args.size_mib)
        for i in range(max(1, args.rounds)):
            rounds.append(one_round(src, tmp, size))
            r = rounds[-1]
            print(f"round {i + 1}: TCP {r['tcp_MB_per_s']:.0f} MB/s, upload "
                  f"{r['up_MB_per_s']:.0f}, download {r['down_MB_per_s']:.0f}", file=sys.stderr)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    tcp_rate = med("tcp_MB_per_s")
    rows = [
        {"system": f"plain TCP copy (loopback), median of {len(rounds)}", "MB_per_s": tcp_rate,
         "seconds": med("tcp_s"), "cpu_s": med("tcp_cpu_s")},
        {"system": "zmeet upload", "MB_per_s": med("up_MB_per_s"), "seconds": med("up_s"),
         "wall_MB_per_s": med("up_wall_MB_per_s"), "vs_tcp": med("up_MB_per_s") / tcp_rate,
         "peak_rss_MB": max(r["up_rss_MB"] for r in rounds),
         "cpu_s": med("up_client_cpu_s") + med("up_broker_cpu_s")},
        {"system": "zmeet download", "MB_per_s": med("down_MB_per_s"), "seconds": med("down_s"),
         "wall_MB_per_s": med("down_wall_MB_per_s"),
         "vs_tcp": med("down_MB_per_s") / tcp_rate,
         "peak_rss_MB": max(r["down_rss_MB"] for r in rounds),
         "cpu_s": med("down_client_cpu_s") + med("down_broker_cpu_s")},
        {"system": "zmeet broker", "peak_rss_MB": max(r["broker_rss_MB"] for r in rounds)},
    ]
    print(table(rows, ["system", "MB_per_s", "seconds", "wall_MB_per_s", "vs_tcp",
                       "peak_rss_MB", "cpu_s"]))
    print()
    per_round = [{
        "round": i + 1, "TCP MB/s": r["tcp_MB_per_s"], "up MB/s": r["up_MB_per_s"],
        "up vs TCP": r["up_MB_per_s"] / r["tcp_MB_per_s"], "down MB/s": r["down_MB_per_s"],
        "down vs TCP": r["down_MB_per_s"] / r["tcp_MB_per_s"],
        "CPU s TCP": r["tcp_cpu_s"],
        "CPU s up client/broker": f"{r['up_client_cpu_s']:.2f} / {r['up_broker_cpu_s']:.2f}",
        "CPU s down client/broker":
            f"{r['down_client_cpu_s']:.2f} / {r['down_broker_cpu_s']:.2f}",
        "others' CPU s TCP/up/down": " / ".join(f"{r['others_cpu_s'][k]:.2f}"
                                                for k in ("tcp", "up", "down")),
    } for i, r in enumerate(rounds)]
    print(table(per_round, list(per_round[0])))
    path = save("files-throughput", {"rows": rows, "rounds": rounds, "args": vars(args),
                                     "size_bytes": size, "tcp_block_bytes": BLOCK})
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
