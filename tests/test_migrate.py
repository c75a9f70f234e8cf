"""torque.migrate against a real redis-server holding the OLD key layout,
written here key by key as an older torque left it (the honest fixture):
every task, name, dead letter and queue record moves, the new code then
finds and claims them, a second run (or a run after a crash half-way)
finishes the job without doubling anything, and a node refuses to start on
the old layout, naming the command."""

from __future__ import annotations

import json
import os
import time

import attrs
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.node import TWISTD, Node, start_node, start_receiver, wait_for
from tests.redis_server import fresh_keys, redis_address, redis_url
from tests.test_store import make_task
from torque import migrate
from torque.connection import connect_pool
from torque.store import RedisStore

NOW = 1_800_000_000.0


@defer.inlineCallbacks
def write_old_layout(redis, prefix: str, now: float = NOW, due_in: float = 60.0):
    """An older torque's keys: queue ``mail`` (a scheduled named task with a
    history, a running one, a dead letter, totals, settings, the pause flag,
    a rate bucket, a minute's counts), a delivery record, and the registry
    as the set the oldest kept."""

    def cmd(*args):
        return redis.execute_command(*args)

    p = prefix
    yield cmd("HSET", f"{p}task:a1", "queue", "mail", "url", "http://app.test/a",
              "body", "a=1", "name", "job", "created_at", repr(now),
              "due_at", repr(now + due_in))  # fmt: skip
    yield cmd("ZADD", f"{p}queue:mail:due", repr(now + due_in), "a1")
    yield cmd("SET", f"{p}queue:mail:name:job", "a1")
    entry = json.dumps({"attempt": 1, "at": now - 30, "outcome": "retried", "status": 503})
    yield cmd("LPUSH", f"{p}attempts:a1", entry)
    yield cmd("HSET", f"{p}task:r1", "queue", "mail", "url", "http://app.test/r",
              "attempts", "1", "created_at", repr(now), "due_at", repr(now))  # fmt: skip
    yield cmd("ZADD", f"{p}queue:mail:running", repr(now + 5), "r1")
    yield cmd("HSET", f"{p}task:d1", "queue", "mail", "url", "http://app.test/d",
              "attempts", "3", "dead_at", repr(now - 10), "last_status", "410")  # fmt: skip
    yield cmd("ZADD", f"{p}queue:mail:dead", repr(now - 10), "d1")
    yield cmd("HSET", f"{p}queue:mail:stats", "delivered", "5", "failed", "2")
    yield cmd("HSET", f"{p}queue:mail:settings", "rate", "3")
    yield cmd("SET", f"{p}queue:mail:paused", "1")
    yield cmd("HSET", f"{p}queue:mail:rate", "tokens", "2", "at", repr(now))
    yield cmd("HSET", f"{p}queue:mail:minute:1799999940", "delivered", "4")
    yield cmd("EXPIRE", f"{p}queue:mail:minute:1799999940", "7200")
    yield cmd("HSET", f"{p}task:done1", "queue", "mail", "url", "http://app.test/x",
              "delivered_at", repr(now - 5))  # fmt: skip
    yield cmd("EXPIRE", f"{p}task:done1", "3600")
    yield cmd("SADD", f"{p}queues", "mail")


class MigrateTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.redis = connect_pool(redis_address())
        self.addCleanup(self.redis.disconnect)
        self.keys = fresh_keys()
        self.prefix = self.keys.prefix
        self.store = RedisStore(self.redis, reactor, self.keys)
        self.said: list[str] = []

    def migrate(self, redis=None):
        return defer.ensureDeferred(
            migrate.migrate(redis or self.redis, self.prefix, NOW, self.said.append)
        )

    @defer.inlineCallbacks
    def old_keys(self):
        found = []
        for head in ("task:", "attempts:", "queue:"):
            found += yield self.redis.keys(self.prefix + head + "*")
        return sorted(found)

    @defer.inlineCallbacks
    def test_everything_moves_and_the_new_code_finds_it(self):
        yield write_old_layout(self.redis, self.prefix)
        self.assertIsNotNone((yield migrate.find_old_layout(self.redis, self.prefix)))
        moved = yield self.migrate()
        self.assertEqual(
            moved.queues["mail"],
            {"scheduled": 2, "were running (due now)": 1, "dead": 1,
             "names": 1, "queue keys": 5},
        )  # fmt: skip
        self.assertEqual(moved.records, 1)
        self.assertIn("queue mail: 2 scheduled, 1 were running (due now), 1 dead", self.said[0])
        self.assertEqual((yield self.old_keys()), [], "nothing left of the old layout")
        self.assertIsNone((yield migrate.find_old_layout(self.redis, self.prefix)))

        store = self.store
        a1 = yield store.describe("mail.a1")
        self.assertEqual(
            (a1["status"], a1["due_at"], a1["url"]),
            ("scheduled", repr(NOW + 60), "http://app.test/a"),
        )
        self.assertEqual([h["status"] for h in a1["history"]], [503], "its history came along")
        self.assertEqual((yield store.named("mail", "job")), "mail.a1")
        r1 = yield store.describe("mail.r1")
        self.assertEqual((r1["status"], float(r1["due_at"])), ("scheduled", NOW), "a lease ends")
        page = yield store.dead_letters("mail")
        self.assertEqual([task_id for task_id, _ in page.letters], ["mail.d1"])
        done = yield store.describe("mail.done1")
        self.assertEqual(done["status"], "delivered")
        ttl = yield self.redis.ttl(self.keys.task("mail", "mail.done1"))
        self.assertTrue(3500 < ttl <= 3600, ttl)
        (stats,) = yield store.queue_stats(["mail"], NOW)
        self.assertEqual(
            (stats.scheduled, stats.dead, stats.delivered, stats.failed, stats.paused, stats.known),
            (2, 1, 5, 2, True, True),
        )
        self.assertEqual((yield store.get_settings("mail")), {"rate": 3})
        minute = yield self.redis.hgetall(self.keys.minute("mail", 1799999940))
        self.assertEqual(minute, {"delivered": "4"})
        self.assertEqual((yield self.redis.execute_command("TYPE", self.keys.queues)), "zset")
        # Resumed, the queue's tasks are claimed by the new code.
        yield store.resume("mail")
        claimed = yield store.claim("mail", NOW + 60, 10, 5.0, 5)
        self.assertEqual(sorted(t.id for t in claimed.tasks), ["mail.a1", "mail.r1"])

    @defer.inlineCallbacks
    def test_a_second_run_changes_nothing(self):
        yield write_old_layout(self.redis, self.prefix)
        yield self.migrate()
        before = sorted((yield self.redis.keys(self.prefix + "*")))
        moved = yield self.migrate()
        self.assertEqual(sum(moved.queues["mail"].values()), 0)
        self.assertEqual(self.said[-1], "queue mail: nothing to move")
        self.assertEqual(sorted((yield self.redis.keys(self.prefix + "*"))), before)

    @defer.inlineCallbacks
    def test_a_run_stopped_half_way_is_finished_by_the_next(self):
        yield write_old_layout(self.redis, self.prefix)

        class Failing:
            """The connection is lost after three script calls."""

            def __init__(self, redis):
                self.redis, self.calls = redis, 0

            def eval(self, *args):
                self.calls += 1
                if self.calls > 3:
                    return defer.fail(ConnectionError("lost"))
                return self.redis.eval(*args)

            def __getattr__(self, name):
                return getattr(self.redis, name)

        yield self.assertFailure(self.migrate(Failing(self.redis)), ConnectionError)
        self.assertNotEqual((yield self.old_keys()), [], "stopped half-way")
        yield self.migrate()
        self.assertEqual((yield self.old_keys()), [])
        for task_id in ("mail.a1", "mail.r1", "mail.d1", "mail.done1"):
            self.assertIsNotNone((yield self.store.describe(task_id)), task_id)
        (stats,) = yield self.store.queue_stats(["mail"], NOW)
        self.assertEqual((stats.scheduled, stats.dead), (2, 1), "each task once")

    @defer.inlineCallbacks
    def test_the_start_up_check_finds_hand_written_old_tasks_too(self):
        """A task written by hand (no registry) is found by the bounded SCAN
        (here in a database of its own: the test run's shared one may hold
        more keys than the bound); a Redis of the new layout alone is not
        refused."""
        self.redis = connect_pool(attrs.evolve(redis_address(), db=9))
        self.addCleanup(self.redis.disconnect)
        self.store = RedisStore(self.redis, reactor, self.keys)
        yield self.store.add(make_task("t1"))
        self.assertIsNone((yield migrate.find_old_layout(self.redis, self.prefix)))
        yield self.redis.execute_command("ZADD", self.keys.queues, 0, "q")
        self.assertIsNone((yield migrate.find_old_layout(self.redis, self.prefix)))
        yield self.redis.hset(self.prefix + "task:x", "queue", "q")
        found = yield migrate.find_old_layout(self.redis, self.prefix)
        self.assertEqual(found, self.prefix + "task:x")


class RefusalTests(unittest.TestCase):
    """A node on a Redis of the old layout refuses to start and names the
    command; after it, the node delivers the old tasks."""

    timeout = 120

    @defer.inlineCallbacks
    def test_a_node_refuses_the_old_layout_and_delivers_after_the_migration(self):
        redis = connect_pool(redis_address())
        self.addCleanup(redis.disconnect)
        prefix = fresh_keys().prefix
        receiver = start_receiver(self)
        now = time.time()
        yield write_old_layout(redis, prefix, now=now, due_in=0.0)
        yield redis.hset(prefix + "task:a1", "url", receiver.url + "/a")
        yield redis.hset(prefix + "task:r1", "url", receiver.url + "/r")
        # Spawned as start_node does, but not waited on: it must stop.
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TORQUE_")}
        argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", "torque",
                "--port", "tcp:0:interface=127.0.0.1",
                "--redis-prefix", prefix, "--redis", redis_url()]  # fmt: skip
        refused = Node(workdir, argv, {**env, "PYTHONUNBUFFERED": "1"})
        refused.spawn()
        self.addCleanup(refused.stop)
        yield wait_for(lambda: refused.process is None, what="the node to stop")
        said = f"the node exited ({refused.exit_code}):\n{refused.output}"
        self.assertIn("the node exited (1)", said)
        self.assertIn("old key layout", said)
        self.assertIn(f"python -m torque.migrate --redis <url> --redis-prefix {prefix}", said)

        yield defer.ensureDeferred(migrate.migrate(redis, prefix, now, lambda line: None))
        node = yield start_node(self, prefix=prefix)
        status, _, _ = yield node.post("/queues/mail/resume")
        self.assertEqual(status, 200)
        yield wait_for(lambda: receiver.to("/a") and receiver.to("/r"), what="the old tasks")
        self.assertEqual(receiver.to("/a")[0].headers["x-torque-task-id"], "mail.a1")
