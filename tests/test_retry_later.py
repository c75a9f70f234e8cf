"""The retry rule's two decisions that spend no failed attempt: "not yet"
(``Torque-Postpone``) and "later" (``202`` with ``Torque-Complete-Within``),
and a handler's reported failure."""

from twisted.trial import unittest

from torque.retry import (
    Dead,
    NoResponse,
    Postponed,
    Response,
    Retry,
    RetryPolicy,
    Waiting,
    next_step,
    parse_seconds,
    reported_failure,
)
from torque.task import Task

DAY = 86400.0
CREATED = 1_000_000.0


def task(attempts=1, max_errors=None, created_at=CREATED) -> Task:
    return Task(
        id="t1",
        queue="q",
        url="http://hook.test/x",
        attempts=attempts,
        max_errors=max_errors,
        created_at=created_at,
    )


class PostponeTests(unittest.TestCase):
    policy = RetryPolicy(max_age=30 * DAY)

    def test_any_status_with_the_header_is_postponed(self):
        now = CREATED + 10
        for status in (200, 202, 404, 503):
            with self.subTest(status=status):
                decision = next_step(task(), Response(status, postpone=60.0), now, self.policy)
                self.assertEqual(decision, Postponed(now + 60.0, status))
                self.assertEqual(decision.label, "postponed")

    def test_on_the_last_attempt_it_is_still_not_a_failure(self):
        decision = next_step(
            task(attempts=3, max_errors=3), Response(503, postpone=5.0), CREATED, self.policy
        )
        self.assertEqual(decision, Postponed(CREATED + 5.0, 503))

    def test_up_to_max_age_from_creation_then_dead(self):
        age = 30 * DAY
        at_edge = next_step(task(), Response(202, postpone=age - 10), CREATED + 10, self.policy)
        self.assertEqual(at_edge, Postponed(CREATED + age, 202), "exactly at max age: allowed")
        past = next_step(task(), Response(202, postpone=age - 9), CREATED + 10, self.policy)
        self.assertIsInstance(past, Dead)
        self.assertEqual(past.status, 202)
        self.assertIn("max age", past.error)

    def test_the_queues_max_age_is_the_policys(self):
        short = RetryPolicy(max_age=60.0)
        self.assertIsInstance(next_step(task(), Response(200, postpone=61.0), CREATED, short), Dead)

    def test_no_response_has_no_header(self):
        decision = next_step(task(), NoResponse("connection refused"), CREATED, self.policy)
        self.assertIsInstance(decision, Retry)


class LaterTests(unittest.TestCase):
    def test_202_with_complete_within_waits(self):
        decision = next_step(task(), Response(202, complete_within=600.0), CREATED, RetryPolicy())
        self.assertEqual(decision, Waiting(CREATED + 600.0, 202))
        self.assertEqual(decision.label, "waiting")

    def test_another_status_with_it_is_judged_by_its_status(self):
        for status, kind in ((200, "delivered"), (503, "retried"), (410, "dead")):
            with self.subTest(status=status):
                outcome = Response(status, complete_within=600.0)
                self.assertEqual(next_step(task(), outcome, CREATED, RetryPolicy()).label, kind)

    def test_a_postponement_wins_over_it(self):
        outcome = Response(202, postpone=5.0, complete_within=600.0)
        self.assertIsInstance(next_step(task(), outcome, CREATED, RetryPolicy()), Postponed)


class ReportedFailureTests(unittest.TestCase):
    def test_a_failure_is_retried_after_the_backoff_or_retry_after(self):
        policy = RetryPolicy(min_delay=2.0)
        decision = reported_failure(task(), "disk full", None, CREATED, policy, lambda: 0.0)
        self.assertEqual(decision, Retry(CREATED + 2.0, None, "the handler reported: disk full"))
        decision = reported_failure(task(), "busy", 30.0, CREATED, policy, lambda: 0.0)
        self.assertEqual(decision.at, CREATED + 30.0)

    def test_on_the_last_attempt_the_task_is_dead(self):
        decision = reported_failure(
            task(attempts=2, max_errors=2), "no", None, CREATED, RetryPolicy()
        )
        self.assertIsInstance(decision, Dead)
        self.assertIn("the handler reported: no", decision.error)


class HeaderTests(unittest.TestCase):
    def test_seconds_are_a_finite_number_zero_or_more(self):
        cases = {"30": 30.0, " 1.5 ": 1.5, "0": 0.0, "": None, "soon": None, "-1": None,
                 "inf": None, "nan": None, None: None}  # fmt: skip
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(parse_seconds(text), expected)
