"""Adding many tasks in one round trip (``Store.add_many``, behind
``POST /tasks/batch``) and the coalescing of single adds into it, held
against a real redis-server and the in-memory double."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.node import wait_for
from tests.redis_server import RealRedisStore
from tests.test_store import NOW, claim, make_task
from torque import scripts


class AddManyContract:
    """Tests every store must pass; ``self.store`` is set in ``setUp``."""

    @defer.inlineCallbacks
    def test_tasks_are_stored_in_order_each_claimable(self):
        tasks = [
            make_task("q.t1"),
            make_task("q.t2", due_at=NOW + 1),
            make_task("q.t3", queue="other"),
        ]
        added = yield self.store.add_many(tasks)
        self.assertEqual(added, [("q.t1", True), ("q.t2", True), ("q.t3", True)])
        got = yield claim(self.store, now=NOW + 1)
        self.assertEqual([t.id for t in got.tasks], ["q.t1", "q.t2"])
        other = yield claim(self.store, queue="other")
        self.assertEqual(other.tasks, [make_task("q.t3", queue="other", attempts=1)])

    @defer.inlineCallbacks
    def test_a_name_taken_earlier_in_the_same_call_is_a_duplicate(self):
        tasks = [
            make_task("q.t1", name="n"),
            make_task("q.t2", name="n"),
            make_task("q.t3", name="m"),
        ]
        added = yield self.store.add_many(tasks)
        self.assertEqual(added, [("q.t1", True), ("q.t1", False), ("q.t3", True)])
        self.assertIsNone((yield self.store.describe("q.t2")))
        got = yield claim(self.store)
        self.assertEqual([t.id for t in got.tasks], ["q.t1", "q.t3"])

    @defer.inlineCallbacks
    def test_a_name_held_by_a_live_task_is_a_duplicate_and_the_rest_are_added(self):
        yield self.store.add(make_task("q.t0", name="n"))
        added = yield self.store.add_many([make_task("q.t1"), make_task("q.t2", name="n")])
        self.assertEqual(added, [("q.t1", True), ("q.t0", False)])
        self.assertIsNone((yield self.store.describe("q.t2")))

    @defer.inlineCallbacks
    def test_the_same_name_in_another_queue_is_another_task(self):
        tasks = [make_task("q.t1", name="n"), make_task("q.t2", name="n", queue="other")]
        added = yield self.store.add_many(tasks)
        self.assertEqual(added, [("q.t1", True), ("q.t2", True)])

    @defer.inlineCallbacks
    def test_no_tasks_is_no_change(self):
        self.assertEqual((yield self.store.add_many([])), [])
        self.assertEqual((yield claim(self.store)).tasks, [])


class MemoryAddManyTests(AddManyContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()


class CountingRedis:
    """The real pool, with a count of the script calls made through it."""

    def __init__(self, redis):
        self.redis = redis
        self.scripts: list[str] = []

    def eval(self, script, keys, args):
        self.scripts.append(script)
        return self.redis.eval(script, keys, args)

    def __getattr__(self, name):
        return getattr(self.redis, name)


class RedisAddManyTests(RealRedisStore, AddManyContract, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.counting = CountingRedis(self.redis)
        self.store = self.make_store()

    def make_store(self, **kw):
        from torque.store import RedisStore

        counting = getattr(self, "counting", self.redis)
        return RedisStore(counting, reactor, self.keys, **kw)

    @defer.inlineCallbacks
    def test_many_tasks_are_one_script_call(self):
        added = yield self.store.add_many([make_task(f"q.t{i}") for i in range(100)])
        self.assertEqual(len(added), 100)
        self.assertEqual(len(self.counting.scripts), 1)
        self.assertIs(self.counting.scripts[0], scripts.ADD)

    @defer.inlineCallbacks
    def test_adds_made_in_one_turn_are_one_script_call(self):
        """Requests that arrive together are stored together."""
        added = yield defer.gatherResults(
            [
                self.store.add(make_task(f"q.t{i}", name="n" if i in (3, 7) else None))
                for i in range(20)
            ]
        )
        expected = [(f"q.t{i}", True) for i in range(20)]
        expected[7] = ("q.t3", False)
        self.assertEqual(added, expected)
        self.assertEqual(len(self.counting.scripts), 1)
        yield self.store.add(make_task("q.t20"))
        self.assertEqual(len(self.counting.scripts), 2, "a later turn: a call of its own")

    @defer.inlineCallbacks
    def test_each_queue_is_woken_once_with_its_earliest_due_time(self):
        heard = yield self.listen(self.keys.wake("q"), self.keys.wake("other"))
        del heard[:]
        yield self.store.add_many(
            [
                make_task("q.t1", due_at=NOW + 5),
                make_task("q.t2", due_at=NOW + 2),
                make_task("q.t3", queue="other", due_at=NOW + 9),
                make_task("q.t4", due_at=NOW + 7),
            ]
        )
        yield wait_for(lambda: len(heard) >= 2)
        yield self.store.ping()  # anything more would have been published by now
        self.assertEqual(
            sorted(heard),
            sorted(
                [(self.keys.wake("q"), repr(NOW + 2)), (self.keys.wake("other"), repr(NOW + 9))]
            ),
        )

    @defer.inlineCallbacks
    def test_every_queue_is_registered(self):
        yield self.store.add_many([make_task("q.t1"), make_task("q.t2", queue="other")])
        names = yield self.redis.execute_command("ZRANGE", self.keys.queues, 0, -1)
        self.assertEqual(sorted(names), ["other", "q"])
