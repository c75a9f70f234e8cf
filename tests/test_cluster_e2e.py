"""``twistd -n torque --redis redis+cluster://…`` end to end: real nodes on a
real three-primary Redis Cluster (tests/redis_cluster.py), delivering to a
real receiver."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for
from tests.redis_cluster import cli, cluster_keys, cluster_url, start_cluster
from torque.cluster_slots import key_slot

QUEUES = ("alpha", "beta", "gamma")
PER_QUEUE = 20


@defer.inlineCallbacks
def add(node, queue: str, url: str):
    status, body, _ = yield node.post(f"/queues/{queue}/tasks", data={"url": url})
    return status, body


class ClusterNodeTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_tasks_of_three_queues_are_delivered_once_through_sharded_wake_ups(self):
        """An API-only node takes the adds; a node that polls Redis once a
        minute delivers them: the wake-ups (SPUBLISH from the add script,
        SSUBSCRIBE on each queue's primary) are what make it look."""
        receiver = start_receiver(self)
        prefix = cluster_keys().prefix
        queues = [arg for queue in QUEUES for arg in ("--queue", queue)]
        worker = yield start_node(
            self, *queues, "--poll-interval", "60", redis=cluster_url(), prefix=prefix
        )
        front = yield start_node(self, "--queue", "none", redis=cluster_url(), prefix=prefix)
        yield wait_for(
            lambda: "torque node" in worker.output, what="the worker to start its schedulers"
        )
        ids = []
        for _round in range(2):  # the second after the schedulers' first sleep
            for queue in QUEUES:
                for _ in range(PER_QUEUE // 2):
                    status, body = yield add(front, queue, f"{receiver.url}/{queue}")
                    self.assertEqual(status, 201, body)
                    ids.append(body["id"])
            added = len(ids)
            yield wait_for(
                lambda n=added: len(receiver.requests) >= n, timeout=45, what="the deliveries"
            )
        for queue in QUEUES:
            self.assertEqual(len(receiver.to(f"/{queue}")), PER_QUEUE, queue)
        self.assertEqual(len(receiver.requests), len(ids), "each once")
        for task_id in ids:
            self.assertTrue((yield front.has_status(task_id, "delivered")), task_id)

    @defer.inlineCallbacks
    def test_an_every_queue_node_finds_queues_on_the_cluster(self):
        receiver = start_receiver(self)
        prefix = cluster_keys().prefix
        node = yield start_node(self, "--queue", "*", redis=cluster_url(), prefix=prefix)
        for queue in QUEUES:
            status, _ = yield add(node, queue, f"{receiver.url}/{queue}")
            self.assertEqual(status, 201)
        yield wait_for(lambda: len(receiver.requests) == len(QUEUES), what="the deliveries")
        self.assertEqual(sorted(r.path for r in receiver.requests), [f"/{q}" for q in QUEUES])

    @defer.inlineCallbacks
    def test_workers_take_the_cluster_url_as_it_is(self):
        receiver = start_receiver(self)
        node = yield start_node(
            self, "--workers", "2", "--queue", "alpha", redis=cluster_url(),
            prefix=cluster_keys().prefix,
        )  # fmt: skip
        for _ in range(10):
            status, _ = yield add(node, "alpha", f"{receiver.url}/w")
            self.assertEqual(status, 201)
        yield wait_for(lambda: len(receiver.to("/w")) == 10, what="the deliveries")


class ClusterPrimaryDownTests(unittest.TestCase):
    """A cluster of the test's own, one of whose primaries it kills."""

    timeout = 240

    @defer.inlineCallbacks
    def test_a_primary_down_is_a_503_on_health_and_the_other_slots_go_on(self):
        ports, processes = start_cluster(3, replicas=0)
        self.addCleanup(lambda: [p.kill() for p in processes.values()])
        receiver = start_receiver(self)
        keys = cluster_keys()
        node = yield start_node(
            self, "--queue", "alpha", redis=cluster_url(ports), prefix=keys.prefix
        )
        status, _ = yield add(node, "alpha", f"{receiver.url}/before")
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/before"), what="a delivery")

        # Kill a primary that holds none of alpha's keys, nor the registry
        # of queues (an add may write it).
        needed = {key_slot(keys.due("alpha")), key_slot(keys.queues)}
        victim = next(p for p in ports if not needed & _own_slots(p))
        processes[victim].kill()
        processes[victim].wait()

        def health_is(code):
            return node.get("/health").addCallback(lambda answer: answer[0] == code)

        yield wait_for(lambda: health_is(503), what="/health to report the primary")
        code, body = yield node.get("/health")
        self.assertIn(f"127.0.0.1:{victim}", json.dumps(body))
        status, _ = yield add(node, "alpha", f"{receiver.url}/after")
        self.assertEqual(status, 201, "a live primary's queue goes on")
        yield wait_for(lambda: receiver.to("/after"), what="a delivery")


def _own_slots(port: int) -> set[int]:
    """The slots the node on ``port`` serves (its CLUSTER NODES line)."""
    line = next(x for x in cli(port, "CLUSTER", "NODES").splitlines() if "myself" in x)
    slots = set()
    for part in line.split()[8:]:
        first, _, last = part.partition("-")
        slots.update(range(int(first), int(last or first) + 1))
    return slots
