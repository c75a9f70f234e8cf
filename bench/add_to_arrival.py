"""Add to arrival: from sending ``POST /hooks/add`` (no delay) to the web
hook getting the request, for tasks added one after another against one
``twistd -n torque`` node (issue 2's closing figure).

Run by hand from the repository root (not part of the unit tests)::

    .venv/bin/python bench/add_to_arrival.py              # 200 tasks
    .venv/bin/python bench/add_to_arrival.py --count 500 --keep

It starts, in a temporary directory, what ``bench/run.py`` starts (see
bench/README.md): a redis-server on a unix socket, nginx on 127.0.0.1
(``return 200``, access log ``$msec $request_uri``) and one node,
``twistd -n torque --redis unix://… --queue default``, its other options
at their defaults.  Over one kept-alive connection it posts the seed's
form (``url=…&params={"a": 1, "b": "x"}``), each add sent as soon as the
previous one has answered ``201``, and takes each task's arrival time in
nginx's log minus the time its add was sent.  A few warm-up tasks go first
(the node's first Redis scripts, treq's first connection to nginx) and are
not counted.

nginx logs ``$msec`` truncated to the millisecond, so each figure is low by
up to 1 ms (0.5 ms on average).  Every process it starts is stopped at the
end, on an error or on Ctrl-C, and nothing is written outside the
temporary directory.
"""
# ruff: noqa: E402 (the bytecode switch must come before the bench's imports)

from __future__ import annotations

import sys

# Nothing written outside the temporary directory: no bytecode for the
# bench's modules, nor (through the environment) for the node's.
sys.dont_write_bytecode = True

import math
import statistics

import oneshot
from scenarios import Bench, _arrivals_by_n, _paced_adds, percentile
from workload import QUEUE

ARRIVAL_TIMEOUT = 30.0  # seconds for the last task of a batch to arrive


def adds_and_arrivals(bench: Bench, node, what: str, count: int):
    """``count`` adds, each sent once the previous one answered (an infinite
    rate for :func:`_paced_adds`: no pacing); ``(sent, arrival by n)``."""
    token = bench.fresh(what)
    mark = bench.nginx.mark()
    sent = _paced_adds(node, bench.nginx.base, token, count, math.inf)
    return sent, _arrivals_by_n(bench.nginx, mark, token, count, ARRIVAL_TIMEOUT)


def measure(bench: Bench, count: int, warmup: int) -> dict:
    """``warmup`` tasks, then ``count`` counted ones: their add-to-arrival
    and add-to-answer times, in milliseconds."""
    node = bench.node(bench.fresh("a2a"), "--queue", QUEUE)
    try:
        adds_and_arrivals(bench, node, "warm", warmup)
        sent, arrived = adds_and_arrivals(bench, node, "a2a", count)
    finally:
        node.stop()
    return {
        "arrival_ms": [(arrived[n] - at) * 1000 for n, (at, _, _) in enumerate(sent)],
        "answer_ms": [took * 1000 for _, took, _ in sent],
    }


def describe(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):5.1f} ms   p95 {percentile(values, 95):5.1f} ms"
        f"   p99 {percentile(values, 99):5.1f} ms   max {max(values):5.1f} ms"
    )


def main() -> int:
    options, figures = oneshot.run(__doc__, 200, 10, "tasks measured", measure)
    print(
        f"{options.count} tasks added one after another, no delay "
        f"(after {options.warmup} warm-up tasks, not counted)"
    )
    print(f"  add sent -> hook got it:   {describe(figures['arrival_ms'])}")
    print(f"  add sent -> 201 received:  {describe(figures['answer_ms'])}")
    print("  (arrival: nginx's $msec, truncated to the millisecond)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
