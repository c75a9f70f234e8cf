"""Redis CPU per add and per delivery on one Redis and on a three-primary
Redis Cluster (issue 15), and the ceiling per primary they project.

    .venv/bin/python bench/cluster.py                    # 3 runs of each: about 5 minutes
    .venv/bin/python bench/cluster.py --runs 1 --tasks 6000

Each run, in each mode (one ``redis-server`` on TCP; a cluster of three
primaries from ``redis-cli --cluster create``): ``--tasks`` tasks added
through an API-only node's ``POST /tasks/batch`` (100 a request, round
robin over 12 queues, which spread over the cluster's primaries); the
queues paused, a delivering node started (``--concurrency 64
--host-concurrency 64``), the queues resumed and drained into nginx.  Measured: adds/s and
deliveries/s, the node's CPU per delivery, and Redis's CPU (``utime +
stime`` of every ``redis-server`` process, from ``/proc``) per add and per
delivery (a delivery's claim and settle).  On this 2-core machine one
node's process is the bottleneck, not Redis: the projection is what a
primary would carry if enough delivering processes fed it, ``1 / (Redis
CPU per add + per delivery)`` tasks a second, and a cluster of P primaries
P times that while the queues spread (one queue is bounded by one primary).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from procs import Node, cpu_seconds, ensure_tools, free_port, wait_until, workspace, write_results
from scenarios import Bench
from workload import hook_url

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # tests.redis_cluster starts the cluster

QUEUES = [f"cq{i}" for i in range(12)]
PRIMARIES = {"one Redis": 1, "cluster, 3 primaries": 3}
BATCH = 100


class SingleRedis:
    """One ``redis-server`` on a TCP port, like a cluster node but alone."""

    def __init__(self, bench: Bench):
        self.port = free_port()
        directory = bench.workdir / "single"
        directory.mkdir()
        argv = [bench.redis.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
        process = bench.processes.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pids = [process.pid]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        from tests.redis_cluster import cli

        wait_until(lambda: cli(self.port, "PING") == "PONG", 30, "redis-server")


class Cluster:
    """Three primaries, no replicas (tests/redis_cluster.py)."""

    def __init__(self, bench: Bench):
        from tests.redis_cluster import start_cluster

        ports, processes = start_cluster(3, replicas=0)
        self.pids = [p.pid for p in processes.values()]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        self._processes = processes

    def stop(self):
        for process in self._processes.values():
            process.kill()


def redis_cpu(pids) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def post(url: str, body=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def one(bench: Bench, redis, tasks: int) -> dict:
    prefix = bench.fresh("cb")
    token = bench.fresh("cluster")
    common = ["--redis", redis.url, "--redis-prefix", prefix]
    api = Node(bench.processes, bench.workdir, bench.fresh("api-"), [*common, "--queue", "none"])
    worker = None
    try:
        url = hook_url(bench.nginx.base, token, 0)
        cpu, started = redis_cpu(redis.pids), time.monotonic()
        for n in range(0, tasks, BATCH):
            batch = [{"url": url, "queue": QUEUES[(n + i) % len(QUEUES)]} for i in range(BATCH)]
            results = post(f"{api.url}/tasks/batch", batch)["results"]
            bad = [r for r in results if r["status"] != 201]
            if bad:
                raise RuntimeError(f"batch refused: {bad[:3]}")
        add_seconds = time.monotonic() - started
        add_cpu = redis_cpu(redis.pids) - cpu
        # The delivering node starts with its queues paused: its start-up
        # is not counted.
        for queue in QUEUES:
            post(f"{api.url}/queues/{queue}/pause")
        queues = [a for q in QUEUES for a in ("--queue", q)]
        worker = Node(bench.processes, bench.workdir, bench.fresh("node-"),
                      [*common, *queues, "--concurrency", "64", "--host-concurrency", "64"],
                      api=False)  # fmt: skip
        mark = bench.nginx.mark()
        cpu, node_cpu = redis_cpu(redis.pids), worker.cpu_seconds()
        started = time.monotonic()
        for queue in QUEUES:
            post(f"{api.url}/queues/{queue}/resume")
        wait_until(lambda: bench.nginx.count(mark, f"/{token}/") >= tasks, max(120, tasks / 100),
                   f"{tasks} deliveries", interval=0.05)  # fmt: skip
        drain_seconds = time.monotonic() - started
        # Every outcome recorded: nothing scheduled or running is left.
        wait_until(lambda: _settled(api.url), 60, "every outcome recorded")
        drain_cpu = redis_cpu(redis.pids) - cpu
        node_cpu = worker.cpu_seconds() - node_cpu
    finally:
        if worker is not None:
            worker.stop()
        api.stop()
    return {
        "adds_per_s": tasks / add_seconds,
        "deliveries_per_s": tasks / drain_seconds,
        "redis_us_per_add": add_cpu / tasks * 1e6,
        "redis_us_per_delivery": drain_cpu / tasks * 1e6,
        "node_us_per_delivery": node_cpu / tasks * 1e6,
    }


def _settled(base: str) -> bool:
    with urllib.request.urlopen(base + "/queues?limit=100", timeout=10) as answer:
        page = json.loads(answer.read())
    return all(q["scheduled"] == q["running"] == 0 for q in page["queues"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode (default 3)")
    parser.add_argument("--tasks", type=int, default=12_000, help="tasks per run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args()
    if not (1 <= options.runs <= 20 and BATCH <= options.tasks <= 1_000_000):
        parser.error("--runs must be 1 to 20 and --tasks 100 to 1000000")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools()
    rows: dict[str, list[dict]] = {"one Redis": [], "cluster, 3 primaries": []}
    with workspace("torque-bench-cluster-", options.keep) as (processes, tmp):
        bench = Bench(processes, tmp, {}, 64)
        modes = {"one Redis": SingleRedis(bench), "cluster, 3 primaries": Cluster(bench)}
        try:
            for n in range(options.runs):  # interleaved: the machine's drift hits both
                for name, redis in modes.items():
                    row = one(bench, redis, options.tasks)
                    rows[name].append(row)
                    shown = ", ".join(f"{k} {v:,.1f}" for k, v in row.items())
                    print(f"run {n + 1}/{options.runs}, {name}: {shown}", flush=True)
        finally:
            modes["cluster, 3 primaries"].stop()
    table = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rows.items()
    }
    print(
        "\n| mode | adds/s | deliveries/s | Redis µs per add | Redis µs per delivery "
        "| node µs per delivery | projected tasks/s per primary | projected, all primaries |"
    )
    print("|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, row in table.items():
        # Each primary spends this on each task of its queues: the CPU
        # above is every primary's together, per task.
        per_task = row["redis_us_per_add"] + row["redis_us_per_delivery"]
        row["projected_per_primary"] = 1e6 / per_task
        row["projected_total"] = row["projected_per_primary"] * PRIMARIES[name]
        print(
            f"| {name} | {row['adds_per_s']:,.0f} | {row['deliveries_per_s']:,.0f} "
            f"| {row['redis_us_per_add']:.1f} | {row['redis_us_per_delivery']:.1f} "
            f"| {row['node_us_per_delivery']:.0f} | {row['projected_per_primary']:,.0f} "
            f"| {row['projected_total']:,.0f} |"
        )
    out = write_results("cluster", {"runs": rows, "table": table})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
