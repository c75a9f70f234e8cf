"""The calls made in one turn of the reactor become one
(:class:`torque.coalesce.Coalescer`), on a ``Clock``."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from torque.coalesce import Coalescer


class CoalescerTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.calls: list[list] = []
        self.answer: defer.Deferred | None = None
        self.coalescer = Coalescer(self.clock, self.call_many, limit=3)

    def call_many(self, items):
        self.calls.append(list(items))
        if self.answer is not None:
            return self.answer
        return defer.succeed([item * 10 for item in items])

    def test_the_calls_of_one_turn_are_one_call_at_its_end(self):
        waiters = [self.coalescer.submit(i) for i in (1, 2)]
        self.assertEqual(self.calls, [], "nothing before the turn ends")
        self.clock.advance(0)
        self.assertEqual(self.calls, [[1, 2]])
        self.assertEqual([self.successResultOf(w) for w in waiters], [10, 20])

    def test_a_later_turn_makes_a_call_of_its_own(self):
        first = self.coalescer.submit(1)
        self.clock.advance(0)
        second = self.coalescer.submit(2)
        self.clock.advance(0)
        self.assertEqual(self.calls, [[1], [2]])
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (10, 20))

    def test_more_than_the_limit_make_several_calls_in_order(self):
        waiters = [self.coalescer.submit(i) for i in range(1, 8)]
        self.clock.advance(0)
        self.assertEqual(self.calls, [[1, 2, 3], [4, 5, 6], [7]])
        self.assertEqual([self.successResultOf(w) for w in waiters], [i * 10 for i in range(1, 8)])

    def test_a_failed_call_fails_each_of_its_waiters(self):
        self.answer = defer.Deferred()
        waiters = [self.coalescer.submit(i) for i in (1, 2)]
        self.clock.advance(0)
        for waiter in waiters:
            self.assertNoResult(waiter)
        self.answer.errback(ValueError("no"))
        for waiter in waiters:
            self.failureResultOf(waiter, ValueError)
