"""The floor: what Twisted and treq physically allow on this machine.

A bare loop posting the same requests torque makes (the same form body and
headers, to the same nginx), ``--concurrency`` at a time through a
``DeferredSemaphore``, over one persistent ``HTTPConnectionPool``.  With
``--redis``, every request also makes one Redis write before it and one
delete after it through txredisapi (hiredis parser, unix socket) -- the
least any queue that keeps its tasks in Redis must do.

Run by ``bench/run.py``; on its own::

    .venv/bin/python bench/floor.py --base http://127.0.0.1:PORT --count 20000 \\
        [--redis /path/redis.sock]

It prints one JSON line: the measured requests' count, wall seconds and the
process's CPU seconds (warm-up excluded).
"""

from __future__ import annotations

import argparse
import json
import time

import txredisapi
from treq.client import HTTPClient
from twisted.internet import defer, task
from twisted.web.client import Agent, HTTPConnectionPool

from torque.dispatch import USER_AGENT

from workload import FORM_BODY, QUEUE, hook_url

BODY = FORM_BODY.encode()


def headers(n: int) -> dict[str, str]:
    """The headers torque's dispatcher sends, so the requests are the same."""
    return {
        "User-Agent": USER_AGENT,
        "X-Torque-Task-Id": f"floor{n:015d}",
        "X-Torque-Queue": QUEUE,
        "X-Torque-Retry-Count": "0",
        "X-Torque-ETA": repr(time.time()),
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def run(reactor, options) -> dict:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = options.concurrency
    http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=10))
    redis = None
    if options.redis:
        redis = txredisapi.lazyUnixConnectionPool(options.redis, poolsize=2, convertNumbers=False)
    semaphore = defer.DeferredSemaphore(options.concurrency)
    failures = []

    async def one(token: str, n: int) -> None:
        key = f"floor:{token}:{n}"
        if redis is not None:
            await redis.set(key, BODY)
        response = await http.post(hook_url(options.base, token, n), data=BODY, headers=headers(n))
        await response.content()
        if response.code != 200:
            failures.append(response.code)
        if redis is not None:
            await redis.delete(key)

    async def batch(token: str, count: int) -> None:
        calls = [
            semaphore.run(lambda n=n: defer.ensureDeferred(one(token, n))) for n in range(count)
        ]
        await defer.gatherResults(calls, consumeErrors=True)

    await batch(options.token + "w", options.warmup)
    cpu, wall = time.process_time(), time.monotonic()
    await batch(options.token, options.count)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await pool.closeCachedConnections()
    if redis is not None:
        await redis.disconnect()
    return {"count": options.count, "wall": wall, "cpu": cpu, "failures": len(failures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the receiver, http://127.0.0.1:PORT")
    parser.add_argument("--token", default="floor", help="first path segment of every URL")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--redis", help="a redis-server unix socket: one write+delete a request")
    options = parser.parse_args()
    if not options.base.startswith("http://127.0.0.1:"):
        parser.error("the floor only posts to 127.0.0.1")

    async def go(reactor):
        print(json.dumps(await run(reactor, options)), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
