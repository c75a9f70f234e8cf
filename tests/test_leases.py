"""Leases renewed while requests are in flight (torque.leases), on a fake
clock against the in-memory store with a round trip's latency: a task with a
one-hour timeout keeps its short lease for as long as its request runs, the
whole node renews in one store call per period, and a node that stops
renewing loses its tasks one lease later."""

from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from tests.test_scheduler import LATENCY, Hook, SchedulerCase
from torque.dispatch import Dispatcher
from torque.leases import LeaseKeeper
from torque.options import Options
from torque.retry import RetryPolicy
from torque.scheduler import QueueScheduler
from torque.storage import StoreUnavailable
from torque.tap import retired_warning
from torque.task import Task

LEASE = 10.0
HOUR = 3600.0


class LeaseCase(SchedulerCase):
    latency = LATENCY

    def setUp(self):
        super().setUp()
        self.store.lease = LEASE
        self.hook = Hook(self.clock, hold=True)
        self.start(self.hook)
        self.schedulers = [self.scheduler]
        self.keeper = LeaseKeeper(self.store, self.clock, lambda: self.schedulers)
        self.keeper.startService()
        self.addCleanup(self.stop_keeper)

    def stop_keeper(self):
        if self.keeper.running:
            self.keeper.stopService()

    def stop(self):
        # Answer the held requests: the scheduler's stop waits for them.
        for request in self.hook.held:
            request.finish()
        self.hook.held.clear()
        self.stub.flush()
        for scheduler in self.schedulers[1:]:
            scheduler.stopService()
        return super().stop()

    def add_slow(self, task_id="q.t1", scheduler=None):
        """A task with a one-hour timeout, due now; the hook holds it."""
        scheduler = scheduler or self.scheduler
        now = self.clock.seconds()
        task = Task(
            id=task_id, queue=scheduler.queue, url="http://hook.test/do", due_at=now, timeout=HOUR
        )
        self.store.add(task)
        scheduler.wake()

    def lease_end(self, task_id="q.t1", queue="q"):
        return self.store.running.get(queue, {}).get(task_id)


class RenewalTests(LeaseCase):
    def test_a_one_hour_request_keeps_its_ten_second_lease_all_along(self):
        self.add_slow()
        self.later(LATENCY)
        self.assertEqual(len(self.hook.held), 1, "the request is in flight")
        for _ in range(30):  # five minutes
            self.later(LEASE)
            now = self.clock.seconds()
            self.assertGreater(self.lease_end(), now, "the lease ran out mid-request")
            self.assertLessEqual(self.lease_end(), now + LEASE, "a lease longer than --lease")
        with self.store.at_once():
            claim = self.successResultOf(self.store.claim("q", self.clock.seconds(), 10, 60, 20))
        self.assertEqual(claim.tasks, [], "another node took the task mid-request")

    def test_every_held_task_of_every_queue_is_renewed_in_one_call_per_period(self):
        other = QueueScheduler(
            "r",
            self.store,
            Dispatcher(self.stub, self.clock),
            self.clock,
            RetryPolicy(),
            poll_interval=HOUR,
        )
        other.startService()
        self.schedulers.append(other)
        for i in range(3):
            self.add_slow(f"q{i}")
            self.add_slow(f"r{i}", other)
        self.later(LATENCY * 4)
        self.assertEqual(len(self.hook.held), 6)
        self.later(self.keeper.period)
        self.assertEqual(len(self.store.renewals), 1, "one call for the node")
        self.assertEqual(
            sorted(self.store.renewals[0]),
            [("q", f"q{i}", 1) for i in range(3)] + [("r", f"r{i}", 1) for i in range(3)],
        )
        self.later(LEASE)
        self.assertEqual(len(self.store.renewals), 4, "one call per period")

    def test_the_period_is_a_third_of_the_lease(self):
        started = self.clock.seconds()
        self.add_slow()
        self.later(LATENCY)
        self.until(started + LEASE / 3 - 0.001)
        self.assertEqual(self.store.renewals, [])
        self.until(started + LEASE / 3)
        self.assertEqual(len(self.store.renewals), 1)

    def test_nothing_held_means_no_call(self):
        self.later(LEASE * 3)
        self.assertEqual(self.store.renewals, [])

    def test_the_outcome_of_a_request_longer_than_the_lease_is_recorded(self):
        self.add_slow()
        self.later(LATENCY)
        self.later(120.0)  # the handler takes two minutes
        self.hook.held.pop().finish()
        self.stub.flush()
        self.later(LATENCY)
        with self.store.at_once():
            info = self.successResultOf(self.store.describe("q.t1"))
        self.assertEqual((info["status"], info["attempts"]), ("delivered", "1"))

    def test_a_node_that_stops_renewing_loses_its_tasks_one_lease_later(self):
        self.add_slow()
        self.later(LATENCY)
        self.later(30.0)
        self.keeper.stopService()  # as if the node died: nothing renews
        last_end = self.lease_end()
        now = self.clock.seconds()
        self.assertLessEqual(last_end, now + LEASE)
        with self.store.at_once():
            claim = self.successResultOf(self.store.claim("q", last_end, 10, 60, 20))
        self.assertEqual([(t.id, t.attempts) for t in claim.tasks], [("q.t1", 2)])


class RenewalFailureTests(LeaseCase):
    def setUp(self):
        super().setUp()
        self.warnings = []

        def observe(event):
            if event.get("log_level") == LogLevel.warn and "renew" in event["log_format"]:
                self.warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.real_renew = self.store.renew
        self.calls = []

    def refuse(self, held, now):
        self.calls.append(now)
        return defer.fail(StoreUnavailable("Redis did not answer in time"))

    def test_a_failed_renewal_is_logged_once_and_the_next_period_tries_again(self):
        self.add_slow()
        self.later(LATENCY)
        self.store.renew = self.refuse
        self.later(self.keeper.period)
        self.assertEqual(len(self.calls), 1)
        self.store.renew = self.real_renew
        self.later(self.keeper.period)
        now = self.clock.seconds()
        self.assertEqual(self.lease_end(), now - LATENCY + LEASE, "renewed at the next period")
        self.assertEqual(len(self.warnings), 1)
        self.assertEqual(len(self.hook.held), 1, "the task stayed with its request")

    def test_a_lease_lost_mid_request_lets_the_task_go_again_without_harm(self):
        self.add_slow()
        self.later(LATENCY)
        self.store.renew = self.refuse
        self.later(LEASE + 1)
        self.assertEqual(len(self.warnings), 1, "one warning for the whole outage")
        self.assertEqual(len(self.hook.held), 2, "claimed again, here by the same node")
        self.store.renew = self.real_renew
        for request in self.hook.held:
            request.finish()
        self.hook.held.clear()
        self.stub.flush()
        self.later(LATENCY)
        self.assertEqual(self.scheduler.in_flight, {})
        with self.store.at_once():
            info = self.successResultOf(self.store.describe("q.t1"))
        self.assertEqual((info["status"], info["attempts"]), ("delivered", "2"))


class RetiredLeaseMarginTests(unittest.TestCase):
    """``--lease-margin`` (a lease lasted the timeout plus it) is gone but
    accepted, with a warning, so that a configuration that sets it still
    starts."""

    def test_the_option_and_its_variable_are_accepted_with_a_warning(self):
        for argv, environ, named in [
            (["--lease-margin", "30"], {}, "--lease-margin"),
            ([], {"TORQUE_LEASE_MARGIN": "30"}, "TORQUE_LEASE_MARGIN"),
        ]:
            options = Options(environ)
            options.parseOptions(argv)
            warning = retired_warning(options)
            self.assertIn(f"{named} is ignored", warning)
            self.assertIn("--lease seconds (10)", warning)

    def test_no_warning_without_it(self):
        options = Options({})
        options.parseOptions([])
        self.assertIsNone(retired_warning(options))
