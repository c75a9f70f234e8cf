"""torque on a real Redis Cluster, end to end (issue 15 item 4): ``twistd``
nodes on ``redis+cluster://`` and a real HTTP receiver.

* 30 queues x 200 tasks through two nodes: every task delivered once, the
  queues spread over the three primaries;
* a busy queue's slot resharded to another primary while tasks flow: none
  lost, none stuck;
* ``kill -9`` of a primary while tasks flow, on a cluster with a replica per
  primary and ``--redis-wait-replicas 1``: the replica takes over, adds
  answer ``503`` during the switch (never ``500``, never a hang) and ``201``
  after, and every add answered ``201`` is delivered.

Each prints its counts (and appends them to ``$TORQUE_FAULT_REPORT`` when
set), for the issue's closing note.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import time

import treq
from twisted.internet import defer, task, threads
from twisted.trial import unittest

from tests import redis_cluster
from tests.node import start_node, start_receiver, wait_for
from torque.cluster import key_slot

if shutil.which("redis-cli") is None:
    skip = "no redis-server/redis-cli on PATH"

# An add must be answered within this (every Redis call is bounded by the
# store's timeout): past it, it hung.
ANSWER_BOUND = 8.0


def cluster_url(ports) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def report(scenario: str, counts: dict) -> None:
    print(f"\n{scenario}: {counts}")
    path = os.environ.get("TORQUE_FAULT_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"scenario": scenario, **counts}) + "\n")


def owner_port(ports, slot: int) -> int | None:
    """The port of the primary that owns ``slot``, as the first of
    ``ports`` that answers says (None while none does)."""
    for port in ports:
        try:
            ranges = json.loads(redis_cluster.cli(port, "--json", "CLUSTER", "SLOTS"))
        except ValueError:
            continue
        for first, last, node, *_ in ranges:
            if first <= slot <= last:
                return node[1]
    return None


class Flow:
    """Adds at a steady rate through ``nodes``, round robin over
    ``queues``; every answer recorded as ``(sent, answered, status, id,
    queue)``."""

    def __init__(self, testcase, nodes, queues, hook_url: str, rate: float):
        self.nodes = nodes
        self.queues = queues
        self.hook_url = hook_url
        self.answers: list[tuple[float, float, object, str | None, str]] = []
        self.pending: list[defer.Deferred] = []
        self._n = 0
        self._loop = task.LoopingCall(self._one)
        self._loop.start(1.0 / rate)
        testcase.addCleanup(lambda: self._loop.running and self._loop.stop())

    def _one(self):
        node = self.nodes[self._n % len(self.nodes)]
        queue = self.queues[self._n % len(self.queues)]
        self._n += 1
        self.pending.append(defer.ensureDeferred(self._add(node, queue)))

    async def _add(self, node, queue):
        sent = time.time()
        try:
            response = await treq.post(
                node.url + "/hooks/add",
                data={"url": self.hook_url, "queue": queue},
                persistent=False,
                timeout=30,
            )
            content = await response.content()
            status = response.code
            body = json.loads(content) if content else {}
        except Exception as e:  # a hang or a dropped connection: asserted below
            status, body = f"no answer: {e!r}", {}
        self.answers.append((sent, time.time(), status, body.get("id"), queue))

    def accepted(self, after: float = 0.0) -> set[str]:
        return {a[3] for a in self.answers if a[2] == 201 and a[0] > after}

    @defer.inlineCallbacks
    def stop(self):
        self._loop.stop()
        yield defer.DeferredList(self.pending)


def arrivals(receiver, path="/hook") -> collections.Counter:
    return collections.Counter(r.headers["x-torque-task-id"] for r in receiver.to(path))


class SharedClusterTests(unittest.TestCase):
    """On the test run's three-primary cluster (tests/redis_cluster.py)."""

    timeout = 300

    def setUp(self):
        self.ports = redis_cluster.cluster_ports()
        self.url = cluster_url(self.ports)

    @defer.inlineCallbacks
    def test_thirty_queues_of_200_through_two_nodes_are_each_delivered_once(self):
        queues = [f"spread{i}" for i in range(30)]
        owners = {redis_cluster.owner_port(key_slot(f"{{{q}}}")) for q in queues}
        self.assertEqual(owners, set(self.ports), "the queues spread over every primary")
        receiver = start_receiver(self)
        options = [a for q in queues for a in ("--queue", q)]
        first = yield start_node(self, *options, redis=self.url)
        second = yield start_node(self, *options, redis=self.url, prefix=first.prefix)
        ids = []
        for n in range(60):  # 60 batches of 100: 200 tasks in each queue
            node = (first, second)[n % 2]
            batch = [
                {"url": receiver.url + "/hook", "queue": queues[(n * 100 + i) % 30]}
                for i in range(100)
            ]
            status, body, _ = yield node.post("/tasks/batch", json_body=batch)
            self.assertEqual(status, 200, body)
            self.assertEqual({r["status"] for r in body["results"]}, {201}, body)
            ids += [r["task"]["id"] for r in body["results"]]
        self.assertEqual(len(set(ids)), 6000)
        yield wait_for(
            lambda: set(arrivals(receiver)) >= set(ids), timeout=240, what="6,000 deliveries"
        )
        delivered = arrivals(receiver)
        twice = {i: n for i, n in delivered.items() if n > 1}
        per_queue = collections.Counter(r.headers["x-torque-queue"] for r in receiver.to("/hook"))
        report(
            "cluster: 30 queues x 200 tasks, two nodes",
            {
                "added": len(ids),
                "delivered": len(delivered),
                "twice": len(twice),
                "primaries": len(owners),
            },  # fmt: skip
        )
        self.assertEqual(twice, {})
        self.assertEqual(set(per_queue.values()), {200})

    @defer.inlineCallbacks
    def test_a_busy_queues_slot_moved_while_tasks_flow_loses_none(self):
        queue = "resharded"
        slot = key_slot(f"{{{queue}}}")
        source = redis_cluster.owner_port(slot)
        target = next(p for p in self.ports if p != source)
        self.addCleanup(lambda: redis_cluster.owner_port(slot) == source
                        or redis_cluster.move_slot(slot, target, source))  # fmt: skip
        receiver = start_receiver(self)
        node = yield start_node(self, "--queue", queue, redis=self.url)
        flow = Flow(self, [node], [queue], receiver.url + "/hook", rate=40)
        yield wait_for(lambda: len(flow.accepted()) >= 80, timeout=60, what="adds before")
        # A backlog in the slot, falling due while it moves and after.
        backlog = []
        for _ in range(10):
            batch = [{"url": receiver.url + "/hook", "queue": queue, "delay": 2}] * 100
            status, body, _ = yield node.post("/tasks/batch", json_body=batch)
            self.assertEqual(status, 200, body)
            backlog += [r["task"]["id"] for r in body["results"]]
        # As redis-cli --cluster reshard does it, in a thread while the adds
        # and deliveries go on: the slot marked migrating, its keys moved
        # (MIGRATE, 100 at a time), the slot given to the target.
        moved_at = time.time()
        yield threads.deferToThread(redis_cluster.move_slot, slot, source, target)
        ended_at = time.time()
        self.assertEqual(redis_cluster.owner_port(slot), target)
        yield wait_for(lambda: len(flow.accepted(after=ended_at)) >= 40, timeout=60,
                       what="adds after the move")  # fmt: skip
        yield flow.stop()
        accepted = flow.accepted() | set(backlog)
        yield wait_for(lambda: set(arrivals(receiver)) >= accepted, timeout=90,
                       what="every accepted task delivered")  # fmt: skip

        def queue_empty():
            d = node.get(f"/queues/{queue}")
            return d.addCallback(
                lambda answer: (
                    answer[0] == 200 and answer[1]["scheduled"] == answer[1]["running"] == 0
                )
            )

        yield wait_for(queue_empty, timeout=60, what="no task left scheduled or running")
        statuses = collections.Counter(a[2] for a in flow.answers)
        during = [a for a in flow.answers if moved_at <= a[0] <= ended_at]
        delivered = arrivals(receiver)
        report(
            "cluster: a busy queue's slot resharded while tasks flow",
            {
                "added": len(flow.answers),
                "answers": dict(statuses),
                "backlog": len(backlog),
                "move s": round(ended_at - moved_at, 2),
                "adds during the move": len(during),
                "delivered": len(delivered),
                "twice": sum(n - 1 for n in delivered.values() if n > 1),
            },  # fmt: skip
        )
        self.assertEqual(set(statuses) - {201, 503}, set(), f"answers: {statuses}")
        self.assertTrue(during, "no add was made during the move")
        self.assertEqual(accepted - set(delivered), set(), "accepted tasks lost")


class PrimaryKilledTests(unittest.TestCase):
    """A cluster of its own, three primaries with a replica each: one
    primary is killed with ``kill -9`` while tasks flow."""

    timeout = 300

    @defer.inlineCallbacks
    def test_kill_9_of_a_primary_loses_no_accepted_task(self):
        ports, processes = redis_cluster.start_cluster(3, replicas=1)
        self.addCleanup(lambda: [p.kill() for p in processes.values()])
        primaries = ports[:3]
        url = cluster_url(primaries)
        queues = [f"k{i}" for i in range(9)]
        receiver = start_receiver(self)
        options = [a for q in queues for a in ("--queue", q)] + ["--redis-wait-replicas", "1"]
        first = yield start_node(self, *options, redis=url)
        second = yield start_node(self, *options, redis=url, prefix=first.prefix)
        flow = Flow(self, [first, second], queues, receiver.url + "/hook", rate=40)
        yield wait_for(lambda: len(flow.accepted()) >= 80, timeout=60, what="adds before")

        victim_slot = key_slot(f"{{{queues[0]}}}")
        victim = owner_port(ports, victim_slot)
        on_victim = {q for q in queues if owner_port(ports, key_slot(f"{{{q}}}")) == victim}
        command = processes[victim].args
        processes[victim].kill()  # kill -9
        killed = time.time()
        others = [p for p in ports if p != victim]
        yield wait_for(
            lambda: owner_port(others, victim_slot) not in (None, victim),
            timeout=90,
            what="the replica to take over",
        )
        promoted_at = time.time()
        # Its replica is now a primary without one: --redis-wait-replicas 1
        # needs the old primary back, as its replica (same nodes.conf).
        processes[victim] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        yield wait_for(
            lambda: "master_link_status:up" in redis_cluster.cli(victim, "INFO", "replication"),
            timeout=90,
            what="the old primary to rejoin as a replica",
        )
        rejoined_at = time.time()
        yield wait_for(
            lambda: any(a[2] == 201 and a[0] > rejoined_at for a in flow.answers
                        if a[3] and a[3].startswith(f"{queues[0]}.")),
            timeout=90,
            what="a 201 for the killed primary's queue again",
        )  # fmt: skip
        yield flow.stop()
        accepted = flow.accepted()
        yield wait_for(lambda: set(arrivals(receiver)) >= accepted, timeout=120,
                       what="every accepted task delivered")  # fmt: skip
        statuses = collections.Counter(a[2] for a in flow.answers)
        refused = [a for a in flow.answers if a[2] == 503]
        # The other primaries' queues: refused only while the cluster had a
        # slot without a primary (Redis answers CLUSTERDOWN for every slot
        # then), not until the dead primary's replacement had a replica.
        others_refused = [a for a in refused if a[4] not in on_victim]
        others_late = [a for a in others_refused if a[0] > promoted_at + 2]
        recovered = min(
            (a[1] for a in flow.answers if a[2] == 201 and a[0] > killed
             and a[3].startswith(f"{queues[0]}.")),
            default=None,
        )  # fmt: skip
        delivered = arrivals(receiver)
        report(
            "cluster: kill -9 of a primary, --redis-wait-replicas 1",
            {"added": len(flow.answers), "answers": dict(statuses),
             "promotion s": round(promoted_at - killed, 2),
             "old primary rejoined s": round(rejoined_at - killed, 2),
             "first 201 on its queue again s": round(recovered - killed, 2),
             "refused, other primaries' queues": len(others_refused),
             "delivered": len(delivered),
             "twice": sum(n - 1 for n in delivered.values() if n > 1),
             "longest answer s": round(max(a[1] - a[0] for a in flow.answers), 2)},
        )  # fmt: skip
        self.assertEqual(set(statuses) - {201, 503}, set(), f"answers: {statuses}")
        self.assertTrue(refused, "no add was refused while the slot had no primary")
        self.assertLess(max(a[1] - a[0] for a in flow.answers), ANSWER_BOUND, "an add hung")
        self.assertEqual(accepted - set(delivered), set(), "accepted tasks lost")
        self.assertEqual(others_late, [], "another primary's queue refused after the promotion")
