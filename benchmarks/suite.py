"""The whole benchmark suite: every lane beside its baseline, one JSON, one Markdown report, plots.

    python -m benchmarks.suite            # make bench: the full run
    python -m benchmarks.suite --smoke    # make bench-smoke: short, for CI

Writes ``benchmarks/results/<date>.json`` (``<date>-smoke.json``), ``<date>.md`` and PNG plots
beside them, and prints the report. Timings are reported, never asserted: the exit status is 1
only if a message was lost, a run failed, or a figure is missing (see :func:`checks`).
Issues 4 and 5 own ``benchmarks/games_rtt.py`` and ``benchmarks/files_throughput.py``; they run
here as subprocesses when present (``--smoke`` passed on if their ``--help`` lists it) and their
results JSON and printed tables are folded into the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import chat_fanout, media_jpeg, scale_idle
from .common import RESULTS, table

FULL = {
    "chat": {"members": (1, 10, 100), "rate": 500, "latency_count": 5000, "burst": 30000,
             "window": 500, "procs": 2},
    "media": {"seconds": 10, "fps": 30},
    "scale": {"clients": 1000, "procs": 4, "seconds": 20},
    "external_timeout_s": 900,
}
SMOKE = {
    "chat": {"members": (1, 10, 100), "rate": 500, "latency_count": 1000, "burst": 5000,
             "window": 500, "procs": 2},
    "media": {"seconds": 3, "fps": 30},
    "scale": {"clients": 1000, "procs": 4, "seconds": 5},
    "external_timeout_s": 300,
}
EXTERNAL = {"games": "games_rtt", "files": "files_throughput", "meeting": "media_meeting",
            "flood": "flood"}
SMOKE_ARGS = {
    "games_rtt": {"--seconds": "3", "--warmup": "1"},
    "files_throughput": {"--size-mib": "64"},
    "media_meeting": {"--seconds": "4"},
}
"""Short-run options for the other issues' benchmarks, passed only if their ``--help`` lists
them (and only when they do not take ``--smoke`` themselves)."""
HERE = Path(__file__).resolve().parent


def machine() -> dict:
    import zmq

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    redis_version = ""
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                       text=True).stdout.split()[2].removeprefix("v=")
    except (OSError, IndexError):
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "redis_server": redis_version}


def run_external(name: str, module: str, smoke: bool, timeout_s: float, log) -> dict:
    """Run ``benchmarks/<module>.py`` if present; collect its printed output and results JSON."""
    if not (HERE / f"{module}.py").exists():
        log(f"{name}: benchmarks/{module}.py not present")
        return {"status": "not present", "module": module}
    cmd = [sys.executable, "-m", f"benchmarks.{module}"]
    if smoke:
        helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True,
                                  cwd=HERE.parent, timeout=60).stdout
        if "--smoke" in helptext:
            cmd.append("--smoke")
        else:
            for option, value in SMOKE_ARGS.get(module, {}).items():
                if option in helptext:
                    cmd += [option, value]
    before = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log(f"{name}: timed out after {timeout_s:g} s")
        return {"status": "timeout", "module": module, "command": " ".join(cmd[2:])}
    found = {}
    for path in sorted(RESULTS.glob("*.json")):
        if path.stat().st_mtime >= before and name in path.name:
            try:
                found[path.name] = json.loads(path.read_text())
            except ValueError:
                pass
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    log(f"{name}: {status}")
    return {"status": status, "module": module, "command": " ".join(cmd[2:]),
            "stdout": proc.stdout[-6000:], "stderr": proc.stderr[-3000:], "results": found}


def checks(data: dict) -> list[str]:
    """What makes the run fail: lost messages, failed runs, missing figures. Never timings."""
    problems = []
    need_chat = ("msgs_per_s", "p50_ms", "p99_ms", "p99_9_ms")
    for row in data["chat"]:
        tag = f"chat {row['system']} x{row['members']}"
        if "error" in row:
            problems.append(f"{tag}: {row['error']}")
            continue
        if row["lost"] or row["duplicates"] or row["refused"] or row["session_errors"]:
            problems.append(f"{tag}: lost {row['lost']}, duplicates {row['duplicates']}, "
                            f"refused {row['refused']}, session errors {row['session_errors']}")
        problems += [f"{tag}: no {k}" for k in need_chat if not row.get(k)]
    for row in data["media"]:
        if "error" in row:
            problems.append(f"media {row['system']}: {row['error']}")
            continue
        if row["lost"]:
            problems.append(f"media {row['system']}: lost {row['lost']} frames at a fixed rate")
        problems += [f"media {row['system']}: no {k}" for k in ("max_received_fps", "p50_ms",
                                                                "p99_ms") if not row.get(k)]
    scale = data["scale"]
    if "error" in scale:
        problems.append(f"scale: {scale['error']}")
    else:
        if scale["lost"] or scale["heartbeats_min"] < 1:
            problems.append(f"scale: {scale['welcomed']} of {scale['clients']} sessions welcomed, "
                            f"{scale['session_errors']} ended, min heartbeats "
                            f"{scale['heartbeats_min']}")
        problems += [f"scale: no {k}" for k in ("cpu_pct", "rss_mib") if not scale.get(k)]
    for name, ext in data["external"].items():
        if ext["status"] not in ("ok", "not present"):
            problems.append(f"{name}: {ext['status']}")
    return problems


# --- report ----------------------------------------------------------------------------------


def plots(data: dict, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    chat = [r for r in data["chat"] if "error" not in r]
    sizes = sorted({r["members"] for r in chat})
    if chat:
        fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
        for ax, n in zip(axes[0], sizes, strict=True):
            for r in (r for r in chat if r["members"] == n and r["distribution"]):
                xs = [1 / (1 - q / 100) if q < 100 else 1e5 for q, _ in r["distribution"]]
                ax.plot(xs, [v for _, v in r["distribution"]], marker="o", label=r["system"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([1, 2, 10, 100, 1000, 10000])
            ax.set_xticklabels(["0", "50", "90", "99", "99.9", "99.99"])
            ax.set_xlabel("percentile")
            ax.set_ylabel("latency from scheduled send (ms)")
            ax.set_title(f"chat, room of {n}, {chat[0]['offered_rate']:g} msg/s offered")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = RESULTS / f"{stem}-chat-latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path.name)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for system in chat_fanout.SYSTEMS:
            rs = sorted((r for r in chat if r["system"] == system), key=lambda r: r["members"])
            if rs:
                axes[0].plot([r["members"] for r in rs], [r["msgs_per_s"] for r in rs],
                             marker="o", label=system)
                axes[1].plot([r["members"] for r in rs], [r["deliveries_per_s"] for r in rs],
                             marker="o", label=system)
        for ax, what in zip(axes, ("messages/s delivered to every member",
                                   "deliveries/s (messages x members)"), strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("room size (members)")
            ax.set_ylabel(what)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.suptitle("chat throughput against room size")
        fig.tight_layout()
        path = RESULTS / f"{stem}-chat-throughput.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path.name)
    media = [r for r in data["media"] if "error" not in r and r.get("distribution")]
    if media:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in media:
            xs = [1 / (1 - q / 100) if q < 100 else 1e5 for q, _ in r["distribution"]]
            ax.plot(xs, [v for _, v in r["distribution"]], marker="o", label=r["system"])
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 10, 100, 1000])
        ax.set_xticklabels(["0", "50", "90", "99", "99.9"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("one-way latency (ms)")
        ax.set_title(f"1280x720 JPEG at {media[0]['offered_fps']:g} fps")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = RESULTS / f"{stem}-media-latency.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path.name)
    return made


def goals(chat: list[dict]) -> list[dict]:
    """The issue's standing goals, per room size: reported, not asserted."""
    out = []
    for n in sorted({r["members"] for r in chat}):
        by = {r["system"]: r for r in chat if r["members"] == n and "error" not in r}
        z, b, r = by.get("zmeet"), by.get("bare"), by.get("redis")
        if z and r:
            out.append({"members": n, "goal": "msgs/s >= Redis",
                        "zmeet": f"{z['msgs_per_s']:,.0f}", "baseline": f"{r['msgs_per_s']:,.0f}",
                        "ratio": z["msgs_per_s"] / r["msgs_per_s"],
                        "met": "yes" if z["msgs_per_s"] >= r["msgs_per_s"] else "no"})
        if z and b:
            out.append({"members": n, "goal": "msgs/s >= 90% of bare relay",
                        "zmeet": f"{z['msgs_per_s']:,.0f}", "baseline": f"{b['msgs_per_s']:,.0f}",
                        "ratio": z["msgs_per_s"] / b["msgs_per_s"],
                        "met": "yes" if z["msgs_per_s"] >= 0.9 * b["msgs_per_s"] else "no"})
        if z and r:
            out.append({"members": n, "goal": "p99 <= Redis p99 (same offered rate)",
                        "zmeet": f"{z['p99_ms']:.2f} ms", "baseline": f"{r['p99_ms']:.2f} ms",
                        "ratio": z["p99_ms"] / r["p99_ms"],
                        "met": "yes" if z["p99_ms"] <= r["p99_ms"] else "no"})
    return out


NOTES = HERE / "NOTES.md"


def report(data: dict, images: list[str]) -> str:
    m = data["machine"]
    cfg = data["config"]
    lines = [
        f"# zmeet benchmarks, {data['date']} ({'smoke' if data['smoke'] else 'full'} run)",
        "",
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, pyzmq {m['pyzmq']} "
        f"(libzmq {m['libzmq']}), redis-server {m['redis_server']}; {m['platform']}. "
        f"Suite wall time {data['wall_s']:.0f} s. Every figure below was measured in this run on "
        "this machine; the ratios are what to read, the absolute numbers move with the machine's "
        "load.",
        "",
        "## Standing goals (reported, not asserted)",
        "",
        table(goals(data["chat"]), ["members", "goal", "zmeet", "baseline", "ratio", "met"]),
        "",
        "## Chat: one sender, rooms of " + ", ".join(map(str, cfg["chat"]["members"])),
        "",
        f"Latency: {cfg['chat']['latency_count']} messages at {cfg['chat']['rate']:g} msg/s "
        "offered, from the scheduled send time to each member's receive (HdrHistogram over every "
        f"member). Throughput: {cfg['chat']['burst']} messages, at most "
        f"{cfg['chat']['window']} in flight to the slowest member; msgs_per_s is messages "
        f"delivered to every member per second. Members in {cfg['chat']['procs']} processes.",
        "",
        table([r for r in data["chat"]], chat_fanout.COLUMNS + ["error"]),
        "",
        "## Media: 1280x720 JPEG frames",
        "",
        f"Latency at {cfg['media']['fps']:g} fps for {cfg['media']['seconds']:g} s (lost must be "
        "0); then the sender as fast as it can for the same time (max_received_fps; drops at a "
        "high-water mark are by design there, newest frame wins).",
        "",
        table(data["media"], media_jpeg.COLUMNS + ["error"]),
        "",
        f"## Scale: {cfg['scale']['clients']} connected idle clients, default heartbeats",
        "",
        table([data["scale"]], scale_idle.COLUMNS + ["error"]),
        "",
        "CPU in percent of one core over the window; RSS is VmRSS.",
        "",
    ]
    for name, ext in data["external"].items():
        lines += [f"## {name.capitalize()}", ""]
        if ext["status"] == "not present":
            lines += [table([{"benchmark": f"benchmarks/{ext['module']}.py",
                              "status": "not present"}], ["benchmark", "status"]), ""]
            continue
        lines += [f"`python -m {ext['command']}`: {ext['status']}.", ""]
        if ext.get("stdout"):
            lines += [ext["stdout"].strip(), ""]
        if ext["status"] != "ok" and ext.get("stderr"):
            lines += ["```", ext["stderr"].strip()[-1500:], "```", ""]
    prof = data.get("profile")
    if prof and prof.get("samples"):
        lines += ["## Where the broker's time goes (py-spy)", "",
                  f"{prof['run']} in a separate pass ({prof['msgs_per_s']:,.0f} msg/s while "
                  f"sampled), {prof['samples']} samples of the broker's non-idle threads; raw "
                  f"stacks in `{prof['file']}`.", ""]
        for kind, title in (("own", "own time (leaf)"), ("inclusive", "inclusive")):
            lines += [f"Top functions, {title}:", "",
                      table([{"function": f, "percent": v} for f, v in prof[kind][:12]],
                            ["function", "percent"]), ""]
    elif prof:
        lines += ["## Where the broker's time goes", "", f"profile failed: {prof}", ""]
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in images] + [""]
    lines += ["## Checks", ""]
    lines += [f"- FAILED: {p}" for p in data["problems"]] or [
        "- nothing lost, every run finished, every figure produced"]
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the short run (CI)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy pass over the broker (full run only)")
    parser.add_argument("--only", default="chat,media,scale,games,files,meeting",
                        help="comma-separated parts to run")
    args = parser.parse_args()
    cfg = SMOKE if args.smoke else FULL
    only = set(args.only.split(","))
    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    data: dict = {"date": time.strftime("%Y-%m-%d"), "time": time.strftime("%H:%M:%S"),
                  "smoke": args.smoke, "machine": machine(), "config": cfg,
                  "chat": [], "media": [], "scale": {}, "external": {}}
    if "chat" in only:
        c = cfg["chat"]
        data["chat"] = chat_fanout.run(c["members"], procs=c["procs"], rate=c["rate"],
                                       latency_count=c["latency_count"], burst=c["burst"],
                                       window=c["window"], log=log)
    if "chat" in only and not args.smoke and not args.no_profile:
        # a separate pass, not in the tables: py-spy's sampling takes CPU from a 2-core machine
        c = cfg["chat"]
        path = RESULTS / f"{data['date']}-broker-profile.txt"
        try:
            row = chat_fanout.run_one("zmeet", 1, procs=1, rate=c["rate"], latency_count=500,
                                      burst=c["burst"] * 2, window=c["window"], profile=path)
            data["profile"] = {"run": "zmeet x1 throughput phase", "file": path.name,
                               "msgs_per_s": row["msgs_per_s"], **row.get("profile", {})}
            log(f"profile: {row.get('profile', {}).get('samples', 0)} samples of the broker")
        except Exception as exc:
            data["profile"] = {"error": repr(exc)}
    if "media" in only:
        data["media"] = media_jpeg.run(seconds=cfg["media"]["seconds"], fps=cfg["media"]["fps"],
                                       log=log)
    if "scale" in only:
        s = cfg["scale"]
        try:
            data["scale"] = scale_idle.run(s["clients"], procs=s["procs"], seconds=s["seconds"],
                                           log=log)
        except Exception as exc:
            data["scale"] = {"clients": s["clients"], "error": repr(exc)}
    else:
        data["scale"] = {"clients": 0, "lost": 0, "heartbeats_min": 1, "welcomed": 0,
                         "session_errors": 0, "cpu_pct": -1, "rss_mib": -1}
    for name, module in EXTERNAL.items():
        if name in only:
            data["external"][name] = run_external(name, module, args.smoke,
                                                  cfg["external_timeout_s"], log)
    data["wall_s"] = time.monotonic() - started
    data["problems"] = checks(data)
    stem = data["date"] + ("-smoke" if args.smoke else "")
    images = plots(data, stem)
    data["plots"] = images
    text = report(data, images)
    (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=2))
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
    print(f"results: {RESULTS / (stem + '.json')}\nreport: {RESULTS / (stem + '.md')}")
    return 1 if data["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
