"""The store's contract, held against a real redis-server (every Lua script)
and against the in-memory double the unit tests use."""

import attrs
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.node import wait_for
from tests.redis_server import fresh_keys, redis_address
from torque.connection import RedisAddress, connect_pool
from torque.retry import Dead, Delivered, Retry
from torque.store import RedisStore, StoreUnavailable
from torque.task import Task

NOW = 1_800_000_000.0
TIMEOUT = 60.0
MAX_ERRORS = 20


def make_task(task_id="t1", queue="q", due_at=NOW, **kw) -> Task:
    return Task(
        id=task_id,
        queue=queue,
        url="http://example.com/hook",
        body="a=1",
        content_type="application/x-www-form-urlencoded",
        due_at=due_at,
        created_at=NOW,
        **kw,
    )


def claim(store, now=NOW, limit=10, queue="q"):
    return store.claim(queue, now, limit, TIMEOUT, MAX_ERRORS)


class StoreContract:
    """Tests every store must pass; ``self.store`` is set in ``setUp``."""

    lease = TIMEOUT + 30.0

    @defer.inlineCallbacks
    def test_added_task_is_claimed_with_its_fields(self):
        task = make_task(name="n1", headers={"X-A": "b"}, timeout=5.0, max_errors=3)
        added = yield self.store.add(task)
        self.assertEqual(added, ("t1", True))
        got = yield claim(self.store)
        self.assertEqual(got.tasks, [attrs.evolve(task, attempts=1)])

    @defer.inlineCallbacks
    def test_task_is_not_claimed_before_it_is_due(self):
        yield self.store.add(make_task(due_at=NOW + 2))
        early = yield claim(self.store, now=NOW + 1.999)
        self.assertEqual((early.tasks, early.next_at), ([], NOW + 2))
        due = yield claim(self.store, now=NOW + 2)
        self.assertEqual([t.id for t in due.tasks], ["t1"])

    @defer.inlineCallbacks
    def test_claim_takes_at_most_limit_in_due_order(self):
        for i, offset in enumerate([3, 1, 2, 0]):
            yield self.store.add(make_task(f"t{i}", due_at=NOW + offset))
        got = yield claim(self.store, now=NOW + 10, limit=3)
        self.assertEqual([t.id for t in got.tasks], ["t3", "t1", "t2"])
        rest = yield claim(self.store, now=NOW + 10, limit=3)
        self.assertEqual([t.id for t in rest.tasks], ["t0"])

    @defer.inlineCallbacks
    def test_claimed_task_is_not_claimed_again_while_leased(self):
        yield self.store.add(make_task())
        yield claim(self.store)
        again = yield claim(self.store, now=NOW + self.lease - 0.01)
        self.assertEqual(again.tasks, [])
        self.assertEqual(again.next_at, NOW + self.lease)

    @defer.inlineCallbacks
    def test_expired_lease_makes_task_due_again(self):
        yield self.store.add(make_task())
        yield claim(self.store)
        again = yield claim(self.store, now=NOW + self.lease)
        self.assertEqual([(t.id, t.attempts) for t in again.tasks], [("t1", 2)])
        info = yield self.store.describe("t1")
        self.assertIn("lease expired", info["last_error"])

    @defer.inlineCallbacks
    def test_lease_is_the_tasks_own_timeout_plus_margin(self):
        yield self.store.add(make_task(timeout=5.0))
        first = yield claim(self.store)
        self.assertEqual(first.next_at, NOW + 5.0 + 30.0)

    @defer.inlineCallbacks
    def test_expired_lease_on_last_attempt_buries_task(self):
        yield self.store.add(make_task(max_errors=1))
        yield claim(self.store)
        again = yield claim(self.store, now=NOW + self.lease)
        self.assertEqual(again.tasks, [])
        info = yield self.store.describe("t1")
        self.assertEqual(info["status"], "dead")

    @defer.inlineCallbacks
    def test_delivered_task_is_reported_delivered(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        applied = yield self.store.settle("q", [(task, Delivered(200))], NOW + 1)
        self.assertEqual(applied, 1)
        info = yield self.store.describe("t1")
        self.assertEqual((info["status"], info["last_status"]), ("delivered", "200"))
        self.assertEqual(float(info["delivered_at"]), NOW + 1)
        nothing = yield claim(self.store, now=NOW + 1000)
        self.assertEqual((nothing.tasks, nothing.next_at), ([], None))

    @defer.inlineCallbacks
    def test_retry_reschedules_at_the_given_time(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Retry(NOW + 4, 503, "HTTP 503"))], NOW + 1)
        info = yield self.store.describe("t1")
        self.assertEqual((info["status"], info["last_error"]), ("scheduled", "HTTP 503"))
        early = yield claim(self.store, now=NOW + 3.99)
        self.assertEqual((early.tasks, early.next_at), ([], NOW + 4))
        due = yield claim(self.store, now=NOW + 4)
        self.assertEqual([(t.id, t.attempts) for t in due.tasks], [("t1", 2)])

    @defer.inlineCallbacks
    def test_dead_task_is_kept_with_its_error(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Dead(404, "refused: HTTP 404"))], NOW + 1)
        info = yield self.store.describe("t1")
        self.assertEqual(
            (info["status"], info["last_status"], info["last_error"]),
            ("dead", "404", "refused: HTTP 404"),
        )

    @defer.inlineCallbacks
    def test_settle_applies_a_batch_in_one_call(self):
        for i in range(3):
            yield self.store.add(make_task(f"t{i}"))
        t0, t1, t2 = (yield claim(self.store)).tasks
        applied = yield self.store.settle(
            "q",
            [(t0, Delivered(200)), (t1, Retry(NOW + 9, None, "timeout")), (t2, Dead(410, "x"))],
            NOW + 1,
        )
        self.assertEqual(applied, 3)
        infos = yield defer.gatherResults([self.store.describe(f"t{i}") for i in range(3)])
        statuses = [info["status"] for info in infos]
        self.assertEqual(statuses, ["delivered", "scheduled", "dead"])

    @defer.inlineCallbacks
    def test_outcome_of_a_superseded_attempt_is_ignored(self):
        yield self.store.add(make_task())
        (stale,) = (yield claim(self.store)).tasks
        (current,) = (yield claim(self.store, now=NOW + self.lease)).tasks
        applied = yield self.store.settle("q", [(stale, Delivered(200))], NOW + self.lease)
        self.assertEqual(applied, 0)
        self.assertEqual((yield self.store.describe("t1"))["status"], "running")
        applied = yield self.store.settle("q", [(current, Delivered(200))], NOW + self.lease)
        self.assertEqual(applied, 1)

    @defer.inlineCallbacks
    def test_duplicate_name_answers_with_the_existing_task(self):
        yield self.store.add(make_task("t1", name="once"))
        again = yield self.store.add(make_task("t2", name="once"))
        self.assertEqual(again, ("t1", False))
        self.assertIsNone((yield self.store.describe("t2")))

    @defer.inlineCallbacks
    def test_name_is_kept_after_delivery(self):
        yield self.store.add(make_task("t1", name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200))], NOW + 1)
        again = yield self.store.add(make_task("t2", name="once"))
        self.assertEqual(again, ("t1", False))

    @defer.inlineCallbacks
    def test_dead_task_releases_its_name(self):
        yield self.store.add(make_task("t1", name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Dead(400, "no"))], NOW + 1)
        again = yield self.store.add(make_task("t2", name="once"))
        self.assertEqual(again, ("t2", True))

    @defer.inlineCallbacks
    def test_same_name_in_another_queue_is_another_task(self):
        yield self.store.add(make_task("t1", name="once"))
        other = yield self.store.add(make_task("t2", queue="other", name="once"))
        self.assertEqual(other, ("t2", True))

    @defer.inlineCallbacks
    def test_paused_queue_is_not_claimed(self):
        yield self.store.add(make_task())
        yield self.store.pause("q")
        self.assertEqual((yield claim(self.store)).tasks, [])
        yield self.store.resume("q")
        self.assertEqual([t.id for t in (yield claim(self.store)).tasks], ["t1"])

    @defer.inlineCallbacks
    def test_cancel_removes_a_scheduled_task(self):
        yield self.store.add(make_task(name="once"))
        self.assertEqual((yield self.store.cancel("t1")), "scheduled")
        self.assertIsNone((yield self.store.describe("t1")))
        self.assertEqual((yield claim(self.store)).tasks, [])
        self.assertEqual((yield self.store.add(make_task("t2", name="once"))), ("t2", True))

    @defer.inlineCallbacks
    def test_cancelled_running_task_drops_its_outcome(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        self.assertEqual((yield self.store.cancel("t1")), "running")
        applied = yield self.store.settle("q", [(task, Retry(NOW + 1, 500, "x"))], NOW)
        self.assertEqual(applied, 0)
        self.assertEqual((yield claim(self.store, now=NOW + 10)).tasks, [])

    @defer.inlineCallbacks
    def test_cancel_of_unknown_task(self):
        self.assertEqual((yield self.store.cancel("nope")), "")


class MemoryStoreTests(StoreContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()


class RedisStoreTests(StoreContract, unittest.TestCase):
    """Against a real redis-server, under a fresh key prefix per test."""

    def setUp(self):
        self.redis = connect_pool(redis_address())
        self.addCleanup(self.redis.disconnect)
        self.keys = fresh_keys()
        self.store = RedisStore(self.redis, reactor, self.keys)

    @defer.inlineCallbacks
    def test_concurrent_claimers_never_share_a_task(self):
        other = connect_pool(redis_address())
        self.addCleanup(other.disconnect)
        rival = RedisStore(other, reactor, self.keys)
        yield defer.gatherResults([self.store.add(make_task(f"t{i}")) for i in range(300)])
        claims = yield defer.gatherResults(
            [claim(store, limit=7) for _ in range(30) for store in (self.store, rival)]
        )
        ids = [task.id for c in claims for task in c.tasks]
        self.assertEqual(len(ids), 300)
        self.assertEqual(len(set(ids)), 300)

    @defer.inlineCallbacks
    def test_task_written_with_plain_redis_commands_is_claimed(self):
        """The README's recipe for adding a task from another language."""
        k = self.keys
        yield self.redis.execute_command(
            "HSET", k.task("ext1"), "queue", "q", "url", "http://example.com/hook",
            "body", "foo=bar", "created_at", str(NOW),
        )  # fmt: skip
        yield self.redis.execute_command("ZADD", k.due("q"), str(NOW), "ext1")
        (task,) = (yield claim(self.store)).tasks
        self.assertEqual(
            (task.id, task.method, task.url, task.body, task.content_type, task.attempts),
            ("ext1", "POST", "http://example.com/hook", "foo=bar",
             "application/x-www-form-urlencoded", 1),
        )  # fmt: skip

    @defer.inlineCallbacks
    def test_add_publishes_a_wake_up_with_the_due_time(self):
        from torque.connection import WakeSubscriber

        heard = []
        sub = WakeSubscriber(redis_address(), [self.keys.wake("q")], lambda *m: heard.append(m))
        sub.start(reactor)
        self.addCleanup(sub.disconnect)
        yield wait_for(lambda: heard, what="the subscription")
        self.assertEqual(heard, [(self.keys.wake("q"), None)], "a 'look now' on subscribing")
        yield self.store.add(make_task(due_at=NOW + 5))
        yield wait_for(lambda: len(heard) == 2)
        self.assertEqual(heard[1], (self.keys.wake("q"), repr(NOW + 5)))

    @defer.inlineCallbacks
    def test_stats_count_deliveries_and_failures(self):
        for i in range(3):
            yield self.store.add(make_task(f"t{i}"))
        t0, t1, t2 = (yield claim(self.store)).tasks
        yield self.store.settle(
            "q", [(t0, Delivered(200)), (t1, Retry(NOW, 500, "x")), (t2, Dead(400, "y"))], NOW
        )
        stats = yield self.redis.hgetall(self.keys.stats("q"))
        self.assertEqual(stats, {"delivered": "1", "failed": "2"})


class UnavailableRedisTests(unittest.TestCase):
    """A Redis that doesn't answer makes calls fail within the timeout."""

    def test_call_fails_with_store_unavailable_after_timeout(self):
        redis = connect_pool(RedisAddress(path=self.mktemp() + ".sock"))
        self.addCleanup(redis.disconnect)
        clock = Clock()
        store = RedisStore(redis, clock, fresh_keys(), timeout=2.0)
        d = store.add(make_task())
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, StoreUnavailable)
