"""The store's pages of a queue's tasks (``GET /queues/<q>/tasks``), held
against a real redis-server and against the in-memory double: the order,
positions that survive equal scores and tasks leaving the set, and a cost
that does not grow with the queue."""

import math

import attrs
from twisted.internet import defer
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.redis_server import RealRedisStore
from tests.test_store import NOW, bury, claim, make_task
from torque import scripts

# What a page may ask of Redis: counts and ranges by rank (O(log n)), and
# the page's own tasks.
CHEAP = {"ZCOUNT", "ZRANGE", "HSTRLEN", "HGETALL", "LRANGE"}


def ids(page):
    """The page's task ids without their queue (``<queue>.<token>``)."""
    return [task_id.partition(".")[2] for task_id, _ in page.tasks]


class TaskPageContract:
    """Tests every store must pass; ``self.store`` is set in ``setUp``."""

    @defer.inlineCallbacks
    def every_page(self, state="scheduled", limit=3, queue="q", **kw):
        """The ids of every page, walking ``after`` to the end."""
        pages, after = [], None
        while True:
            page = yield self.store.task_page(queue, state, after, limit, **kw)
            pages.append(ids(page))
            if page.after is None:
                return pages
            after = page.after
            self.assertLess(len(pages), 100, "the pages never end")

    @defer.inlineCallbacks
    def test_scheduled_tasks_come_oldest_due_first_as_described(self):
        for task_id, offset in [("a", 3), ("b", -5), ("c", 0), ("d", 60)]:
            yield self.store.add(make_task(task_id, due_at=NOW + offset, name=f"n-{task_id}"))
        page = yield self.store.task_page("q", "scheduled", None, 10)
        self.assertEqual(ids(page), ["b", "c", "a", "d"])
        self.assertIsNone(page.after)
        for task_id, fields in page.tasks:
            self.assertEqual(fields, (yield self.store.describe(task_id)))

    @defer.inlineCallbacks
    def test_pages_follow_each_other_through_equal_scores(self):
        for i in range(8):
            yield self.store.add(make_task(f"t{7 - i}", due_at=NOW))
        yield self.store.add(make_task("early", due_at=NOW - 1))
        pages = yield self.every_page(limit=3)
        self.assertEqual(pages, [["early", "t0", "t1"], ["t2", "t3", "t4"], ["t5", "t6", "t7"]])

    @defer.inlineCallbacks
    def test_a_full_last_page_says_it_is_the_last(self):
        for i in range(3):
            yield self.store.add(make_task(f"t{i}", due_at=NOW + i))
        page = yield self.store.task_page("q", "scheduled", None, 3)
        self.assertEqual((ids(page), page.after), (["t0", "t1", "t2"], None))
        short = yield self.store.task_page("q", "scheduled", None, 2)
        self.assertEqual((ids(short), short.after), (["t0", "t1"], (NOW + 1, "q.t1")))

    @defer.inlineCallbacks
    def test_next_page_starts_right_after_a_task_that_left_the_set(self):
        for i in range(6):
            yield self.store.add(make_task(f"t{i}", due_at=NOW))
        first = yield self.store.task_page("q", "scheduled", None, 2)
        self.assertEqual(ids(first), ["t0", "t1"])
        yield self.store.cancel("t1")  # the position's own task
        yield self.store.cancel("t0")
        second = yield self.store.task_page("q", "scheduled", first.after, 2)
        self.assertEqual(ids(second), ["t2", "t3"])

    @defer.inlineCallbacks
    def test_a_position_between_scores_goes_on_at_the_next_score(self):
        for task_id, offset in [("z", 1), ("a", 2), ("m", 2)]:
            yield self.store.add(make_task(task_id, due_at=NOW + offset))
        page = yield self.store.task_page("q", "scheduled", (NOW + 1.5, "q.zzz"), 10)
        self.assertEqual(ids(page), ["a", "m"])
        page = yield self.store.task_page("q", "scheduled", (NOW + 2, "q.b"), 10)
        self.assertEqual(ids(page), ["m"])

    @defer.inlineCallbacks
    def test_ids_of_one_score_sort_byte_by_byte(self):
        names = ["a", "B", "_x", "-y", "Z9", "z", "0", "aa", "A"]
        for task_id in names:
            yield self.store.add(make_task(task_id, due_at=NOW))
        pages = yield self.every_page(limit=2)
        self.assertEqual(sum(pages, []), sorted(names, key=str.encode))
        page = yield self.store.task_page("q", "scheduled", (NOW, "q.Za"), 2)
        self.assertEqual(ids(page), ["_x", "a"])

    @defer.inlineCallbacks
    def test_running_and_dead_tasks_are_listed_in_their_state(self):
        yield bury(self.store, "d1", now=NOW - 10)
        for i in range(3):
            yield self.store.add(make_task(f"t{i}", due_at=NOW - 3 + i))
        yield self.store.add(make_task("later", due_at=NOW + 60))
        yield claim(self.store, limit=2)
        running = yield self.store.task_page("q", "running", None, 10)
        self.assertEqual(ids(running), ["t0", "t1"])
        self.assertEqual({f["status"] for _, f in running.tasks}, {"running"})
        self.assertEqual(running.tasks[0][1]["attempts"], "1")
        scheduled = yield self.store.task_page("q", "scheduled", None, 10)
        self.assertEqual(ids(scheduled), ["t2", "later"])
        dead = yield self.store.task_page("q", "dead", None, 10)
        self.assertEqual(ids(dead), ["d1"])
        self.assertEqual(dead.tasks[0][1]["status"], "dead")
        self.assertEqual(dead.tasks[0][1]["history"][0]["outcome"], "dead")

    @defer.inlineCallbacks
    def test_waiting_and_an_unknown_queue_have_an_empty_page(self):
        yield self.store.add(make_task())
        for queue, state in [("q", "waiting"), ("nothing", "scheduled"), ("q", "dead")]:
            page = yield self.store.task_page(queue, state, None, 10)
            self.assertEqual((page.tasks, page.after), ([], None), (queue, state))

    @defer.inlineCallbacks
    def test_a_page_ends_early_past_its_bytes_of_bodies(self):
        for i in range(5):
            yield self.store.add(attrs.evolve(make_task(f"t{i}", due_at=NOW + i), body="x" * 100))
        yield self.store.add(attrs.evolve(make_task("big", due_at=NOW + 10), body="y" * 1000))
        pages = yield self.every_page(limit=10, max_bytes=250)
        self.assertEqual(pages, [["t0", "t1"], ["t2", "t3"], ["t4"], ["big"]])


class MemoryTaskPageTests(TaskPageContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()


class RedisTaskPageTests(RealRedisStore, TaskPageContract, unittest.TestCase):
    """Against a real redis-server, under a fresh key prefix per test."""

    @defer.inlineCallbacks
    def traced_page(self, queue, after=None, limit=5):
        """Every Redis command TASK_PAGE runs, with its arguments: the
        script runs as it is, with ``redis.call`` recording."""
        wrapped = (
            "local trace, real = {}, redis.call\n"
            "local redis = setmetatable({call = function(...)\n"
            "  trace[#trace + 1] = {...}; return real(...) end}, {__index = redis})\n"
            f"local function page()\n{scripts.TASK_PAGE}\nend\n"
            "page()\nreturn trace\n"
        )
        score, task_id = ("", "") if after is None else (repr(after[0]), after[1])
        args = ["", str(limit), str(1 << 20), score, task_id]
        keys = [self.keys.due(queue), *self.keys.queue(queue)]
        return (yield self.redis.eval(wrapped, keys, args))

    @defer.inlineCallbacks
    def add_many(self, queue, count, due_at=lambda i: NOW + i):
        for start in range(0, count, 500):
            adds = [
                self.store.add(make_task(f"{queue}-{i:06d}", queue=queue, due_at=due_at(i)))
                for i in range(start, min(count, start + 500))
            ]
            yield defer.gatherResults(adds)

    @defer.inlineCallbacks
    def test_a_page_costs_the_same_in_a_queue_of_ten_or_of_thousands(self):
        """The same commands, none reading more than the page, for a page
        in the middle of 10 tasks and of 20,000."""
        yield self.add_many("small", 10)
        yield self.add_many("big", 20_000)
        small = yield self.traced_page("small", (NOW + 2, "small.small-000002"))
        big = yield self.traced_page("big", (NOW + 9_000, "big.big-009000"))

        def commands(trace):  # each command and its arguments, the keys left out
            return [[c[0].upper(), *c[2:]] for c in trace]

        self.assertEqual(
            [c[0] for c in commands(big)], [c[0] for c in commands(small)], "the same commands"
        )
        self.assertLessEqual({c[0] for c in commands(big)}, CHEAP)
        ranges = [c[1:3] for c in commands(big) if c[0] == "ZRANGE"]
        self.assertTrue(all(stop - start <= 5 for start, stop in ranges), ranges)
        self.assertEqual(ranges[-1], [9_001, 9_006], "the page starts by rank, right after")
        page = yield self.store.task_page("big", "scheduled", (NOW + 9_000, "big.big-009000"), 5)
        self.assertEqual(ids(page), [f"big-{i:06d}" for i in range(9_001, 9_006)])

    @defer.inlineCallbacks
    def test_a_position_among_thousands_of_one_score_is_found_by_halving(self):
        yield self.add_many("one", 5_000, due_at=lambda i: NOW)
        after = (NOW, "one.one-003000x")  # no such task: it left the set
        trace = yield self.traced_page("one", after)
        self.assertLessEqual({c[0].upper() for c in trace}, CHEAP)
        ranges = [c[2:4] for c in trace if c[0].upper() == "ZRANGE"]
        self.assertTrue(all(stop - start <= 5 for start, stop in ranges), ranges)
        probes = [r for r in ranges if r[0] == r[1]]
        self.assertLessEqual(len(probes), math.ceil(math.log2(5_000)))
        page = yield self.store.task_page("one", "scheduled", after, 3)
        self.assertEqual(ids(page), ["one-003001", "one-003002", "one-003003"])
