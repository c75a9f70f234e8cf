"""An add through the API of a node that processes the add's queue: the
scheduler claims as the add is handed to the store, the store sends that
claim after the add in the same call, and the task goes out one store round
trip after its add, not two (on a ``Clock``, the store answering each call
``L`` seconds later)."""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.application.service import MultiService

from tests.test_scheduler import LATENCY, Hook, SchedulerCase
from torque.api import TorqueAPI
from torque.keys import Keys
from torque.router import QueueRouter

HOOK = "http://hook.test/do"


class AddToDeliveryTests(SchedulerCase):
    latency = LATENCY

    def setUp(self):
        super().setUp()
        self.hook = Hook(self.clock)
        scheduler = self.start(self.hook)
        self.router = QueueRouter(MultiService(), self.clock, Keys("t:"), all_queues=False)
        self.router.new_scheduler = lambda queue: scheduler
        self.router.process("q")
        self.woken = []

        def wake(queue, due_at):
            self.woken.append((queue, due_at))
            self.router.wake(queue, due_at)

        ids = iter(f"q.t{n}" for n in range(1, 100))
        api = TorqueAPI(
            self.store,
            self.clock,
            wake=wake,
            claim_now=self.router.claim_now,
            new_id=lambda queue: next(ids),
        )
        self.api = StubTreq(api.resource())
        self.until(1.0)

    def add(self, **fields):
        d = self.api.post("http://torque.test/hooks/add", data={"url": HOOK, **fields})
        self.api.flush()
        return d

    def answered(self, d):
        self.later(self.L)
        self.api.flush()
        return self.successResultOf(d).code

    def test_a_due_task_goes_out_one_round_trip_after_its_add(self):
        t0 = self.clock.seconds()
        added = self.add(queue="q")
        self.assertEqual(self.answered(added), 201)
        self.assertEqual(self.hook.times, self.at(t0 + self.L), "the claim went with the add")
        self.assertEqual(self.woken, [], "no wake-up needed")
        self.later(1.0)
        self.assertEqual(len(self.hook.times), 1)

    def test_the_adds_message_on_the_wake_channel_is_its_echo(self):
        added = self.add(queue="q")
        self.answered(added)
        claims = len(self.store.claims)
        (due_at,) = [float(self.store.tasks["q.t1"]["due_at"])]
        self.router.woken(Keys("t:").wake("q"), repr(due_at))
        self.assertEqual(len(self.store.claims), claims, "no claim for the echo")

    def test_while_a_claim_is_on_its_way_the_add_wakes_the_scheduler(self):
        self.scheduler.pump()  # a claim on its way
        t0 = self.clock.seconds()
        added = self.add(queue="q")
        self.assertEqual(self.answered(added), 201)
        self.assertEqual(len(self.woken), 1, "woken after its add, as before")
        self.later(1.0)
        self.assertEqual(len(self.hook.times), 1)
        self.assertGreater(self.hook.times[0], t0 + self.L)

    def test_a_delayed_task_is_not_claimed_at_its_add(self):
        added = self.add(queue="q", delay="5")
        self.assertEqual(self.answered(added), 201)
        self.assertEqual(len(self.woken), 1, "its wake-up sets the timer")
        self.assertEqual(self.hook.times, [])
