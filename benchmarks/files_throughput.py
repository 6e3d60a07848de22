"""File transfer through a real broker, beside a plain TCP socket copy in the same run.

zmeet: a ``zmeet broker`` subprocess; ``zmeet send FILE --room bench --json`` uploads the file
(a subprocess), then ``zmeet fetch ID --json`` downloads it (another). The rates come from the
commands' own ``start`` and ``done`` events (the transfer, after the sender's SHA-256 pass),
and, in ``*_wall``, from the whole command (start-up, hashing and verifying included).
Baseline, in the same run: a plain TCP copy on loopback, one process reading the file and
``sendall``-ing it in 1 MiB blocks, another receiving and writing it to a file, no hashing; run
before and after zmeet (the page cache makes single runs vary), the mean is the baseline.
Each phase starts after ``os.sync()``, so none pays for another's dirty pages.

Peak RSS: the broker's ``VmHWM`` from ``/proc/<pid>/status`` before it stops, each client's
``ru_maxrss`` from ``os.wait4``. Goal (issue 5): at least half the plain TCP rate, and peak RSS
under 100 MB whatever the file size.

    python -m benchmarks.files_throughput [--size-mib 1024] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import broker_process, save, table

BLOCK = 1024 * 1024
ZMEET = [sys.executable, "-m", "zmeet_cli.main"]


def make_file(path: Path, size_mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(BLOCK))


def _tcp_receiver(port_queue, out: str) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port_queue.put(server.getsockname()[1])
    conn, _ = server.accept()
    with open(out, "wb") as f:
        while True:
            data = conn.recv(BLOCK)
            if not data:
                break
            f.write(data)
    conn.close()
    server.close()


def _tcp_sender(port: int, src: str) -> None:
    conn = socket.create_connection(("127.0.0.1", port))
    with open(src, "rb") as f:
        while True:
            data = f.read(BLOCK)
            if not data:
                break
            conn.sendall(data)
    conn.close()


def tcp_copy(src: Path, out: Path) -> float:
    """Seconds to copy ``src`` to ``out`` through a loopback TCP socket (two processes)."""
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    receiver = ctx.Process(target=_tcp_receiver, args=(ports, str(out)))
    receiver.start()
    port = ports.get(timeout=30)
    sender = ctx.Process(target=_tcp_sender, args=(port, str(src)))
    start = time.perf_counter()
    sender.start()
    sender.join(timeout=600)
    receiver.join(timeout=600)
    return time.perf_counter() - start


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set of a running process, in KiB (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_client(args: list[str]) -> tuple[list[dict], float, int]:
    """Run a zmeet command; its JSON lines, wall seconds and peak RSS (KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([*ZMEET, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout if line.startswith("{")]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {lines[-3:]}")
    return lines, wall, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", default=None, help="Where the test files go [a temp folder].")
    args = parser.parse_args()
    size = args.size_mib * BLOCK
    mb = size / 1e6
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "payload.bin"
        print(f"making {args.size_mib} MiB of random data in {src} ...", file=sys.stderr)
        make_file(src, args.size_mib)

        copy = tmp / "tcp-copy.bin"
        os.sync()
        tcp_before_s = tcp_copy(src, copy)
        copy.unlink()

        with broker_process("--max-file-size", str(max(size, 1) * 2)) as (endpoints, broker):
            common = ["--broker", endpoints["control"], "--json"]
            os.sync()
            up_lines, up_wall, up_rss = run_client(
                ["send", str(src), "--room", "bench", "--nick", "uploader", *common])
            up = next(e for e in up_lines if e["type"] == "done")
            out = tmp / "fetched"
            os.sync()
            down_lines, down_wall, down_rss = run_client(
                ["fetch", up["id"], "--out", str(out), "--nick", "downloader", *common])
            down = next(e for e in down_lines if e["type"] == "done")
            broker_hwm = vm_hwm_kib(broker.pid)
            fetched = Path(down["path"])
            assert fetched.stat().st_size == size
            fetched.unlink()
        os.sync()
        tcp_after_s = tcp_copy(src, copy)
        copy.unlink()
    tcp_s = (tcp_before_s + tcp_after_s) / 2
    tcp_rate = mb / tcp_s
    rows = [
        {"system": "plain TCP copy (loopback), mean", "MB_per_s": tcp_rate, "seconds": tcp_s},
        {"system": "plain TCP copy, before zmeet", "MB_per_s": mb / tcp_before_s,
         "seconds": tcp_before_s},
        {"system": "plain TCP copy, after zmeet", "MB_per_s": mb / tcp_after_s,
         "seconds": tcp_after_s},
        {"system": "zmeet upload", "MB_per_s": mb / up["elapsed_s"], "seconds": up["elapsed_s"],
         "wall_MB_per_s": mb / up_wall, "vs_tcp": mb / up["elapsed_s"] / tcp_rate,
         "peak_rss_MB": up_rss / 1024},
        {"system": "zmeet download", "MB_per_s": mb / down["elapsed_s"],
         "seconds": down["elapsed_s"], "wall_MB_per_s": mb / down_wall,
         "vs_tcp": mb / down["elapsed_s"] / tcp_rate, "peak_rss_MB": down_rss / 1024},
        {"system": "zmeet broker", "peak_rss_MB": broker_hwm / 1024},
    ]
    print(table(rows, ["system", "MB_per_s", "seconds", "wall_MB_per_s", "vs_tcp",
                       "peak_rss_MB"]))
    path = save("files-throughput", {"rows": rows, "args": vars(args), "size_bytes": size})
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
