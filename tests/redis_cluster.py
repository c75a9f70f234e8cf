"""A real Redis Cluster for the test run: three primaries of Debian's
``redis-server`` on loopback ports, made a cluster by ``redis-cli --cluster
create``, started on first use and stopped when the run ends.

Tests that move slots put them back before they end; keys are isolated by a
prefix per test, as with the single server (tests/redis_server.py).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from torque.keys import Keys
from torque.redis_url import RedisAddress

PRIMARIES = 3
_nodes: list[int] | None = None


def cluster_ports() -> list[int]:
    """The primaries' ports, starting the cluster on first use."""
    global _nodes
    if _nodes is None:
        _nodes = _start()
    return _nodes


def cluster_seeds() -> list[RedisAddress]:
    return [RedisAddress(host="127.0.0.1", port=port) for port in cluster_ports()]


def cluster_url(ports: list[int] | None = None) -> str:
    """``--redis`` for the cluster (the run's, or the one on ``ports``)."""
    nodes = ",".join(f"127.0.0.1:{port}" for port in ports or cluster_ports())
    return f"redis+cluster://{nodes}"


#: Whether every key of a queue carries its hash tag ``{queue}`` (issue 15,
#: the key layout): then a test's queues spread over the primaries.
PER_QUEUE_SLOTS = "{q}" in Keys().due("q")


def cluster_keys() -> Keys:
    """A fresh key prefix for one test.  Until the key layout puts each
    queue in its own slot, the prefix carries a hash tag, so that all of a
    test's keys share one slot (the scripts' cross-queue keys would
    otherwise be CROSSSLOT)."""
    token = uuid.uuid4().hex[:12]
    return Keys(f"test:{token}:" if PER_QUEUE_SLOTS else f"{{test{token}}}:")


def cli(port: int, *args: str) -> str:
    """``redis-cli -p port args…``: its output, stripped."""
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip()


def node_id(port: int) -> str:
    return cli(port, "CLUSTER", "MYID")


def owner_port(slot: int) -> int:
    """The port of the primary that owns ``slot`` now."""
    for first, last, node, *_ in _slots():
        if first <= slot <= last:
            return node[1]
    raise LookupError(slot)


def _slots():
    raw = subprocess.run(
        ["redis-cli", "-p", str(cluster_ports()[0]), "--json", "CLUSTER", "SLOTS"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return json.loads(raw)


def _free_port() -> int:
    """A port that is free, and whose cluster bus port (+10000) is too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _start() -> list[int]:
    ports, _ = start_cluster(PRIMARIES, replicas=0)
    return ports


def start_cluster(primaries: int, replicas: int) -> tuple[list[int], dict[int, subprocess.Popen]]:
    """A new cluster of ``primaries`` primaries with ``replicas`` replicas
    each: the ports (primaries first) and each port's process."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError(
            "needs Debian's redis-server and redis-cli: apt-get install redis-server"
        )
    directory = tempfile.mkdtemp(prefix="torque-test-cluster-")
    atexit.register(shutil.rmtree, directory, True)
    ports, processes = [], {}
    for _ in range(primaries * (1 + replicas)):
        port = _free_port()
        node_dir = os.path.join(directory, str(port))
        os.mkdir(node_dir)
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            + ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            + ["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"]
            + ["--dir", node_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(process.kill)
        ports.append(port)
        processes[port] = process
    _until(lambda: all(cli(port, "PING") == "PONG" for port in ports), "redis-server to start")
    created = subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports]]
        + ["--cluster-replicas", str(replicas), "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if created.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
    _until(
        lambda: all("cluster_state:ok" in cli(port, "CLUSTER", "INFO") for port in ports),
        "the cluster to agree",
    )
    # A replica that has not synced yet would refuse to take over.
    replica_ports = [p for p in ports if "role:slave" in cli(p, "INFO", "replication")]
    _until(
        lambda: all(
            "master_link_status:up" in cli(p, "INFO", "replication") for p in replica_ports
        ),
        "the replicas to sync",
    )
    return ports, processes


def _until(condition, what: str, seconds: float = 60.0) -> None:
    # Blocking, at set-up only: the test reactor isn't running yet for this.
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {seconds:g} s for {what}")
        time.sleep(0.1)


def begin_move(slot: int, source: int, target: int) -> None:
    """Start moving ``slot`` from the primary on ``source`` to ``target``
    (redis-cli --cluster reshard's steps): from now on, keys not yet moved
    are answered with ASK by the source."""
    cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", node_id(source))
    cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", node_id(target))


def end_move(slot: int, source: int, target: int) -> None:
    """Move the slot's remaining keys and give it to ``target``: first on the
    target (which bumps its config epoch, so gossip keeps the change), then
    everywhere; the source then answers MOVED."""
    while keys := cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
        cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
    owner = node_id(target)
    for port in [target, source, *(p for p in cluster_ports() if p not in (source, target))]:
        cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", owner)


def move_slot(slot: int, source: int, target: int) -> None:
    begin_move(slot, source, target)
    end_move(slot, source, target)
