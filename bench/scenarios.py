"""Each figure of the benchmark, measured once.

Every scenario uses a fresh Redis key prefix (``--redis-prefix``) and a fresh
URL token, so its tasks, keys and nginx log lines are its own.  Times of
arrival are nginx's ``$msec`` (wall clock, millisecond resolution); CPU is
the node's ``utime + stime`` from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.internet.task import Clock

from torque.api import new_task_id
from torque.keys import Keys
from torque.keys import task_id as task_id_of
from torque.store import RedisStore
from torque.submission import parse_submission

from procs import VENV_BIN, Arrival, Nginx, Node, Processes, RedisServer, free_port, wait_until
from rediswire import Redis, encode
from workload import PARAMS_JSON, QUEUE, hook_url

HERE = Path(__file__).parent


class Bench:
    """What every scenario needs: the servers, the sizes, a place for files."""

    def __init__(
        self,
        processes: Processes,
        workdir: Path,
        sizes: dict,
        concurrency: int,
        redis_server: str | None = None,
    ):
        self.processes = processes
        self.workdir = workdir
        self.sizes = sizes
        self.concurrency = concurrency
        self.redis = RedisServer(processes, workdir, redis_server)
        self.nginx = Nginx(processes, workdir)
        self._names = 0
        self.backlog_prefix: str | None = None

    def fresh(self, what: str) -> str:
        """A new name: a key prefix, a URL token, a node's directory."""
        self._names += 1
        return f"{what}{self._names}x{secrets.token_hex(2)}"

    def node(self, prefix: str, *args: str, api: bool = True, host_cap: bool = False) -> Node:
        # Every scenario's hooks are on one host (nginx): the per-host cap
        # (--host-concurrency, 10 by default) is a limit a user sets for a
        # queue of many hosts, so it is the node's --concurrency here, as
        # docs/operating.rst advises for a single-host drain; ``host_cap``
        # keeps the default (the drain_capped scenario), and so do the
        # one-figure commands, which set no concurrency (bench/oneshot.py).
        keep = host_cap or not self.concurrency
        host_cap = [] if keep else ["--host-concurrency", str(self.concurrency)]
        return Node(
            self.processes,
            self.workdir,
            self.fresh("node-"),
            ["--redis", self.redis.url, "--redis-prefix", prefix, *host_cap, *args],
            api=api,
        )


# -- writing tasks the way torque does -------------------------------------


class _CaptureRedis:
    """Stands in for txredisapi under a real RedisStore: records the script
    and arguments ``RedisStore.add`` would send, so the bench writes exactly
    what the API writes, without HTTP in the way."""

    def __init__(self):
        self.calls = []

    def eval(self, script, keys, args):
        self.calls.append((script, keys, args))
        return defer.succeed([args[0], 1])  # ADD's: (id, created)

    def execute_command(self, *args):
        """The queue's registration (a ZADD): the loaders write it."""
        return defer.succeed(1)


def add_commands(prefix: str, urls, delay: float = 0.0):
    """``EVALSHA`` commands of torque's own ADD script, one per URL, with
    the arguments ``RedisStore.add`` builds for a form submission.

    The second item of each command is the script's text, for
    :func:`load_tasks` to replace with its SHA."""
    capture = _CaptureRedis()
    clock = Clock()
    store = RedisStore(capture, clock, Keys(prefix))
    for url in urls:
        fields = {"url": url, "params": PARAMS_JSON, "queue": QUEUE}
        if delay:
            fields["delay"] = str(delay)
        task = parse_submission(fields, new_id=new_task_id, now=time.time(), is_form=True)
        store.add(task)
        clock.advance(0)  # the end of the turn: the store's adds go out
        script, keys, args = capture.calls.pop()
        yield ["EVALSHA", script, len(keys), *keys, *args]


def load_tasks(redis: Redis, prefix: str, urls, delay: float = 0.0) -> int:
    shas = {}

    def commands():
        yield ["ZADD", Keys(prefix).queues, "NX", 0, QUEUE]
        for command in add_commands(prefix, urls, delay):
            script = command[1]
            if script not in shas:
                # Safe mid-pipeline: every chunk's replies are read before
                # the next chunk is built.
                shas[script] = redis.call("SCRIPT", "LOAD", script)
            command[1] = shas[script]
            yield command

    return redis.pipeline(commands())


def load_backlog(redis: Redis, prefix: str, base: str, count: int, delay: float) -> int:
    """``count`` tasks due in ``delay`` seconds, written with pipelined HSET
    + ZADD in the layout of ``torque/keys.py`` (fields as ADD writes them;
    only the id and the URL vary), much faster than a script call each."""
    keys = Keys(prefix)
    (template,) = add_commands(prefix, [hook_url(base, "backlog", 0)], delay)
    nkeys = template[2]
    args = template[3 + nkeys :]
    # The ADD script's: id, due_at, named, wake, n, fields.
    fields = args[5:]
    due_at = args[1]
    url_at = fields.index("url") + 1
    head, tail = fields[:url_at], fields[url_at + 1 :]
    hset_head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + len(fields))
    before = b"".join(encode([f])[4:] for f in head)  # bulk strings without '*N\r\n'
    after = b"".join(encode([f])[4:] for f in tail)
    due = keys.due(QUEUE)

    def bulk(text: str) -> bytes:
        raw = text.encode()
        return b"$%d\r\n%s\r\n" % (len(raw), raw)

    def commands():
        yield ["ZADD", keys.queues, "NX", 0, QUEUE]
        for n in range(count):
            task_id = task_id_of(QUEUE, f"bk{n:018d}")  # a token as long as a real one
            url = hook_url(base, "backlog", n)
            yield hset_head + bulk(keys.task(QUEUE, task_id)) + before + bulk(url) + after
            yield encode(["ZADD", due, due_at, task_id])

    return redis.pipeline(commands())


# -- figures ---------------------------------------------------------------


def py_spy(bench: Bench, node: Node, output: Path | None) -> subprocess.Popen | None:
    """Sample ``node`` with py-spy into ``output`` (collapsed stacks) until
    stopped with SIGINT; ``None`` when not profiling."""
    if output is None:
        return None
    spy = bench.processes.start(
        [str(VENV_BIN / "py-spy"), "record", "--pid", str(node.pid), "--rate", "250",
         "--format", "raw", "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    return spy


def script_calls(redis: Redis) -> int:
    """Script calls (``EVAL``, ``EVALSHA``) Redis has run so far: every
    claim and every settle of a node is one (``INFO commandstats``)."""
    total = 0
    for key, value in redis.info("commandstats").items():
        if key in ("cmdstat_eval", "cmdstat_evalsha"):
            total += int(value.split("calls=", 1)[1].split(",", 1)[0])
    return total


def rate_of(arrivals: list[Arrival]) -> float:
    """Deliveries per second from the first arrival to the last."""
    if len(arrivals) < 2:
        return 0.0
    times = sorted(a.at for a in arrivals)
    return (len(times) - 1) / max(times[-1] - times[0], 1e-3)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def floor(bench: Bench, with_redis: bool) -> dict:
    """The bare treq loop (``bench/floor.py``) in its own process."""
    token = bench.fresh("floor")
    count = bench.sizes["drain"]
    argv = [sys.executable, str(HERE / "floor.py"), "--base", bench.nginx.base,
            "--token", token, "--count", str(count),
            "--concurrency", str(bench.concurrency)]  # fmt: skip
    if with_redis:
        argv += ["--redis", bench.redis.path]
    mark = bench.nginx.mark()
    out = _run(bench, argv, timeout=600)
    result = json.loads(out.strip().splitlines()[-1])
    arrivals = bench.nginx.since(mark, f"/{token}/")
    if len(arrivals) != count or result["failures"]:
        raise RuntimeError(f"floor: {len(arrivals)} of {count} arrived, {result['failures']} bad")
    return {"rate": rate_of(arrivals), "cpu_per_1000": result["cpu"] / count * 1000}


def drain(
    bench: Bench, backlog: bool = False, profile: Path | None = None, host_cap: bool = False
) -> dict:
    """Tasks added first, then the node started: how fast it empties them.

    The queue is paused while the node starts, so that its start-up (imports,
    connections) is not counted; the clock and the CPU meter start when the
    pause is lifted.  A backlog run adds the due tasks to a queue that holds
    ``sizes["backlog"]`` tasks scheduled an hour ahead (loaded once, kept for
    the following runs).  With ``host_cap``, the node keeps the default
    ``--host-concurrency`` (10): every task is for one host, so that is what
    the per-host cap costs a queue of one host.
    """
    redis = bench.redis.client()
    count = bench.sizes["drain"]
    extra = {}
    if backlog:
        if bench.backlog_prefix is None:
            bench.backlog_prefix = bench.fresh("bb")
            before = int(redis.info("memory")["used_memory"])
            started = time.monotonic()
            load_backlog(
                redis, bench.backlog_prefix, bench.nginx.base, bench.sizes["backlog"], 3600
            )
            after = int(redis.info("memory")["used_memory"])
            bench.backlog_info = {
                "backlog_tasks": bench.sizes["backlog"],
                "backlog_load_seconds": time.monotonic() - started,
                "backlog_bytes_per_task": (after - before) / bench.sizes["backlog"],
            }
        prefix = bench.backlog_prefix
        extra = dict(bench.backlog_info)
    else:
        prefix = bench.fresh("bd")
    token = bench.fresh("drain")
    keys = Keys(prefix)
    load_tasks(redis, prefix, (hook_url(bench.nginx.base, token, n) for n in range(count)))
    redis.call("SET", keys.paused(QUEUE), "1")
    node = bench.node(
        prefix, "--queue", QUEUE, "--concurrency", str(bench.concurrency), host_cap=host_cap
    )
    spy = py_spy(bench, node, profile)
    mark = bench.nginx.mark()
    calls = script_calls(redis)
    cpu = node.cpu_seconds()
    redis.call("DEL", keys.paused(QUEUE))
    try:
        wait_until(
            lambda: bench.nginx.count(mark, f"/{token}/") >= count,
            timeout=max(120, count / 200),
            what=f"{count} deliveries",
            interval=0.05,
        )
        # All outcomes recorded: no lease left.
        wait_until(lambda: redis.call("ZCARD", keys.running(QUEUE)) == 0, 30, "outcomes recorded")
        cpu = node.cpu_seconds() - cpu
        rss = node.peak_rss()
        calls = script_calls(redis) - calls
    finally:
        if spy is not None:
            bench.processes.stop(spy, signal.SIGINT, wait=30)
        node.stop()
    arrivals = bench.nginx.since(mark, f"/{token}/")
    if len(arrivals) != count:
        raise RuntimeError(f"drain: {len(arrivals)} arrivals for {count} tasks")
    delivered = int(redis.call("HGET", keys.stats(QUEUE), "delivered") or 0)
    redis.close()
    return {
        "rate": rate_of(arrivals),
        "cpu_per_1000": cpu / count * 1000,
        "rss_mb": rss / 2**20,
        "scripts_per_task": calls / count,
        "delivered": delivered,
        **extra,
    }


def drain_capped(bench: Bench, profile: Path | None = None) -> dict:
    """:func:`drain` with the default ``--host-concurrency``."""
    return drain(bench, profile=profile, host_cap=True)


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = "{body}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""


def add(bench: Bench, profile: Path | None = None) -> dict:
    """``POST /hooks/add`` with wrk, 32 connections, on a node that serves
    no queue (``--queue none``): the API and Redis alone."""
    prefix = bench.fresh("ba")
    token = bench.fresh("add")
    body = urlencode({"url": hook_url(bench.nginx.base, token, 0), "params": PARAMS_JSON})
    script = bench.workdir / f"{token}.lua"
    script.write_text(WRK_SCRIPT.format(body=body))
    wrk = ["wrk", "-t1", "-c32", "-s", str(script)]
    rate, bad, stored, cpu_per_1000 = _wrk_adds(bench, prefix, "/hooks/add", wrk, profile)
    return {"rate": rate, "errors": bad, "stored": stored, "cpu_per_1000": cpu_per_1000}


BATCH_TASKS = 100
BATCH_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def batch(bench: Bench, profile: Path | None = None) -> dict:
    """``POST /tasks/batch`` of 100 tasks each with wrk, 8 connections, on a
    node that serves no queue: tasks per second stored."""
    prefix = bench.fresh("bb")
    token = bench.fresh("batch")
    task = {"url": hook_url(bench.nginx.base, token, 0), "params": json.loads(PARAMS_JSON)}
    body = json.dumps([task] * BATCH_TASKS, separators=(",", ":"))
    script = bench.workdir / f"{token}.lua"
    script.write_text(BATCH_WRK_SCRIPT.format(body=body))
    # 8 connections (800 tasks in flight), and 10 s before wrk gives a
    # request up: on a loaded machine a batch takes seconds.
    wrk = ["wrk", "-t1", "-c8", "--timeout", "10s", "-s", str(script)]
    rate, bad, stored, cpu_per_1000 = _wrk_adds(bench, prefix, "/tasks/batch", wrk, profile)
    return {
        "rate": rate * BATCH_TASKS,
        "requests": rate,
        "errors": bad,
        "stored": stored,
        "cpu_per_1000": cpu_per_1000,
    }


def _wrk_adds(bench: Bench, prefix: str, path: str, wrk: list[str], profile: Path | None):
    """Run ``wrk`` (its script given) against ``path`` of a node that serves
    no queue, after a 2 s warm-up: requests per second, wrk's errors, the
    tasks stored, and the node's CPU-s per 1,000 tasks stored (steadier
    than the rate on a shared machine, where the rate follows the other
    processes' load)."""
    node = bench.node(prefix, "--queue", "none")
    try:
        wrk = [*wrk, node.url + path]
        _run(bench, [*wrk[:1], "-d2s", *wrk[1:]])  # warm-up
        spy = py_spy(bench, node, profile)
        redis = bench.redis.client()
        before = redis.call("ZCARD", Keys(prefix).due(QUEUE))
        cpu = node.cpu_seconds()
        try:
            out = _run(bench, [*wrk[:1], f"-d{bench.sizes['add_seconds']}s", *wrk[1:]])
            cpu = node.cpu_seconds() - cpu
            measured = redis.call("ZCARD", Keys(prefix).due(QUEUE)) - before
            redis.close()
        finally:
            if spy is not None:
                bench.processes.stop(spy, signal.SIGINT, wait=30)
    finally:
        node.stop()
    rate, bad = _wrk_rate(out)
    redis = bench.redis.client()
    stored = redis.call("ZCARD", Keys(prefix).due(QUEUE))
    redis.close()
    return rate, bad, stored, cpu / max(measured, 1) * 1000


def calibrate(bench: Bench) -> dict:
    """wrk against a bare twisted.web resource (``bench/bareweb.py``):
    not a torque figure, a measure of the machine at the time."""
    port = free_port()
    server = bench.processes.start([sys.executable, str(HERE / "bareweb.py"), str(port)])
    try:
        url = f"http://127.0.0.1:{port}/ping"
        wait_until(lambda: _answers(url), 10, "bareweb.py")
        _run(bench, ["wrk", "-t1", "-c32", "-d1s", url])  # warm-up
        rate, _ = _wrk_rate(_run(bench, ["wrk", "-t1", "-c32", "-d5s", url]))
    finally:
        bench.processes.stop(server)
    return {"rate": rate}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _wrk_rate(out: str) -> tuple[float, int]:
    """Requests per second and failed requests, from wrk's report."""
    rate = None
    bad = 0
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rate = float(line.split()[1])
        if "Non-2xx" in line or line.strip().startswith("Socket errors"):
            bad += sum(int(n) for n in line.replace(",", " ").split() if n.isdigit())
    if rate is None:
        raise RuntimeError(f"no rate in wrk's output:\n{out}")
    return rate, bad


def _run(bench: Bench, argv: list[str], timeout: float = 120) -> str:
    """Run ``argv`` to its end; its standard output."""
    process = bench.processes.start(argv, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        bench.processes.stop(process)
    if process.returncode != 0:
        name = Path(argv[1]).name if argv[0] == sys.executable else argv[0]
        raise RuntimeError(f"{name} failed ({process.returncode})")
    return out


def _paced_adds(node: Node, base: str, token: str, count: int, rate: float, delay: float = 0.0):
    """POST ``count`` form submissions at a steady ``rate`` over one
    keep-alive connection; returns (time sent, answer) per task.

    Each send is put off by a random fraction of a millisecond: arrivals
    are nginx's ``$msec``, truncated to the millisecond, and sends exactly
    ``1 / rate`` apart would all fall at the same point of the millisecond,
    so the truncation would shift every figure of a run alike (by 0 to
    1 ms, a different amount each run).  Spread, it costs each figure
    0.5 ms on average, run after run."""
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    sent = []
    start = time.time() + 0.05
    spread = random.Random(count).random  # the same offsets every run
    try:
        for n in range(count):
            pause = start + n / rate + spread() / 1000 - time.time()
            if pause > 0:
                time.sleep(pause)
            fields = {"url": hook_url(base, token, n), "params": PARAMS_JSON}
            if delay:
                fields["delay"] = str(delay)
            at = time.time()
            connection.request("POST", "/hooks/add", urlencode(fields), headers)
            response = connection.getresponse()
            answer = json.loads(response.read())
            if response.status != 201:
                raise RuntimeError(f"add answered {response.status}: {answer}")
            sent.append((at, time.time() - at, answer))
    finally:
        connection.close()
    return sent


def _arrivals_by_n(nginx: Nginx, mark: int, token: str, count: int, timeout: float):
    wait_until(lambda: nginx.count(mark, f"/{token}/") >= count, timeout, f"{count} arrivals")
    by_n = {}
    for arrival in nginx.since(mark, f"/{token}/"):
        n = int(arrival.uri.rsplit("/", 1)[1])
        if n in by_n:
            raise RuntimeError(f"task {n} arrived twice")
        by_n[n] = arrival.at
    return by_n


def latency(bench: Bench) -> dict:
    """Add-to-arrival at a steady 50 tasks/s: the API's add, the wake-up,
    the claim and the request, end to end."""
    count = bench.sizes["latency"]
    token = bench.fresh("lat")
    node = bench.node(bench.fresh("bl"), "--queue", QUEUE, "--concurrency", str(bench.concurrency))
    mark = bench.nginx.mark()
    try:
        sent = _paced_adds(node, bench.nginx.base, token, count, 50.0)
        by_n = _arrivals_by_n(bench.nginx, mark, token, count, 30)
    finally:
        node.stop()
    ms = [(by_n[n] - at) * 1000 for n, (at, _, _) in enumerate(sent)]
    add_ms = [took * 1000 for _, took, _ in sent]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "add_p50_ms": percentile(add_ms, 50),
    }


def timer(bench: Bench) -> dict:
    """Lateness of tasks added with ``delay=2``: arrival minus the ``due_at``
    the API answered.  Added at 100/s, so they fall due one by one rather
    than in one burst."""
    count = bench.sizes["timer"]
    token = bench.fresh("tmr")
    node = bench.node(bench.fresh("bt"), "--queue", QUEUE, "--concurrency", str(bench.concurrency))
    mark = bench.nginx.mark()
    try:
        sent = _paced_adds(node, bench.nginx.base, token, count, 100.0, delay=2)
        by_n = _arrivals_by_n(bench.nginx, mark, token, count, 30)
    finally:
        node.stop()
    return _lateness(sent, by_n)


def burst(bench: Bench, apart: bool = False) -> dict:
    """Lateness of ``sizes["burst"]`` tasks with ``delay=2`` added back to
    back, as fast as the API takes them (one keep-alive connection): they
    fall due as densely as they came, many while a claim is on its way.

    :param apart: the API on a node of its own (``--queue none``), the
        queue processed by another (``--port none``), which hears of each
        task through Redis's wake-up message.
    """
    count = bench.sizes["burst"]
    token = bench.fresh("bst")
    prefix = bench.fresh("bb")
    processing = ["--queue", QUEUE, "--concurrency", str(bench.concurrency)]
    nodes = []
    try:
        if apart:
            nodes.append(bench.node(prefix, *processing, api=False))
            nodes.append(bench.node(prefix, "--queue", "none"))
        else:
            nodes.append(bench.node(prefix, *processing))
        mark = bench.nginx.mark()
        sent = _paced_adds(nodes[-1], bench.nginx.base, token, count, math.inf, delay=2)
        by_n = _arrivals_by_n(bench.nginx, mark, token, count, 60)
    finally:
        for node in reversed(nodes):
            node.stop()
    return {
        **_lateness(sent, by_n),
        "adds_per_s": (count - 1) / max(sent[-1][0] - sent[0][0], 1e-3),
    }


def _lateness(sent, by_n) -> dict:
    """Each task's arrival minus its due time, in ms: p50, p99, min, max."""
    ms = [(by_n[n] - answer["due_at"]) * 1000 for n, (_, _, answer) in enumerate(sent)]
    return {
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def memory(bench: Bench) -> dict:
    """Redis ``used_memory`` growth per task over small tasks scheduled an
    hour ahead, written by torque's ADD script with ``RedisStore.add``'s
    arguments, under the default prefix ``torque:``.

    It uses a redis-server of its own: in the shared one, the main key
    table of the million-task backlog resizes (and frees its old half)
    at moments that have nothing to do with these tasks.
    """
    count = bench.sizes["memory"]
    token = bench.fresh("mem")
    workdir = bench.workdir / bench.fresh("redis-memory-")
    workdir.mkdir()
    server = RedisServer(bench.processes, workdir, bench.redis.executable)
    try:
        redis = server.client()
        (sample,) = add_commands("torque:", ["http://127.0.0.1/"])
        redis.call("SCRIPT", "LOAD", sample[1])  # not counted: the script cache
        before = int(redis.info("memory")["used_memory"])
        urls = (hook_url(bench.nginx.base, token, n) for n in range(count))
        load_tasks(redis, "torque:", urls, 3600)
        after = int(redis.info("memory")["used_memory"])
        stored = redis.call("ZCARD", Keys("torque:").due(QUEUE))
        redis.close()
    finally:
        bench.processes.stop(server.process)
    if stored != count:
        raise RuntimeError(f"memory: {stored} of {count} tasks stored")
    return {"bytes_per_task": (after - before) / count}
