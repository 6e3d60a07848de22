"""A private Xvfb screen for a test: started on a display number it chooses, stopped after."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 20.0


def start_xvfb(log_path: Path, width: int, height: int) -> tuple[subprocess.Popen, str]:
    """Xvfb with one ``width`` x ``height`` x 24 screen; returns it and its DISPLAY (``:N``)
    once ``-displayfd`` has written the number, which Xvfb does when it is ready."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=log, stderr=log,
        )
    os.close(write_fd)
    answer = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not answer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(0.0, remaining))
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"Xvfb did not start: {log_path.read_text(errors='replace')[-500:]}")
            answer += chunk
    finally:
        os.close(read_fd)
    return proc, f":{int(answer)}"


@contextmanager
def xvfb_display(log_path: Path, width: int, height: int) -> Iterator[str]:
    """:func:`start_xvfb` as a context: yields the DISPLAY, then terminates Xvfb (kills it
    if it does not exit within 10 s)."""
    proc, display = start_xvfb(log_path, width, height)
    try:
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
