"""Redis errors that mean "not now", and a connection known to be down:
the store turns both into StoreUnavailable (a 503 with Retry-After in the
API) at once, not after its timeout; any other error stays an error."""

import os

import txredisapi
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.node import wait_for
from tests.redis_server import fresh_keys
from tests.scratch_redis import ScratchRedis
from tests.test_store import make_task
from torque.connection import RedisAddress, connect_pool
from torque.redis_errors import not_now
from torque.redis_state import known_down
from torque.store import RedisStore, StoreUnavailable


class ClassificationTests(unittest.TestCase):
    def test_not_now_errors_by_code(self):
        table = {
            "OOM command not allowed when used memory > 'maxmemory'.": "OOM",
            "OOM command not allowed when used memory > 'maxmemory'. script: 6f0a, "
            "on @user_script:14.": "OOM",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently "
            "unable to persist to disk.": "MISCONF",
            "READONLY You can't write against a read only replica.": "READONLY",
            "LOADING Redis is loading the dataset in memory": "LOADING",
            "NOREPLICAS Not enough good replicas to write.": "NOREPLICAS",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set "
            "to 'no'.": "MASTERDOWN",
            "TRYAGAIN Multiple keys request during rehashing of slot": "TRYAGAIN",
            "CLUSTERDOWN The cluster is down": "CLUSTERDOWN",
            "BUSY Redis is busy running a script.": "BUSY",
            # Redis 6 wraps what a script's redis.call raised
            "Error running script (call to f_ab12): @user_script:5: @user_script: 5: "
            "-OOM command not allowed when used memory > 'maxmemory'.": "OOM",
        }
        self.assertEqual({message: not_now(message) for message in table}, table)

    def test_other_errors_are_not_transient(self):
        for message in [
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOSCRIPT No matching script. Please use EVAL.",
            "BUSYKEY Target key name already exists.",
            "Error running script (call to f_ab12): @user_script:5: attempt to compare nil",
            "user_script:1: Script attempted to access nonexistent global variable 'OOM'",
            "unknown command 'OOMX'",
            "",
        ]:
            self.assertIsNone(not_now(message), message)


class RefusalTests(unittest.TestCase):
    """Against a redis-server of the test's own, which it breaks."""

    timeout = 60

    def setUp(self):
        self.redis_server = ScratchRedis(self)
        self.redis = connect_pool(self.redis_server.address)
        self.addCleanup(self.redis.disconnect)
        self.store = RedisStore(self.redis, reactor, fresh_keys())

    @defer.inlineCallbacks
    def test_out_of_memory_is_unavailable(self):
        yield self.store.ping()
        self.redis_server.fill_memory()
        failure = yield self.assertFailure(self.store.add(make_task()), StoreUnavailable)
        self.assertIn("out of memory", str(failure))
        self.redis_server.free_memory()
        task_id, created = yield self.store.add(make_task())
        self.assertTrue(created)

    @defer.inlineCallbacks
    def test_a_failed_snapshot_is_unavailable_for_writes_and_ping(self):
        yield self.store.ping()
        self.redis_server.lose_disk()
        failure = yield self.assertFailure(self.store.add(make_task()), StoreUnavailable)
        self.assertIn("MISCONF", str(failure))
        yield self.assertFailure(self.store.ping(), StoreUnavailable)

    @defer.inlineCallbacks
    def test_any_other_error_stays_an_error(self):
        yield self.redis.set(self.store.keys.task("q", "q.t1"), "not a hash")
        yield self.assertFailure(self.store.describe("q.t1"), txredisapi.ResponseError)


class KnownDownTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_lost_connection_fails_calls_at_once_then_recovers(self):
        server = ScratchRedis(self)
        redis = connect_pool(server.address)
        self.addCleanup(redis.disconnect)
        clock = Clock()  # never advanced: only a known-down pool can fail a call
        store = RedisStore(redis, clock, fresh_keys(), timeout=5.0)
        yield store.ping()
        self.assertFalse(known_down(redis))
        server.stop()
        yield wait_for(lambda: known_down(redis), what="the pool to know it is down")
        failure = self.failureResultOf(store.add(make_task()), StoreUnavailable)
        self.assertIn("unreachable", failure.getErrorMessage())
        self.failureResultOf(store.ping(), StoreUnavailable)
        server.start()
        yield wait_for(lambda: not known_down(redis), what="the pool to reconnect")
        self.assertEqual((yield store.ping()), "PONG")

    @defer.inlineCallbacks
    def test_a_server_never_reached_is_known_down_after_the_first_attempt(self):
        redis = connect_pool(RedisAddress(path=self.mktemp() + ".sock"))
        self.addCleanup(redis.disconnect)
        yield wait_for(lambda: known_down(redis), what="the first attempt to fail")

    @defer.inlineCallbacks
    def test_a_frozen_server_is_not_known_down_and_times_out(self):
        server = ScratchRedis(self)
        redis = connect_pool(server.address)
        self.addCleanup(redis.disconnect)
        clock = Clock()
        store = RedisStore(redis, clock, fresh_keys(), timeout=5.0)
        yield RedisStore(redis, reactor, fresh_keys()).ping()
        server.freeze()
        self.addCleanup(server.thaw)
        d = store.ping()
        clock.advance(4.9)
        self.assertFalse(known_down(redis))
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, StoreUnavailable)


class _HangUp(protocol.Protocol):
    """A server that drops each connection as soon as it is spoken to: a
    Redis that dies between accepting a connection and answering its
    ``SELECT``."""

    def dataReceived(self, data):
        self.factory.spoken_to += 1
        self.transport.loseConnection()


class HandshakeTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_connection_lost_during_its_handshake_is_tried_again(self):
        # txredisapi stops the whole pool for good when a new connection's
        # SELECT fails, even for a connection merely lost: the node would
        # stay without Redis after a restart that happened at that moment.
        server = ScratchRedis(self)
        server.stop()
        os.unlink(server.socket_path)  # a killed server leaves its socket file
        factory = protocol.Factory.forProtocol(_HangUp)
        factory.spoken_to = 0
        port = reactor.listenUNIX(server.socket_path, factory)
        redis = connect_pool(server.address)
        self.addCleanup(redis.disconnect)
        yield wait_for(lambda: factory.spoken_to >= 1, what="a handshake to be cut")
        yield port.stopListening()
        server.start()
        store = RedisStore(redis, reactor, fresh_keys())
        yield wait_for(
            lambda: store.ping().addErrback(lambda _: False), timeout=15, what="Redis again"
        )
