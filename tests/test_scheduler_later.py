""" "Not yet" and "later" on a fake clock: a handler's ``Torque-Postpone``
brings its task back then without spending an attempt; ``202`` with
``Torque-Complete-Within`` leaves it waiting, and no word by the deadline
is a failed attempt."""

from tests.test_scheduler import Hook, SchedulerCase


class LaterCases:
    def test_a_postponed_task_comes_back_then_with_the_same_attempt(self):
        hook = Hook(self.clock, 503, 200, headers={})
        hook.headers = {"Torque-Postpone": "30"}
        self.start(hook, poll_interval=3600.0, max_errors=1)
        self.add(created_at=0.0)
        t0 = self.clock.seconds() + self.L
        self.later(self.L + self.L)
        hook.headers = {}
        info = self.info()
        self.assertEqual((info["status"], info["attempts"]), ("scheduled", "0"))
        self.assertEqual(info["history"][0]["outcome"], "postponed")
        self.later(30.0)
        self.assertEqual(hook.times, self.at(t0, t0 + 30.0 + self.L))
        self.assertEqual(self.status(), "delivered", "max_errors 1: the postponement spent none")

    def test_postponing_past_max_age_kills_the_task(self):
        hook = Hook(self.clock, 202, headers={"Torque-Postpone": "61"})
        self.start(hook, poll_interval=3600.0, max_age=60.0)
        self.add(created_at=self.clock.seconds())
        self.later(2 * self.L)
        info = self.info()
        self.assertEqual(info["status"], "dead")
        self.assertIn("max age", info["last_error"])

    def test_a_waiting_task_is_not_retried_before_its_deadline_then_is(self):
        hook = Hook(self.clock, 202, 200, headers={"Torque-Complete-Within": "600"})
        self.start(hook, poll_interval=1.0)
        self.add()
        self.later(2 * self.L)
        hook.headers = {}
        self.assertEqual(self.status(), "waiting")
        self.later(590.0)
        self.assertEqual(len(hook.times), 1, "leased to the handler: not retried")
        self.later(15.0)
        self.assertEqual(len(hook.times), 2, "no word by the deadline: a failed attempt")
        self.assertEqual(self.status(), "delivered")
        outcomes = [entry["outcome"] for entry in self.info()["history"]]
        self.assertEqual(outcomes, ["delivered", "retried", "waiting"])

    def test_every_attempt_carries_its_completion_token(self):
        from treq.testing import StubTreq

        from tests.test_scheduler import QueueScheduler
        from torque.completion import CompletionKey, attempt_of
        from torque.dispatch import Dispatcher

        key = CompletionKey(self.store.completion_key)
        hook = Hook(self.clock, 503, 200)
        seen = []
        render = hook.render
        hook.render = lambda request: (
            seen.append(request.getHeader("torque-completion-token")) or render(request)
        )
        self.stub = StubTreq(hook)
        dispatcher = Dispatcher(self.stub, self.clock, completion_key=key)
        self.scheduler = QueueScheduler("q", self.store, dispatcher, self.clock, poll_interval=1.0)
        self.scheduler.startService()
        self.addCleanup(self.stop)
        self.add()
        self.later(5.0)
        with self.store.at_once():
            secret = self.successResultOf(key.get())
        self.assertEqual([attempt_of(secret, token, "q.t1") for token in seen], [1, 2])
        self.assertIsNone(attempt_of(secret, seen[0], "q.t2"), "no token of another task")


class LaterTests(LaterCases, SchedulerCase):
    pass


class LateLaterTests(LaterCases, SchedulerCase):
    latency = 0.004
