"""The claim rule per target host (:class:`torque.hosts.HostBudgets`), held
against a real redis-server (the ``CLAIM`` script) and the in-memory double:
a host at its budget is passed over, not waited for; a held host's due tasks
are postponed without spending an attempt."""

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.redis_server import RealRedisStore
from tests.test_store import MAX_ERRORS, NOW, TIMEOUT, make_task
from torque.hosts import HostBudgets, host_of


def claim(store, hosts, now=NOW, limit=10):
    return store.claim("q", now, limit, TIMEOUT, MAX_ERRORS, 0.0, hosts)


@defer.inlineCallbacks
def add(store, task_id, host, due_at=NOW, path="/hook"):
    yield store.add(attrs.evolve(make_task(task_id, due_at=due_at), url=f"http://{host}{path}"))


def token(task) -> str:
    """A task's id without its queue (``<queue>.<token>``)."""
    return task.id.partition(".")[2]


class HostClaimContract:
    @defer.inlineCallbacks
    def test_a_host_at_its_budget_does_not_hold_up_the_others(self):
        for i in range(5):
            yield add(self.store, f"slow{i}", "slow.test", due_at=NOW - 10 + i)
        yield add(self.store, "fast0", "fast.test")
        got = yield claim(self.store, HostBudgets(10, {"slow.test": 0}))
        self.assertEqual([token(t) for t in got.tasks], ["fast0"])
        self.assertEqual((got.skipped, got.found_past, got.waiting), (5, 1, ("slow.test",)))
        # The passed-over tasks are still due, in their order.
        later = yield claim(self.store, HostBudgets(10, {"slow.test": 2}))
        self.assertEqual([token(t) for t in later.tasks], ["slow0", "slow1"])

    @defer.inlineCallbacks
    def test_a_claim_takes_no_more_of_a_host_than_its_budget(self):
        for i in range(4):
            yield add(self.store, f"a{i}", "a.test", due_at=NOW - 10 + i)
        for i in range(2):
            yield add(self.store, f"b{i}", "b.test", due_at=NOW - 5 + i)
        got = yield claim(self.store, HostBudgets(2, {"b.test": 1}))
        self.assertEqual([token(t) for t in got.tasks], ["a0", "a1", "b0"])
        self.assertEqual(got.waiting, ("a.test", "b.test"))

    @defer.inlineCallbacks
    def test_without_budgets_the_due_tasks_are_taken_in_order(self):
        for i in range(3):
            yield add(self.store, f"a{i}", "a.test", due_at=NOW - 10 + i)
        got = yield self.store.claim("q", NOW, 10, TIMEOUT, MAX_ERRORS, 0.0)
        self.assertEqual([token(t) for t in got.tasks], ["a0", "a1", "a2"])
        self.assertEqual(got.skipped, 0)

    @defer.inlineCallbacks
    def test_a_claim_passes_over_at_most_max_skip(self):
        for i in range(6):
            yield add(self.store, f"slow{i}", "slow.test", due_at=NOW - 10 + i)
        yield add(self.store, "fast0", "fast.test")
        shallow = yield claim(self.store, HostBudgets(10, {"slow.test": 0}, max_skip=2))
        self.assertEqual(shallow.tasks, [])
        self.assertEqual(shallow.skipped, 3, "stops at the first one past max_skip")
        deep = yield claim(self.store, HostBudgets(10, {"slow.test": 0}, max_skip=6))
        self.assertEqual([token(t) for t in deep.tasks], ["fast0"])

    @defer.inlineCallbacks
    def test_a_held_hosts_tasks_are_postponed_without_spending_an_attempt(self):
        yield add(self.store, "down0", "down.test", due_at=NOW - 2)
        yield add(self.store, "down1", "down.test", due_at=NOW - 1)
        yield add(self.store, "up0", "up.test")
        hosts = HostBudgets(10, {"down.test": 0}, {"down.test": NOW + 5})
        got = yield claim(self.store, hosts)
        self.assertEqual([token(t) for t in got.tasks], ["up0"])
        self.assertEqual(got.skipped, 0)
        # The hold ends before up0's lease (--lease, 10 s): the next look is then.
        self.assertEqual(got.next_at, NOW + 5, "the next look is when the hold ends")
        info = yield self.store.describe("q.down0")
        self.assertEqual((info["status"], info.get("attempts", "0")), ("scheduled", "0"))
        self.assertEqual(float(info["due_at"]), NOW + 5)
        again = yield claim(self.store, HostBudgets(10), now=NOW + 5)
        self.assertEqual(sorted((token(t), t.attempts) for t in again.tasks), [
            ("down0", 1), ("down1", 1)])  # fmt: skip

    @defer.inlineCallbacks
    def test_a_hold_already_over_postpones_nothing(self):
        yield add(self.store, "h0", "h.test")
        got = yield claim(self.store, HostBudgets(10, {"h.test": 1}, {"h.test": NOW}))
        self.assertEqual([token(t) for t in got.tasks], ["h0"])

    @defer.inlineCallbacks
    def test_hosts_differ_by_port_and_not_by_case(self):
        yield add(self.store, "a", "Host.Test:8080")
        yield add(self.store, "b", "host.test")
        got = yield claim(self.store, HostBudgets(10, {"host.test:8080": 0}))
        self.assertEqual([token(t) for t in got.tasks], ["b"])
        self.assertEqual(got.waiting, ("host.test:8080",))

    @defer.inlineCallbacks
    def test_two_claimers_with_their_own_budgets_never_share_a_task(self):
        for i in range(30):
            yield add(self.store, f"s{i}", "slow.test", due_at=NOW - 100 + i)
        for i in range(10):
            yield add(self.store, f"f{i}", "fast.test")
        budgets = HostBudgets(3)
        claims = yield defer.gatherResults([claim(self.store, budgets) for _ in range(4)])
        ids = [token(t) for c in claims for t in c.tasks]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(sum(i.startswith("f") for i in ids), 10, "every fast task, by turn")


class HostOfTests(unittest.TestCase):
    def test_host_of_a_url(self):
        self.assertEqual(host_of("http://Example.COM:8080/a?b#c"), "example.com:8080")
        self.assertEqual(host_of("https://[::1]:9/x"), "[::1]:9")
        self.assertEqual(host_of("https://h.test?x"), "h.test")
        self.assertEqual(host_of("/relative"), "")


class MemoryHostClaimTests(HostClaimContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()


class RedisHostClaimTests(RealRedisStore, HostClaimContract, unittest.TestCase):
    """The ``CLAIM`` script itself."""
