"""Time windows the store keeps, against a real redis-server (every Lua
script) and the in-memory double: how long a delivered task's name holds,
and what a claim from a node whose clock is behind does to the rate bucket.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.redis_server import RealRedisStore
from tests.test_store import NOW, claim, make_task
from torque.retry import Delivered
from torque.storage import DELIVERED_TTL


class RateBucketContract:
    """``--rate`` is a token bucket shared by every node claiming the queue;
    nodes' clocks differ a little, and a claim stamped earlier than the
    bucket's last one must not be charged for the difference."""

    @defer.inlineCallbacks
    def test_a_claim_from_a_node_whose_clock_is_behind_takes_the_tokens_there(self):
        yield claim(self.store, now=NOW, rate=2.0)  # a full bucket, stamped NOW
        for i in range(3):
            yield self.store.add(make_task(f"q.t{i}", due_at=NOW - 10))
        behind = yield claim(self.store, now=NOW - 5, rate=2.0)
        self.assertEqual(len(behind.tasks), 2, "the bucket held two tokens")
        self.assertEqual((yield self.tokens()), 0.0, "never below empty")
        on_time = yield claim(self.store, now=NOW + 0.5, rate=2.0)
        self.assertEqual(len(on_time.tasks), 1)


class MemoryRateBucketTests(RateBucketContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()

    def tokens(self):
        return defer.succeed(self.store.buckets["q"][0])


class RedisWindowTests(RealRedisStore, RateBucketContract, unittest.TestCase):
    @defer.inlineCallbacks
    def tokens(self):
        value = yield self.redis.execute_command("HGET", self.keys.rate("q"), "tokens")
        return float(value)

    @defer.inlineCallbacks
    def test_a_delivered_named_task_holds_its_name_for_an_hour(self):
        self.assertEqual(DELIVERED_TTL, 3600)
        yield self.store.add(make_task("q.t1", name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200))], NOW)
        for key in (self.keys.name("q", "once"), self.keys.task("q", "q.t1")):
            ttl = yield self.redis.execute_command("PTTL", key)
            self.assertTrue(3590_000 < ttl <= 3600_000, f"{key} expires in {ttl} ms")
        again = yield self.store.add(make_task("q.t2", name="once"))
        self.assertEqual(again, ("q.t1", False), "a duplicate within the hour is the same task")
