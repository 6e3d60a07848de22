"""Run zmeet commands as a user does, in subprocesses, and read what they print.

``Proc.expect`` waits for a line matching a pattern, bounded in time: tests wait for output
that proves a process is ready, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ZMEET = [sys.executable, "-m", "zmeet_cli.main"]
REPO = Path(__file__).resolve().parents[1]


class Proc:
    """A subprocess with its stdout and stderr read line by line in background threads."""

    def __init__(self, args: list[str], *, stdin: bool = False, env: dict | None = None,
                 cwd: Path | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.popen = subprocess.Popen(
            args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(
                target=self._read, args=(self.popen.stdout, self.stdout, True), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.popen.stderr, self.stderr, False), daemon=True
            ),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream, sink: list[str], to_queue: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sink.append(line)
            if to_queue:
                self.lines.put(line)

    def expect(self, pattern: str, timeout_s: float = 10.0) -> re.Match:
        """The first new stdout line matching ``pattern``; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout_s} s from {self.args[3:]}\n"
                    f"stdout: {self.stdout[-20:]}\nstderr: {self.stderr[-20:]}"
                )
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    for t in self._threads:
                        t.join(timeout=1)
                    if self.lines.empty():
                        raise AssertionError(
                            f"process exited ({self.popen.returncode}) before {pattern!r}\n"
                            f"stdout: {self.stdout[-20:]}\nstderr: {self.stderr[-20:]}"
                        ) from None
                continue
            match = regex.search(line)
            if match:
                return match

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write((line + "\n").encode())
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()

    def wait(self, timeout_s: float = 15.0) -> int:
        rc = self.popen.wait(timeout=timeout_s)
        for t in self._threads:
            t.join(timeout=2)
        return rc

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 5 s."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=2)


def start_broker(data_dir: Path, *extra: str, heartbeat_ms: int = 200,
                 ready: bool = False) -> tuple[Proc, dict]:
    """``zmeet broker`` on random loopback ports; returns it and its endpoints once ready (or,
    with ``ready``, its whole ready line: ``address``, ``key``, ``fingerprint``, ...)."""
    proc = Proc([*ZMEET, "broker", "--bind", "tcp://127.0.0.1:*", "--json",
                 "--data-dir", str(data_dir), "--heartbeat-ms", str(heartbeat_ms), *extra])
    line = json.loads(proc.expect(r'^\{"type": "ready"', timeout_s=20).string)
    return proc, line if ready else line["endpoints"]
