"""torque.keys is the one place a key is named: the Lua prelude names the
same keys as :class:`Keys`, no script spells a key of its own, and the
scripts on the hot path touch only their ``KEYS`` and the per-task keys the
prelude names (what Redis Cluster will require)."""

import re

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.redis_server import fresh_keys, redis_address
from tests.test_store import NOW, make_task
from torque import keys, scripts
from torque.connection import connect_pool
from torque.retry import Dead, Delivered, Retry
from torque.store import RedisStore

SCRIPTS = {n: getattr(scripts, n) for n in dir(scripts) if n.isupper() and n[0] != "_"}


class NoScriptSpellsAKey(unittest.TestCase):
    def test_every_script_opens_with_the_prelude(self):
        self.assertGreater(len(SCRIPTS), 15)
        for name, text in SCRIPTS.items():
            self.assertTrue(text.startswith(keys.LUA), name)

    def test_no_script_builds_a_key_name(self):
        """Past the prelude, no string is joined to a key part: ``.. 'due'``,
        ``'task:' ..``, ``.. ':'`` are how the scripts spelled keys before."""
        parts = [
            getattr(keys, n) for n in dir(keys) if n.isupper() and isinstance(getattr(keys, n), str)
        ]
        self.assertIn("task:", parts)
        for name, text in SCRIPTS.items():
            body = text.removeprefix(keys.LUA)
            joined = re.findall(r"\.\.\s*'([^']*)'|'([^']*)'\s*\.\.", body)
            spelled = [a or b for a, b in joined if (a or b) in parts or (a or b).endswith(":")]
            self.assertEqual(spelled, [], name)
            self.assertNotIn("ARGV[1] .. '", body, name)


class PreludeNamesTheSameKeys(unittest.TestCase):
    def setUp(self):
        self.redis = connect_pool(redis_address())
        self.addCleanup(self.redis.disconnect)
        self.keys = fresh_keys()

    @defer.inlineCallbacks
    def test_each_lua_name_is_the_python_name(self):
        k = self.keys
        names = yield self.redis.eval(
            keys.LUA
            + """
local pfx = ARGV[1]
local q = K.queue_named(pfx, 'q')
return {K.task(pfx, 't1'), K.attempts(pfx, 't1'), K.queue_prefix(pfx, 'q'),
        K.name(q.prefix, 'n'), K.wake(pfx, 'q'), K.node(pfx, 'n1'),
        q.due, q.running, q.dead, q.stats, q.paused, q.rate,
        K.minute(q.prefix, 1700000040)}
""",
            [],
            [k.prefix],
        )
        self.assertEqual(
            names,
            [
                k.task("t1"),
                k.attempts("t1"),
                k.queue_prefix("q"),
                k.name("q", "n"),
                k.wake("q"),
                k.node("n1"),
                *k.queue("q"),
                # The documented layout (docs/redis-keys.rst).
                k.prefix + "queue:q:minute:1700000040",
            ],
        )

    @defer.inlineCallbacks
    def test_claim_and_settle_touch_only_their_keys_and_per_task_keys(self):
        """Every key the claim and the settle touch is one of their KEYS, or
        a key of a task they pop (hash, history, name) or the minute's
        counter: the prelude names those, from ids the scripts only learn
        as they run."""
        k = self.keys
        store = RedisStore(self.redis, reactor, keys=k, dead_max=1)
        for i in range(3):
            yield store.add(make_task(f"t{i}", name=f"n{i}", due_at=NOW - 1))
        touched = []
        real_eval = store._eval

        def traced(script, script_keys, args):
            wrapped = (
                "local trace, real = {}, redis.call\n"
                "local redis = setmetatable({call = function(...)\n"
                "  trace[#trace + 1] = {...}; return real(...) end}, {__index = redis})\n"
                f"local function run()\n{script}\nend\n"
                "local out = run()\nreturn {out, trace}\n"
            )
            d = real_eval(wrapped, script_keys, args)

            def keep(reply):
                touched.append((list(script_keys), reply[1]))
                return reply[0]

            return d.addCallback(keep)

        store._eval = traced
        claimed = yield store.claim("q", NOW, 10, 5.0, 2)
        tasks = claimed.tasks
        self.assertEqual(len(tasks), 3)
        yield store.settle(
            "q",
            [
                (tasks[0], Delivered(200)),
                (tasks[1], Retry(NOW + 9, 500, "")),
                (tasks[2], Dead(500, "gave up")),
            ],
            NOW + 1,
        )
        per_task = re.compile(
            re.escape(k.prefix)
            + r"(task:|attempts:|queue:q:name:|queue:q:minute:\d+$)"  # fmt: skip
        )
        self.assertEqual(len(touched), 2)
        for script_keys, trace in touched:
            for call in trace:
                command = call[0].upper()
                if command == "PUBLISH":
                    continue
                named = call[1:] if command == "DEL" else call[1:2]
                for key in named:
                    self.assertTrue(key in script_keys or per_task.match(key), f"{command} {key}")
