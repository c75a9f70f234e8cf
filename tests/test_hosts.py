"""Flow control per host (:mod:`torque.hosts`): pure, on given times."""

from twisted.trial import unittest

from torque.hosts import BREAKER_THRESHOLD, MIN_RATE, HostBudgets, HostTable
from torque.retry import NoResponse, Response

T = 1000.0
DOWN = NoResponse("connection refused")
OK = Response(200)


def fail(table, host, times, at):
    for _ in range(times):
        table.started(host, at)
        table.finished(host, DOWN, at)


class FairnessTests(unittest.TestCase):
    def test_a_host_may_have_its_cap_in_flight(self):
        table = HostTable(host_concurrency=3)
        self.assertEqual(table.budgets(T), HostBudgets(3))
        table.started("a", T)
        table.started("a", T)
        self.assertEqual(table.budgets(T).budgets, {"a": 1})
        table.started("a", T)
        self.assertEqual(table.budgets(T).budgets, {"a": 0})
        table.finished("a", OK, T)
        self.assertEqual(table.budgets(T).budgets, {"a": 1})

    def test_a_queues_own_cap_wins(self):
        table = HostTable(host_concurrency=3)
        table.started("a", T)
        budgets = table.budgets(T, cap=10, max_skip=5)
        self.assertEqual((budgets.default, budgets.budgets, budgets.max_skip), (10, {"a": 9}, 5))

    def test_a_host_idle_for_a_second_is_forgotten(self):
        table = HostTable()
        table.started("a", T)
        table.finished("a", OK, T + 0.5)
        self.assertEqual(table.budgets(T + 0.99).budgets, {"a": 10}, "listed a second")
        table.budgets(T + 1.0)
        self.assertEqual(table.hosts, {})


class ClaimsOnTheirWayTests(unittest.TestCase):
    """Several queues' claims at once share a host's cap."""

    def test_what_a_claim_may_take_is_reserved_until_it_returns(self):
        table = HostTable(host_concurrency=4)
        table.started("a", T, "q")
        first = table.budgets(T)
        reserved = table.reserve(first, limit=2)
        self.assertEqual(reserved, {"a": 2}, "no more than the claim's limit")
        self.assertEqual(table.budgets(T).budgets, {"a": 1}, "another queue's claim meanwhile")
        table.started("a", T, "q")  # the first claim took one task of a
        table.unreserve(reserved)
        self.assertEqual(table.budgets(T).budgets, {"a": 2})

    def test_a_host_with_nothing_in_flight_but_a_reservation_is_kept(self):
        table = HostTable(host_concurrency=3)
        table.started("a", T)
        reserved = table.reserve(table.budgets(T), limit=10)
        table.finished("a", OK, T)
        self.assertEqual(table.budgets(T + 5).budgets, {"a": 1}, "not forgotten as idle")
        table.unreserve(reserved)
        table.budgets(T + 1.0)
        self.assertEqual(table.hosts, {})

    def test_each_freed_slot_wakes_one_waiting_queue_in_turn(self):
        table = HostTable(host_concurrency=1)
        woken = []
        for queue in ("q", "r", "s"):
            table.wait("a", queue, lambda host, queue=queue: woken.append((queue, host)))
        table.started("a", T, "x")
        table.finished("a", OK, T, "x")
        self.assertEqual(woken, [("q", "a")])
        table.started("a", T, "x")
        table.finished("a", DOWN, T, "x")
        table.started("a", T, "x")
        table.released("a", "x")
        self.assertEqual(woken, [("q", "a"), ("r", "a"), ("s", "a")])
        table.finished("b", OK, T)
        self.assertEqual(len(woken), 3, "another host's slot wakes none of them")

    def test_the_queue_that_freed_the_slot_is_not_woken_for_it(self):
        table = HostTable(host_concurrency=1)
        woken = []
        for queue in ("q", "r"):
            table.wait("a", queue, lambda host, queue=queue: woken.append(queue))
        table.started("a", T, "q")
        table.finished("a", OK, T, "q")
        self.assertEqual(woken, ["r"], "q claims again by itself; r goes first")
        table.started("a", T, "q")
        table.finished("a", OK, T, "q")
        self.assertEqual(woken, ["r"], "only q waits: it claims by itself")

    def test_a_queue_waits_once_however_often_it_passes_a_host_over(self):
        table = HostTable(host_concurrency=1)
        woken = []
        for _ in range(3):
            table.wait("a", "q", woken.append)
        for _ in range(2):
            table.started("a", T, "x")
            table.finished("a", OK, T, "x")
        self.assertEqual(woken, ["a"])


class BreakerTests(unittest.TestCase):
    def test_consecutive_failures_open_the_circuit_and_hold_the_host(self):
        table = HostTable(cooldown=2.0)
        fail(table, "a", BREAKER_THRESHOLD - 1, T)
        self.assertEqual(table.budgets(T).holds, {}, "one failure short: still closed")
        fail(table, "a", 1, T)
        budgets = table.budgets(T)
        self.assertEqual((budgets.budgets, budgets.holds), ({"a": 0}, {"a": T + 2.0}))
        self.assertEqual(table.open_circuits(), ["a"])

    def test_an_answer_between_failures_keeps_it_closed(self):
        table = HostTable()
        fail(table, "a", BREAKER_THRESHOLD - 1, T)
        table.started("a", T)
        table.finished("a", Response(500), T)
        fail(table, "a", BREAKER_THRESHOLD - 1, T)
        self.assertEqual(table.open_circuits(), [])

    def test_a_refused_target_is_not_a_host_failure(self):
        table = HostTable()
        for _ in range(BREAKER_THRESHOLD):
            table.started("a", T)
            table.finished("a", NoResponse("forbidden target", permanent=True), T)
        self.assertEqual(table.open_circuits(), [])

    def test_one_probe_after_the_cooldown_then_doubling_then_capped(self):
        table = HostTable(cooldown=1.0, max_cooldown=3.0)
        fail(table, "a", BREAKER_THRESHOLD, T)
        at, cooldowns = T, []
        for _ in range(4):
            hold = table.budgets(at).holds["a"]
            cooldowns.append(hold - at)
            at = hold
            budgets = table.budgets(at)
            self.assertEqual((budgets.budgets, budgets.holds), ({"a": 1}, {}), "one probe")
            table.started("a", at)
            self.assertEqual(table.budgets(at).budgets, {"a": 0}, "only one")
            table.finished("a", DOWN, at + 0.5)
            at += 0.5
        self.assertEqual(cooldowns, [1.0, 2.0, 3.0, 3.0])

    def test_a_successful_probe_closes_the_circuit(self):
        table = HostTable(host_concurrency=4, cooldown=1.0)
        fail(table, "a", BREAKER_THRESHOLD, T)
        table.budgets(T + 1)
        table.started("a", T + 1)
        table.finished("a", OK, T + 1.1)
        self.assertEqual(table.open_circuits(), [])
        self.assertEqual(table.budgets(T + 1.1), HostBudgets(4, {"a": 4}), "closed: its cap")
        fail(table, "a", BREAKER_THRESHOLD, T + 2)
        self.assertEqual(table.budgets(T + 2).holds, {"a": T + 3}, "the cool-down starts over")

    def test_next_token_at_is_when_an_open_circuit_may_probe(self):
        table = HostTable(cooldown=5.0)
        self.assertIsNone(table.next_token_at(T))
        fail(table, "a", BREAKER_THRESHOLD, T)
        self.assertEqual(table.next_token_at(T), T + 5.0)


class ThrottleTests(unittest.TestCase):
    def test_a_429_halves_the_rate_the_host_was_getting(self):
        table = HostTable(host_concurrency=100)
        for i in range(40):
            table.started("a", T + 0.01 + i / 40)
        table.finished("a", Response(429), T + 1)
        self.assertEqual(table.hosts["a"].rate, 20.0)
        self.assertEqual(table.budgets(T + 1).budgets, {"a": 0}, "no token yet")
        self.assertEqual(table.next_token_at(T + 1), T + 1 + 1 / 20)
        self.assertEqual(table.budgets(T + 1.1).budgets, {"a": 2}, "a tenth of a second's worth")

    def test_decrease_at_most_once_a_second_and_never_below_the_floor(self):
        table = HostTable()
        table.started("a", T)
        table.finished("a", Response(503), T)
        self.assertEqual(table.hosts["a"].rate, MIN_RATE)
        table.hosts["a"].rate = 8.0
        table.finished("a", Response(429), T + 0.5)
        self.assertEqual(table.hosts["a"].rate, 8.0, "answers to requests already sent")
        table.finished("a", Response(429), T + 1.0)
        self.assertEqual(table.hosts["a"].rate, 4.0)

    def test_good_answers_raise_it_by_about_one_a_second(self):
        table = HostTable()
        table.started("a", T)
        table.finished("a", Response(429), T)
        table.hosts["a"].rate = 10.0
        for i in range(10):  # a second's worth of answers at 10/s
            table.finished("a", OK, T + 2 + i / 10)
        self.assertTrue(10.9 < table.hosts["a"].rate < 11.0, table.hosts["a"].rate)

    def test_retry_after_holds_the_whole_host(self):
        table = HostTable()
        table.started("a", T)
        table.finished("a", Response(429, retry_after=7.0), T)
        self.assertEqual(table.budgets(T).holds, {"a": T + 7.0})
        self.assertEqual(table.budgets(T + 7.0).holds, {})
