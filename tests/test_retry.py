"""Tests of torque.retry, the pure retry rule (§4 of the spec), as tables.

Each case is a tuple whose first item names it; every assertion carries that
name so a failure says which case broke.  Jitter comes from a constant
``rng``, so every expected time is exact.
"""

from __future__ import annotations

from twisted.trial import unittest

from torque.retry import (
    Dead,
    Delivered,
    NoResponse,
    Response,
    Retry,
    RetryPolicy,
    backoff,
    classify,
    next_step,
    parse_retry_after,
)
from torque.task import Task

NOW = 1000.0
POLICY = RetryPolicy()  # 20 errors, 1 s to 3600 s, 10 % jitter
HOOK = "http://example.com/hooks/do/foo"
# Wed, 21 Oct 2015 07:28:00 GMT
DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_AT = 1_445_412_480.0


def task(attempts: int, max_errors: int | None = None) -> Task:
    """A task whose ``attempts``-th attempt has just ended."""
    return Task(id="t1", queue="default", url=HOOK, attempts=attempts, max_errors=max_errors)


def rng(value: float):
    return lambda: value


class BackoffTests(unittest.TestCase):
    def test_default_policy(self):
        cases = [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (12, 2048.0), (13, 3600.0), (14, 3600.0)]
        for retry, delay in cases:
            self.assertEqual(backoff(retry, POLICY), delay, f"retry {retry}")

    def test_huge_retry_numbers_stay_at_the_cap(self):
        for retry in [64, 65, 1025, 10**6, 10**100]:
            self.assertEqual(backoff(retry, POLICY), 3600.0, f"retry {retry}")

    def test_other_policies(self):
        cases = [
            ("half a second", RetryPolicy(min_delay=0.5, max_delay=10), 1, 0.5),
            ("half a second", RetryPolicy(min_delay=0.5, max_delay=10), 2, 1.0),
            ("half a second", RetryPolicy(min_delay=0.5, max_delay=10), 5, 8.0),
            ("half a second", RetryPolicy(min_delay=0.5, max_delay=10), 6, 10.0),
            ("30 s to 60 s", RetryPolicy(min_delay=30, max_delay=60), 1, 30.0),
            ("30 s to 60 s", RetryPolicy(min_delay=30, max_delay=60), 2, 60.0),
            ("30 s to 60 s", RetryPolicy(min_delay=30, max_delay=60), 3, 60.0),
            ("constant", RetryPolicy(min_delay=5, max_delay=5), 1, 5.0),
            ("constant", RetryPolicy(min_delay=5, max_delay=5), 9, 5.0),
        ]
        for name, policy, retry, delay in cases:
            self.assertEqual(backoff(retry, policy), delay, f"{name}, retry {retry}")


class ClassifyTests(unittest.TestCase):
    def test_table(self):
        cases = [
            *[(status, "delivered") for status in (200, 201, 202, 204, 299)],
            *[(status, "retry") for status in (408, 425, 429, 500, 502, 503, 504, 599)],
            *[
                (status, "refused")
                for status in (301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 409, 410, 422)
            ],
        ]
        for status, kind in cases:
            self.assertEqual(classify(status), kind, f"HTTP {status}")


class ParseRetryAfterTests(unittest.TestCase):
    def test_table(self):
        cases = [
            ("absent", None, NOW, None),
            ("empty", "", NOW, None),
            ("delta seconds", "120", NOW, 120.0),
            ("zero", "0", NOW, 0.0),
            ("padded", " 7 ", NOW, 7.0),
            ("HTTP date ahead", DATE, DATE_AT - 90, 90.0),
            ("HTTP date now", DATE, DATE_AT, 0.0),
            ("HTTP date past", DATE, DATE_AT + 3600, 0.0),
            ("garbage", "soon", NOW, None),
            ("negative", "-5", NOW, None),
            ("fraction", "1.5", NOW, None),
            ("date without a zone", "Wed, 21 Oct 2015 07:28:00 -0000", NOW, None),
        ]
        for name, value, now, expected in cases:
            self.assertEqual(parse_retry_after(value, now), expected, name)

    def test_unreadable_digits_are_none(self):
        # str.isdigit() is true of "²", which float() can't read.
        self.assertIsNone(parse_retry_after("²", NOW))


class NextStepTests(unittest.TestCase):
    def assertDecision(self, case, decision, expected):
        """``expected`` is a Delivered, or ``(Retry, at, status, error
        fragment)``, or ``(Dead, status, error fragment)``."""
        if isinstance(expected, Delivered):
            self.assertEqual(decision, expected, case)
        elif expected[0] is Retry:
            _, at, status, fragment = expected
            self.assertIsInstance(decision, Retry, case)
            self.assertEqual((decision.at, decision.status), (at, status), case)
            self.assertIn(fragment, decision.error, case)
        else:
            _, status, fragment = expected
            self.assertIsInstance(decision, Dead, case)
            self.assertEqual(decision.status, status, case)
            self.assertIn(fragment, decision.error, case)

    def test_table(self):
        refused = NoResponse("connection refused")
        cases = [
            # (name, task, outcome, rng, expected)
            ("200 delivered", task(1), Response(200), 0, Delivered(200)),
            ("204 delivered on the last attempt", task(20), Response(204), 0, Delivered(204)),
            ("503, first attempt", task(1), Response(503), 0, (Retry, NOW + 1.0, 503, "503")),
            ("503, third attempt", task(3), Response(503), 0, (Retry, NOW + 4.0, 503, "503")),
            ("503, capped", task(13), Response(503), 0, (Retry, NOW + 3600.0, 503, "503")),
            ("429", task(2), Response(429), 0, (Retry, NOW + 2.0, 429, "429")),
            ("408", task(1), Response(408), 0, (Retry, NOW + 1.0, 408, "408")),
            ("error detail kept", task(1), Response(500, detail="boom"), 0,
             (Retry, NOW + 1.0, 500, "boom")),
            ("no response", task(1), refused, 0, (Retry, NOW + 1.0, None, "connection refused")),
            ("Retry-After, no jitter", task(1), Response(503, retry_after=120.0), 0.99,
             (Retry, NOW + 120.0, 503, "503")),
            ("Retry-After 0", task(5), Response(429, retry_after=0.0), 0.99,
             (Retry, NOW, 429, "429")),
            ("Retry-After capped", task(1), Response(503, retry_after=10**6), 0.99,
             (Retry, NOW + 3600.0, 503, "503")),
            ("404 refused on attempt 1", task(1), Response(404, detail="no such hook"), 0,
             (Dead, 404, "no such hook")),
            ("301 refused", task(1), Response(301), 0, (Dead, 301, "301")),
            ("302 refused", task(1), Response(302), 0, (Dead, 302, "302")),
            ("400 refused", task(1), Response(400), 0, (Dead, 400, "400")),
            ("401 refused", task(1), Response(401), 0, (Dead, 401, "401")),
            ("410 refused", task(1), Response(410), 0, (Dead, 410, "410")),
            ("422 refused", task(1), Response(422), 0, (Dead, 422, "422")),
            ("503, attempt 19 of 20", task(19), Response(503), 0,
             (Retry, NOW + 3600.0, 503, "503")),
            ("503, attempt 20 of 20", task(20), Response(503, detail="down"), 0,
             (Dead, 503, "down")),
            ("no response, attempt 20 of 20", task(20), refused, 0,
             (Dead, None, "connection refused")),
            ("Retry-After on the last attempt", task(20), Response(503, retry_after=5.0), 0,
             (Dead, 503, "503")),
            ("task allows fewer", task(3, max_errors=3), Response(503), 0, (Dead, 503, "503")),
            ("task allows fewer, not yet", task(2, max_errors=3), Response(503), 0,
             (Retry, NOW + 2.0, 503, "503")),
            ("task allows more", task(20, max_errors=30), Response(503), 0,
             (Retry, NOW + 3600.0, 503, "503")),
            ("task allows more, used up", task(30, max_errors=30), refused, 0,
             (Dead, None, "connection refused")),
        ]  # fmt: skip
        for name, t, outcome, value, expected in cases:
            decision = next_step(t, outcome, NOW, POLICY, rng=rng(value))
            self.assertDecision(name, decision, expected)

    def test_policy_max_errors(self):
        policy = RetryPolicy(max_errors=1)
        decision = next_step(task(1), Response(503), NOW, policy, rng=rng(0))
        self.assertDecision("one attempt only", decision, (Dead, 503, "503"))

    def test_jitter_adds_at_most_ten_percent(self):
        cases = [(1, 1.0, 1.1), (1, 0.5, 1.05), (3, 0.5, 4.2), (13, 1.0, 3960.0)]
        for attempts, value, delay in cases:
            decision = next_step(task(attempts), Response(503), NOW, POLICY, rng=rng(value))
            self.assertAlmostEqual(
                decision.at, NOW + delay, places=9, msg=f"attempt {attempts}, rng {value}"
            )

    def test_jitter_never_makes_a_retry_early(self):
        for attempts in range(1, 20):
            for value in [0.0, 0.25, 0.5, 0.999]:
                case = f"attempt {attempts}, rng {value}"
                decision = next_step(task(attempts), Response(503), NOW, POLICY, rng=rng(value))
                delay = decision.at - NOW
                self.assertGreaterEqual(delay, backoff(attempts, POLICY), case)
                self.assertLessEqual(delay, backoff(attempts, POLICY) * 1.1, case)


class StatusBoundaryTests(unittest.TestCase):
    """The edges of each class of status, where an off-by-one would move a
    whole status from "refused" to "delivered" or "retry"."""

    def test_statuses_just_outside_2xx_are_refused_not_delivered(self):
        for status in (199, 300):
            self.assertEqual(classify(status), "refused", f"HTTP {status}")
            decision = next_step(task(1), Response(status), NOW, POLICY, rng=rng(0))
            self.assertEqual(decision, Dead(status, f"refused by the handler: HTTP {status}"))

    def test_499_is_refused_and_500_retried(self):
        self.assertEqual((classify(499), classify(500)), ("refused", "retry"))


class PastTheLimitTests(unittest.TestCase):
    def test_a_task_past_its_limit_is_dead_not_retried(self):
        # A node restarted with a lower --max-task-errors meets tasks that
        # have already failed more often than it allows.
        cases = [
            ("node allows 20, attempt 21", task(21), POLICY),
            ("node lowered to 5, attempt 9", task(9), RetryPolicy(max_errors=5)),
            ("task allows 3, attempt 4", task(4, max_errors=3), POLICY),
        ]
        for name, t, policy in cases:
            decision = next_step(t, Response(503), NOW, policy, rng=rng(0))
            self.assertIsInstance(decision, Dead, name)
            self.assertIn(f"gave up after {t.attempts} attempts", decision.error, name)
