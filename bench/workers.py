"""Add and drain throughput of one node with ``--workers 1`` and ``--workers 2``
(issue 14): the same ``drain`` and ``add`` scenarios as ``run.py``, the
node started with ``--workers N``, the runs interleaved (1, 2, 1, 2, …) so
that a change in the machine's load hits both alike; medians, with the
load average before each run beside them.

    .venv/bin/python bench/workers.py                 # 5 runs each: about 8 minutes
    .venv/bin/python bench/workers.py --runs 3 --workers 1,2,4

The node's CPU is the supervisor's and its workers' together (read from
``/proc`` for the whole process tree).  Every number goes to
``bench/results/<timestamp>-workers.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
from pathlib import Path

import scenarios
from procs import Node, cpu_seconds, ensure_tools, wait_until, workspace, write_results

HERE = Path(__file__).parent


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (``/proc/<pid>/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


class TreeNode(Node):
    """A node of ``--workers N``: ready once every worker listens; its CPU
    and memory are the whole tree's."""

    def __init__(self, *args, workers: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.workers = workers
        wait_until(self._all_started, 60, f"{workers} workers to start ({self.logfile})")

    def _all_started(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the node exited; see {self.logfile}")
        return self.logfile.read_bytes().count(b"torque node: queues") >= self.workers

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def peak_rss(self) -> int:
        total = 0
        for pid in descendants(self.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total


class WorkersBench(scenarios.Bench):
    workers = 1

    def node(self, prefix: str, *args: str, api: bool = True) -> Node:
        return TreeNode(
            self.processes,
            self.workdir,
            self.fresh("node-"),
            ["--redis", self.redis.url, "--redis-prefix", prefix, *args,
             "--host-concurrency", str(self.concurrency), "--workers", str(self.workers)],
            api=api,
            workers=self.workers,
        )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each (default 5)")
    parser.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    parser.add_argument("--drain", type=int, default=20_000, help="tasks drained per run")
    parser.add_argument("--add-seconds", type=int, default=10, help="wrk's duration per run")
    parser.add_argument("--concurrency", type=int, default=64, help="the node's --concurrency")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args()
    counts = [int(n) for n in options.workers.split(",")]
    if not (1 <= options.runs <= 20 and all(1 <= n <= 16 for n in counts)):
        parser.error("--runs must be 1 to 20 and each worker count 1 to 16")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools()
    sizes = {"drain": options.drain, "add_seconds": options.add_seconds}
    runs: list[dict] = []
    with workspace("torque-bench-workers-", options.keep) as (processes, tmp):
        bench = WorkersBench(processes, tmp, sizes, options.concurrency)
        print(f"redis-server {bench.redis.version}, {bench.nginx.version}", flush=True)
        for n in range(options.runs):
            # The machine's speed at the time: wrk against a bare twisted.web.
            calibration = scenarios.calibrate(bench)["rate"]
            for workers in counts:
                bench.workers = workers
                row = {"run": n + 1, "workers": workers, "load_before": os.getloadavg()[0]}
                row["calibration"] = calibration
                row["drain"] = scenarios.drain(bench)
                row["add"] = scenarios.add(bench)
                runs.append(row)
                print(
                    f"run {n + 1}/{options.runs}, {workers} worker(s): "
                    f"drain {row['drain']['rate']:,.0f}/s "
                    f"({row['drain']['cpu_per_1000']:.2f} CPU-s per 1,000), "
                    f"add {row['add']['rate']:,.0f}/s, load {row['load_before']:.1f}, "
                    f"calibration {calibration:,.0f}/s",
                    flush=True,
                )
    table = []
    for workers in counts:
        mine = [r for r in runs if r["workers"] == workers]
        table.append(
            {
                "workers": workers,
                "drain_per_s": statistics.median(r["drain"]["rate"] for r in mine),
                "drain_cpu_per_1000": statistics.median(r["drain"]["cpu_per_1000"] for r in mine),
                "add_per_s": statistics.median(r["add"]["rate"] for r in mine),
                "load_median": statistics.median(r["load_before"] for r in mine),
                "calibration_median": statistics.median(r["calibration"] for r in mine),
                "load_range": [
                    min(r["load_before"] for r in mine),
                    max(r["load_before"] for r in mine),
                ],  # noqa: E501
            }
        )
    print("\n| workers | drain/s | CPU-s per 1,000 | adds/s | load avg (median, range) | calib. |")
    print("|---|---|---|---|---|---|")
    for row in table:
        low, high = row["load_range"]
        print(
            f"| {row['workers']} | {row['drain_per_s']:,.0f} | {row['drain_cpu_per_1000']:.2f} "
            f"| {row['add_per_s']:,.0f} | {row['load_median']:.1f} ({low:.1f}–{high:.1f}) "
            f"| {row['calibration_median']:,.0f}/s |"
        )
    out = write_results("workers", {"runs": runs, "table": table})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
