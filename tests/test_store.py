"""The store's contract, held against a real redis-server (every Lua script)
and against the in-memory double the unit tests use."""

import attrs
import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.node import wait_for
from tests.redis_server import RealRedisStore, fresh_keys, redis_address
from torque import scripts
from torque.connection import RedisAddress, connect_pool
from torque.retry import Dead, Delivered, Retry
from torque.storage import Minute, NodeInfo, StoreUnavailable, history_entry
from torque.store import RedisStore
from torque.task import Task

NOW = 1_800_000_000.0
TIMEOUT = 60.0
MAX_ERRORS = 20


def make_task(task_id="q.t1", queue="q", due_at=NOW, **kw) -> Task:
    """A task of ``queue``; its id carries its queue (``<queue>.<token>``),
    which is added to an id given without one."""
    return Task(
        id=task_id if "." in task_id else f"{queue}.{task_id}",
        queue=queue,
        url="http://example.com/hook",
        body="a=1",
        content_type="application/x-www-form-urlencoded",
        due_at=due_at,
        created_at=NOW,
        **kw,
    )


def claim(store, now=NOW, limit=10, queue="q", rate=0.0):
    return store.claim(queue, now, limit, TIMEOUT, MAX_ERRORS, rate)


@defer.inlineCallbacks
def bury(store, task_id, now=NOW, queue="q", **kw):
    """Add a task and have its first attempt refused: a dead letter."""
    yield store.add(make_task(task_id, queue=queue, due_at=now, **kw))
    (task,) = (yield claim(store, now=now, queue=queue)).tasks
    yield store.settle(queue, [(task, Dead(410, f"refused {task_id}"))], now)


class StoreContract:
    """Tests every store must pass; ``self.store`` is set in ``setUp``."""

    lease = 10.0  # the stores' default lease, whatever the timeout

    @defer.inlineCallbacks
    def test_a_claim_made_while_an_add_is_on_its_way_sees_it(self):
        adding = self.store.add(make_task("t1"))
        elsewhere = self.store.add(make_task("r.t2", queue="r"))
        claimed = claim(self.store)
        self.assertEqual((yield adding), ("q.t1", True))
        self.assertEqual([task.id for task in (yield claimed).tasks], ["q.t1"])
        self.assertEqual((yield elsewhere), ("r.t2", True))
        self.assertEqual((yield claim(self.store)).tasks, [], "each task claimed once")

    @defer.inlineCallbacks
    def test_added_task_is_claimed_with_its_fields(self):
        task = make_task(name="n1", headers={"X-A": "b"}, timeout=5.0, max_errors=3)
        added = yield self.store.add(task)
        self.assertEqual(added, ("q.t1", True))
        got = yield claim(self.store)
        self.assertEqual(got.tasks, [attrs.evolve(task, attempts=1)])

    @defer.inlineCallbacks
    def test_task_is_not_claimed_before_it_is_due(self):
        yield self.store.add(make_task(due_at=NOW + 2))
        early = yield claim(self.store, now=NOW + 1.999)
        self.assertEqual((early.tasks, early.next_at), ([], NOW + 2))
        due = yield claim(self.store, now=NOW + 2)
        self.assertEqual([t.id for t in due.tasks], ["q.t1"])

    @defer.inlineCallbacks
    def test_claim_takes_at_most_limit_in_due_order(self):
        for i, offset in enumerate([3, 1, 2, 0]):
            yield self.store.add(make_task(f"q.t{i}", due_at=NOW + offset))
        got = yield claim(self.store, now=NOW + 10, limit=3)
        self.assertEqual([t.id for t in got.tasks], ["q.t3", "q.t1", "q.t2"])
        rest = yield claim(self.store, now=NOW + 10, limit=3)
        self.assertEqual([t.id for t in rest.tasks], ["q.t0"])

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
        self.assertEqual([(t.id, t.attempts) for t in again.tasks], [("q.t1", 2)])
        info = yield self.store.describe("q.t1")
        self.assertIn("lease expired", info["last_error"])

    @defer.inlineCallbacks
    def test_lease_is_the_stores_lease_whatever_the_tasks_timeout(self):
        yield self.store.add(make_task(timeout=3600.0))
        first = yield claim(self.store)
        self.assertEqual(first.next_at, NOW + self.lease)

    @defer.inlineCallbacks
    def test_renewal_moves_the_lease_end_of_every_held_attempt(self):
        yield self.store.add(make_task("a", queue="q"))
        yield self.store.add(make_task("b", queue="r"))
        (a,) = (yield claim(self.store, queue="q")).tasks
        (b,) = (yield claim(self.store, queue="r")).tasks
        lost = yield self.store.renew([("q", "q.a", 1), ("r", "r.b", 1)], NOW + 8)
        self.assertEqual(lost, [])
        for queue in ("q", "r"):
            again = yield claim(self.store, now=NOW + 8 + self.lease - 0.01, queue=queue)
            self.assertEqual((again.tasks, again.next_at), ([], NOW + 8 + self.lease))

    @defer.inlineCallbacks
    def test_renewal_leaves_a_lease_that_no_longer_holds(self):
        for task_id in ("q.settled", "q.lost", "q.cancelled"):
            yield self.store.add(make_task(task_id))
        tasks = {t.id: t for t in (yield claim(self.store)).tasks}
        yield self.store.settle("q", [(tasks["q.settled"], Delivered(200))], NOW + 1)
        yield self.store.cancel("q.cancelled")
        # "lost" ran out and was claimed again: attempt 1 is no longer its own.
        yield claim(self.store, now=NOW + self.lease)
        held = [("q", "q.settled", 1), ("q", "q.lost", 1), ("q", "q.cancelled", 1)]
        lost = yield self.store.renew(held, NOW + self.lease + 1)
        self.assertEqual(sorted(lost), ["q.cancelled", "q.lost", "q.settled"])
        info = yield self.store.describe("q.settled")
        self.assertEqual(info["status"], "delivered", "a renewal brought it back")
        again = yield claim(self.store, now=NOW + 2 * self.lease)
        self.assertEqual([(t.id, t.attempts) for t in again.tasks], [("q.lost", 3)])

    @defer.inlineCallbacks
    def test_expired_lease_on_last_attempt_buries_task(self):
        yield self.store.add(make_task(max_errors=1))
        yield claim(self.store)
        again = yield claim(self.store, now=NOW + self.lease)
        self.assertEqual(again.tasks, [])
        info = yield self.store.describe("q.t1")
        self.assertEqual(info["status"], "dead")

    @defer.inlineCallbacks
    def test_delivered_task_is_reported_delivered(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        applied = yield self.store.settle("q", [(task, Delivered(200))], NOW + 1)
        self.assertEqual(applied, 1)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], info["last_status"]), ("delivered", "200"))
        self.assertEqual(float(info["delivered_at"]), NOW + 1)
        nothing = yield claim(self.store, now=NOW + 1000)
        self.assertEqual((nothing.tasks, nothing.next_at), ([], None))

    @defer.inlineCallbacks
    def test_delivered_task_keeps_no_error_of_an_earlier_attempt(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Retry(NOW + 1, 500, "HTTP 500: ok"))], NOW)
        (task,) = (yield claim(self.store, now=NOW + 1)).tasks
        yield self.store.settle("q", [(task, Delivered(200))], NOW + 2)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], info["last_status"]), ("delivered", "200"))
        self.assertEqual(info.get("last_error", ""), "")
        self.assertEqual(float(info["last_attempt_at"]), NOW + 2)

    @defer.inlineCallbacks
    def test_lost_lease_keeps_no_status_of_an_earlier_attempt(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Retry(NOW + 1, 500, "HTTP 500: ok"))], NOW)
        yield claim(self.store, now=NOW + 1)  # the node dies mid-request
        yield claim(self.store, now=NOW + 1 + self.lease)
        info = yield self.store.describe("q.t1")
        self.assertEqual(info.get("last_status", ""), "", "the lost attempt got no answer")
        self.assertIn("lease expired", info["last_error"])
        self.assertEqual(float(info["last_attempt_at"]), NOW + 1 + self.lease)

    @defer.inlineCallbacks
    def test_retry_reschedules_at_the_given_time(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Retry(NOW + 4, 503, "HTTP 503"))], NOW + 1)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], info["last_error"]), ("scheduled", "HTTP 503"))
        early = yield claim(self.store, now=NOW + 3.99)
        self.assertEqual((early.tasks, early.next_at), ([], NOW + 4))
        due = yield claim(self.store, now=NOW + 4)
        self.assertEqual([(t.id, t.attempts) for t in due.tasks], [("q.t1", 2)])

    @defer.inlineCallbacks
    def test_dead_task_is_kept_with_its_error(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Dead(404, "refused: HTTP 404"))], NOW + 1)
        info = yield self.store.describe("q.t1")
        self.assertEqual(
            (info["status"], info["last_status"], info["last_error"]),
            ("dead", "404", "refused: HTTP 404"),
        )

    @defer.inlineCallbacks
    def test_settle_applies_a_batch_in_one_call(self):
        for i in range(3):
            yield self.store.add(make_task(f"q.t{i}"))
        t0, t1, t2 = (yield claim(self.store)).tasks
        applied = yield self.store.settle(
            "q",
            [(t0, Delivered(200)), (t1, Retry(NOW + 9, None, "timeout")), (t2, Dead(410, "x"))],
            NOW + 1,
        )
        self.assertEqual(applied, 3)
        infos = yield defer.gatherResults([self.store.describe(f"q.t{i}") for i in range(3)])
        statuses = [info["status"] for info in infos]
        self.assertEqual(statuses, ["delivered", "scheduled", "dead"])

    @defer.inlineCallbacks
    def test_outcome_of_a_superseded_attempt_is_ignored(self):
        yield self.store.add(make_task())
        (stale,) = (yield claim(self.store)).tasks
        (current,) = (yield claim(self.store, now=NOW + self.lease)).tasks
        applied = yield self.store.settle("q", [(stale, Delivered(200))], NOW + self.lease)
        self.assertEqual(applied, 0)
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "running")
        applied = yield self.store.settle("q", [(current, Delivered(200))], NOW + self.lease)
        self.assertEqual(applied, 1)

    @defer.inlineCallbacks
    def test_duplicate_name_answers_with_the_existing_task(self):
        yield self.store.add(make_task("q.t1", name="once"))
        again = yield self.store.add(make_task("q.t2", name="once"))
        self.assertEqual(again, ("q.t1", False))
        self.assertIsNone((yield self.store.describe("q.t2")))

    @defer.inlineCallbacks
    def test_name_is_kept_after_delivery(self):
        yield self.store.add(make_task("q.t1", name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200))], NOW + 1)
        again = yield self.store.add(make_task("q.t2", name="once"))
        self.assertEqual(again, ("q.t1", False))

    @defer.inlineCallbacks
    def test_dead_task_releases_its_name(self):
        yield self.store.add(make_task("q.t1", name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Dead(400, "no"))], NOW + 1)
        again = yield self.store.add(make_task("q.t2", name="once"))
        self.assertEqual(again, ("q.t2", True))

    @defer.inlineCallbacks
    def test_same_name_in_another_queue_is_another_task(self):
        yield self.store.add(make_task("q.t1", name="once"))
        other = yield self.store.add(make_task("q.t2", queue="other", name="once"))
        self.assertEqual(other, ("q.t2", True))

    @defer.inlineCallbacks
    def test_paused_queue_is_not_claimed(self):
        yield self.store.add(make_task())
        yield self.store.pause("q")
        self.assertEqual((yield claim(self.store)).tasks, [])
        yield self.store.resume("q")
        self.assertEqual([t.id for t in (yield claim(self.store)).tasks], ["q.t1"])

    # -- --rate ------------------------------------------------------------

    @defer.inlineCallbacks
    def test_rate_lets_a_seconds_worth_through_then_one_per_interval(self):
        for i in range(6):
            yield self.store.add(make_task(f"q.t{i}"))
        first = yield claim(self.store, rate=2.0)
        self.assertEqual([t.id for t in first.tasks], ["q.t0", "q.t1"])
        held = yield claim(self.store, now=NOW + 0.1, rate=2.0)
        self.assertEqual(held.tasks, [])
        self.assertAlmostEqual(held.next_at, NOW + 0.5, places=6)
        self.assertEqual(len((yield claim(self.store, now=NOW + 0.5, rate=2.0)).tasks), 1)
        self.assertEqual(len((yield claim(self.store, now=NOW + 1.5, rate=2.0)).tasks), 2)

    @defer.inlineCallbacks
    def test_rate_is_shared_by_every_claimer_of_the_queue_only(self):
        for i in range(4):
            yield self.store.add(make_task(f"q.t{i}"))
            yield self.store.add(make_task(f"o{i}", queue="other"))
        one = yield claim(self.store, limit=1, rate=2.0)
        two = yield claim(self.store, limit=5, rate=2.0)  # another node, same instant
        other = yield claim(self.store, queue="other", rate=2.0)
        self.assertEqual((len(one.tasks), len(two.tasks), len(other.tasks)), (1, 1, 2))

    @defer.inlineCallbacks
    def test_slow_rate_and_no_rate(self):
        for i in range(3):
            yield self.store.add(make_task(f"q.t{i}"))
        self.assertEqual(len((yield claim(self.store, rate=0.5)).tasks), 1)
        held = yield claim(self.store, now=NOW + 1, rate=0.5)
        self.assertEqual((held.tasks, held.next_at), ([], NOW + 2))
        self.assertEqual(len((yield claim(self.store, now=NOW + 1)).tasks), 2)  # rate 0

    @defer.inlineCallbacks
    def test_cancel_removes_a_scheduled_task(self):
        yield self.store.add(make_task(name="once"))
        self.assertEqual((yield self.store.cancel("q.t1")), "scheduled")
        self.assertIsNone((yield self.store.describe("q.t1")))
        self.assertEqual((yield claim(self.store)).tasks, [])
        self.assertEqual((yield self.store.add(make_task("q.t2", name="once"))), ("q.t2", True))

    @defer.inlineCallbacks
    def test_cancelled_running_task_drops_its_outcome(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        self.assertEqual((yield self.store.cancel("q.t1")), "running")
        applied = yield self.store.settle("q", [(task, Retry(NOW + 1, 500, "x"))], NOW)
        self.assertEqual(applied, 0)
        self.assertEqual((yield claim(self.store, now=NOW + 10)).tasks, [])

    @defer.inlineCallbacks
    def test_cancel_leaves_a_delivered_task_and_its_name_alone(self):
        yield self.store.add(make_task(name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200), 0.1)], NOW)
        self.assertEqual((yield self.store.cancel("q.t1")), "delivered")
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "delivered")
        self.assertEqual((yield self.store.add(make_task("q.t2", name="once"))), ("q.t1", False))

    @defer.inlineCallbacks
    def test_cancel_of_unknown_task(self):
        self.assertEqual((yield self.store.cancel("nope")), "")

    @defer.inlineCallbacks
    def test_cancel_can_keep_the_name_taken(self):
        yield self.store.add(make_task(name="once"))
        self.assertEqual((yield self.store.cancel("q.t1", keep_name=3600)), "scheduled")
        self.assertIsNone((yield self.store.describe("q.t1")))
        self.assertEqual((yield self.store.add(make_task("q.t2", name="once"))), ("q.t1", False))
        self.assertIsNone((yield self.store.describe("q.t2")))
        self.assertEqual((yield self.store.named("q", "once")), "q.t1")
        other = yield self.store.add(make_task("q.t3", queue="other", name="once"))
        self.assertEqual(other, ("q.t3", True))

    @defer.inlineCallbacks
    def test_named_finds_the_task_holding_a_name(self):
        yield self.store.add(make_task("q.t1", name="once"))
        yield self.store.add(make_task("q.t2"))
        self.assertEqual((yield self.store.named("q", "once")), "q.t1")
        self.assertIsNone((yield self.store.named("other", "once")))
        self.assertIsNone((yield self.store.named("q", "q.t2")))
        yield self.store.cancel("q.t1")
        self.assertIsNone((yield self.store.named("q", "once")))

    @defer.inlineCallbacks
    def test_door_records(self):
        self.assertEqual((yield self.store.door_records("d")), {})
        self.assertTrue((yield self.store.put_door_record("d", "a", "1", only_new=True)))
        self.assertFalse((yield self.store.put_door_record("d", "a", "2", only_new=True)))
        self.assertTrue((yield self.store.put_door_record("d", "b", "3")))
        self.assertTrue((yield self.store.put_door_record("d", "b", "4")))
        self.assertEqual((yield self.store.door_record("d", "a")), "1")
        self.assertIsNone((yield self.store.door_record("d", "z")))
        self.assertIsNone((yield self.store.door_record("other", "a")))
        self.assertEqual((yield self.store.door_records("d")), {"a": "1", "b": "4"})
        self.assertTrue((yield self.store.delete_door_record("d", "a")))
        self.assertFalse((yield self.store.delete_door_record("d", "a")))
        self.assertEqual((yield self.store.door_records("d")), {"b": "4"})

    # -- attempt history ---------------------------------------------------

    @defer.inlineCallbacks
    def test_history_has_each_attempt_newest_first(self):
        yield self.store.add(make_task())
        (first,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(first, Retry(NOW + 4, 503, "HTTP 503"), 0.25)], NOW + 1)
        (second,) = (yield claim(self.store, now=NOW + 4)).tasks
        yield self.store.settle("q", [(second, Delivered(200), 0.5)], NOW + 5)
        info = yield self.store.describe("q.t1")
        self.assertEqual(
            info["history"],
            [
                history_entry(NOW + 5, "delivered", 2, 0.5, 200),
                history_entry(NOW + 1, "retried", 1, 0.25, 503, "HTTP 503"),
            ],
        )

    @defer.inlineCallbacks
    def test_history_of_an_outcome_without_duration(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Dead(None, "connection refused"))], NOW + 1)
        info = yield self.store.describe("q.t1")
        expected = history_entry(NOW + 1, "dead", 1, None, None, "connection refused")
        self.assertEqual(info["history"], [expected])

    @defer.inlineCallbacks
    def test_history_keeps_the_last_ten_attempts(self):
        yield self.store.add(make_task())
        for n in range(12):
            (task,) = (yield claim(self.store, now=NOW + n)).tasks
            yield self.store.settle("q", [(task, Retry(NOW + n + 1, 500, f"try {n}"))], NOW + n)
        history = (yield self.store.describe("q.t1"))["history"]
        self.assertEqual([e["attempt"] for e in history], list(range(12, 2, -1)))

    @defer.inlineCallbacks
    def test_lost_lease_is_in_the_history(self):
        yield self.store.add(make_task())
        yield claim(self.store)
        yield claim(self.store, now=NOW + self.lease)
        (entry,) = (yield self.store.describe("q.t1"))["history"]
        self.assertEqual(
            (entry["attempt"], entry["outcome"], entry["at"]), (1, "retried", NOW + self.lease)
        )
        self.assertIn("lease expired", entry["error"])

    @defer.inlineCallbacks
    def test_new_task_has_no_history(self):
        yield self.store.add(make_task())
        self.assertEqual((yield self.store.describe("q.t1"))["history"], [])

    # -- run now -----------------------------------------------------------

    @defer.inlineCallbacks
    def test_run_now_makes_a_later_task_due(self):
        yield self.store.add(make_task(due_at=NOW + 600))
        self.assertEqual((yield self.store.run_now("q.t1", NOW + 1)), ("scheduled", "q", NOW + 1))
        got = yield claim(self.store, now=NOW + 1)
        self.assertEqual([t.id for t in got.tasks], ["q.t1"])

    @defer.inlineCallbacks
    def test_run_now_leaves_an_overdue_task_in_its_place(self):
        yield self.store.add(make_task(due_at=NOW))
        self.assertEqual((yield self.store.run_now("q.t1", NOW + 9)), ("scheduled", "q", NOW))
        self.assertEqual(float((yield self.store.describe("q.t1"))["due_at"]), NOW)

    @defer.inlineCallbacks
    def test_run_now_of_a_running_dead_or_unknown_task_changes_nothing(self):
        yield self.store.add(make_task("q.t1"))
        yield claim(self.store)
        yield bury(self.store, "q.t2", now=NOW + 1)
        self.assertEqual((yield self.store.run_now("q.t1", NOW + 2)), ("running", "q", None))
        self.assertEqual((yield self.store.run_now("q.t2", NOW + 2)), ("dead", "q", None))
        self.assertEqual((yield self.store.run_now("q.t3", NOW + 2)), ("", None, None))
        self.assertEqual((yield self.store.describe("q.t2"))["status"], "dead")

    # -- queue counts ------------------------------------------------------

    @defer.inlineCallbacks
    def test_queue_stats_count_each_state(self):
        yield bury(self.store, "gone", now=NOW - 50)
        yield self.store.add(make_task("run", due_at=NOW - 40))
        yield claim(self.store, now=NOW - 40)
        yield self.store.add(make_task("early", due_at=NOW - 30))
        yield self.store.add(make_task("now", due_at=NOW))
        yield self.store.add(make_task("later", due_at=NOW + 60))
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual(
            (stats.name, stats.scheduled, stats.due, stats.running, stats.dead),
            ("q", 3, 2, 1, 1),
        )
        self.assertEqual((stats.delivered, stats.failed), (0, 1))
        self.assertEqual((stats.oldest_due_age, stats.paused, stats.known), (30.0, False, True))

    @defer.inlineCallbacks
    def test_oldest_due_age_is_zero_when_nothing_is_due(self):
        yield self.store.add(make_task(due_at=NOW + 5))
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual((stats.scheduled, stats.due, stats.oldest_due_age), (1, 0, 0.0))

    @defer.inlineCallbacks
    def test_queue_page_lists_every_queue_sorted(self):
        yield self.store.add(make_task("q.t1", queue="b"))
        yield self.store.add(make_task("q.t2", queue="a"))
        yield self.store.pause("b")
        page = yield self.store.queue_page(None, 10, NOW)
        self.assertEqual([(s.name, s.scheduled, s.paused) for s in page.queues],
                         [("a", 1, False), ("b", 1, True)])  # fmt: skip
        self.assertIsNone(page.next_cursor)

    @defer.inlineCallbacks
    def test_queue_pages_follow_the_cursor_to_the_end(self):
        names = [f"q{i:02d}" for i in range(7)]
        for i, name in enumerate(reversed(names)):
            yield self.store.add(make_task(f"q.t{i}", queue=name))
        seen, after, pages = [], None, 0
        while True:
            page = yield self.store.queue_page(after, 3, NOW)
            pages += 1
            self.assertLessEqual(len(page.queues), 3)
            seen += [q.name for q in page.queues]
            after = page.next_cursor
            if after is None:
                break
        self.assertEqual((seen, pages), (names, 3))
        names_only = yield self.store.queue_page("q02", 2, NOW, names_only=True)
        self.assertEqual((names_only.queues, names_only.next_cursor), (["q03", "q04"], "q04"))

    @defer.inlineCallbacks
    def test_queue_page_without_recent_minutes(self):
        yield self.store.add(make_task("q.t1", queue="a"))
        page = yield self.store.queue_page(None, 10, NOW, minutes=0)
        self.assertEqual([(q.name, q.scheduled, q.recent) for q in page.queues], [("a", 1, ())])

    @defer.inlineCallbacks
    def test_pausing_or_resuming_a_queue_that_never_existed_changes_nothing(self):
        self.assertFalse((yield self.store.pause("never")))
        self.assertFalse((yield self.store.resume("never")))
        (stats,) = yield self.store.queue_stats(["never"], NOW)
        self.assertEqual((stats.paused, stats.known), (False, False))
        self.assertEqual((yield self.store.queue_page(None, 10, NOW)).queues, [])

    @defer.inlineCallbacks
    def test_delete_queue_only_when_it_holds_no_task(self):
        yield bury(self.store, "q.t2", queue="q")
        yield self.store.add(make_task("q.t1", queue="q"))
        yield self.store.pause("q")
        self.assertEqual((yield self.store.delete_queue("q")), ("busy", 1, 0, 1))
        yield self.store.purge("q")
        self.assertEqual((yield self.store.delete_queue("q")), ("busy", 0, 0, 1))
        yield self.store.delete_dead("q", None)
        self.assertEqual((yield self.store.delete_queue("q")), ("deleted", 0, 0, 0))
        self.assertEqual((yield self.store.queue_page(None, 10, NOW)).queues, [])
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual((stats.known, stats.paused, stats.failed), (False, False, 0))
        self.assertEqual((yield self.store.delete_queue("q")), ("unknown", 0, 0, 0))
        yield self.store.add(make_task("q.t3", queue="q"))
        self.assertEqual([q.name for q in (yield self.store.queue_page(None, 10, NOW)).queues],
                         ["q"], "a deleted queue comes back with its next task")  # fmt: skip

    @defer.inlineCallbacks
    def test_delete_queue_refuses_a_running_task(self):
        yield self.store.add(make_task("q.t1", queue="q"))
        yield claim(self.store)
        self.assertEqual((yield self.store.delete_queue("q")), ("busy", 0, 1, 0))

    # -- nodes -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_heartbeats_list_live_nodes_until_they_leave(self):
        one = NodeInfo("n1", "h", 11, "0.1", None, 3, NOW - 5, NOW)
        two = NodeInfo("n2", "h", 12, "0.1", ("a", "b"), 0, NOW - 1, NOW)
        yield self.store.beat(one, 15.0)
        yield self.store.beat(two, 15.0)
        self.assertEqual((yield self.store.live_nodes()), [one, two])
        again = attrs.evolve(one, in_flight=7, seen_at=NOW + 5)
        yield self.store.beat(again, 15.0)
        self.assertEqual((yield self.store.live_nodes()), [again, two])
        yield self.store.leave("n1")
        self.assertEqual((yield self.store.live_nodes()), [two])
        self.assertTrue(two.processes("a") and not two.processes("c") and one.processes("c"))

    @defer.inlineCallbacks
    def test_an_id_is_found_in_the_queue_it_names_only(self):
        """A task is found by its id alone in the queue the id names; an id
        naming no queue (or another) finds nothing, without an error."""
        yield self.store.add(make_task("q.t1"))
        # Written with an id that names no queue: claimed, but never found by id.
        yield self.store.add(attrs.evolve(make_task("q.t2"), id="t2"))
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "scheduled")
        for task_id in ["t1", "t2", "r.t1", ".t1", "q{x}.t1", "a b.t1", ""]:
            self.assertIsNone((yield self.store.describe(task_id)), task_id)
            self.assertEqual((yield self.store.cancel(task_id)), "", task_id)
            self.assertEqual((yield self.store.run_now(task_id, NOW)), ("", None, None), task_id)
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "scheduled")

    @defer.inlineCallbacks
    def test_unknown_queue_is_empty_and_not_known(self):
        (stats,) = yield self.store.queue_stats(["nothing"], NOW)
        self.assertEqual((stats.scheduled, stats.dead, stats.known), (0, 0, False))
        self.assertEqual((yield self.store.queue_page(None, 10, NOW)).queues, [])

    @defer.inlineCallbacks
    def test_queue_stats_count_outcomes_per_minute(self):
        for i in range(4):
            yield self.store.add(make_task(f"q.t{i}"))
        t0, t1, t2, t3 = (yield claim(self.store)).tasks
        minute = 1_800_000_000 - 1_800_000_000 % 60
        yield self.store.settle("q", [(t0, Delivered(200)), (t1, Delivered(204))], minute + 5)
        yield self.store.settle("q", [(t2, Retry(NOW + 999, 500, "x"))], minute - 55)
        yield self.store.settle("q", [(t3, Dead(400, "y"))], minute + 59)
        (stats,) = yield self.store.queue_stats(["q"], minute + 70)
        self.assertEqual(len(stats.recent), 15)
        self.assertEqual(
            stats.recent[-3:],
            (Minute(minute - 60, 0, 1, 0), Minute(minute, 2, 0, 1), Minute(minute + 60)),
        )
        self.assertEqual((stats.delivered, stats.failed), (2, 2))

    @defer.inlineCallbacks
    def test_a_settled_outcome_is_its_decisions_label_in_history_and_counts(self):
        """One word per outcome: the decision's label is the history's
        ``outcome`` and the per-minute count it adds to."""
        decisions = [Delivered(200), Retry(NOW + 999, 500, "x"), Dead(400, "y")]
        for i in range(len(decisions)):
            yield self.store.add(make_task(f"q.t{i}"))
        tasks = (yield claim(self.store)).tasks
        minute = 1_800_000_000 - 1_800_000_000 % 60
        for task, decision in zip(tasks, decisions, strict=True):
            yield self.store.settle("q", [(task, decision)], minute + 5)
            history = (yield self.store.describe(task.id))["history"]
            self.assertEqual(history[0]["outcome"], decision.label)
            (stats,) = yield self.store.queue_stats(["q"], minute + 5)
            self.assertEqual(getattr(stats.recent[-1], decision.label), 1, decision.label)

    @defer.inlineCallbacks
    def test_pause_shows_in_stats_and_resume_clears_it(self):
        yield self.store.add(make_task("q.t1"))
        self.assertTrue((yield self.store.pause("q")))
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual((stats.paused, stats.known), (True, True))
        yield self.store.resume("q")
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertFalse(stats.paused)

    @defer.inlineCallbacks
    def test_pause_makes_an_unknown_queue_only_when_asked_to(self):
        self.assertFalse((yield self.store.pause("fresh")))
        (stats,) = yield self.store.queue_stats(["fresh"], NOW)
        self.assertEqual((stats.paused, stats.known), (False, False))
        self.assertTrue((yield self.store.pause("fresh", create=True)))
        (stats,) = yield self.store.queue_stats(["fresh"], NOW)
        self.assertEqual((stats.paused, stats.known), (True, True))
        yield self.store.add(make_task("q.t1", queue="fresh"))
        self.assertEqual((yield claim(self.store, queue="fresh")).tasks, [])

    # -- purge -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_purge_deletes_scheduled_tasks_only(self):
        for i in range(5):
            yield self.store.add(make_task(f"q.t{i}", due_at=NOW + i, name=f"n{i}"))
        yield claim(self.store, now=NOW, limit=1)
        yield bury(self.store, "dead1", now=NOW)
        self.assertEqual((yield self.store.purge("q")), 4)
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual((stats.scheduled, stats.running, stats.dead), (0, 1, 1))
        self.assertIsNone((yield self.store.describe("q.t4")))
        self.assertEqual((yield self.store.describe("q.t0"))["status"], "running")
        again = yield self.store.add(make_task("q.t9", name="n4"))
        self.assertEqual(again, ("q.t9", True), "a purged task frees its name")

    @defer.inlineCallbacks
    def test_purge_of_an_empty_queue(self):
        self.assertEqual((yield self.store.purge("q")), 0)

    # -- dead letters ------------------------------------------------------

    @defer.inlineCallbacks
    def test_dead_letters_newest_first_in_pages(self):
        for i in range(5):
            yield bury(self.store, f"q.d{i}", now=NOW + i)
        page = yield self.store.dead_letters("q", 0, 2)
        self.assertEqual((page.total, [i for i, _ in page.letters]), (5, ["q.d4", "q.d3"]))
        _, fields = page.letters[0]
        self.assertEqual(
            (float(fields["dead_at"]), fields["last_status"], fields["last_error"]),
            (NOW + 4, "410", "refused q.d4"),
        )
        self.assertEqual(fields["url"], "http://example.com/hook")
        rest = yield self.store.dead_letters("q", 4, 2)
        self.assertEqual([i for i, _ in rest.letters], ["q.d0"])

    @defer.inlineCallbacks
    def test_retry_dead_makes_them_due_with_fresh_attempts(self):
        yield bury(self.store, "q.d1")
        yield bury(self.store, "q.d2")
        self.assertEqual((yield self.store.retry_dead("q", None, NOW + 5)), 2)
        info = yield self.store.describe("q.d1")
        self.assertEqual((info["status"], info["attempts"], float(info["due_at"])),
                         ("scheduled", "0", NOW + 5))  # fmt: skip
        self.assertEqual(info["history"][0], history_entry(NOW + 5, "requeued"))
        got = yield claim(self.store, now=NOW + 5)
        self.assertEqual(sorted((t.id, t.attempts) for t in got.tasks), [("q.d1", 1), ("q.d2", 1)])
        self.assertEqual((yield self.store.dead_letters("q")).total, 0)

    @defer.inlineCallbacks
    def test_retry_dead_by_id_passes_over_others(self):
        yield bury(self.store, "q.d1")
        yield bury(self.store, "q.d2")
        yield self.store.add(make_task("live"))
        moved = yield self.store.retry_dead("q", ["q.d2", "live", "nope", "q.d2"], NOW)
        self.assertEqual(moved, 1)
        self.assertEqual([i for i, _ in (yield self.store.dead_letters("q")).letters], ["q.d1"])
        self.assertEqual((yield self.store.describe("q.d2"))["status"], "scheduled")

    @defer.inlineCallbacks
    def test_retried_dead_letter_takes_its_name_back_when_free(self):
        yield bury(self.store, "q.d1", name="job")
        yield self.store.retry_dead("q", ["q.d1"], NOW)
        again = yield self.store.add(make_task("q.t2", name="job"))
        self.assertEqual(again, ("q.d1", False))

    @defer.inlineCallbacks
    def test_retried_dead_letter_leaves_a_taken_name(self):
        yield bury(self.store, "q.d1", name="job")
        yield self.store.add(make_task("q.t2", name="job"))
        yield self.store.retry_dead("q", ["q.d1"], NOW)
        (d1, t2) = sorted((yield claim(self.store)).tasks, key=lambda t: t.id)
        yield self.store.settle("q", [(d1, Delivered(200))], NOW)
        again = yield self.store.add(make_task("q.t3", name="job"))
        self.assertEqual(again, ("q.t2", False), "the name stays with the live task")

    @defer.inlineCallbacks
    def test_delete_dead_by_id_and_all(self):
        for i in range(3):
            yield bury(self.store, f"q.d{i}")
        self.assertEqual((yield self.store.delete_dead("q", ["q.d1", "nope"])), 1)
        self.assertIsNone((yield self.store.describe("q.d1")))
        self.assertEqual((yield self.store.delete_dead("q", None)), 2)
        self.assertEqual((yield self.store.dead_letters("q")).total, 0)
        self.assertIsNone((yield self.store.describe("q.d0")))

    @defer.inlineCallbacks
    def test_dead_letters_are_capped_by_count_oldest_first(self):
        store = self.make_store(dead_max=3)
        for i in range(5):
            yield bury(store, f"q.d{i}", now=NOW + i)
        page = yield store.dead_letters("q")
        self.assertEqual([i for i, _ in page.letters], ["q.d4", "q.d3", "q.d2"])
        self.assertIsNone((yield store.describe("q.d0")))

    @defer.inlineCallbacks
    def test_dead_letters_are_capped_by_age(self):
        store = self.make_store(dead_ttl=100.0)
        yield bury(store, "old", now=NOW)
        yield bury(store, "edge", now=NOW + 1)
        yield bury(store, "new", now=NOW + 101)
        page = yield store.dead_letters("q")
        self.assertEqual([i for i, _ in page.letters], ["q.new", "q.edge"])
        self.assertIsNone((yield store.describe("q.old")))

    @defer.inlineCallbacks
    def test_old_dead_letters_go_at_the_next_claim_when_nothing_else_dies(self):
        store = self.make_store(dead_ttl=100.0)
        yield bury(store, "old", now=NOW)
        yield store.pause("q")
        yield claim(store, now=NOW + 100)
        self.assertEqual((yield store.dead_letters("q")).total, 1, "exactly 100 s old: kept")
        yield claim(store, now=NOW + 100.5)
        self.assertEqual((yield store.dead_letters("q")).total, 0, "a paused queue trims too")
        self.assertIsNone((yield store.describe("old")))


class MemoryStoreTests(StoreContract, unittest.TestCase):
    def setUp(self):
        self.store = self.make_store()

    def make_store(self, **kw):
        return MemoryStore(**kw)


class RedisStoreTests(RealRedisStore, StoreContract, unittest.TestCase):
    """Against a real redis-server, under a fresh key prefix per test."""

    @defer.inlineCallbacks
    def test_concurrent_claimers_never_share_a_task(self):
        other = connect_pool(redis_address())
        self.addCleanup(other.disconnect)
        rival = RedisStore(other, reactor, self.keys)
        yield defer.gatherResults([self.store.add(make_task(f"q.t{i}")) for i in range(300)])
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
            "HSET", k.task("q", "q.ext1"), "url", "http://example.com/hook",
            "body", "foo=bar", "created_at", str(NOW),
        )  # fmt: skip
        yield self.redis.execute_command("ZADD", k.due("q"), str(NOW), "q.ext1")
        (task,) = (yield claim(self.store)).tasks
        self.assertEqual(
            (task.id, task.method, task.url, task.body, task.content_type, task.attempts),
            ("q.ext1", "POST", "http://example.com/hook", "foo=bar",
             "application/x-www-form-urlencoded", 1),
        )  # fmt: skip

    @defer.inlineCallbacks
    def test_a_claim_waiting_for_an_add_goes_in_its_script_call(self):
        calls = []
        evaluate = self.store.redis.eval

        def counted(script, keys, args):
            calls.append(len(keys))
            return evaluate(script, keys, args)

        self.store.redis.eval = counted
        self.addCleanup(delattr, self.store.redis, "eval")
        adding = self.store.add(make_task("t1"))
        claimed = claim(self.store)
        yield adding
        self.assertEqual(len((yield claimed).tasks), 1)
        self.assertEqual(calls, [3 + 6], "one call: the add's keys, then the claim's")

    @defer.inlineCallbacks
    def test_a_claim_fails_with_the_add_it_waited_for(self):
        adding = self.store.add(make_task("t1"))
        claimed = claim(self.store)
        self.store.redis.eval = lambda *args: defer.fail(txredisapi.ConnectionError("gone"))
        self.addCleanup(delattr, self.store.redis, "eval")
        yield self.assertFailure(adding, StoreUnavailable)
        yield self.assertFailure(claimed, StoreUnavailable)

    @defer.inlineCallbacks
    def test_add_publishes_a_wake_up_with_the_due_time(self):
        heard = yield self.listen(self.keys.wake("q"))
        self.assertEqual(heard, [(self.keys.wake("q"), None)], "a 'look now' on subscribing")
        yield self.store.add(make_task(due_at=NOW + 5))
        yield wait_for(lambda: len(heard) == 2)
        self.assertEqual(heard[1], (self.keys.wake("q"), repr(NOW + 5)))

    @defer.inlineCallbacks
    def test_stats_count_deliveries_and_failures(self):
        for i in range(3):
            yield self.store.add(make_task(f"q.t{i}"))
        t0, t1, t2 = (yield claim(self.store)).tasks
        yield self.store.settle(
            "q", [(t0, Delivered(200)), (t1, Retry(NOW, 500, "x")), (t2, Dead(400, "y"))], NOW
        )
        stats = yield self.redis.hgetall(self.keys.stats("q"))
        self.assertEqual(stats, {"delivered": "1", "failed": "2"})

    @defer.inlineCallbacks
    def test_history_is_a_capped_list_removed_with_the_task(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Retry(NOW + 1, 500, "x"), 0.1)], NOW)
        entries = yield self.redis.lrange(self.keys.attempts("q", "q.t1"), 0, -1)
        self.assertEqual(len(entries), 1)
        yield self.store.cancel("q.t1")
        self.assertEqual((yield self.redis.exists(self.keys.attempts("q", "q.t1"))), 0)

    @defer.inlineCallbacks
    def test_delivery_record_and_history_expire_together(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200), 0.1)], NOW)
        ttls = yield defer.gatherResults(
            [
                self.redis.ttl(self.keys.task("q", "q.t1")),
                self.redis.ttl(self.keys.attempts("q", "q.t1")),
            ]
        )
        self.assertTrue(all(3590 < ttl <= 3600 for ttl in ttls), ttls)

    @defer.inlineCallbacks
    def test_purge_and_dead_letter_work_go_in_batches(self):
        store = self.make_store(batch=2)
        calls = []
        real_eval = store._eval
        store._eval = lambda script, *a: calls.append(script) or real_eval(script, *a)
        for i in range(5):
            yield bury(store, f"q.d{i}")
        for i in range(5):
            yield store.add(make_task(f"q.t{i}"))
        del calls[:]
        self.assertEqual((yield store.purge("q")), 5)
        self.assertEqual(len(calls), 3)
        self.assertEqual((yield store.retry_dead("q", ["q.d0", "q.d1", "q.d2"], NOW)), 3)
        self.assertEqual(len(calls), 5)
        self.assertEqual((yield store.delete_dead("q", None)), 2)
        self.assertEqual(len(calls), 6)
        keys = yield self.redis.keys(self.keys.task("q", "q.t*"))
        self.assertEqual(keys, [])

    @defer.inlineCallbacks
    def test_queue_stats_is_two_round_trips(self):
        """Which queues are registered (one ZMSCORE, the registry being no
        queue's key), then every queue's row at once, in its own slot."""
        yield defer.gatherResults([self.store.add(make_task(f"q.t{i}")) for i in range(50)])
        yield self.store.add(make_task("r.t1", queue="r"))
        calls = []
        real_call = self.store._call
        self.store._call = lambda *a: calls.append(a[:3]) or real_call(*a)
        q, r = yield self.store.queue_stats(["q", "r"], NOW)
        self.assertEqual((q.scheduled, r.scheduled), (50, 1))
        self.assertEqual(
            [c[0] if c[0] == "eval" else c[1] for c in calls], ["ZMSCORE", "eval", "eval"]
        )
        rows = [self.keys.queue(q) + self.minutes(q) for q in ("q", "r")]
        self.assertEqual([c[2] for c in calls[1:]], rows)

    def minutes(self, queue: str, now: float = NOW, count: int = 15) -> list[str]:
        first = int(now // 60) * 60 - 60 * (count - 1)
        return [self.keys.minute(queue, first + 60 * m) for m in range(count)]

    @defer.inlineCallbacks
    def traced_stats(self, queue: str):
        """Every Redis command a queue's row costs, with its arguments: the
        script runs as it is, with ``redis.call`` recording."""
        wrapped = (
            "local trace, real = {}, redis.call\n"
            "local redis = setmetatable({call = function(...)\n"
            "  trace[#trace + 1] = {...}; return real(...) end}, {__index = redis})\n"
            f"local function run()\n{scripts.QUEUE_ROW}\nend\n"
            "run()\nreturn trace\n"
        )
        minutes = self.minutes(queue)
        at = [key.rsplit(":", 1)[1] for key in minutes]
        keys = self.keys.queue(queue) + minutes
        return (yield self.redis.eval(wrapped, keys, [repr(NOW), *at]))

    @defer.inlineCallbacks
    def test_queue_stats_cost_does_not_grow_with_the_queue(self):
        """GET /queues stays cheap: O(1) and O(log n) commands, no task read,
        and the same commands for 3 tasks as for 600, due or dead or not."""
        for i in range(3):
            yield self.store.add(make_task(f"s{i}", queue="small", due_at=NOW - i))
        for i in range(5):
            yield bury(self.store, f"d{i}", queue="big")
        adds = [self.store.add(make_task(f"b{i}", queue="big", due_at=NOW - 300 + i))
                for i in range(600)]  # fmt: skip
        yield defer.gatherResults(adds)
        yield claim(self.store, limit=100, queue="big")
        small, big = yield defer.gatherResults([self.traced_stats("small"),
                                                self.traced_stats("big")])  # fmt: skip

        def commands(trace, queue):  # each command and its arguments, the key left out
            return [[c[0].upper(), *c[2:]] for c in trace]

        row = commands(small, "small")
        self.assertEqual(commands(big, "big"), row)
        cheap = {"HMGET", "ZCARD", "ZCOUNT", "ZRANGE", "EXISTS"}
        self.assertLessEqual({c[0] for c in row}, cheap)
        self.assertEqual(
            [c[1:] for c in row if c[0] == "ZRANGE"], [[0, 0, "WITHSCORES"]],
            "only the head of the due set is read",
        )  # fmt: skip
        self.assertLess(len(row), 25)
        (stats,) = yield self.store.queue_stats(["big"], NOW)
        self.assertEqual((stats.scheduled, stats.running, stats.dead), (500, 100, 5))

    @defer.inlineCallbacks
    def test_a_page_of_queues_costs_the_same_with_10_or_2000_queues(self):
        """The registry is read a page at a time: one ZRANGEBYLEX of the
        page's names (O(log n + page)), never the whole registry."""

        @defer.inlineCallbacks
        def fill(count):
            names = [f"q{i:05d}" for i in range(count)]
            yield self.redis.execute_command(
                "ZADD", self.keys.queues, *[x for n in names for x in (0, n)]
            )

        calls = []
        real_call = self.store._call
        self.store._call = lambda *a: calls.append(a) or real_call(*a)

        @defer.inlineCallbacks
        def page():
            del calls[:]
            shown = yield self.store.queue_page("q00003", 5, NOW)
            return [c[0] if c[0] == "eval" else c[1] for c in calls], calls[0], shown

        yield fill(10)
        few, _, shown = yield page()
        self.assertEqual([q.name for q in shown.queues], [f"q0000{i}" for i in range(4, 9)])
        yield fill(2000)
        many, lex, _ = yield page()
        self.assertEqual(few, many)
        self.assertEqual(many, ["ZRANGEBYLEX"] + ["eval"] * 5)
        self.assertEqual(lex[2:], (self.keys.queues, "(q00003", "+", "LIMIT", 0, 6))

    @defer.inlineCallbacks
    def test_a_heartbeat_expires_by_itself(self):
        node = NodeInfo("n1", "h", 1, "0.1", None, 0, NOW, NOW)
        yield self.store.beat(node, 15.0)
        ttl = yield self.redis.ttl(self.keys.node("n1"))
        self.assertTrue(10 < ttl <= 15, ttl)
        yield self.redis.delete(self.keys.node("n1"))  # as if it had expired
        self.assertEqual((yield self.store.live_nodes()), [])
        self.assertEqual((yield self.redis.zcard(self.keys.nodes)), 0, "the index forgets it")


class UnavailableRedisTests(unittest.TestCase):
    """A Redis that doesn't answer makes calls fail within the timeout."""

    def test_call_fails_with_store_unavailable_after_timeout(self):
        redis = connect_pool(RedisAddress(path=self.mktemp() + ".sock"))
        self.addCleanup(redis.disconnect)
        clock = Clock()
        store = RedisStore(redis, clock, fresh_keys(), timeout=2.0)
        d = store.add(make_task())
        clock.advance(0)  # the end of the turn: the add goes out (RedisStore.add)
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, StoreUnavailable)


class LateMemoryStoreTests(StoreContract, unittest.TestCase):
    """The double with latency keeps the contract: only answers are late."""

    def setUp(self):
        self.store = self.make_store()

    def make_store(self, **kw):
        return MemoryStore(clock=reactor, latency=0.001, **kw)


class ScriptEdgeContract:
    """Edges of the Lua scripts that tests/mutation/lua.py found unguarded:
    each test names the behaviour a one-token change would break.  Held by
    the Redis store and its double alike."""

    lease = 10.0  # the stores' default lease, whatever the timeout

    @defer.inlineCallbacks
    def test_the_dead_letter_cap_holds_after_every_burial(self):
        store = self.make_store(dead_max=3)
        for i in range(4):
            yield bury(store, f"q.d{i}", now=NOW + i)
        page = yield store.dead_letters("q")
        self.assertEqual([i for i, _ in page.letters], ["q.d3", "q.d2", "q.d1"])

    @defer.inlineCallbacks
    def test_removing_a_dead_letter_leaves_its_name_to_the_live_task_that_took_it(self):
        for queue in ("cancel", "delete"):
            yield bury(self.store, "d", queue=queue, name="job")
            live = yield self.store.add(make_task("t", queue=queue, name="job"))
            self.assertEqual(live, (f"{queue}.t", True))
            if queue == "cancel":
                self.assertEqual((yield self.store.cancel(f"{queue}.d")), "dead")
            else:
                self.assertEqual((yield self.store.delete_dead(queue, [f"{queue}.d"])), 1)
            again = yield self.store.add(make_task("t2", queue=queue, name="job"))
            self.assertEqual(again, (f"{queue}.t", False), queue)

    @defer.inlineCallbacks
    def test_purging_a_single_task_leaves_nothing_scheduled(self):
        yield self.store.add(make_task())
        self.assertEqual((yield self.store.purge("q")), 1)
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual(stats.scheduled, 0)
        self.assertEqual((yield claim(self.store)).tasks, [])

    @defer.inlineCallbacks
    def test_a_lease_lost_on_the_last_attempt_dies_at_the_claim_that_finds_it(self):
        yield self.store.add(make_task(max_errors=1))
        yield claim(self.store)
        yield claim(self.store, now=NOW + self.lease)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], float(info["dead_at"])), ("dead", NOW + self.lease))

    @defer.inlineCallbacks
    def test_a_lease_lost_on_a_paused_queue_leaves_the_task_scheduled_and_due(self):
        yield self.store.add(make_task())
        yield claim(self.store)
        yield self.store.pause("q")
        lost_at = NOW + self.lease
        yield claim(self.store, now=lost_at)
        info = yield self.store.describe("q.t1")
        self.assertEqual((info["status"], float(info["due_at"])), ("scheduled", lost_at))
        (stats,) = yield self.store.queue_stats(["q"], lost_at)
        self.assertEqual(
            (stats.scheduled, stats.due, stats.running, stats.oldest_due_age, stats.failed),
            (1, 1, 0, 0.0, 1),
        )
        self.assertEqual(stats.recent[-1].retried, 1)
        yield claim(self.store, now=lost_at + 1)
        self.assertEqual(len((yield self.store.describe("q.t1"))["history"]), 1, "lost once")
        yield self.store.resume("q")
        (task,) = (yield claim(self.store, now=lost_at + 2)).tasks
        self.assertEqual(task.attempts, 2)

    @defer.inlineCallbacks
    def test_a_delivery_recorded_after_its_lease_ran_out_is_not_made_again(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.pause("q")
        yield claim(self.store, now=NOW + self.lease)  # back in the due set
        applied = yield self.store.settle("q", [(task, Delivered(200))], NOW + self.lease)
        self.assertEqual(applied, 1)
        yield self.store.resume("q")
        self.assertEqual((yield claim(self.store, now=NOW + self.lease + 1)).tasks, [])
        self.assertEqual((yield self.store.describe("q.t1"))["status"], "delivered")

    @defer.inlineCallbacks
    def test_a_retry_records_its_due_time(self):
        yield self.store.add(make_task())
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Retry(NOW + 4, 503, "HTTP 503"))], NOW + 1)
        self.assertEqual(float((yield self.store.describe("q.t1"))["due_at"]), NOW + 4)

    @defer.inlineCallbacks
    def test_cancelled_tasks_are_no_longer_counted(self):
        yield bury(self.store, "q.d1")
        yield self.store.add(make_task("q.t1"))
        self.assertEqual((yield self.store.cancel("q.t1")), "scheduled")
        self.assertEqual((yield self.store.cancel("q.d1")), "dead")
        (stats,) = yield self.store.queue_stats(["q"], NOW)
        self.assertEqual((stats.scheduled, stats.dead), (0, 0))
        self.assertEqual((yield self.store.dead_letters("q")).total, 0)

    @defer.inlineCallbacks
    def test_run_now_leaves_a_delivered_task_alone(self):
        yield self.store.add(make_task(due_at=NOW))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200))], NOW)
        self.assertEqual((yield self.store.run_now("q.t1", NOW + 1)), ("delivered", "q", None))
        self.assertEqual((yield claim(self.store, now=NOW + 1)).tasks, [])

    @defer.inlineCallbacks
    def test_retry_dead_of_one_id_moves_that_one_only(self):
        yield bury(self.store, "q.d1")
        yield bury(self.store, "q.d2")
        self.assertEqual((yield self.store.retry_dead("q", ["q.d1"], NOW)), 1)
        self.assertEqual([i for i, _ in (yield self.store.dead_letters("q")).letters], ["q.d2"])

    @defer.inlineCallbacks
    def test_a_requeued_dead_letter_keeps_ten_history_entries(self):
        yield self.store.add(make_task(max_errors=50))
        for n in range(10):
            (task,) = (yield claim(self.store, now=NOW + n)).tasks
            decision = Retry(NOW + n + 1, 500, "x") if n < 9 else Dead(500, "x")
            yield self.store.settle("q", [(task, decision)], NOW + n)
        yield self.store.retry_dead("q", ["q.t1"], NOW + 20)
        history = (yield self.store.describe("q.t1"))["history"]
        self.assertEqual((len(history), history[0]["outcome"]), (10, "requeued"))

    @defer.inlineCallbacks
    def test_history_of_lost_leases_keeps_the_last_ten(self):
        yield self.store.add(make_task(max_errors=50))
        for n in range(12):
            yield claim(self.store, now=NOW + n * self.lease)
        history = (yield self.store.describe("q.t1"))["history"]
        self.assertEqual([e["attempt"] for e in history], list(range(11, 1, -1)))

    # -- --rate: what a claim answers as the next time to claim ------------

    @defer.inlineCallbacks
    def test_a_claim_held_back_by_the_rate_answers_the_next_tokens_time(self):
        for i in range(4):
            yield self.store.add(make_task(f"q.t{i}"))
        first = yield claim(self.store, rate=2.0)
        self.assertEqual(len(first.tasks), 2)
        self.assertAlmostEqual(first.next_at, NOW + 0.5, places=6)

    @defer.inlineCallbacks
    def test_a_claim_not_held_back_by_the_rate_answers_the_heads_due_time(self):
        cases = [
            # (name, due times, claim limit, rate, next_at)
            ("slots, not the rate, held it back", [NOW - 5] * 3, 1, 2.0, NOW - 5),
            ("a token left, nothing due", [NOW + 10], 10, 2.0, NOW + 10),
            ("no token left, nothing due", [NOW, NOW + 10], 10, 0.5, NOW + 10),
            ("no rate at all", [NOW - 5] * 2, 1, 0.0, NOW - 5),
        ]
        for n, (name, due_times, limit, rate, next_at) in enumerate(cases):
            queue = f"q{n}"
            for i, due_at in enumerate(due_times):
                yield self.store.add(make_task(f"{queue}-{i}", queue=queue, due_at=due_at))
            got = yield claim(self.store, queue=queue, limit=limit, rate=rate)
            self.assertEqual(got.next_at, next_at, name)


class MemoryScriptEdgeTests(ScriptEdgeContract, unittest.TestCase):
    def setUp(self):
        self.store = self.make_store()

    def make_store(self, **kw):
        return MemoryStore(**kw)


class RedisScriptEdgeTests(RealRedisStore, ScriptEdgeContract, unittest.TestCase):
    """The same against Redis, and what only Redis shows: keys left behind,
    TTLs, wake-ups, batches."""

    @defer.inlineCallbacks
    def test_a_lowered_dead_letter_cap_applies_at_the_next_claim(self):
        for i in range(5):
            yield bury(self.store, f"q.d{i}", now=NOW + i)
        yield claim(self.make_store(dead_max=2), now=NOW + 10)
        page = yield self.store.dead_letters("q")
        self.assertEqual([i for i, _ in page.letters], ["q.d4", "q.d3"])

    @defer.inlineCallbacks
    def test_purged_and_cancelled_tasks_leave_no_name_key_behind(self):
        yield self.store.add(make_task("q.t1", name="n1"))
        yield self.store.add(make_task("q.t2", name="n2"))
        yield self.store.purge("q")
        yield self.store.add(make_task("q.t3", name="n3"))
        yield self.store.cancel("q.t3")
        for name in ("n1", "n2", "n3"):
            self.assertEqual((yield self.redis.exists(self.keys.name("q", name))), 0, name)

    @defer.inlineCallbacks
    def test_a_cancelled_tasks_kept_name_expires(self):
        yield self.store.add(make_task(name="once"))
        yield self.store.cancel("q.t1", keep_name=3600)
        ttl = yield self.redis.ttl(self.keys.name("q", "once"))
        self.assertTrue(3590 < ttl <= 3600, ttl)
        self.assertEqual((yield self.redis.exists(self.keys.task("q", "q.t1"))), 0)

    @defer.inlineCallbacks
    def test_a_delivered_named_tasks_name_expires_with_its_record(self):
        yield self.store.add(make_task(name="once"))
        (task,) = (yield claim(self.store)).tasks
        yield self.store.settle("q", [(task, Delivered(200))], NOW)
        ttl = yield self.redis.ttl(self.keys.name("q", "once"))
        self.assertTrue(3590 < ttl <= 3600, ttl)

    @defer.inlineCallbacks
    def test_a_claim_without_a_rate_writes_no_token_bucket(self):
        yield self.store.add(make_task())
        yield self.store.add(make_task("q.t2"))
        yield claim(self.store, limit=1)
        self.assertEqual((yield self.redis.exists(self.keys.rate("q"))), 0)

    @defer.inlineCallbacks
    def test_a_dead_letter_without_dead_at_shows_when_it_died(self):
        yield bury(self.store, "q.d1", now=NOW + 3)
        yield self.redis.hdel(self.keys.task("q", "q.d1"), "dead_at")
        (letter,) = (yield self.store.dead_letters("q")).letters
        self.assertEqual(float(letter[1]["dead_at"]), NOW + 3)

    @defer.inlineCallbacks
    def test_dead_letter_work_without_ids_goes_a_batch_at_a_time(self):
        store = self.make_store(batch=2)
        calls = []
        real_eval = store._eval
        store._eval = lambda script, *a: calls.append(script) or real_eval(script, *a)
        for action in (store.retry_dead, store.delete_dead):
            queue = action.__name__
            for i in range(5):
                yield bury(store, f"{queue}{i}", queue=queue)
            del calls[:]
            args = (queue, None, NOW) if queue == "retry_dead" else (queue, None)
            self.assertEqual((yield action(*args)), 5, queue)
            self.assertEqual(len(calls), 3, queue)

    @defer.inlineCallbacks
    def test_run_now_resume_and_retry_dead_wake_the_queue(self):
        channel = self.keys.wake("q")
        heard = yield self.listen(channel)
        yield self.store.add(make_task(due_at=NOW + 600))
        yield bury(self.store, "q.d1")
        yield wait_for(lambda: len(heard) == 3)  # the two adds
        yield self.store.run_now("q.t1", NOW + 1)
        yield wait_for(lambda: len(heard) == 4)
        self.assertEqual(heard[3], (channel, repr(NOW + 1)))
        yield self.store.pause("q")
        yield self.store.resume("q")
        yield wait_for(lambda: len(heard) == 5)
        self.assertEqual(heard[4][0], channel)
        yield self.store.retry_dead("q", ["q.d1"], NOW + 2)
        yield wait_for(lambda: len(heard) == 6)
        self.assertEqual(heard[5], (channel, repr(NOW + 2)))

    @defer.inlineCallbacks
    def test_the_lease_of_a_task_deleted_by_hand_is_dropped_when_it_runs_out(self):
        yield self.store.add(make_task())
        yield claim(self.store)
        yield self.redis.delete(self.keys.task("q", "q.t1"))
        yield claim(self.store, now=NOW + self.lease)
        (stats,) = yield self.store.queue_stats(["q"], NOW + self.lease)
        self.assertEqual((stats.running, stats.dead, stats.scheduled), (0, 0, 0))
