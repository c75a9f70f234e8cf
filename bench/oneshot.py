"""What the one-figure commands (``add_to_arrival.py``, ``client_adds.py``)
share: their options, and a :class:`~scenarios.Bench` (a redis-server and
nginx in a temporary directory) that is stopped, with every process it
started, whatever happens."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from procs import ensure_tools, workspace
from scenarios import Bench


def run(
    doc: str, count: int, warmup: int, count_help: str, measure: Callable[[Bench, int, int], dict]
) -> tuple[argparse.Namespace, dict]:
    """Parse the command line, start the servers, ``measure(bench, count,
    warmup)``, stop everything; the options and the figures."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=count, help=f"{count_help} (default {count})")
    parser.add_argument("--warmup", type=int, default=warmup, help="first, not counted")
    parser.add_argument("--redis-server", help="the redis-server binary [default: a node's]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    options = parser.parse_args()
    if not (1 <= options.count <= 100_000 and 1 <= options.warmup <= 1_000):
        parser.error("--count must be 1 to 100000 and --warmup 1 to 1000")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # for the node
    # Ctrl-C and SIGTERM both end in the finally below, which stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools()
    with workspace("torque-oneshot-", options.keep) as (processes, tmp):
        # No sizes and no concurrency: Bench.node passes only our arguments.
        bench = Bench(processes, tmp, {}, 0, options.redis_server)
        print(
            f"redis-server {bench.redis.version} on a unix socket, {bench.nginx.version}; "
            "one node: twistd -n torque --queue default, defaults otherwise",
            flush=True,
        )
        figures = measure(bench, options.count, options.warmup)
    return options, figures
