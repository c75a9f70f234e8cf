"""The node's wake-up router: a wake-up reaches its queue's scheduler; a
``*`` node starts schedulers for new queues and retires idle ones."""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.task import Clock
from twisted.trial import unittest

from torque.keys import Keys
from torque.router import ECHO_WINDOW, RETIRE_AFTER, QueueRouter


class FakeScheduler(Service):
    def __init__(self, queue: str):
        self.queue = queue
        self.woken: list[float | None] = []
        self.in_flight: set = set()
        self._claiming = None
        self.idle = True  # what claim_now answers
        self.claimed_now = 0

    def wake(self, due_at=None):
        self.woken.append(due_at)

    def claim_now(self):
        self.claimed_now += 1
        return self.idle


def router(all_queues: bool) -> tuple[QueueRouter, MultiService, Clock]:
    node, clock = MultiService(), Clock()
    routed = QueueRouter(node, clock, Keys("t:"), all_queues)
    routed.new_scheduler = FakeScheduler
    node.startService()
    return routed, node, clock


class RouterTests(unittest.TestCase):
    def test_a_star_node_starts_a_scheduler_for_a_new_queue_on_its_wake_up(self):
        routed, node, _ = router(all_queues=True)
        routed.wake("new", 5.0)
        scheduler = routed.schedulers["new"]
        self.assertEqual((scheduler.woken, scheduler.running), ([5.0], True))
        self.assertIn(scheduler, list(node))

    def test_a_node_of_named_queues_starts_none_on_a_wake_up(self):
        routed, _, _ = router(all_queues=False)
        routed.process("mine")
        routed.wake("other")
        routed.wake("mine")
        self.assertEqual(list(routed.schedulers), ["mine"])
        self.assertEqual(routed.schedulers["mine"].woken, [None])

    def test_an_idle_queue_is_retired_only_after_retire_after_unstirred(self):
        routed, node, clock = router(all_queues=True)
        routed.wake("q")
        clock.advance(RETIRE_AFTER - 1)
        routed.idle("q")
        self.assertIn("q", routed.schedulers)
        clock.advance(1)
        scheduler = routed.schedulers["q"]
        routed.idle("q")
        self.assertNotIn("q", routed.schedulers)
        self.assertEqual((scheduler.running, list(node)), (False, []))

    def test_a_scheduler_with_requests_in_flight_is_not_retired(self):
        routed, _, clock = router(all_queues=True)
        routed.wake("q")
        routed.schedulers["q"].in_flight.add("t1")
        clock.advance(RETIRE_AFTER * 2)
        routed.idle("q")
        self.assertIn("q", routed.schedulers)

    def test_a_wake_message_names_the_queue_and_its_due_time(self):
        routed, _, _ = router(all_queues=False)
        routed.process("q")
        routed.woken(Keys("t:").wake("q"), "12.5")
        routed.woken(Keys("t:").wake("q"), "not a time")
        routed.woken(None, None)  # subscribed again: every queue looks
        self.assertEqual(routed.schedulers["q"].woken, [12.5, None, None])


class EchoTests(unittest.TestCase):
    """An add through this node wakes its scheduler when Redis answers it,
    and again when its message on the wake channel comes round: the second
    is dropped, whichever comes first."""

    def setUp(self):
        self.routed, _, self.clock = router(all_queues=False)
        self.routed.process("q")
        self.channel = Keys("t:").wake("q")

    def woken(self):
        return self.routed.schedulers["q"].woken

    def test_the_echo_of_a_local_wake_up_is_dropped(self):
        self.routed.wake("q", 1000.25)
        self.clock.advance(0.004)
        self.routed.woken(self.channel, repr(1000.25))
        self.assertEqual(self.woken(), [1000.25])

    def test_a_local_wake_up_after_its_message_is_dropped(self):
        self.routed.woken(self.channel, repr(1000.25))
        self.routed.wake("q", 1000.25)
        self.assertEqual(self.woken(), [1000.25])

    def test_other_due_times_and_queues_are_not_echoes(self):
        self.routed.process("r")
        self.routed.wake("q", 1000.25)
        self.routed.woken(self.channel, repr(1000.5))
        self.routed.wake("r", 1000.25)
        self.assertEqual(self.woken(), [1000.25, 1000.5])
        self.assertEqual(self.routed.schedulers["r"].woken, [1000.25])

    def test_each_wake_up_has_one_echo(self):
        self.routed.wake("q", 1000.25)
        self.routed.woken(self.channel, repr(1000.25))
        self.routed.woken(self.channel, repr(1000.25))
        self.assertEqual(self.woken(), [1000.25, 1000.25])

    def test_past_the_window_it_is_a_wake_up_again(self):
        self.routed.wake("q", 1000.25)
        self.clock.advance(ECHO_WINDOW + 0.001)
        self.routed.woken(self.channel, repr(1000.25))
        self.assertEqual(self.woken(), [1000.25, 1000.25])
        self.assertEqual(len(self.routed._served), 1, "the old one is forgotten")

    def test_a_queue_this_node_does_not_process_leaves_nothing_to_remember(self):
        for n in range(100):  # an API-only node's adds: no echo will come
            self.routed.wake("other", 1000.0 + n)
        self.assertEqual(len(self.routed._served), 0)

    def test_a_wake_up_without_a_due_time_is_never_dropped(self):
        self.routed.wake("q")
        self.routed.woken(self.channel, "not a time")
        self.routed.woken(None, None)
        self.assertEqual(self.woken(), [None, None, None])


class ClaimNowTests(unittest.TestCase):
    """As an add is handed to the store, the queue's scheduler claims at
    once when the task is due and it has no claim on its way."""

    def setUp(self):
        self.routed, _, self.clock = router(all_queues=False)
        self.clock.advance(1000.0)
        self.routed.process("q")
        self.scheduler = self.routed.schedulers["q"]
        self.channel = Keys("t:").wake("q")

    def test_an_idle_scheduler_claims_and_the_adds_message_is_its_echo(self):
        self.assertTrue(self.routed.claim_now("q", 1000.0))
        self.routed.woken(self.channel, repr(1000.0))
        self.assertEqual((self.scheduler.claimed_now, self.scheduler.woken), (1, []))

    def test_a_busy_scheduler_does_not_and_the_message_wakes_it(self):
        self.scheduler.idle = False
        self.assertFalse(self.routed.claim_now("q", 1000.0))
        self.routed.woken(self.channel, repr(1000.0))
        self.assertEqual(self.scheduler.woken, [1000.0])

    def test_a_task_not_yet_due_is_not_claimed_for(self):
        self.assertFalse(self.routed.claim_now("q", 1000.5))
        self.assertEqual(self.scheduler.claimed_now, 0)

    def test_a_queue_this_node_does_not_process_is_left_alone(self):
        self.assertFalse(self.routed.claim_now("other", 1000.0))
        self.assertNotIn("other", self.routed.schedulers)
