"""A queue's own settings in the store (``get_settings``/``set_settings``),
held against a real redis-server and the in-memory double alike."""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.node import wait_for
from tests.redis_server import RealRedisStore
from tests.test_store import bury
from torque.keys import SETTINGS_CHANGED


class SettingsContract:
    """``self.store`` is set in ``setUp``."""

    @defer.inlineCallbacks
    def test_a_queue_has_no_settings_of_its_own_at_first(self):
        self.assertEqual((yield self.store.get_settings("q")), {})

    @defer.inlineCallbacks
    def test_set_settings_fires_with_them_typed_and_get_settings_reads_them(self):
        after = yield self.store.set_settings(
            "q", {"rate": 2.5, "concurrency": 7, "timeout": 30.0, "max_age": 86400.0}
        )
        expected = {"rate": 2.5, "concurrency": 7, "timeout": 30.0, "max_age": 86400.0}
        self.assertEqual(after, expected)
        got = yield self.store.get_settings("q")
        self.assertEqual(got, expected)
        self.assertIs(type(got["concurrency"]), int)
        self.assertIs(type(got["rate"]), float)

    @defer.inlineCallbacks
    def test_every_field_is_kept(self):
        every = {
            "rate": 0.0,
            "concurrency": 1,
            "host_concurrency": 3,
            "max_errors": 5,
            "min_delay": 0.5,
            "max_delay": 60.0,
            "timeout": 0.25,
            "max_age": 3600.0,
        }
        self.assertEqual((yield self.store.set_settings("q", every)), every)
        self.assertEqual((yield self.store.get_settings("q")), every)

    @defer.inlineCallbacks
    def test_a_change_leaves_the_other_fields_and_none_clears_one(self):
        yield self.store.set_settings("q", {"rate": 1.0, "concurrency": 4})
        after = yield self.store.set_settings("q", {"rate": None, "max_errors": 3})
        self.assertEqual(after, {"concurrency": 4, "max_errors": 3})
        after = yield self.store.set_settings("q", {"concurrency": None, "max_errors": None})
        self.assertEqual(after, {})
        self.assertEqual((yield self.store.get_settings("q")), {})

    @defer.inlineCallbacks
    def test_an_unknown_field_fails_and_changes_nothing(self):
        yield self.store.set_settings("q", {"rate": 1.0})
        d = self.store.set_settings("q", {"rate": 9.0, "colour": 1})
        yield self.assertFailure(d, ValueError)
        self.assertEqual((yield self.store.get_settings("q")), {"rate": 1.0})

    @defer.inlineCallbacks
    def test_settings_are_per_queue(self):
        yield self.store.set_settings("q", {"concurrency": 2})
        yield self.store.set_settings("other", {"concurrency": 9})
        self.assertEqual((yield self.store.get_settings("q")), {"concurrency": 2})
        self.assertEqual((yield self.store.get_settings("other")), {"concurrency": 9})

    @defer.inlineCallbacks
    def test_deleting_a_queue_forgets_its_settings(self):
        yield self.store.set_settings("q", {"concurrency": 2})
        state = yield self.store.delete_queue("q")
        self.assertEqual(state, ("deleted", 0, 0, 0), "a queue with settings is known")
        self.assertEqual((yield self.store.get_settings("q")), {})
        self.assertEqual((yield self.store.delete_queue("q")), ("unknown", 0, 0, 0))

    @defer.inlineCallbacks
    def test_a_busy_queue_keeps_its_settings(self):
        yield self.store.set_settings("q", {"concurrency": 2})
        yield bury(self.store, "q.t1")
        self.assertEqual((yield self.store.delete_queue("q"))[0], "busy")
        self.assertEqual((yield self.store.get_settings("q")), {"concurrency": 2})


class MemorySettingsTests(SettingsContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()

    @defer.inlineCallbacks
    def test_the_queues_nodes_are_told(self):
        yield self.store.set_settings("q", {"rate": 1.0})
        self.assertEqual(self.store.settings_told, ["q"])


class LateMemorySettingsTests(SettingsContract, unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore(clock=reactor, latency=0.001)


class RedisSettingsTests(RealRedisStore, SettingsContract, unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_hash_holds_each_value_as_decimal_text(self):
        """The layout docs/redis-keys.rst documents: another program may
        write a queue's settings directly."""
        yield self.store.set_settings("q", {"rate": 2.5, "concurrency": 7})
        flat = yield self.redis.execute_command("HGETALL", self.keys.settings("q"))
        self.assertEqual(
            dict(zip(flat[::2], flat[1::2], strict=True)), {"rate": "2.5", "concurrency": "7"}
        )
        self.assertTrue(self.keys.settings("q").startswith(self.keys.queue_prefix("q")))

    @defer.inlineCallbacks
    def test_fields_written_by_hand_are_read_and_nonsense_is_passed_over(self):
        yield self.redis.execute_command(
            "HSET", self.keys.settings("q"), "rate", "3", "concurrency", "5",
            "timeout", "soon", "colour", "blue", "max_age", "inf",
        )  # fmt: skip
        self.assertEqual((yield self.store.get_settings("q")), {"rate": 3.0, "concurrency": 5})

    @defer.inlineCallbacks
    def test_a_change_is_published_on_the_queues_wake_channel(self):
        channel = self.keys.wake("q")
        heard = yield self.listen(channel)
        yield self.store.set_settings("q", {"rate": 1.0})
        yield wait_for(lambda: len(heard) == 2)
        self.assertEqual(heard[1], (channel, SETTINGS_CHANGED))
