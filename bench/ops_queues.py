"""What ``GET /queues`` costs with a big queue: 100,000 scheduled tasks.

Run by hand from the repository root (not part of the unit tests)::

    .venv/bin/python bench/ops_queues.py            # 100,000 tasks, 300 calls each
    .venv/bin/python bench/ops_queues.py --tasks 1000000
    .venv/bin/python bench/ops_queues.py --queues 25000   # many queues: bench/many_queues.py

It starts its own redis-server (torque's embedded one, on a unix socket in a
temporary directory), adds the tasks with torque's own ADD script (half due
now, half over the next hour), buries a few, then times, one call at a time:

* ``store.queue_page`` — the one Redis round trip behind ``GET /queues``;
* ``GET /queues``, ``GET /queues/<q>`` and ``GET /metrics`` over real HTTP
  (a node's Site on 127.0.0.1, a kept-alive treq connection);
* the Redis server's own time per call (``INFO commandstats``, ``eval``).

The counts are ZCARD, ZCOUNT, HMGET, EXISTS, SISMEMBER and ZRANGE 0 0 (O(1)
or O(log n)) per queue, plus one SMEMBERS of the queue names, so the numbers
should not grow with the queue: compare ``--tasks 1000``
(``tests/test_store.py`` traces the commands to hold the script to that).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool

from inreactor import run
from torque.api import TorqueAPI
from torque.connection import connect_pool
from torque.embedded import EmbeddedRedis
from torque.keys import Keys
from torque.retry import Dead
from torque.site import QuietSite
from torque.store import RedisStore
from torque.task import Task

QUEUE = "bench"


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"median {statistics.median(ms):6.3f} ms   p95 {p95:6.3f} ms   max {ms[-1]:6.3f} ms"


@defer.inlineCallbacks
def fill(store: RedisStore, count: int, now: float):
    """``count`` tasks in QUEUE: the first half due, the rest over an hour."""
    batch = 2000
    for start in range(0, count, batch):
        adds = []
        for i in range(start, min(start + batch, count)):
            due = now - 1 - i * 1e-4 if i < count // 2 else now + 3600 * i / count
            adds.append(
                store.add(
                    Task(
                        id=f"b{i}",
                        queue=QUEUE,
                        url="http://app.test/hooks/do",
                        body="a=1",
                        content_type="application/x-www-form-urlencoded",
                        due_at=due,
                        created_at=now,
                    )
                )
            )
        yield defer.gatherResults(adds)


@defer.inlineCallbacks
def timed(calls: int, make):
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        yield make()
        samples.append(time.perf_counter() - started)
    return samples


@defer.inlineCallbacks
def main(options):
    directory = tempfile.mkdtemp(prefix="torque-bench-ops-")
    redis_server = EmbeddedRedis(directory)
    redis_server.startService()
    redis = connect_pool(redis_server.address)
    try:
        keys = Keys("bench-ops:")
        store = RedisStore(redis, reactor, keys, timeout=60)
        now = reactor.seconds()
        started = time.perf_counter()
        yield fill(store, options.tasks, now)
        print(f"added {options.tasks:,} tasks in {time.perf_counter() - started:.1f} s")
        for i in range(3):  # a few dead letters and another queue, for realism
            yield store.add(Task(id=f"d{i}", queue="other", url="http://app.test/x", due_at=now))
        claimed = yield store.claim("other", now, 3, 60.0, 20)
        yield store.settle("other", [(t, Dead(404, "no")) for t in claimed.tasks], now)

        (stats,) = yield store.queue_stats([QUEUE], reactor.seconds())
        print(
            f"queue {QUEUE}: scheduled {stats.scheduled:,}, due {stats.due:,}, "
            f"oldest due age {stats.oldest_due_age:.1f} s"
        )

        api = TorqueAPI(store, reactor)
        port = reactor.listenTCP(0, QuietSite(api.resource()), interface="127.0.0.1")
        base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=True)

        @defer.inlineCallbacks
        def get(path):
            response = yield treq.get(base + path, pool=pool)
            body = yield response.content()
            assert response.code == 200, (path, response.code, body[:200])

        calls = options.calls
        yield timed(20, lambda: get("/queues"))  # warm up: scripts cached, connection open
        yield redis.execute_command("CONFIG", "RESETSTAT")
        results = {
            "store.queue_page (one Redis round trip)": (
                yield timed(calls, lambda: store.queue_page(None, 50, reactor.seconds()))
            )
        }
        stats_info = yield redis.execute_command("INFO", "commandstats")
        evals = [
            line
            for line in stats_info.splitlines()
            if line.startswith(("cmdstat_eval", "cmdstat_evalsha"))
        ]
        for path in ("/queues", f"/queues/{QUEUE}", "/metrics"):
            results[f"GET {path} over HTTP"] = yield timed(calls, lambda p=path: get(p))
        print(f"\n{calls} calls each, one at a time, {options.tasks:,} tasks in one queue:")
        for name, samples in results.items():
            print(f"  {name:42} {summary(samples)}")
        for line in evals:
            name, _, rest = line.partition(":")
            fields = dict(item.split("=") for item in rest.split(","))
            per_call = float(fields["usec_per_call"]) / 1000
            label = f"Redis server time per call ({name[8:].upper()})"
            print(f"  {label:42} {per_call:.3f} ms over {fields['calls']} calls")
        # DELETE /queues/<q>/tasks: batches of store.batch, so Redis is held
        # for one batch at a time, never for the whole queue.
        yield redis.execute_command("CONFIG", "RESETSTAT")
        started = time.perf_counter()
        purged = yield store.purge(QUEUE)
        took = time.perf_counter() - started
        stats_info = yield redis.execute_command("INFO", "commandstats")
        calls = usec = 0
        for line in stats_info.splitlines():
            if line.startswith(("cmdstat_eval:", "cmdstat_evalsha:")):
                fields = dict(item.split("=") for item in line.partition(":")[2].split(","))
                calls += int(fields["calls"])
                usec += int(fields["usec"])
        print(
            f"  purge of {purged:,} tasks: {took:.2f} s in {calls} script calls of "
            f"{store.batch}, Redis busy {usec / calls / 1000:.2f} ms per call"
        )
        yield port.stopListening()
        yield pool.closeCachedConnections()
    finally:
        yield redis.disconnect()
        redis_server.stopService()  # waits for the server to exit
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--queues", type=int, default=0,
        help="instead: /health while /queues and /metrics are read, with this many queues",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30.0, help="with --queues")
    parser.add_argument("--all-pages", action="store_true", help="with --queues")
    parser.add_argument("--node-path", help="with --queues: run the node from this checkout")
    options = parser.parse_args()
    if options.queues:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import many_queues

        many_queues.main(options)
    else:
        run(main, options)
