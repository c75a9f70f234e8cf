"""Postponed and waiting tasks in the store, and a handler's word on a
waiting one (``complete``), against a real redis-server and the double."""

import attrs
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.redis_server import RealRedisStore
from tests.test_store import MAX_ERRORS, NOW, claim, make_task
from torque.retry import Dead, Delivered, Postponed, Retry, Waiting

NO_WORD = "no word from the handler by its deadline (Torque-Complete-Within)"


class LaterContract:
    @defer.inlineCallbacks
    def claimed(self, now=NOW, **kw):
        yield self.store.add(make_task(**kw))
        (task,) = (yield claim(self.store, now=now)).tasks
        return task

    @defer.inlineCallbacks
    def test_a_postponed_task_is_due_then_and_its_attempt_given_back(self):
        task = yield self.claimed()
        self.assertEqual(task.attempts, 1)
        applied = yield self.store.settle("q", [(task, Postponed(NOW + 60, 503), 0.2)], NOW)
        self.assertEqual(applied, 1)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], float(info["due_at"])), ("scheduled", NOW + 60))
        self.assertEqual((info["attempts"], info["last_status"]), ("0", "503"))
        self.assertNotIn("last_error", info)
        self.assertEqual(info["history"][0]["outcome"], "postponed")
        self.assertEqual((yield claim(self.store, now=NOW + 59)).tasks, [])
        (again,) = (yield claim(self.store, now=NOW + 60)).tasks
        self.assertEqual(again.attempts, 1, "the same attempt again")
        (stats,) = yield self.store.queue_stats(["q"], NOW + 60)
        self.assertEqual((stats.failed, stats.delivered), (0, 0), "no failed attempt counted")

    @defer.inlineCallbacks
    def test_a_postponed_last_attempt_is_not_buried(self):
        task = yield self.claimed(max_errors=1)
        yield self.store.settle("q", [(task, Postponed(NOW + 5, 202))], NOW)
        (again,) = (yield claim(self.store, now=NOW + 5)).tasks
        yield self.store.settle("q", [(again, Postponed(NOW + 10, 202))], NOW + 5)
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "scheduled")

    @defer.inlineCallbacks
    def test_a_waiting_task_is_leased_until_its_deadline(self):
        task = yield self.claimed()
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], info["last_status"]), ("waiting", "202"))
        self.assertEqual(info["history"][0]["outcome"], "waiting")
        self.assertEqual((yield claim(self.store, now=NOW + 599)).tasks, [], "not retried")
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual(stats.running, 1)
        page = yield self.store.task_page("q", "running")
        self.assertEqual([(i, f["status"]) for i, f in page.tasks], [("q.t1", "waiting")])

    @defer.inlineCallbacks
    def test_a_renewal_does_not_cut_a_waiting_tasks_lease_short(self):
        # A node's lease keeper may renew an attempt just after its outcome
        # (202, waiting) was recorded: the deadline stands.
        task = yield self.claimed()
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        lost = yield self.store.renew([("q", "q.t1", task.attempts)], NOW + 1)
        self.assertEqual(list(lost), ["q.t1"], "not renewed")
        self.assertEqual((yield claim(self.store, now=NOW + 599)).tasks, [], "still waiting")

    @defer.inlineCallbacks
    def test_no_word_by_the_deadline_is_a_failed_attempt(self):
        task = yield self.claimed()
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        (again,) = (yield claim(self.store, now=NOW + 600)).tasks
        self.assertEqual(again.attempts, 2)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], info["last_error"]), ("running", NO_WORD))
        self.assertEqual(info["history"][0]["outcome"], "retried")
        late = yield self.store.complete("q", task, Delivered(202), NOW + 601)
        self.assertFalse(late, "the word came after the deadline: the new attempt goes on")

    @defer.inlineCallbacks
    def test_no_word_on_the_last_attempt_buries_it(self):
        task = yield self.claimed(max_errors=1)
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        yield claim(self.store, now=NOW + 601)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], info["last_error"]), ("dead", NO_WORD))

    @defer.inlineCallbacks
    def test_complete_delivers_a_waiting_task_once(self):
        task = yield self.claimed()
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        self.assertTrue((yield self.store.complete("q", task, Delivered(202), NOW + 30)))
        info = yield self.store.describe("q.t1")
        self.assertEqual(info["status"], "delivered")
        self.assertNotIn("waiting_until", info)
        self.assertEqual([e["outcome"] for e in info["history"]], ["delivered", "waiting"])
        again = yield self.store.complete("q", task, Delivered(202), NOW + 31)
        self.assertFalse(again, "done already")

    @defer.inlineCallbacks
    def test_a_reported_failure_retries_or_buries(self):
        task = yield self.claimed()
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        failed = Retry(NOW + 90, None, "the handler reported: disk full")
        self.assertTrue((yield self.store.complete("q", task, failed, NOW + 30)))
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], float(info["due_at"])), ("scheduled", NOW + 90))
        self.assertEqual(info["last_error"], "the handler reported: disk full")
        (again,) = (yield claim(self.store, now=NOW + 90)).tasks
        yield self.store.settle("q", [(again, Waiting(NOW + 700, 202))], NOW + 90)
        dead = Dead(None, "gave up after 2 attempts: the handler reported: no")
        self.assertTrue((yield self.store.complete("q", again, dead, NOW + 100)))
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "dead")

    @defer.inlineCallbacks
    def test_complete_on_a_task_that_is_not_waiting_changes_nothing(self):
        task = yield self.claimed()
        running = yield self.store.complete("q", task, Delivered(202), NOW)
        self.assertFalse(running, "running, not waiting")
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "running")
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        other = yield self.store.complete("q", attrs.evolve(task, attempts=0), Delivered(202), NOW)
        self.assertFalse(other, "another attempt's word")
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "waiting")

    @defer.inlineCallbacks
    def test_a_waiting_task_can_be_cancelled(self):
        task = yield self.claimed()
        yield self.store.settle("q", [(task, Waiting(NOW + 600, 202))], NOW)
        self.assertEqual((yield self.store.cancel("q.t1")), "waiting")
        self.assertFalse((yield self.store.complete("q", task, Delivered(202), NOW)))


class MemoryLaterTests(LaterContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()


class LateMemoryLaterTests(LaterContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore(clock=reactor, latency=0.001)


class RedisLaterTests(RealRedisStore, LaterContract, unittest.TestCase):
    pass


assert MAX_ERRORS > 2  # the tests above bury only tasks with their own max_errors
