"""The store's contracts against a real three-primary Redis Cluster
(tests/redis_cluster.py): :class:`RedisStore` over a
:class:`ClusterConnection`, the third store beside one Redis and the
in-memory double, and what only a cluster does (sharded wake-ups, the
``--redis-wait-replicas`` pipeline routed whole)."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests import (
    test_store,
    test_store_add_many,
    test_store_delivered,
    test_store_hosts,
    test_store_later,
    test_store_pages,
    test_store_settings,
    test_store_windows,
)
from tests.node import wait_for
from tests.redis_cluster import PER_QUEUE_SLOTS, cluster_keys, cluster_seeds
from tests.test_store import NOW, claim, make_task
from torque import scripts
from torque.cluster import ClusterConnection
from torque.cluster_slots import key_slot
from torque.cluster_wake import ShardedSubscriber
from torque.connection import connect_pool
from torque.storage import StoreUnavailable
from torque.store import RedisStore


class TestCluster(ClusterConnection):
    """A ClusterConnection that answers ``KEYS`` too, from every primary
    (a test looks at which keys are left)."""

    @defer.inlineCallbacks
    def keys(self, pattern: str):
        yield self.reload()
        found = yield defer.gatherResults(
            [self._pool(node).keys(pattern) for node in sorted(self.map.primaries)]
        )
        return [key for keys in found for key in keys]


def connect_cluster() -> TestCluster:
    return TestCluster(
        cluster_seeds(), lambda address: connect_pool(address, reactor=reactor), reactor
    )


class RealClusterStore:
    """A test case's ``setUp`` for the store against the run's cluster:
    ``self.redis`` (a ClusterConnection), ``self.keys``, ``self.store``."""

    timeout = 120

    def setUp(self):
        self.redis = connect_cluster()
        self.addCleanup(self.redis.disconnect)
        self.keys = cluster_keys()
        self.store = self.make_store()

    def make_store(self, **kw) -> RedisStore:
        return RedisStore(self.redis, reactor, self.keys, **kw)

    @defer.inlineCallbacks
    def listen(self, *channels: str):
        """As :meth:`tests.redis_server.RealRedisStore.listen`, through
        sharded pub/sub."""
        heard = []
        subscriber = ShardedSubscriber(self.redis, reactor, lambda *m: heard.append(m))
        self.addCleanup(subscriber.disconnect)
        for channel in channels:
            yield subscriber.subscribe(channel)
        yield wait_for(lambda: len(heard) >= len(channels), what="the subscriptions")
        return heard


class ClusterStoreTests(RealClusterStore, test_store.RedisStoreTests):
    """Every test of the store against one Redis, against the cluster
    (the contract's and those that look at the keys themselves)."""

    @defer.inlineCallbacks
    def test_concurrent_claimers_never_share_a_task(self):
        other = connect_cluster()
        self.addCleanup(other.disconnect)
        rival = RedisStore(other, reactor, self.keys)
        yield defer.gatherResults([self.store.add(make_task(f"t{i}")) for i in range(300)])
        claims = yield defer.gatherResults(
            [claim(store, limit=7) for _ in range(30) for store in (self.store, rival)]
        )
        ids = [task.id for c in claims for task in c.tasks]
        self.assertEqual(len(ids), 300)
        self.assertEqual(len(set(ids)), 300)


class ClusterScriptEdgeTests(RealClusterStore, test_store.RedisScriptEdgeTests):
    pass


class CountingCluster(test_store_add_many.CountingRedis):
    is_cluster = True


class ClusterAddManyTests(RealClusterStore, test_store_add_many.RedisAddManyTests):
    def setUp(self):
        super().setUp()
        self.counting = CountingCluster(self.redis)
        self.store = self.make_store()

    def make_store(self, **kw):
        return RedisStore(getattr(self, "counting", self.redis), reactor, self.keys, **kw)

    @defer.inlineCallbacks
    def test_many_tasks_are_one_script_call(self):
        added = yield self.store.add_many([make_task(f"t{i}") for i in range(100)])
        self.assertEqual(len(added), 100)
        self.assertEqual(len(self.counting.scripts), 1)
        # The script as a cluster runs it: publishing with SPUBLISH.
        self.assertIs(self.counting.scripts[0], scripts.sharded(scripts.ADD))


class ClusterDeliveredTests(
    RealClusterStore, test_store_delivered.DeliveredTaskForgetsItsContentTests
):
    pass


class ClusterHostClaimTests(RealClusterStore, test_store_hosts.RedisHostClaimTests):
    pass


class ClusterLaterTests(RealClusterStore, test_store_later.RedisLaterTests):
    pass


class ClusterTaskPageTests(RealClusterStore, test_store_pages.RedisTaskPageTests):
    pass


class ClusterSettingsTests(RealClusterStore, test_store_settings.RedisSettingsTests):
    pass


class ClusterWindowTests(RealClusterStore, test_store_windows.RedisWindowTests):
    pass


class ClusterOnlyTests(RealClusterStore, unittest.TestCase):
    @defer.inlineCallbacks
    def test_an_adds_wake_up_comes_through_sharded_pub_sub(self):
        heard = []
        subscriber = ShardedSubscriber(self.redis, reactor, lambda *m: heard.append(m))
        self.addCleanup(subscriber.disconnect)
        channel = self.keys.wake("q")
        yield subscriber.subscribe(channel)
        yield wait_for(lambda: (channel, None) in heard, what="the subscription")
        yield self.store.add(make_task("t1", due_at=NOW + 5))
        yield wait_for(lambda: (channel, repr(NOW + 5)) in heard, what="the add's wake-up")

    @defer.inlineCallbacks
    def test_an_add_waiting_for_replicas_runs_the_script_and_wait_on_its_primary(self):
        # The run's cluster has no replicas: WAIT answers 0 after its wait.
        store = self.make_store(wait_replicas=1, timeout=10.0)
        task = make_task("t1")
        with self.assertRaises(StoreUnavailable) as caught:
            yield store.add(task)
        self.assertIn("only 0 of 1", str(caught.exception))
        # The script ran where its keys are: the task is there.
        self.assertEqual((yield self.store.describe(task.id))["status"], "scheduled")

    @defer.inlineCallbacks
    def test_health_pings_every_primary(self):
        self.assertEqual((yield self.store.ping()), "PONG")
        self.assertEqual(len(self.redis.map.primaries), 3)

    @defer.inlineCallbacks
    def test_queues_spread_over_the_primaries(self):
        if not PER_QUEUE_SLOTS:
            raise unittest.SkipTest("needs every key of a queue under {queue} (issue 15 item 1)")
        queues = [f"q{i}" for i in range(12)]
        for queue in queues:
            yield self.store.add(make_task(f"{queue}-t", queue=queue))
        owners = {self.redis.node_for(key_slot(self.keys.due(q))) for q in queues}
        self.assertEqual(len(owners), 3)
        for queue in queues:
            self.assertEqual(len((yield claim(self.store, queue=queue)).tasks), 1, queue)


class ShardedScriptsTests(unittest.TestCase):
    def test_every_script_publishes_through_the_one_choice(self):
        published = []
        for name in dir(scripts):
            script = getattr(scripts, name)
            if not isinstance(script, str) or "redis.call" not in script:
                continue
            self.assertNotIn("'PUBLISH'", script.replace(scripts._PUBLISH, ""), name)
            if "redis.call(PUBLISH" in script and not name.startswith("_"):
                sharded = scripts.sharded(script)
                self.assertIn("local PUBLISH = 'SPUBLISH'", sharded, name)
                self.assertNotIn("'PUBLISH'", sharded, name)
                published.append(name)
        self.assertGreaterEqual(len(published), 5)  # ADD, RESUME, RUN_NOW, …

    def test_only_torques_scripts_are_sharded(self):
        with self.assertRaises(ValueError):
            scripts.sharded("return redis.call('PUBLISH', KEYS[1], 1)")
