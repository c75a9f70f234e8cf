"""``/health`` while ``GET /queues`` and ``GET /metrics`` are read in a loop,
with many queues (25,000 by default): does reading them stall the node?

Run by hand from the repository root (``ops_queues.py --queues N`` runs it)::

    .venv/bin/python bench/ops_queues.py --queues 25000
    .venv/bin/python bench/ops_queues.py --queues 25000 --node-path /tmp/base   # another checkout

A private redis-server (unix socket) and one node (``twistd -n torque
--queue none``: the API alone, as a separate process), from ``--node-path``
when given (``git worktree add /tmp/base ecc4605``: the code before paging).
The queues (one task each, due in an hour) are written to Redis directly,
with the registry as the set older nodes kept (newer ones convert it at
their first read, timed below).  Then, for ``--seconds``, one thread reads
``GET /queues`` in a loop (the first page, as the dashboard does; with
``--all-pages``, every page, following ``next_cursor``), another reads
``GET /metrics``, and a separate process probes ``GET /health`` every 20 ms
with a 30 s timeout, timing each answer.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from torque.keys import Keys

from procs import Node, RedisServer, workspace

PREFIX = "torque:"
KEYS = Keys(PREFIX)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def fill(redis, count: int, now: float) -> None:
    def commands():
        for i in range(count):
            queue = f"q{i:05d}"
            task_id = f"{queue}.many{i:06d}"
            yield ["HSET", KEYS.task(queue, task_id), "queue", queue,
                   "url", "http://app.test/hooks/x", "created_at", repr(now),
                   "due_at", repr(now + 3600)]  # fmt: skip
            yield ["ZADD", KEYS.due(queue), repr(now + 3600), task_id]
            yield ["ZADD", KEYS.queues, "NX", 0, queue]

    redis.pipeline(commands())


class Reader(threading.Thread):
    """GETs a path (and its following pages) in a loop until stopped."""

    def __init__(self, port: int, path: str, all_pages: bool):
        super().__init__(daemon=True)
        self.port, self.path, self.all_pages = port, path, all_pages
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.failures: dict[int, int] = {}

    def get(self, conn, path: str) -> bytes:
        """The body; an error answer (an older node's 503 when Redis took
        over 5 s) is counted, and the loop goes on, as a dashboard would."""
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            self.failures[response.status] = self.failures.get(response.status, 0) + 1
            return b"{}"
        return body

    def run(self) -> None:
        try:
            self.read()
        except BaseException as e:  # shown with the figures
            self.error = e

    def read(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while not self.stop.is_set():
            started = time.perf_counter()
            body = self.get(conn, self.path)
            size = len(body)
            if self.all_pages:
                cursor = json.loads(body).get("next_cursor")
                while cursor and not self.stop.is_set():
                    body = self.get(conn, f"{self.path}?limit=200&cursor={cursor}")
                    size += len(body)
                    cursor = json.loads(body).get("next_cursor")
            self.durations.append(time.perf_counter() - started)
            self.sizes.append(size)


PROBE = """
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
samples, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    conn.request("GET", "/health")
    response = conn.getresponse()
    response.read()
    samples.append(time.perf_counter() - started)
    conn.close()
    time.sleep(0.02)
print(json.dumps(samples))
"""


def probe(port: int, seconds: float) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(port), str(seconds)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def show(name: str, samples: list[float]) -> None:
    if not samples:
        print(f"  {name:34} no answer")
        return
    ms = [s * 1000 for s in samples]
    print(
        f"  {name:34} n={len(ms):5d}  median {statistics.median(ms):8.1f} ms  "
        f"p99 {percentile(ms, 0.99):8.1f} ms  max {max(ms):8.1f} ms",
        flush=True,
    )


def main(options) -> None:
    with workspace("torque-bench-queues-", False) as (processes, tmp):
        redis = RedisServer(processes, tmp)
        client = redis.client()
        started = time.perf_counter()
        fill(client, options.queues, time.time())
        print(f"{options.queues:,} queues written in {time.perf_counter() - started:.1f} s")
        if options.node_path:
            os.environ["PYTHONPATH"] = options.node_path
        node = Node(processes, tmp, "node", ["--redis", redis.url, "--queue", "none"])
        where = options.node_path or "this checkout"
        print(f"node from {where}: twistd -n torque --queue none", flush=True)
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=120)
        started = time.perf_counter()
        conn.request("GET", "/queues")
        first = conn.getresponse().read()
        print(
            f"  first GET /queues (converts an old registry): "
            f"{(time.perf_counter() - started) * 1000:.0f} ms, {len(first):,} bytes"
        )
        conn.close()
        show("GET /health, nothing else", probe(node.port, 3))
        readers = [
            Reader(node.port, "/queues", options.all_pages),
            Reader(node.port, "/metrics", False),
        ]
        for reader in readers:
            reader.start()
        health = probe(node.port, options.seconds)
        for reader in readers:
            reader.stop.set()
        for reader in readers:
            reader.join()
        print(f"for {options.seconds:g} s, /queues and /metrics read in a loop:")
        show("GET /health", health)
        for reader in readers:
            label = "GET /queues, every page" if reader.all_pages else f"GET {reader.path}"
            show(label, reader.durations)
            if reader.sizes:
                print(f"  {'':34} {statistics.median(reader.sizes):,.0f} bytes per read")
            if reader.failures:
                print(f"  {'':34} error answers (counted above): {reader.failures}")
            if reader.error is not None:
                print(f"  {'':34} failed: {reader.error!r}")
        print(f"  node CPU {node.cpu_seconds():.1f} s, peak RSS {node.peak_rss() / 2**20:.0f} MiB")
