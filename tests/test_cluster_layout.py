"""The key layout on a real three-primary Redis Cluster (tests/redis_cluster.py):
every script of the store runs on the primary that owns its queue's slot,
with no CROSSSLOT and no "non local key" refusal, and queues spread over
every primary.  The store talks to the cluster through torque.cluster's
``ClusterConnection`` (scripts) and, for its few plain commands, a thin
adapter here that routes each by its key (the node's own wiring is
torque.cluster's business)."""

from __future__ import annotations

import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.redis_cluster import cli, cluster_ports, cluster_seeds, owner_port
from tests.test_store import NOW, make_task
from torque.cluster import ClusterConnection, key_slot
from torque.connection import connect_pool
from torque.keys import Keys
from torque.retry import Dead, Delivered, Retry
from torque.storage import NodeInfo
from torque.store import RedisStore


class ByKey:
    """txredisapi's interface over a cluster: ``eval`` as
    :class:`ClusterConnection` routes it, any other command to the owner of
    its first argument (its key)."""

    def __init__(self, cluster: ClusterConnection):
        self.cluster = cluster

    def eval(self, script, keys, args):
        return self.cluster.eval(script, keys, args)

    def ping(self):
        return self.cluster.ping()

    def execute_command(self, name, key, *args):
        slot = key_slot(key)
        return self.cluster.execute(slot, lambda redis: redis.execute_command(name, key, *args))

    def __getattr__(self, method):
        def call(key, *args):
            return self.cluster.execute(key_slot(key), lambda r: getattr(r, method)(key, *args))

        return call


class ClusterLayoutTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.cluster = ClusterConnection(
            cluster_seeds()[:1], lambda address: connect_pool(address, reactor=reactor), reactor
        )
        self.addCleanup(self.cluster.disconnect)
        self.keys = Keys(f"test:{uuid.uuid4().hex[:12]}:")
        self.store = RedisStore(ByKey(self.cluster), reactor, self.keys, dead_max=1)

    @defer.inlineCallbacks
    def test_the_stores_work_runs_on_each_queues_own_primary(self):
        store, queues = self.store, [f"q{i}" for i in range(12)]
        # One call adds to every queue: one ADD per queue, each in its slot.
        added = yield store.add_many(
            [make_task(f"{q}.t{i}", queue=q, due_at=NOW - 1, name=f"n{i}") for q in queues
             for i in range(3)]
        )  # fmt: skip
        self.assertEqual(len(added), 36)
        self.assertTrue(all(created for _, created in added))
        for queue in queues:
            claimed = (yield store.claim(queue, NOW, 10, 5.0, 1)).tasks
            self.assertEqual(len(claimed), 3, queue)
            yield store.renew([(queue, t.id, t.attempts) for t in claimed], NOW + 1)
            a, b, c = claimed
            outcomes = [(a, Delivered(200)), (b, Retry(NOW + 5, 500, "x")), (c, Dead(410, "no"))]
            self.assertEqual((yield store.settle(queue, outcomes, NOW + 1)), 3)
            self.assertEqual((yield store.describe(a.id))["status"], "delivered")
            self.assertEqual((yield store.cancel(b.id)), "scheduled")
            self.assertEqual((yield store.retry_dead(queue, None, NOW + 2)), 1)
            self.assertEqual((yield store.run_now(c.id, NOW + 2))[0], "scheduled")
            yield store.pause(queue)
            yield store.resume(queue)
            yield store.set_settings(queue, {"rate": 2.0})
            page = yield store.task_page(queue, "scheduled")
            self.assertEqual([task_id for task_id, _ in page.tasks], [c.id])
        stats = yield store.queue_stats(queues, NOW + 2)
        self.assertEqual([(s.name, s.scheduled, s.delivered) for s in stats],
                         [(q, 1, 1) for q in queues])  # fmt: skip
        listed = yield store.queue_page(None, 100, NOW + 2, names_only=True)
        self.assertEqual(listed.queues, sorted(queues))
        yield store.beat(NodeInfo("n1", "h", 1, "0.1", None, 0, NOW, NOW), 15.0)
        self.assertEqual([n.id for n in (yield store.live_nodes())], ["n1"])
        self.assertEqual((yield store.completion_key("k1")), "k1")
        # The queues are spread over every primary, each whole on one.
        owners = {owner_port(key_slot(self.keys.due(q))) for q in queues}
        self.assertEqual(owners, set(cluster_ports()))
        for queue in queues[:3]:
            port = owner_port(key_slot(self.keys.due(queue)))
            task_key = self.keys.task(queue, f"{queue}.t0")
            self.assertEqual(
                cli(port, "EXISTS", task_key), "1", "the task is on its queue's primary"
            )
