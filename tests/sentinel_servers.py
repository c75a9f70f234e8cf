"""A Redis primary, replicas and Sentinels on loopback ports, for the
Sentinel tests: Debian's ``redis-server`` (``--sentinel`` for a Sentinel),
each in its own directory, killed at the end of the test.

Sentinel's timings are short here (down after 1 s, failover timeout 3 s) so
that a failover takes seconds; a production setup keeps the defaults or
close (docs/production.rst).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

from twisted.internet import defer

from tests.node import free_port, wait_for

MASTER = "torque-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def ask(port: int, *command: str, timeout: float = 0.5):
    """One command to a server on 127.0.0.1 (blocking, bounded): its reply
    as text (the first line, or the array's items), or None if it doesn't
    answer."""
    from torque.sentinel import _command, _reply

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_command(*command))
            return _reply(conn.makefile("rb"))
    except (OSError, ValueError):
        return None


class Server:
    """One ``redis-server`` process (a Sentinel with ``sentinel=True``)."""

    def __init__(self, testcase, name: str, lines: list[str], sentinel: bool = False):
        self.port = free_port()
        self.dir = os.path.abspath(testcase.mktemp())
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, f"{name}.conf")
        self.log = os.path.join(self.dir, f"{name}.log")
        self.lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {self.log}",
            *lines,
        ]
        self.sentinel = sentinel
        self.process = None
        testcase.addCleanup(self.kill)

    def start(self) -> defer.Deferred:
        if not os.path.exists(self.conf):  # a Sentinel rewrites its own
            with open(self.conf, "w") as out:
                out.write("\n".join(self.lines) + "\n")
        argv = [redis_server_binary(), self.conf] + (["--sentinel"] if self.sentinel else [])
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return wait_for(lambda: ask(self.port, "PING") == "PONG", what=f"{self.conf} to answer")

    def start_as_replica_of(self, port: int) -> defer.Deferred:
        """Start again, as a replica of the primary on ``port``: what
        Sentinel does to an old primary that comes back (``REPLICAOF``), in
        its config instead, so that a test does not wait on Sentinel for it
        (a Sentinel in TILT mode, which a loaded machine's stalls cause,
        holds off reconfiguring for 30 s at a time)."""
        with open(self.conf, "a") as out:
            out.write(f"replicaof 127.0.0.1 {port}\n")
        return self.start()

    def kill(self) -> None:
        """``kill -9``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def role(self) -> str | None:
        reply = ask(self.port, "ROLE")
        return reply[0] if reply else None


def primary(testcase, *lines: str) -> Server:
    return Server(testcase, "primary", ["save ''", "appendonly no", *lines])


def replica(testcase, of: Server, *lines: str) -> Server:
    return Server(
        testcase, "replica", ["save ''", "appendonly no", f"replicaof 127.0.0.1 {of.port}", *lines]
    )


def sentinel(testcase, watching: Server, quorum: int = 2, name: str = MASTER) -> Server:
    return Server(
        testcase,
        "sentinel",
        [
            f"sentinel monitor {name} 127.0.0.1 {watching.port} {quorum}",
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {name} 1",
        ],
        sentinel=True,
    )


def sentinel_url(sentinels, name: str = MASTER, db: int = 0) -> str:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
    return f"redis+sentinel://{hosts}/{name}/{db}"


def master_port(sentinel_server: Server, name: str = MASTER) -> int | None:
    """The primary's port as this Sentinel says now."""
    reply = ask(sentinel_server.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
    return int(reply[1]) if reply else None


def _records(reply) -> list[dict]:
    """``SENTINEL REPLICAS``/``SENTINELS``'s flat field lists as dicts."""
    return [dict(zip(r[::2], r[1::2], strict=True)) for r in reply or []]


def watching(sentinels, replicas, name: str = MASTER) -> defer.Deferred:
    """Wait until every Sentinel knows each replica (it learns them from
    the primary's INFO, every 10 s) and the other Sentinels (from their
    hellos, every 2 s): a primary killed before that has no replica to
    promote, or no quorum to agree on it."""
    wanted = {str(r.port) for r in replicas}

    def ready():
        for s in sentinels:
            known = _records(ask(s.port, "SENTINEL", "REPLICAS", name))
            usable = {r.get("port") for r in known if "s_down" not in r.get("flags", "")}
            peers = _records(ask(s.port, "SENTINEL", "SENTINELS", name))
            if not wanted <= usable or len(peers) < len(sentinels) - 1:
                return False
        return True

    return wait_for(ready, timeout=60, what="every Sentinel to know the replicas and each other")


@defer.inlineCallbacks
def replicated(primary_server: Server, replica_server: Server):
    """Wait until the replica is in sync with the primary."""

    def synced():
        info = ask(replica_server.port, "INFO", "replication") or ""
        return "master_link_status:up" in info

    yield wait_for(synced, what="the replica to sync")
