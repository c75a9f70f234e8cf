"""A delivered task forgets what it carried: against the real redis-server,
its hash keeps no body and no headers (an ``Authorization`` among them)
for the hour it stays to answer ``GET /tasks/<id>``."""

from twisted.internet import defer
from twisted.trial import unittest

from tests.redis_server import RealRedisStore
from torque.retry import Delivered
from torque.task import FORM, Task

NOW = 1_800_000_000.0
SECRET = "Bearer s3cret-token"


class DeliveredTaskForgetsItsContentTests(RealRedisStore, unittest.TestCase):
    @defer.inlineCallbacks
    def test_delivered_task_hash_has_no_body_and_no_headers(self):
        task = Task(
            id="q.t1",
            queue="q",
            url="http://example.com/hook",
            body="card=4111111111111111",
            content_type=FORM,
            headers={"Authorization": SECRET, "X-Trace": "abc"},
            due_at=NOW,
            created_at=NOW,
        )
        yield self.store.add(task)
        stored = yield self.redis.hgetall(self.keys.task("q", "q.t1"))
        self.assertIn("headers", stored, "the test stores what it means to see dropped")
        self.assertIn("body", stored)
        (claimed,) = (yield self.store.claim("q", NOW, 10, 60.0, 20, 0.0)).tasks
        applied = yield self.store.settle("q", [(claimed, Delivered(200))], NOW + 1)
        self.assertEqual(applied, 1)
        kept = yield self.redis.hgetall(self.keys.task("q", "q.t1"))
        self.assertEqual(kept.get("delivered_at"), repr(NOW + 1))
        self.assertNotIn("body", kept)
        self.assertNotIn("headers", kept)
        for field, value in kept.items():
            self.assertNotIn("s3cret", value, field)
            self.assertNotIn("4111", value, field)
        info = yield self.store.describe("q.t1")
        self.assertEqual(info["status"], "delivered")
