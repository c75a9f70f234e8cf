"""A queue's own settings, on a fake clock: the scheduler works with them
over the node's options, reads them at each safety tick, and at once when
the queue's wake channel says they changed."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.test_scheduler import Hook, SchedulerCase
from torque.keys import SETTINGS_CHANGED, Keys
from torque.retry import RetryPolicy
from torque.router import QueueRouter


class SettingsCases:
    """Run on a store that answers at once, and on one a round trip late."""

    def set(self, **changes):
        """Change the settings in the store, as another node's API would:
        nobody tells this scheduler."""
        with self.store.at_once():
            self.successResultOf(self.store.set_settings("q", changes))

    def told(self):
        """The message on the queue's wake channel, through the node's router."""
        router = QueueRouter(None, self.clock, Keys(), all_queues=False)
        router.schedulers["q"] = self.scheduler
        router.woken(Keys().wake("q"), SETTINGS_CHANGED)

    def test_the_queues_concurrency_caps_its_requests_in_flight(self):
        hook = Hook(self.clock, hold=True)
        self.set(concurrency=2)
        self.start(hook, poll_interval=1.0, concurrency=10)
        for i in range(5):
            self.add(f"q.t{i}")
        self.later(1.0 + 2 * self.L)
        self.assertEqual(len(hook.held), 2, "the queue's setting, not the node's 10")

    def test_a_change_applies_at_once_when_the_wake_channel_says_so(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook, concurrency=2)  # a safety tick an hour away
        for i in range(5):
            self.add(f"q.t{i}")
        self.later(2 * self.L)  # the first add's claim, then one for the rest
        self.assertEqual(len(hook.held), 2)
        self.set(concurrency=4)
        self.later(5.0)  # (within the requests' timeout: they stay held)
        self.assertEqual(len(hook.held), 2, "not told, and no tick yet: the old setting")
        self.told()
        self.later(2 * self.L)  # the read, then the claim it starts
        self.assertEqual(len(hook.held), 4)

    def test_the_safety_tick_reads_them_without_being_told(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook, poll_interval=1.0, concurrency=2)
        for i in range(5):
            self.add(f"q.t{i}")
        self.later(self.L)
        self.set(concurrency=3)
        self.later(1.0 + 2 * self.L)
        self.assertEqual(len(hook.held), 3, "within a second")
        self.set(concurrency=None)
        self.later(1.0 + 2 * self.L)
        self.assertEqual(len(hook.held), 3, "cleared: the node's 2 again, none taken")
        self.assertEqual(self.scheduler.concurrency, 2)

    def test_the_queues_timeout_ends_a_request(self):
        hook = Hook(self.clock, hold=True)
        self.set(timeout=2.0)
        self.start(hook, poll_interval=1.0)
        self.add()
        self.later(self.L + 2.0 + self.L)
        self.assertEqual(self.info()["last_error"], "timed out after 2 s")

    def test_the_queues_retry_limits_apply(self):
        hook = Hook(self.clock, 503)
        self.set(max_errors=2, min_delay=5.0)
        self.start(hook, poll_interval=1.0, max_errors=20, min_delay=1.0)
        self.add()
        self.later(self.L + self.L)
        self.assertEqual(self.status(), "scheduled")
        self.assertAlmostEqual(float(self.info()["due_at"]), self.clock.seconds() - self.L + 5.0, 2)
        self.later(5.0 + 2 * self.L)
        self.assertEqual(len(hook.times), 2)
        self.assertEqual(self.status(), "dead", "after the queue's 2 attempts, not 20")

    def test_the_queues_rate_goes_to_the_claim(self):
        self.set(rate=4.0)
        self.start(Hook(self.clock), poll_interval=1.0, rate=0.0)
        self.assertEqual(self.scheduler.rate, 4.0)
        self.assertEqual(self.scheduler.settings, {"rate": 4.0})

    def test_the_node_options_stay_under_the_settings(self):
        self.start(Hook(self.clock), poll_interval=1.0, max_errors=7)
        self.set(max_age=60.0)
        self.told()
        self.later(self.L)
        self.assertEqual(self.scheduler.policy, RetryPolicy(max_errors=7, max_age=60.0))


class SettingsTests(SettingsCases, SchedulerCase):
    pass


class LateSettingsTests(SettingsCases, SchedulerCase):
    latency = 0.004


class RouterSettingsTests(unittest.TestCase):
    def test_a_settings_message_makes_no_scheduler_on_a_star_node(self):
        from twisted.application.service import MultiService

        node = MultiService()
        node.startService()
        router = QueueRouter(node, Clock(), Keys(), all_queues=True)
        router.new_scheduler = lambda queue: self.fail("a settings change is no task")
        router.woken(Keys().wake("q"), SETTINGS_CHANGED)
        self.assertEqual(router.schedulers, {})
