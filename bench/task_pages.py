"""What a page of ``GET /queues/<q>/tasks`` costs: a queue of 10 tasks
against one of 100,000.

Run by hand from the repository root (not part of the unit tests)::

    .venv/bin/python bench/task_pages.py             # 100,000 tasks, 300 calls each
    .venv/bin/python bench/task_pages.py --tasks 1000000

It starts its own redis-server (torque's embedded one, on a unix socket in a
temporary directory) and adds, with torque's own ADD script, 10 tasks to
``small`` and ``--tasks`` to ``big``: half of them due at one and the same
time (a bulk add with one ``eta``, the worst case for paging by score), the
rest spread over an hour.  Then it times, one call at a time, pages of
``--limit`` tasks (10: all of the small queue) at the start, in the middle
(a cursor inside the run of equal due times, whose task has left the set)
and at the end of each queue:

* ``store.task_page``, the one Redis round trip behind a page;
* ``GET /queues/<q>/tasks`` over real HTTP (a node's Site on 127.0.0.1, a
  kept-alive treq connection);
* the Redis server's own time per call (``INFO commandstats``).

A page is found by rank (``ZCOUNT`` and a halving search among equal scores,
``tests/test_store_pages.py`` traces the commands), so the figures should
not grow with the queue.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool

from inreactor import run
from torque.api import TorqueAPI
from torque.connection import connect_pool
from torque.cursor import encode_position
from torque.embedded import EmbeddedRedis
from torque.keys import Keys
from torque.site import QuietSite
from torque.store import RedisStore
from torque.task import Task


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return f"median {statistics.median(ms):6.3f} ms   p95 {p95:6.3f} ms   max {ms[-1]:6.3f} ms"


def due_time(i: int, count: int, now: float) -> float:
    """The first half at one time, the rest spread over the next hour."""
    return now + 60 if i < count // 2 else now + 60 + 3600 * i / count


@defer.inlineCallbacks
def fill(store: RedisStore, queue: str, count: int, now: float):
    batch = 2000
    for start in range(0, count, batch):
        adds = [
            store.add(
                Task(
                    id=f"{queue}-{i:08d}",
                    queue=queue,
                    url="http://app.test/hooks/do",
                    body="a=1",
                    content_type="application/x-www-form-urlencoded",
                    due_at=due_time(i, count, now),
                    created_at=now,
                )
            )
            for i in range(start, min(start + batch, count))
        ]
        yield defer.gatherResults(adds)


@defer.inlineCallbacks
def timed(calls: int, make):
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        yield make()
        samples.append(time.perf_counter() - started)
    return samples


def positions(
    queue: str, count: int, now: float, limit: int
) -> dict[str, tuple[float, str] | None]:
    """Where the timed pages start: the first page, the middle (after a task
    that is not there, inside the run of equal due times when there is one),
    and the last page."""
    middle = count // 2 - 1 if count >= 4 else 0
    last = max(count - limit - 1, 0)
    return {
        "first page": None,
        "middle": (due_time(middle, count, now), f"{queue}-{middle:08d}x"),
        "last page": (due_time(last, count, now), f"{queue}-{last:08d}"),
    }


@defer.inlineCallbacks
def main(options):
    directory = tempfile.mkdtemp(prefix="torque-bench-pages-")
    redis_server = EmbeddedRedis(directory)
    redis_server.startService()
    redis = connect_pool(redis_server.address)
    try:
        keys = Keys("bench-pages:")
        store = RedisStore(redis, reactor, keys, timeout=60)
        now = reactor.seconds()
        sizes = {"small": 10, "big": options.tasks}
        started = time.perf_counter()
        for queue, count in sizes.items():
            yield fill(store, queue, count, now)
        print(f"added {sum(sizes.values()):,} tasks in {time.perf_counter() - started:.1f} s")

        api = TorqueAPI(store, reactor)
        port = reactor.listenTCP(0, QuietSite(api.resource()), interface="127.0.0.1")
        base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=True)

        @defer.inlineCallbacks
        def get(path):
            response = yield treq.get(base + path, pool=pool)
            body = yield response.content()
            assert response.code == 200, (path, response.code, body[:200])

        limit, calls = options.limit, options.calls
        yield timed(20, lambda: get(f"/queues/big/tasks?limit={limit}"))  # warm up
        print(f"\npages of {limit}, {calls} calls each, one at a time:")
        for queue, count in sizes.items():
            for where, after in positions(queue, count, now, limit).items():
                page = yield store.task_page(queue, "scheduled", after, limit)
                yield redis.execute_command("CONFIG", "RESETSTAT")
                direct = yield timed(
                    calls, lambda q=queue, a=after: store.task_page(q, "scheduled", a, limit)
                )
                info = yield redis.execute_command("INFO", "commandstats")
                server = [
                    float(line.partition("usec_per_call=")[2].split(",")[0]) / 1000
                    for line in info.splitlines()
                    if line.startswith(("cmdstat_eval:", "cmdstat_evalsha:"))
                ]
                cursor = encode_position(after)
                path = f"/queues/{queue}/tasks?limit={limit}" + (
                    f"&cursor={cursor}" if cursor else ""
                )
                http = yield timed(calls, lambda p=path: get(p))
                label = f"{queue} ({count:,} tasks), {where} ({len(page.tasks)} tasks)"
                print(f"  {label}")
                print(f"    store.task_page       {summary(direct)}")
                print(f"    GET over HTTP         {summary(http)}")
                print(f"    Redis server per call {max(server):.3f} ms")
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
    parser.add_argument("--limit", type=int, default=10, help="tasks a page (default 10)")
    run(main, parser.parse_args())
