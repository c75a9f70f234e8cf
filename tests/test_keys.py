"""torque.keys is the one place a key is named, and the layout is the same
for every mode: every key of a queue carries its hash tag, a task id names
its queue, and every script stays in one hash slot — every key it touches
is one of its ``KEYS``, or (the scripts flagged ``UNDECLARED``) a key of
the same queue that the prelude names from the queue's key prefix."""

import re

import attrs
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.redis_server import fresh_keys, redis_address
from tests.test_store import NOW, make_task
from torque import keys, scripts
from torque.cluster import key_slot
from torque.connection import connect_pool
from torque.hosts import HostBudgets
from torque.retry import Dead, Delivered, Postponed, Retry, Waiting
from torque.storage import NodeInfo
from torque.store import RedisStore

SCRIPTS = {n: getattr(scripts, n) for n in dir(scripts) if n.isupper() and n[0] != "_"}


def body(text: str) -> str:
    """A script without its flag comment."""
    return text.removeprefix(keys.UNDECLARED)


class TaskIds(unittest.TestCase):
    def test_an_id_names_its_queue(self):
        task_id = keys.task_id("my-queue_1", "Ab_-9")
        self.assertEqual(task_id, "my-queue_1.Ab_-9")
        self.assertEqual(keys.queue_of_id(task_id), "my-queue_1")
        # Only the first separator counts: the rest is the token.
        self.assertEqual(keys.queue_of_id("q.order.42"), "q")

    def test_an_id_that_names_no_queue_has_none(self):
        for task_id in ["t1", "", ".t1", "q.", "a b.t1", "q{x}.t1", "é.t1", "x" * 101 + ".t"]:
            self.assertIsNone(keys.queue_of_id(task_id), task_id)
        self.assertEqual(keys.queue_of_id("x" * 100 + ".t"), "x" * 100)


class TheLayout(unittest.TestCase):
    def test_every_key_of_a_queue_carries_its_hash_tag(self):
        k = keys.Keys()
        queue_keys = [
            k.task("q", "q.t1"),
            k.attempts("q", "q.t1"),
            *k.queue("q"),
            k.settings("q"),
            k.name("q", "n"),
            k.minute("q", 1_700_000_040),
            k.wake("q"),
        ]
        self.assertEqual(
            queue_keys,
            [
                "torque:{q}:task:q.t1",
                "torque:{q}:attempts:q.t1",
                "torque:{q}:due",
                "torque:{q}:running",
                "torque:{q}:dead",
                "torque:{q}:stats",
                "torque:{q}:paused",
                "torque:{q}:rate",
                "torque:{q}:settings",
                "torque:{q}:name:n",
                "torque:{q}:minute:1700000040",
                "torque:{q}:wake",
            ],
        )
        self.assertEqual({key_slot(key) for key in queue_keys}, {key_slot("q")})
        self.assertEqual(
            [k.queues, k.nodes, k.node("n1"), k.completion_key, k.door("cloudtasks")],
            [
                "torque:queues",
                "torque:nodes",
                "torque:node:n1",
                "torque:completion-key",
                "torque:door:cloudtasks",
            ],
        )

    def test_a_wake_channel_names_its_queue(self):
        k = keys.Keys("app:")
        self.assertEqual(k.queue_of_wake(k.wake("a-b_1")), "a-b_1")
        self.assertIsNone(k.queue_of_wake("app:{q}:due"))
        self.assertIsNone(k.queue_of_wake("other:{q}:wake"))
        self.assertEqual(k.wake_pattern, "app:{*}:wake")
        self.assertEqual(keys.Keys("a*b:").wake_pattern, "a\\*b:{*}:wake")


class NoScriptSpellsAKey(unittest.TestCase):
    def test_every_script_opens_with_the_prelude(self):
        self.assertGreater(len(SCRIPTS), 15)
        for name, text in SCRIPTS.items():
            self.assertTrue(body(text).startswith(keys.LUA), name)

    def test_no_script_builds_a_key_name(self):
        """Past the prelude, no string is joined to a key part: ``.. 'due'``,
        ``'task:' ..``, ``.. ':'`` are how the scripts spelled keys before,
        and no key prefix comes as an argument."""
        parts = [
            getattr(keys, n) for n in dir(keys) if n.isupper() and isinstance(getattr(keys, n), str)
        ]
        self.assertIn("task:", parts)
        for name, text in SCRIPTS.items():
            code = body(text).removeprefix(keys.LUA)
            joined = re.findall(r"\.\.\s*'([^']*)'|'([^']*)'\s*\.\.", code)
            spelled = [a or b for a, b in joined if (a or b) in parts or (a or b).endswith(":")]
            self.assertEqual(spelled, [], name)
            self.assertNotIn("ARGV[1] .. '", code, name)
            # The prelude's key functions take a queue prefix from KEYS only.
            calls = re.findall(r"K\.(?:task|attempts|name|minute)\(([^,]*),", code)
            self.assertLessEqual(set(calls), {"q.prefix", "qp"}, name)

    def test_only_scripts_that_learn_keys_as_they_run_are_flagged(self):
        """The flag is a plain Lua comment to Redis (``#!lua`` would change
        the script's semantics there)."""
        self.assertTrue(keys.UNDECLARED.startswith("--!df "))
        for name, text in SCRIPTS.items():
            flagged = text.startswith(keys.UNDECLARED)
            code = body(text).removeprefix(keys.LUA)
            learns = bool(re.search(r"K\.(task|attempts|name|minute)\(", code))
            self.assertEqual(flagged, learns, name)


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
local q = K.queue_of(KEYS, 1)
return {K.task(q.prefix, 'q.t1'), K.attempts(q.prefix, 'q.t1'), q.prefix,
        K.name(q.prefix, 'n'), q.due, q.running, q.dead, q.stats, q.paused, q.rate,
        K.minute(q.prefix, 1700000040)}
""",
            k.queue("q"),
            [],
        )
        self.assertEqual(
            names,
            [
                k.task("q", "q.t1"),
                k.attempts("q", "q.t1"),
                k.queue_prefix("q"),
                k.name("q", "n"),
                *k.queue("q"),
                k.minute("q", 1700000040),
            ],
        )


# The commands whose every argument is a key; the others name one key first
# (PUBLISH names a channel, no key).
_ALL_KEYS = {"DEL", "EXISTS"}


def touched(call: list) -> list[str]:
    command = call[0].upper()
    if command == "PUBLISH":
        return []
    return list(call[1:]) if command in _ALL_KEYS else [call[1]]


class EveryScriptStaysInOneSlot(unittest.TestCase):
    """Every script call of the store's whole repertoire, run against the
    real Redis with ``redis.call`` traced: its ``KEYS`` are in one hash
    slot, and every key it touches is one of them or — in a flagged script —
    a key of the same queue.  This is what Redis Cluster requires (and
    strict services, for every unflagged script)."""

    timeout = 60

    def setUp(self):
        self.redis = connect_pool(redis_address())
        self.addCleanup(self.redis.disconnect)
        self.keys = fresh_keys()
        self.calls: list[tuple[str, list[str], list]] = []
        self.store = RedisStore(self.redis, reactor, keys=self.keys, dead_max=2)
        real_eval = self.store._eval

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
                self.calls.append((script, list(script_keys), reply[1]))
                return reply[0]

            return d.addCallback(keep)

        self.store._eval = traced

    @defer.inlineCallbacks
    def use_every_script(self):
        store, lease = self.store, self.store.lease
        claim = store.claim
        yield store.add(make_task("a", name="job"))
        yield store.add(make_task("a2", name="job"))  # a duplicate: reads the holder
        yield store.add_many(
            [make_task(f"b{i}", due_at=NOW - 1) for i in range(4)]
            + [make_task("r1", queue="r", due_at=NOW - 1)]
        )
        got = (yield claim("q", NOW, 2, 5.0, 1, 0.0, HostBudgets(default=10))).tasks
        more = (yield claim("q", NOW, 10, 5.0, 1, 1000.0)).tasks
        (r1,) = (yield claim("r", NOW, 10, 5.0, 1)).tasks
        yield store.renew([(t.queue, t.id, t.attempts) for t in [*got, r1]], NOW + 1)
        first, second, *rest = got + more
        yield store.settle(
            "q",
            [
                (first, Delivered(200)),
                (second, Retry(NOW + 5, 500, "oops"), 0.1),
                (rest[0], Dead(410, "gone")),
                (rest[1], Postponed(NOW + 9, 503)),
                (rest[2], Waiting(NOW + 600, 202)),
            ],
            NOW + 1,
        )
        yield store.complete("q", rest[2], Delivered(200), NOW + 2)
        yield claim("r", NOW + lease + 1, 10, 5.0, 1)  # r1's lease ran out: dead
        yield store.describe("q.a")
        yield store.run_now("q.b1", NOW + 2)
        yield store.cancel("q.a", keep_name=60.0)
        yield store.pause("q")
        yield store.resume("q")
        yield store.pause("fresh", create=True)
        yield store.set_settings("q", {"rate": 5.0})
        yield store.queue_stats(["q", "r"], NOW)
        yield store.queue_page(None, 10, NOW)
        yield store.task_page("q", "scheduled")
        yield store.dead_letters("q")
        yield store.retry_dead("q", None, NOW + 3)
        yield claim("q", NOW + 3, 10, 5.0, 1)
        yield store.retry_dead("r", ["r.r1"], NOW + 3)
        yield store.delete_dead("q", None)
        yield store.purge("r")
        yield store.delete_queue("r")
        adding = store.add(make_task("c1", due_at=NOW + 4))
        joined = claim("q", NOW + 4, 10, 5.0, 1)  # sent with the add: ADD_THEN_CLAIM
        yield adding
        yield joined
        node = NodeInfo("n1", "h", 1, "0.1", None, 0, NOW, NOW)
        yield store.beat(node, 15.0)
        yield store.live_nodes()
        yield store.leave("n1")
        yield store.completion_key("secret")

    @defer.inlineCallbacks
    def test_every_script_keeps_to_its_keys_slot(self):
        yield self.use_every_script()
        ran = {name for name, text in SCRIPTS.items() for script, _, _ in self.calls
               if script == text}  # fmt: skip
        self.assertEqual(ran, set(SCRIPTS), "the check covers every script")
        undeclared = 0
        for script, script_keys, trace in self.calls:
            name = next(n for n, text in SCRIPTS.items() if text == script)
            self.assertEqual(len({key_slot(key) for key in script_keys}), 1, name)
            (slot,) = {key_slot(key) for key in script_keys}
            prefixes = {key[: key.index("}") + 2] for key in script_keys if "}" in key}
            for call in trace:
                for key in touched(call):
                    if key in script_keys:
                        continue
                    undeclared += 1
                    where = f"{name}: {call[0]} {key}"
                    self.assertTrue(script.startswith(keys.UNDECLARED), where)
                    self.assertEqual(key_slot(key), slot, where)
                    self.assertTrue(key.startswith(tuple(prefixes)), where)
        self.assertGreater(undeclared, 0, "the sweep, the claims and the names were traced")

    @defer.inlineCallbacks
    def test_no_script_touches_a_record_of_no_queue(self):
        """The registry, the index of nodes and the completion key are
        written by plain commands, so no script spans two slots."""
        yield self.use_every_script()
        k = self.keys
        outside = {k.queues, k.nodes, k.completion_key}
        for _script, script_keys, trace in self.calls:
            every = set(script_keys) | {key for call in trace for key in touched(call)}
            self.assertEqual(every & outside, set())
            if k.node("n1") in every:  # a heartbeat's hash, alone (BEAT)
                self.assertEqual(every, {k.node("n1")})
        registered = yield self.redis.execute_command("ZRANGE", k.queues, 0, -1)
        self.assertEqual(registered, ["fresh", "q"])  # r was deleted


class StoreRegistersQueues(unittest.TestCase):
    """The registry is written outside the ADD script: once per queue per
    store (again after ``REGISTER_AGAIN``), before the first add to it."""

    def setUp(self):
        from twisted.internet.task import Clock

        self.redis = connect_pool(redis_address())
        self.addCleanup(self.redis.disconnect)
        self.keys = fresh_keys()
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = RedisStore(self.redis, reactor, keys=self.keys)
        self.store.clock = self.clock
        self.commands: list = []
        real_call = self.store._call
        self.store._call = lambda *a: self.commands.append(a) or real_call(*a)

    def registrations(self) -> list:
        return [
            a[3:] for a in self.commands if a[:3] == ("execute_command", "ZADD", self.keys.queues)
        ]

    @defer.inlineCallbacks
    def test_one_zadd_per_queue_not_per_add(self):
        yield self.store.add_many([make_task("t1"), make_task("t1", queue="r")])
        for i in range(3):
            yield self.store.add_many([make_task(f"t{i + 2}"), make_task(f"t{i + 2}", queue="s")])
        self.assertEqual(self.registrations(), [("NX", "0", "q", "0", "r"), ("NX", "0", "s")])
        self.clock.advance(61)
        yield self.store.add_many([make_task("t9")])
        self.assertEqual(self.registrations()[-1], ("NX", "0", "q"), "once a minute again")
        page = yield self.store.queue_page(None, 10, NOW, names_only=True)
        self.assertEqual(page.queues, ["q", "r", "s"])

    @defer.inlineCallbacks
    def test_a_deleted_queue_is_registered_again_by_its_next_add(self):
        yield self.store.add(make_task("t1"))
        yield self.store.cancel("q.t1")
        self.assertEqual((yield self.store.delete_queue("q"))[0], "deleted")
        yield self.store.add(make_task("t2"))
        page = yield self.store.queue_page(None, 10, NOW, names_only=True)
        self.assertEqual(page.queues, ["q"])

    @defer.inlineCallbacks
    def test_tasks_of_many_queues_keep_their_order(self):
        tasks = [make_task("a", queue="x"), make_task("b", queue="y"), make_task("c", queue="x")]
        named = attrs.evolve(make_task("d", queue="y"), name="n")
        added = yield self.store.add_many([*tasks, named, attrs.evolve(named, id="y.e")])
        self.assertEqual(
            added, [("x.a", True), ("y.b", True), ("x.c", True), ("y.d", True), ("y.d", False)]
        )
