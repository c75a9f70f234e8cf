"""Tests of torque.cluster on a fake cluster whose nodes answer on a Clock,
with latency: slots, routing, and every redirection the layer follows.

``tests/test_cluster_redis.py`` runs the same layer against a real Redis
Cluster.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial import unittest

from torque.cluster import (
    DOWN_DELAY,
    MAX_REDIRECTS,
    TRYAGAIN_DELAY,
    ClusterConnection,
    ClusterUnavailable,
    Redirect,
)
from torque.cluster_slots import CrossSlot, SlotMap, command_keys, command_slot, key_slot
from torque.cluster_wake import RETRY, ShardedSubscriber
from torque.connection import connect
from torque.options import Options, options_from_environ
from torque.redis_state import down_reason, is_cluster
from torque.redis_url import RedisAddress, parse_redis_url

A, B, C = ("10.0.0.1", 7001), ("10.0.0.2", 7002), ("10.0.0.3", 7003)
LATENCY = 0.002
# Keys whose slots are known (redis-cli CLUSTER KEYSLOT): "foo" is 12182,
# owned by C below; "{q}" keys share the slot of "q".
FOO = "foo"


class FakeCluster:
    """Three primaries splitting the slots as ``redis-cli --cluster create``
    does; each node answers from the cluster's true map after ``LATENCY``."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.truth = SlotMap([(0, 5460, A), (5461, 10922, B), (10923, 16383, C)])
        self.migrating: dict[int, tuple[str, int]] = {}  # slot -> target (keys already there)
        self.down: set[tuple[str, int]] = set()
        self.errors: list[str] = []  # the next evals' answers, whatever node
        self.log: list[tuple] = []

    def cluster_slots(self) -> list:
        """``CLUSTER SLOTS``: the runs of slots with one owner."""
        ranges = []
        for slot in range(16384):
            if self.truth.owner(slot) is None:
                continue
            host, port = self.truth.owner(slot)
            if ranges and ranges[-1][2][:2] == [host, port] and ranges[-1][1] == slot - 1:
                ranges[-1][1] = slot
            else:
                ranges.append([slot, slot, [host, port, "id"]])
        return ranges

    def connect(self, address: RedisAddress):
        return FakeNode(self, (address.host, address.port))


class FakeNode:
    def __init__(self, cluster: FakeCluster, node):
        self.cluster = cluster
        self.node = node
        self._factory = self  # txredisapi's handler keeps its pool here
        self.connectionQueue = self
        self.asking = False

    @property
    def down(self):  # what torque.redis_state.known_down reads
        return self.node in self.cluster.down

    def _later(self, answer):
        d = defer.Deferred()
        self.cluster.clock.callLater(LATENCY, answer, d)
        return d

    def eval(self, script, keys, args):
        self.cluster.log.append((self.node, "EVAL", tuple(keys), self.asking))
        asking, self.asking = self.asking, False
        return self._later(lambda d: self._answer(d, keys, asking))

    def _answer(self, d, keys, asking, reply=None):
        """Answer a command on ``keys`` as this node would: ``reply``
        (default ``["ran on", node]``), or a redirection, or an error."""
        reply = ["ran on", self.node] if reply is None else reply
        if self.node in self.cluster.down:
            return d.errback(txredisapi.ConnectionError("Not connected"))
        if self.cluster.errors:
            return d.errback(txredisapi.ResponseError(self.cluster.errors.pop(0)))
        if not keys:
            return d.callback(reply)
        slot = key_slot(keys[0])
        owner = self.cluster.truth.owner(slot)
        target = self.cluster.migrating.get(slot)
        if target == self.node and asking:
            return d.callback(reply)
        if target and owner == self.node:
            return d.errback(txredisapi.ResponseError(f"ASK {slot} {target[0]}:{target[1]}"))
        if owner != self.node:
            return d.errback(txredisapi.ResponseError(f"MOVED {slot} {owner[0]}:{owner[1]}"))
        d.callback(reply)

    def execute_command(self, *args):
        self.cluster.log.append((self.node, *args))
        if args == ("ASKING",):
            self.asking = True
            return self._later(lambda d: d.callback("OK"))
        if args == ("CLUSTER", "SLOTS"):
            return self._later(lambda d: self._answer(d, [], False, self.cluster.cluster_slots()))
        asking, self.asking = self.asking, False
        return self._later(lambda d: self._answer(d, command_keys(args), asking))

    def hset(self, key, field, value):
        return self.execute_command("HSET", key, field, value)

    def pipeline(self):
        self.cluster.log.append((self.node, "take"))
        return self._later(lambda d: d.callback(FakePipeline(self)))

    def ping(self):
        return self._later(lambda d: d.callback("PONG"))

    def getConnection(self):
        self.cluster.log.append((self.node, "take"))
        return self._later(lambda d: d.callback(self))

    def put(self, connection):
        self.cluster.log.append((self.node, "put back"))

    def disconnect(self):
        return defer.succeed(None)


class FakePipeline:
    """A pipeline on one connection of a fake node: its commands are logged
    as one entry, and answered in order, each as the node would."""

    def __init__(self, node: FakeNode):
        self.node = node
        self.commands = []

    def execute_command(self, *args):
        self.commands.append(args)

    def execute_pipeline(self):
        node = self.node
        node.cluster.log.append((node.node, "PIPELINE", *self.commands))
        replies = []
        for args in self.commands:
            d = node.execute_command(*args)
            node.cluster.log.pop()  # logged above, as one
            replies.append(d.addBoth(lambda result: [result]))

        def done(results):
            node.cluster.log.append((node.node, "put back"))
            results = [result for (result,) in results]
            for index, result in enumerate(results):
                if isinstance(result, Failure):
                    raise defer.FirstError(result, index)
            return results

        return defer.gatherResults(replies).addCallback(done)


class SlotTests(unittest.TestCase):
    def test_slots_are_crc16_of_the_key_as_redis_computes_them(self):
        # CLUSTER KEYSLOT's answers on Redis 7.0.
        self.assertEqual(key_slot("foo"), 12182)
        self.assertEqual(key_slot("123456789"), 0x31C3)  # the spec's check value
        self.assertEqual(key_slot(b"foo"), 12182)

    def test_a_hash_tag_is_the_first_non_empty_braces(self):
        self.assertEqual(key_slot("torque:{foo}:due"), key_slot("foo"))
        self.assertEqual(key_slot("{user1000}.following"), key_slot("{user1000}.followers"))
        self.assertEqual(key_slot("foo{}{bar}"), key_slot(b"foo{}{bar}"))
        self.assertNotEqual(key_slot("foo{}{bar}"), key_slot("bar"))  # {} is empty: whole key
        self.assertEqual(key_slot("foo{{bar}}zap"), key_slot("{bar"))
        self.assertEqual(key_slot("foo{bar}{zap}"), key_slot("bar"))

    def test_keys_of_one_slot_are_one_command(self):
        self.assertEqual(command_slot(["torque:{q}:due", "torque:{q}:task:1"]), key_slot("q"))
        self.assertIsNone(command_slot([]))
        with self.assertRaises(CrossSlot):
            command_slot(["torque:{q}:due", "torque:{r}:due"])

    def test_redirects_are_read_from_the_error(self):
        self.assertEqual(
            Redirect.parse("MOVED 3999 127.0.0.1:6381"), Redirect("MOVED", 3999, "127.0.0.1", 6381)
        )
        self.assertEqual(Redirect.parse("ASK 1 ::1:7000"), Redirect("ASK", 1, "::1", 7000))
        self.assertIsNone(Redirect.parse("ERR wrong number of arguments"))

    def test_the_map_reads_cluster_slots(self):
        slots = SlotMap.from_cluster_slots(
            [[0, 9, [b"h", 1, b"x"]], [10, 16383, ["g", 2, "y"], ["r", 3]]]
        )
        self.assertEqual((slots.owner(9), slots.owner(10)), (("h", 1), ("g", 2)))
        self.assertEqual(slots.primaries, {("h", 1), ("g", 2)})
        self.assertTrue(slots.covered)
        self.assertFalse(SlotMap([(0, 5, ("h", 1))]).covered)


class FakeClusterCase(unittest.TestCase):
    """A ClusterConnection to a :class:`FakeCluster`, on a Clock."""

    def setUp(self):
        self.clock = Clock()
        self.cluster = FakeCluster(self.clock)
        self.redis = ClusterConnection([RedisAddress(*A)], self.cluster.connect, self.clock)

    def run_clock(self, d, seconds=5.0):
        """Advance the clock in small steps until ``d`` has fired."""
        results = []
        d.addBoth(results.append)
        steps = 0
        while not results and steps < seconds / 0.001:
            self.clock.advance(0.001)
            steps += 1
        self.assertTrue(results, "never answered")
        return results[0]

    def evals(self):
        return [entry for entry in self.cluster.log if entry[1] == "EVAL"]


class ClusterConnectionTests(FakeClusterCase):
    def test_a_script_goes_to_the_owner_of_its_keys_slot(self):
        answer = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertEqual(answer, ["ran on", C])
        self.assertEqual(self.evals(), [(C, "EVAL", (FOO,), False)])
        self.assertEqual(
            [e for e in self.cluster.log if e[1] == "CLUSTER"], [(A, "CLUSTER", "SLOTS")]
        )

    def test_keys_in_two_slots_are_refused_before_sending(self):
        with self.assertRaises(CrossSlot):
            self.redis.eval("return 1", ["{a}x", "{b}x"], [])
        self.assertEqual(self.cluster.log, [])

    def test_moved_patches_the_map_and_goes_to_the_new_owner(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.truth.move(key_slot(FOO), B)  # resharded: for good
        answer = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertEqual(answer, ["ran on", B])
        self.assertEqual(self.redis.map.owner(key_slot(FOO)), B)
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        # The third call went straight to B: no second MOVED.
        self.assertEqual([e[0] for e in self.evals()], [C, C, B, B])

    def test_ask_sends_asking_and_the_command_on_one_connection_once(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.migrating[key_slot(FOO)] = A
        answer = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertEqual(answer, ["ran on", A])
        on_a = [e for e in self.cluster.log if e[0] == A and e[1] != "CLUSTER"]
        self.assertEqual(
            on_a, [(A, "take"), (A, "ASKING"), (A, "EVAL", (FOO,), True), (A, "put back")]
        )
        # ASK changes no map: the slot is still C's until the migration ends.
        self.assertEqual(self.redis.map.owner(key_slot(FOO)), C)

    def test_tryagain_waits_then_tries_again(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.errors = ["TRYAGAIN Multiple keys request during rehashing of slot"]
        d = self.redis.eval("return 1", [FOO], [])
        self.clock.advance(LATENCY)
        self.assertEqual(len(self.evals()), 2)
        self.clock.advance(TRYAGAIN_DELAY - 0.001)
        self.assertEqual(len(self.evals()), 2)  # not before the wait
        self.assertEqual(self.run_clock(d), ["ran on", C])
        self.assertEqual(len(self.evals()), 3)

    def test_clusterdown_waits_and_reloads_the_map(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.errors = ["CLUSTERDOWN The cluster is down"]
        self.cluster.truth.move(key_slot(FOO), B)  # a failover: B took over
        answer = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertEqual(answer, ["ran on", B])
        self.assertEqual(len([e for e in self.cluster.log if e[1] == "CLUSTER"]), 2)
        self.assertEqual([e[0] for e in self.evals()], [C, C, B])  # no MOVED needed

    def test_an_unreachable_primary_makes_it_reload_the_map(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.down.add(C)
        self.cluster.truth.move(key_slot(FOO), A)  # C's replica, now primary
        answer = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertEqual(answer, ["ran on", A])
        # C is known down: nothing more is sent to it.
        self.assertEqual([e[0] for e in self.evals()], [C, A])

    def test_it_gives_up_after_the_redirect_limit(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.errors = ["TRYAGAIN"] * (MAX_REDIRECTS + 5)
        failure = self.run_clock(self.redis.eval("return 1", [FOO], []), seconds=10)
        self.assertIsInstance(failure.value, ClusterUnavailable)
        self.assertEqual(len(self.evals()), 1 + MAX_REDIRECTS + 1)

    def test_other_errors_reach_the_caller_at_once(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.errors = ["ERR Error running script"]
        failure = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertIsInstance(failure.value, txredisapi.ResponseError)
        self.assertEqual(len(self.evals()), 2)

    def test_no_node_answering_names_the_nodes_it_tried(self):
        self.cluster.down.update({A, B, C})
        failure = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertIsInstance(failure.value, ClusterUnavailable)
        self.assertIn("10.0.0.1:7001", str(failure.value))

    def test_callers_during_a_reload_share_one_request(self):
        first = self.redis.eval("return 1", [FOO], [])
        second = self.redis.eval("return 1", ["bar"], [])
        self.run_clock(defer.gatherResults([first, second]))
        self.assertEqual(len([e for e in self.cluster.log if e[1] == "CLUSTER"]), 1)

    def test_ping_asks_every_primary(self):
        self.assertEqual(self.run_clock(self.redis.ping()), "PONG")
        self.cluster.down.add(B)
        failure = self.run_clock(self.redis.ping())
        self.assertIn("10.0.0.2:7002", str(failure.value))

    def test_the_down_wait_is_on_the_clock(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.errors = ["CLUSTERDOWN"]
        self.redis.eval("return 1", [FOO], [])
        self.clock.advance(LATENCY)
        self.clock.advance(DOWN_DELAY - 0.001)
        self.assertEqual(len([e for e in self.cluster.log if e[1] == "CLUSTER"]), 1)
        self.clock.advance(0.002)
        self.assertEqual(len([e for e in self.cluster.log if e[1] == "CLUSTER"]), 2)


class CommandKeysTests(unittest.TestCase):
    def test_a_command_is_routed_by_its_keys(self):
        cases = [
            ("first argument", ["HGETALL", "k", "x"], ["k"]),
            ("a script's KEYS", ["EVALSHA", "sha", "2", "a", "b", "arg"], ["a", "b"]),
            ("a script without keys", ["EVAL", "return 1", "0", "arg"], []),
            ("every argument", ["DEL", "a", "b"], ["a", "b"]),
            ("keyless", ["PING"], []),
            ("WAIT", ["WAIT", "1", "500"], []),
            ("a sharded channel", ["SPUBLISH", "torque:{q}:wake", "1"], ["torque:{q}:wake"]),
            ("lower case", ["get", "k"], ["k"]),
        ]
        for name, args, keys in cases:
            self.assertEqual(command_keys(args), keys, name)

    def test_commands_about_one_nodes_keyspace_are_refused(self):
        for name in ("KEYS", "SCAN", "FLUSHALL"):
            with self.assertRaises(ValueError, msg=name):
                command_keys([name, "*"])


class ClusterCommandsTests(FakeClusterCase):
    """Every call RedisStore makes goes where its key is."""

    def sent(self, command):
        return [entry for entry in self.cluster.log if entry[1] == command]

    def test_commands_and_helpers_go_to_the_owner_of_their_key(self):
        self.run_clock(self.redis.execute_command("HGETALL", FOO))
        self.run_clock(self.redis.hset("{r}:x", "f", "v"))  # slot 7893: B's
        self.assertEqual(self.sent("HGETALL"), [(C, "HGETALL", FOO)])
        self.assertEqual(self.sent("HSET"), [(B, "HSET", "{r}:x", "f", "v")])

    def test_a_keyless_command_goes_to_a_primary(self):
        self.run_clock(self.redis.execute_command("INFO"))
        self.assertEqual([e[0] for e in self.sent("INFO")], [A])

    def test_a_helper_follows_moved(self):
        self.run_clock(self.redis.hset(FOO, "f", "v"))
        self.cluster.truth.move(key_slot(FOO), B)
        self.run_clock(self.redis.hset(FOO, "f", "v"))
        self.assertEqual([e[0] for e in self.sent("HSET")], [C, C, B])

    def test_unknown_attributes_are_attribute_errors(self):
        # torque.redis_state.down_reason looks for a pool's _factory.
        self.assertFalse(hasattr(self.redis, "_factory"))
        self.assertFalse(hasattr(self.redis, "blpop"))

    def test_a_pipeline_is_sent_whole_on_one_connection_of_its_keys_owner(self):
        pipe = self.run_clock(self.redis.pipeline())
        pipe.execute_command("EVALSHA", "sha", 1, FOO, "arg")
        pipe.execute_command("WAIT", 1, 500)
        replies = self.run_clock(pipe.execute_pipeline())
        self.assertEqual(replies, [["ran on", C], ["ran on", C]])
        on_c = [e for e in self.cluster.log if e[0] == C]
        self.assertEqual(
            on_c,
            [(C, "take"), (C, "PIPELINE", ("EVALSHA", "sha", 1, FOO, "arg"), ("WAIT", 1, 500)),
             (C, "put back")],
        )  # fmt: skip

    def test_a_pipeline_follows_moved_whole(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.truth.move(key_slot(FOO), B)
        pipe = self.run_clock(self.redis.pipeline())
        pipe.execute_command("EVALSHA", "sha", 1, FOO)
        pipe.execute_command("WAIT", 1, 500)
        self.assertEqual(self.run_clock(pipe.execute_pipeline()), [["ran on", B]] * 2)
        self.assertEqual([e[0] for e in self.sent("PIPELINE")], [C, B])

    def test_an_asked_pipeline_opens_with_asking(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.migrating[key_slot(FOO)] = A
        pipe = self.run_clock(self.redis.pipeline())
        pipe.execute_command("EVALSHA", "sha", 1, FOO)
        pipe.execute_command("WAIT", 1, 500)
        self.assertEqual(self.run_clock(pipe.execute_pipeline()), [["ran on", A]] * 2)
        (asked,) = [e for e in self.sent("PIPELINE") if e[0] == A]
        self.assertEqual(asked[2:], (("ASKING",), ("EVALSHA", "sha", 1, FOO), ("WAIT", 1, 500)))

    def test_a_pipelines_other_errors_reach_the_caller_as_txredisapis_do(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.errors = ["NOSCRIPT No matching script"]
        pipe = self.run_clock(self.redis.pipeline())
        pipe.execute_command("EVALSHA", "sha", 1, FOO)
        failure = self.run_clock(pipe.execute_pipeline())
        self.assertIsInstance(failure.value, defer.FirstError)
        self.assertIn("NOSCRIPT", str(failure.value.subFailure.value))

    def test_keys_of_two_slots_in_one_pipeline_are_refused(self):
        pipe = self.run_clock(self.redis.pipeline())
        pipe.execute_command("GET", "{a}x")
        pipe.execute_command("GET", "{b}x")
        with self.assertRaises(CrossSlot):
            pipe.execute_pipeline()


class ClusterDownTests(FakeClusterCase):
    """A primary down: its slots fail soon, the others go on; /health says so."""

    def test_a_down_primary_still_in_the_map_fails_its_commands_soon(self):
        self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.cluster.down.add(C)  # killed, no replica has taken over yet
        started = self.clock.seconds()
        failure = self.run_clock(self.redis.eval("return 1", [FOO], []))
        self.assertIsInstance(failure.value, ClusterUnavailable)
        self.assertIn("10.0.0.3:7003", str(failure.value))
        # One wait and one reload, not MAX_REDIRECTS of them.
        self.assertLess(self.clock.seconds() - started, 2 * DOWN_DELAY)
        # The other primaries' slots go on.
        self.assertEqual(self.run_clock(self.redis.eval("return 1", ["r"], [])), ["ran on", B])

    def test_down_reason_only_when_every_node_is_down(self):
        self.assertIsNone(self.redis.down_reason(), "nothing known yet")
        self.run_clock(self.redis.ping())
        self.cluster.down.add(C)
        self.assertIsNone(self.redis.down_reason())
        self.cluster.down.update({A, B})
        reason = self.redis.down_reason()
        self.assertIn("10.0.0.1:7001, 10.0.0.2:7002, 10.0.0.3:7003", reason)
        self.assertEqual(down_reason(self.redis), reason)  # what the store asks

    def test_ping_reloads_the_map_when_a_primary_is_down(self):
        self.run_clock(self.redis.ping())
        self.cluster.down.add(C)
        self.cluster.truth = SlotMap([(0, 5460, A), (5461, 16383, B)])  # B's replica took C's
        self.assertEqual(self.run_clock(self.redis.ping()), "PONG")

    def test_ping_fails_while_slots_have_no_primary(self):
        self.cluster.truth = SlotMap([(0, 5460, A), (5461, 10922, B)])
        failure = self.run_clock(self.redis.ping())
        self.assertIsInstance(failure.value, ClusterUnavailable)
        self.assertIn("no primary", str(failure.value))


class ClusterUrlTests(unittest.TestCase):
    def test_table(self):
        cases = [
            ("three nodes, db 0", "redis+cluster://n1:7000,n2:7001,n3:7002/0",
             (("n1", 7000), ("n2", 7001), ("n3", 7002)), None, None),
            ("default port, no db", "redis+cluster://n1,n2",
             (("n1", 6379), ("n2", 6379)), None, None),
            ("password", "redis+cluster://:pw@n1:7000", (("n1", 7000),), None, "pw"),
            ("user and password", "redis+cluster://alice:pw@n1:7000/",
             (("n1", 7000),), "alice", "pw"),
            ("IPv6", "redis+cluster://[::1]:7000,n2", (("::1", 7000), ("n2", 6379)), None, None),
        ]  # fmt: skip
        for name, url, nodes, username, password in cases:
            address = parse_redis_url(url)
            self.assertEqual(address.cluster_nodes, nodes, name)
            self.assertEqual((address.username, address.password), (username, password), name)
            self.assertEqual(address.db, 0, name)
            seeds = address.cluster_seeds()
            self.assertEqual([(s.host, s.port) for s in seeds], list(nodes), name)
            self.assertTrue(all(s.password == password for s in seeds), name)
            self.assertTrue(all(not s.cluster_nodes for s in seeds), name)

    def test_a_cluster_has_database_0_only(self):
        for url in ("redis+cluster://n1:7000/1", "redis+cluster://n1:7000?db=2"):
            with self.assertRaises(ValueError, msg=url) as caught:
                parse_redis_url(url)
            self.assertIn("database 0 only", str(caught.exception))

    def test_bad_urls_are_value_errors_without_the_password(self):
        cases = [
            ("no node", "redis+cluster://:pw@"),
            ("an empty node", "redis+cluster://:pw@n1,/0"),
            ("port not a number", "redis+cluster://:pw@n1:x"),
            ("port out of range", "redis+cluster://:pw@n1:70000"),
        ]
        for name, url in cases:
            with self.assertRaises(ValueError, msg=name) as caught:
                parse_redis_url(url)
            self.assertNotIn("pw", str(caught.exception), name)

    def test_address_prints_its_nodes_without_the_password(self):
        address = parse_redis_url("redis+cluster://:s3cret@n1:7000,n2:7001")
        self.assertEqual(str(address), "redis+cluster://n1:7000,n2:7001/0")
        self.assertNotIn("s3cret", repr(address))

    def test_the_option_and_its_variable_name_the_option_in_errors(self):
        options = Options({})
        options.parseOptions(["--redis", "redis+cluster://n1:7000,n2:7001"])
        self.assertEqual(parse_redis_url(options["redis"]).cluster_nodes[1], ("n2", 7001))
        from_environ = options_from_environ({"TORQUE_REDIS": "redis+cluster://n1:7000"})
        self.assertEqual(parse_redis_url(from_environ["redis"]).cluster_nodes, (("n1", 7000),))
        with self.assertRaises(usage.UsageError) as caught:
            Options({}).parseOptions(["--redis", "redis+cluster://n1:7000/3"])
        self.assertIn("--redis", str(caught.exception))
        self.assertIn("database 0 only", str(caught.exception))
        with self.assertRaises(usage.UsageError) as caught:
            options_from_environ({"TORQUE_REDIS": "redis+cluster://n1:7000/3"})
        self.assertIn("TORQUE_REDIS", str(caught.exception))

    def test_a_cluster_url_makes_a_cluster_connection_of_pools_with_hiredis_encoding(self):
        import txredisapi

        from torque import fast_commands

        address = parse_redis_url("redis+cluster://127.0.0.1:1,127.0.0.1:2")
        clock = Clock()
        redis = connect(address, reactor=clock)
        self.assertIsInstance(redis, ClusterConnection)
        self.assertTrue(is_cluster(redis))
        self.assertEqual(
            [(s.host, s.port) for s in redis.seeds], [("127.0.0.1", 1), ("127.0.0.1", 2)]
        )
        # Each primary's pool is connect_pool's: bounded, hiredis-encoded.
        pool = redis._pool(("127.0.0.1", 1))
        self.addCleanup(pool.disconnect)
        self.assertEqual(type(pool._factory).__name__, "_Pool")
        self.assertIs(txredisapi.BaseRedisProtocol._build_command, fast_commands._build_command)
        single = connect(parse_redis_url("redis://127.0.0.1:1"), reactor=clock)
        self.addCleanup(single.disconnect)
        self.assertFalse(is_cluster(single))


class FakeNodeSubscriber:
    """What ShardedSubscriber keeps per primary, without a connection."""

    def __init__(self, node):
        self.node = node
        self.sharded = []
        self.disconnected = False

    def add(self, channel):
        self.sharded.append(channel)
        return defer.succeed(None)

    def drop(self, channel):
        self.sharded.remove(channel)

    def disconnect(self):
        self.disconnected = True
        return defer.succeed(None)


class FakeShardedSubscriber(ShardedSubscriber):
    def _on(self, node):
        if node not in self._nodes:
            self._nodes[node] = FakeNodeSubscriber(node)
        return self._nodes[node]


class ShardedSubscriberTests(FakeClusterCase):
    def setUp(self):
        super().setUp()
        self.subscriber = FakeShardedSubscriber(self.redis, self.clock, lambda *m: None)

    def test_a_channel_is_subscribed_on_its_slots_primary_once(self):
        self.subscriber.listen(FOO)
        self.subscriber.listen(FOO)
        self.run_clock(self.redis.ping())
        self.assertEqual(self.subscriber.channels, {FOO: C})
        self.assertEqual(self.subscriber._nodes[C].sharded, [FOO])

    def test_listening_while_the_cluster_is_down_tries_again_until_it_is_back(self):
        self.cluster.down.update({A, B, C})
        self.subscriber.listen(FOO)  # fails at once: every node is known down
        self.cluster.down.clear()
        self.clock.advance(RETRY - 0.001)
        self.assertEqual(self.subscriber.channels, {}, "not before RETRY")
        self.clock.advance(0.001)
        self.clock.advance(LATENCY)  # the map
        self.assertEqual(self.subscriber.channels, {FOO: C})
        self.assertEqual(self.subscriber._nodes[C].sharded, [FOO])

    def test_a_lost_primary_whose_slots_moved_hands_its_channels_over(self):
        self.subscriber.listen(FOO)
        self.subscriber.listen("r")
        self.run_clock(self.redis.ping())
        old = self.subscriber._nodes[C]
        self.cluster.down.add(C)
        self.cluster.truth = SlotMap([(0, 5460, A), (5461, 10922, B), (10923, 16383, A)])
        self.subscriber.lost(old)
        self.run_clock(self.redis.ping())
        self.assertEqual(self.subscriber.channels, {FOO: A, "r": B})
        self.assertEqual(self.subscriber._nodes[A].sharded, [FOO])
        self.assertTrue(old.disconnected, "no channel left there: it stops reconnecting")
        self.assertNotIn(C, self.subscriber._nodes)

    def test_a_lost_primary_still_in_the_map_keeps_its_channels(self):
        self.subscriber.listen(FOO)
        self.run_clock(self.redis.ping())
        node = self.subscriber._nodes[C]
        self.subscriber.lost(node)  # a restart, say: the map is unchanged
        self.run_clock(self.redis.ping())
        self.assertEqual(self.subscriber.channels, {FOO: C})
        self.assertFalse(node.disconnected)
