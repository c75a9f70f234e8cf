"""Outcomes that Redis doesn't take (out of memory, MISCONF, down, or any
other failure) are logged as errors and retried with a backoff until Redis
takes them, but never past the task's lease: then another node may own the
task.  On a fake clock, against the in-memory store."""

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.test_scheduler import Hook, in_q
from torque.dispatch import Dispatcher
from torque.retry import RetryPolicy
from torque.scheduler import QueueScheduler
from torque.storage import StoreUnavailable
from torque.task import Task

OOM = "Redis is out of memory (maxmemory): OOM command not allowed"


class OutcomeRetryTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(lease=40.0)
        self.refusal = None  # the exception settle fails with, while set
        self.tries: list[float] = []  # when settle was called
        self.first_tries: list[float] = []  # ... with a first attempt's outcome
        real_settle = self.store.settle

        def settle(queue, outcomes, now):
            self.tries.append(now)
            if any(task.attempts == 1 for task, *_ in outcomes):
                self.first_tries.append(now)
            if self.refusal is not None:
                return defer.fail(self.refusal)
            return real_settle(queue, outcomes, now)

        self.store.settle = settle
        self.errors = []
        self.infos = []

        def observe(event):
            if event.get("log_level") == LogLevel.error:
                self.errors.append(event)
            elif event.get("log_level") == LogLevel.info:
                self.infos.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.hook = Hook(self.clock, hold=True)
        self.stub = StubTreq(self.hook)
        # The safety tick is an hour away: only the scheduler's own retries
        # can record an outcome in these tests.
        self.scheduler = QueueScheduler(
            "q",
            self.store,
            Dispatcher(self.stub, self.clock),
            self.clock,
            RetryPolicy(),
            timeout=10.0,
            poll_interval=3600.0,
        )
        self.scheduler.startService()
        self.addCleanup(self.stop)

    def stop(self):
        self.refusal = None
        if self.scheduler.running:
            stopped = self.scheduler.stopService()
            self.clock.advance(60)
            return stopped

    def deliver(self, task_id="q.t1", took=0.0, status=200):
        """A task claimed at the clock's time, answered ``status`` after
        ``took`` seconds."""
        task = Task(
            id=in_q(task_id), queue="q", url="http://hook.test/do", due_at=self.clock.seconds()
        )
        self.successResultOf(self.store.add(task))
        self.scheduler.wake()
        self.clock.advance(took)
        request = self.hook.held.pop()
        request.setResponseCode(status)
        request.finish()
        self.stub.flush()

    def status(self, task_id="q.t1"):
        return self.successResultOf(self.store.describe(in_q(task_id)))["status"]

    def messages(self, events=None):
        return [
            event["log_format"].format(**event)
            for event in (self.errors if events is None else events)
        ]

    def test_refused_outcome_is_logged_and_recorded_once_redis_takes_it(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver()
        self.assertEqual(self.status(), "running")
        self.assertEqual(len(self.errors), 1)
        self.assertIn("could not record 1 outcomes: " + OOM, self.messages()[0])
        self.clock.advance(0.5)
        self.assertEqual(self.tries, [0.0, 0.5])
        self.refusal = None
        self.clock.advance(0.99)
        self.assertEqual(self.status(), "running", "the backoff doubles: next try at 1.5")
        self.clock.advance(0.01)
        self.assertEqual(self.tries, [0.0, 0.5, 1.5])
        self.assertEqual(self.status(), "delivered")
        self.assertEqual(len(self.errors), 2, "one error line per failed try")

    def test_an_unexpected_failure_is_retried_too_not_dropped(self):
        self.refusal = RuntimeError("a reply torque doesn't know")
        self.deliver()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.refusal = None
        self.clock.advance(0.5)
        self.assertEqual(self.status(), "delivered")

    def test_retries_stop_at_the_end_of_the_lease(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver()
        lease_end = self.store.running["q"]["q.t1"]
        self.assertEqual(lease_end, 40.0, "claimed at 0, lease 40 (nothing renews it here)")
        self.clock.pump([0.5] * 120)
        self.assertLess(max(self.first_tries), lease_end)
        self.assertGreater(max(self.first_tries), lease_end - 5.0, "gave up long before")
        gave_up = [m for m in self.messages() if "gave up" in m]
        self.assertEqual(len(gave_up), 1)
        self.assertIn("1 tasks (q.t1)", gave_up[0])
        # The lease ended: the store handed the task out again (here, to
        # this same node), and that attempt's outcome is what gets recorded.
        tries = len(self.first_tries)
        self.refusal = None
        self.clock.advance(60)
        self.assertEqual(len(self.first_tries), tries, "tried again after giving up")
        self.assertEqual(self.hook.times[:2], [0.0, 40.0], "delivered again at the lease end")

    def test_the_lease_counts_from_the_claim_whatever_the_tasks_timeout(self):
        self.refusal = StoreUnavailable(OOM)
        self.clock.advance(100.0)
        task = Task(id="q.t2", queue="q", url="http://hook.test/do", due_at=100.0, timeout=2.0)
        self.successResultOf(self.store.add(task))
        self.scheduler.wake()
        self.clock.advance(1.0)  # the request takes a second
        self.hook.held.pop().finish()
        self.stub.flush()
        self.assertEqual(self.store.running["q"]["q.t2"], 140.0)
        self.clock.pump([0.25] * 200)
        self.assertLess(max(self.first_tries), 140.0)
        self.assertGreater(max(self.first_tries), 135.0)

    def test_outcomes_arriving_meanwhile_join_the_retry(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver("a")
        self.deliver("b")
        self.refusal = None
        self.clock.advance(0.5)
        self.assertEqual((self.status("a"), self.status("b")), ("delivered", "delivered"))

    # -- edges that mutation testing found unguarded (tests/mutation/run
    # scheduler): each test names the behaviour a one-token change breaks

    def test_the_backoff_doubles_from_half_a_second_up_to_five(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver()
        self.clock.pump([0.5] * 50)  # 25 s
        self.assertEqual(self.tries, [0.0, 0.5, 1.5, 3.5, 7.5, 12.5, 17.5, 22.5])

    def test_after_a_recovery_the_backoff_starts_again_from_half_a_second(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver("a")
        self.clock.advance(0.5)  # a second failed try: the next at 1.5
        self.refusal = None
        self.clock.advance(1.0)
        self.assertEqual(self.status("a"), "delivered")
        recovered = [m for m in self.messages(self.infos) if "recorded again" in m]
        self.assertEqual(recovered, ["queue q: outcomes recorded again after 2 failed tries"])
        self.refusal = StoreUnavailable(OOM)
        self.deliver("b")  # at 1.5, refused
        self.clock.pump([0.25, 0.25])
        self.assertEqual(self.tries, [0.0, 0.5, 1.5, 1.5, 2.0])

    def test_a_write_refused_while_a_retry_waits_adds_no_second_timer(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver("a")  # refused at 0: the next try at 0.5
        self.clock.advance(0.25)
        self.deliver("b")  # its own write, refused at 0.25: the next try is still at 0.5
        self.clock.pump([0.25] * 12)  # to 3.25
        self.assertEqual(self.tries, [0.0, 0.25, 0.5, 2.5])

    def test_an_outcome_is_given_up_at_the_very_moment_its_lease_ends(self):
        # The request takes 2.5 s, so the tries fall at 2.5, 3, 4, 6, 10,
        # 15 ... 35 and 40, the lease's end: a claim at 40 may already
        # hand the task to another node.
        self.refusal = StoreUnavailable(OOM)
        self.deliver(took=2.5)
        self.assertEqual(self.store.running["q"]["q.t1"], 40.0)
        self.clock.pump([0.5] * 90)
        self.assertEqual(self.first_tries[-2:], [30.0, 35.0])
        self.assertEqual(len([m for m in self.messages() if "gave up" in m]), 1)

    def test_giving_up_counts_every_task_and_names_the_first_ten(self):
        self.refusal = StoreUnavailable(OOM)
        for n in range(11):
            self.deliver(f"t{n:02}")
        self.clock.pump([0.5] * 90)
        gave_up = [m for m in self.messages() if "gave up" in m]
        self.assertEqual(len(gave_up), 1)
        named = ", ".join(f"q.t{n:02}" for n in range(10))
        self.assertIn(f"outcomes of 11 tasks ({named}): their leases ended", gave_up[0])

    def test_an_attempt_is_forgotten_once_its_outcome_is_recorded_or_given_up(self):
        # A busy node keeps no lease end past its outcome.
        self.deliver("a")
        self.refusal = StoreUnavailable(OOM)
        self.deliver("b")
        self.clock.pump([0.5] * 90)  # b's lease ends at 40: given up
        self.assertEqual(self.status("a"), "delivered")
        self.assertEqual(len(self.hook.held), 1, "b's second attempt, claimed at 40")
        self.assertEqual(list(self.scheduler._lease_ends), [("q.b", 2)], "that attempt alone")

    def test_stopping_records_an_outcome_waiting_for_a_retry_without_an_error(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver()
        self.refusal = None
        self.successResultOf(self.scheduler.stopService())
        self.assertEqual(self.status(), "delivered")
        self.assertEqual(len(self.errors), 1, "only the refusal: " + repr(self.messages()))

    def test_stopping_when_the_lease_ended_meanwhile_says_only_that_it_gave_up(self):
        answer = defer.Deferred()  # Redis is slow to answer the first write
        self.store.settle = lambda *args: answer
        self.deliver()
        stopped = self.scheduler.stopService()  # waits for that write
        self.clock.advance(41.0)  # the lease ended at 40
        answer.errback(StoreUnavailable("Redis did not answer in time"))
        self.successResultOf(stopped)
        messages = self.messages()
        self.assertEqual(len(messages), 2, messages)
        self.assertIn("could not record 1 outcomes", messages[0])
        self.assertIn("gave up recording the outcomes of 1 tasks (q.t1)", messages[1])

    def test_a_retry_recorded_while_stopping_arms_no_timer(self):
        self.refusal = StoreUnavailable(OOM)
        self.deliver(status=503)  # to be tried again: its write refused
        self.refusal = None
        self.successResultOf(self.scheduler.stopService())
        self.assertEqual(self.successResultOf(self.store.describe("q.t1"))["attempts"], "1")
        self.assertEqual(self.store.settled[-1][0][1].label, "retried")
        self.assertEqual(self.clock.getDelayedCalls(), [])
