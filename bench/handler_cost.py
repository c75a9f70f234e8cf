"""CPU per add and per batch task inside one process: torque's whole site
as a node builds it (twisted.web's parsing, the channel's limits, the token
check and the doors, the hot route, the handler and its target check, the
store's add over a stand-in for Redis that packs each command with hiredis,
as txredisapi would), with no socket, no Redis and no load generator.  Adds
come as wrk sends them: a request on each of 32 kept-alive connections,
then the end of the reactor's turn (one store call for the turn).  Process
time, best of several repetitions: on a shared machine it holds steady where
``wrk`` drifts with the other processes' load.

::

    .venv/bin/python bench/handler_cost.py                      # the work tree
    .venv/bin/python bench/handler_cost.py --ref c60c47f --ref HEAD --rounds 3

With ``--ref`` (repeatable; ``.`` is the work tree), each ref's ``torque/``
is exported and measured in a process of its own, the refs alternating
round by round so that a change in the machine's load falls on all of
them; the medians of the rounds are printed, and each ref's ratio to the
first.  It leaves out what a real node adds on top (the socket writes,
txredisapi's reply parsing, Redis itself): the figures are torque's and
twisted.web's share of an add, not an add's whole cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORM = b"url=http%3A%2F%2F127.0.0.1%3A35937%2Fadd-abc%2F0&params=%7B%22a%22%3A1%7D"
BATCH_TASKS = 100
CONNECTIONS = 32  # wrk's in the add scenario


def measure(repeats: int) -> dict:
    """This process's torque: microseconds of CPU per add and per batch task."""
    import hiredis
    from twisted.internet import defer, task
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from torque.api import TorqueAPI
    from torque.auth import RequireToken
    from torque.doors import Doors
    from torque.site import QuietSite
    from torque.store import RedisStore
    from torque.targets import TargetGuard

    class PackingRedis:
        """Answers the ADD script as Redis would (every task created),
        after packing the command as txredisapi does before sending it."""

        def eval(self, script, keys, args):
            hiredis.pack_command(("EVALSHA", "0" * 40, len(keys), *keys, *args))
            # ADD's arguments, per task: its id, due time, named flag, wake
            # channel, field count, then the fields.
            reply, at = [], 0
            while at < len(args):
                reply += [args[at], 1]
                at += 5 + int(args[at + 4])
            return defer.succeed(reply)

        def execute_command(self, *args):  # the queue's registration, once
            return defer.succeed(1)

    clock = task.Clock()
    clock.advance(1_700_000_000.125)
    guard = TargetGuard(clock=clock)
    guard.api_listening("127.0.0.1", 8080)
    api = TorqueAPI(RedisStore(PackingRedis(), clock), clock, targets=guard)
    site = QuietSite(RequireToken(Doors(api.resource(), {}), []), reactor=clock)
    connections = []
    for port in range(40000, 40000 + CONNECTIONS):
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport()
        channel.makeConnection(transport)
        connections.append((channel, transport))
    tasks = [{"url": "http://127.0.0.1:35937/batch-abc/0", "params": {"a": 1, "b": "x"}}]
    body = json.dumps(tasks * BATCH_TASKS, separators=(",", ":")).encode()
    requests = {
        "add": _request(b"/hooks/add", b"application/x-www-form-urlencoded", FORM),
        "batch": _request(b"/tasks/batch", b"application/json", body),
    }

    def send(request: bytes, status: bytes, width: int) -> None:
        """One request on each of ``width`` connections, in one turn."""
        for channel, _ in connections[:width]:
            channel.dataReceived(request)
        clock.advance(0)  # the end of the reactor's turn: the adds go to "Redis"
        for _, transport in connections[:width]:
            answer = transport.value()
            transport.clear()
            if not answer.startswith(b"HTTP/1.1 " + status):
                raise RuntimeError(f"unexpected answer: {answer[:300]!r}")

    def best(request: bytes, status: bytes, turns: int, width: int) -> float:
        send(request, status, width)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(turns):
                send(request, status, width)
            times.append((time.process_time() - started) / (turns * width))
        return min(times) * 1e6

    return {
        "add_us": best(requests["add"], b"201", 500 // CONNECTIONS, CONNECTIONS),
        "batch_task_us": best(requests["batch"], b"200", 10, 1) / BATCH_TASKS,
    }


def _request(path: bytes, content_type: bytes, body: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: %s\r\n" % (
        path,
        content_type,
    )
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _tree(ref: str) -> str | None:
    """``ref``'s torque exported to a temporary directory (``None``: the
    work tree as it is)."""
    if ref == ".":
        return None
    tree = tempfile.mkdtemp(prefix="torque-cost-")
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", ref, "torque"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", action="append", help="git ref to measure ('.': the work tree)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the refs")
    parser.add_argument("--repeats", type=int, default=9, help="repetitions; the best counts")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(measure(options.repeats)))
        return 0
    refs = options.ref or ["."]
    trees = {ref: _tree(ref) for ref in refs}
    figures: dict[str, list[dict]] = {ref: [] for ref in refs}
    for round_ in range(options.rounds):
        for ref in refs:
            env = dict(os.environ)
            if trees[ref] is not None:
                env["PYTHONPATH"] = os.pathsep.join(
                    filter(None, [trees[ref], env.get("PYTHONPATH")])
                )
            child = [sys.executable, __file__, "--child", "--repeats", str(options.repeats)]
            out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            figure = json.loads(out.stdout)
            figures[ref].append(figure)
            load = os.getloadavg()[0]
            print(
                f"round {round_ + 1} {ref}: add {figure['add_us']:.1f} us, "
                f"batch {figure['batch_task_us']:.1f} us a task (load {load:.1f})",
                flush=True,
            )
    first = refs[0]
    medians = {
        ref: {k: statistics.median(f[k] for f in runs) for k in runs[0]}
        for ref, runs in figures.items()
    }
    print("\nmedians (us of CPU):")
    for ref, m in medians.items():
        ratios = ", ".join(f"{k} {m[k] / medians[first][k]:.2f}x" for k in m)
        print(f"  {ref}: add {m['add_us']:.1f}, batch task {m['batch_task_us']:.1f}  ({ratios})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
