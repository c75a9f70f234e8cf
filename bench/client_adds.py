"""The blocking client's adds: 1,000 ``client.add()`` calls in a row from
one Python process against one node, then the same through one reused
``client.Client`` and through ``client.add_many`` (issue 3's closing
figure).

Run by hand from the repository root (not part of the unit tests)::

    .venv/bin/python bench/client_adds.py              # 1,000 adds each way
    .venv/bin/python bench/client_adds.py --count 5000 --keep

It starts, in a temporary directory, what ``bench/run.py`` starts (see
bench/README.md): a redis-server on a unix socket, nginx on 127.0.0.1 and
one node, ``twistd -n torque --redis unix://… --queue default``, its other
options at their defaults, so the node delivers the tasks (to nginx) while
they are being added, as it would in use.  Every task is the bench's one
shape, ``params={"a": 1, "b": "x"}`` posted to nginx, with no delay.

* ``client.add(url=…, params=…)``: the seed's spelling; a new connection
  for every add (the client opens one and closes it after the answer).
* ``Client(url).add(…)``: one connection, kept alive across the adds.
* ``client.add_many([...])``: the whole list over one connection.

Each call of the first two is timed on its own (``time.perf_counter``);
``add_many`` is one call, timed whole.  A few warm-up adds go first and
are not counted.  At the end it checks that nginx got every task once.
Every process it starts is stopped at the end, on an error or on Ctrl-C,
and nothing is written outside the temporary directory.
"""
# ruff: noqa: E402 (the bytecode switch must come before the bench's imports)

from __future__ import annotations

import sys

# Nothing written outside the temporary directory: no bytecode for the
# bench's modules, nor (through the environment) for the node's.
sys.dont_write_bytecode = True

import statistics
import time

from torque import client

import oneshot
from procs import wait_until
from scenarios import Bench, percentile
from workload import PARAMS, QUEUE, hook_url

ARRIVAL_TIMEOUT = 60.0  # seconds for the last task to reach nginx


def timed_calls(add, urls: list[str]) -> tuple[list[float], float]:
    """Call ``add(url)`` for each URL, one after another: each call's
    seconds, and the seconds for all of them."""
    each = []
    started = time.perf_counter()
    for url in urls:
        before = time.perf_counter()
        add(url)
        each.append(time.perf_counter() - before)
    return each, time.perf_counter() - started


def measure(bench: Bench, count: int, warmup: int) -> dict:
    node = bench.node(bench.fresh("adds"), "--queue", QUEUE)
    token = bench.fresh("client")
    base = bench.nginx.base
    mark = bench.nginx.mark()
    urls = iter(hook_url(base, token, n) for n in range(warmup + 3 * count))

    def batch(n: int) -> list[str]:
        return [next(urls) for _ in range(n)]

    def one_off(url: str) -> None:
        client.add(url=url, params=PARAMS, torque_url=node.url)

    try:
        timed_calls(one_off, batch(warmup))
        figures = {}
        figures["add_each"], figures["add_total"] = timed_calls(one_off, batch(count))
        with client.Client(node.url) as kept:
            figures["client_each"], figures["client_total"] = timed_calls(
                lambda url: kept.add(url, params=PARAMS), batch(count)
            )
        tasks = [{"url": url, "params": PARAMS} for url in batch(count)]
        started = time.perf_counter()
        added = client.add_many(tasks, torque_url=node.url)
        figures["many_total"] = time.perf_counter() - started
        if len(added) != count or any(a.duplicate for a in added):
            raise RuntimeError("add_many did not add every task")
        total = warmup + 3 * count
        prefix = f"/{token}/"
        wait_until(
            lambda: bench.nginx.count(mark, prefix) >= total, ARRIVAL_TIMEOUT, "every delivery"
        )
        arrivals = {a.uri for a in bench.nginx.since(mark, prefix)}
        if len(arrivals) != total:
            raise RuntimeError(f"{len(arrivals)} distinct tasks arrived, not {total}")
    finally:
        node.stop()
    return figures


def describe(each: list[float], total: float) -> str:
    ms = [s * 1000 for s in each]
    return (
        f"{total:6.2f} s for {len(each):,} ({len(each) / total:5.0f}/s)   per add: median "
        f"{statistics.median(ms):4.2f} ms, p95 {percentile(ms, 95):4.2f}, "
        f"p99 {percentile(ms, 99):4.2f}"
    )


def main() -> int:
    options, figures = oneshot.run(__doc__, 1000, 20, "adds each way", measure)
    n = options.count
    print(f"{n:,} adds in a row each way, no delay (after {options.warmup} warm-up adds)")
    print(f"  client.add(), one-off:   {describe(figures['add_each'], figures['add_total'])}")
    print(f"  Client(url).add(), kept: {describe(figures['client_each'], figures['client_total'])}")
    many = figures["many_total"]
    print(f"  client.add_many(list):   {many:6.2f} s for {n:,} ({n / many:5.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
