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


@contextmanager
def broker_process(*extra: str):
    """A ``zmeet broker`` on random loopback ports in a temporary data dir; yields endpoints."""
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
            yield json.loads(line)["endpoints"], proc
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
