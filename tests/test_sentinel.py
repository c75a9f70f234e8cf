"""``redis+sentinel://`` and ``--redis-wait-replicas`` against real servers:
a primary, a replica and Sentinels (Debian's redis-server) on loopback
ports, started by each test (tests/sentinel_servers.py).

The connection pool and the wake-up subscriber find the primary through the
Sentinels and follow a failover; with no Sentinel answering, calls fail at
once naming the Sentinels tried, and succeed once one appears; a master name
the Sentinels don't know is reported before the node starts; an add waits
for its replicas when asked to.
"""

import os
import signal

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests import sentinel_servers as servers
from tests.node import free_port, wait_for
from tests.redis_server import fresh_keys
from tests.test_store import claim, make_task
from torque.connection import WakeSubscriber, connect_pool
from torque.redis_url import RedisAddress, parse_redis_url
from torque.sentinel import check_master_name
from torque.storage import StoreUnavailable
from torque.store import RedisStore

# The timeout of the stores that wait for replicas: ten times WAIT's.
STORE_TIMEOUT = 10.0

if servers.redis_server_binary() is None:
    skip = "no redis-server on PATH"


class ParseSentinelUrlTests(unittest.TestCase):
    def test_table(self):
        cases = [
            ("two Sentinels, name, db", "redis+sentinel://s1:26380,s2:26381/main/2",
             RedisAddress(sentinels=(("s1", 26380), ("s2", 26381)), master_name="main", db=2)),
            ("default port and db", "redis+sentinel://s1,s2/main",
             RedisAddress(sentinels=(("s1", 26379), ("s2", 26379)), master_name="main")),
            ("the primary's password", "redis+sentinel://:pw@s1:26379/main/0",
             RedisAddress(sentinels=(("s1", 26379),), master_name="main", password="pw")),
            ("user and password", "redis+sentinel://alice:pw@s1/main",
             RedisAddress(sentinels=(("s1", 26379),), master_name="main", username="alice",
                          password="pw")),
            ("the Sentinels' password", "redis+sentinel://s1/main?sentinel_password=sp",
             RedisAddress(sentinels=(("s1", 26379),), master_name="main",
                          sentinel_password="sp")),
            ("IPv6", "redis+sentinel://[::1]:26379/main",
             RedisAddress(sentinels=(("::1", 26379),), master_name="main")),
        ]  # fmt: skip
        for name, url, address in cases:
            self.assertEqual(parse_redis_url(url), address, name)

    def test_bad_urls_are_value_errors_without_the_password(self):
        cases = [
            ("no master name", "redis+sentinel://:pw@s1:26379"),
            ("no master name, a slash", "redis+sentinel://:pw@s1:26379/"),
            ("no Sentinel", "redis+sentinel://:pw@/main"),
            ("an empty Sentinel", "redis+sentinel://:pw@s1,/main"),
            ("port not a number", "redis+sentinel://:pw@s1:x/main"),
            ("db not a number", "redis+sentinel://:pw@s1/main/x"),
        ]
        for name, url in cases:
            with self.assertRaises(ValueError, msg=name) as caught:
                parse_redis_url(url)
            self.assertNotIn("pw", str(caught.exception), name)

    def test_address_prints_its_sentinels_without_passwords(self):
        address = parse_redis_url("redis+sentinel://:pw@s1,s2:1/main/3?sentinel_password=sp")
        self.assertEqual(str(address), "redis+sentinel://s1:26379,s2:1/main/3")
        self.assertNotIn("pw", repr(address))
        self.assertNotIn("sp", repr(address).replace("sentinels", ""))


class CheckMasterNameTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.primary = servers.primary(self)
        yield self.primary.start()
        self.sentinel = servers.sentinel(self, self.primary, quorum=1)
        yield self.sentinel.start()

    def test_a_known_name_passes(self):
        url = servers.sentinel_url([self.sentinel])
        self.assertIsNone(check_master_name(parse_redis_url(url)))

    def test_an_unknown_name_is_a_clear_error(self):
        address = parse_redis_url(servers.sentinel_url([self.sentinel], name="typo"))
        problem = check_master_name(address)
        self.assertIn("knows no master named 'typo'", problem)
        self.assertIn(f"127.0.0.1:{self.sentinel.port}", problem)

    def test_no_sentinel_answering_is_no_error_at_start(self):
        address = parse_redis_url(f"redis+sentinel://127.0.0.1:{free_port()}/{servers.MASTER}")
        self.assertIsNone(check_master_name(address))

    def test_one_sentinel_knowing_the_name_is_enough(self):
        silent = f"127.0.0.1:{free_port()}"
        url = f"redis+sentinel://{silent},127.0.0.1:{self.sentinel.port}/{servers.MASTER}"
        self.assertIsNone(check_master_name(parse_redis_url(url)))


class SentinelCase(unittest.TestCase):
    timeout = 120

    def store_on(self, url: str, timeout: float = 2.0, **kw) -> RedisStore:
        redis = connect_pool(parse_redis_url(url))
        self.addCleanup(redis.disconnect)
        return RedisStore(redis, reactor, fresh_keys(), timeout=timeout, **kw)

    @defer.inlineCallbacks
    def start_primary_and_replica(self):
        """``self.primary`` and ``self.replica``, started, the replica in sync."""
        self.primary = servers.primary(self)
        yield self.primary.start()
        self.replica = servers.replica(self, self.primary)
        yield self.replica.start()
        yield servers.replicated(self.primary, self.replica)

    @defer.inlineCallbacks
    def answers(self, store) -> defer.Deferred:
        """Whether the store answers a ping now."""
        try:
            yield store.ping()
        except StoreUnavailable:
            return False
        return True


class NoSentinelTests(SentinelCase):
    @defer.inlineCallbacks
    def test_calls_fail_at_once_naming_the_sentinels_then_connect_when_one_appears(self):
        primary = servers.primary(self)
        yield primary.start()
        sentinel = servers.sentinel(self, primary, quorum=1)
        other = free_port()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port},127.0.0.1:{other}/{servers.MASTER}"
        store = self.store_on(url)
        errors = []

        def named_error():
            d = store.ping()
            d.addCallbacks(lambda _: errors.append(None), lambda f: errors.append(f.value))
            d.addCallback(lambda _: errors[-1] is not None and "tried" in str(errors[-1]))
            return d

        yield wait_for(named_error, what="a ping to fail naming the Sentinels")
        message = str(errors[-1])
        self.assertIn(f"127.0.0.1:{sentinel.port},127.0.0.1:{other}", message)
        self.assertIn("no Redis Sentinel answers", message)
        started = reactor.seconds()
        with self.assertRaises(StoreUnavailable):
            yield store.add(make_task())
        self.assertLess(reactor.seconds() - started, 0.5, "an add waited for the timeout")
        yield sentinel.start()
        yield wait_for(lambda: self.answers(store), timeout=60, what="the primary, found")
        added = yield store.add(make_task())
        self.assertEqual(added, ("q.t1", True))


class DisconnectTests(unittest.TestCase):
    def test_a_pool_disconnected_mid_discovery_leaves_no_timer(self):
        # txredisapi's own discovery left its timer armed after the pool
        # was gone: trial fails a test whose reactor is not clean.
        url = f"redis+sentinel://127.0.0.1:{free_port()}/{servers.MASTER}"
        redis = connect_pool(parse_redis_url(url))
        manager = redis._factory.sentinel_manager
        self.assertTrue(manager._discoveries, "a discovery is under way")
        d = redis.disconnect()
        self.assertEqual(manager._discoveries, {})
        return d


class FailoverTests(SentinelCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield self.start_primary_and_replica()
        self.sentinels = [servers.sentinel(self, self.primary) for _ in range(3)]
        for s in self.sentinels:
            yield s.start()
        yield servers.watching(self.sentinels, [self.replica])
        self.url = servers.sentinel_url(self.sentinels)

    @defer.inlineCallbacks
    def fail_over(self):
        """kill -9 the primary; fires once a Sentinel names the replica."""
        self.primary.kill()
        yield wait_for(
            lambda: servers.master_port(self.sentinels[0]) == self.replica.port,
            timeout=60,
            what="Sentinel to promote the replica",
        )

    @defer.inlineCallbacks
    def test_the_pool_finds_the_primary_and_follows_a_failover(self):
        store = self.store_on(self.url)
        yield wait_for(lambda: self.answers(store), what="the primary")
        yield store.add(make_task("before"))
        yield self.fail_over()
        yield wait_for(lambda: self.answers(store), timeout=60, what="the new primary")
        added = yield store.add(make_task("after"))
        self.assertEqual(added, ("q.after", True))
        key = store.keys.task("q", "q.after")
        self.assertEqual(servers.ask(self.replica.port, "EXISTS", key), 1, "on the new primary")

    @defer.inlineCallbacks
    def test_the_wake_subscriber_follows_a_failover(self):
        heard = []
        channel = fresh_keys().wake("q")
        subscriber = WakeSubscriber(
            parse_redis_url(self.url), [channel], lambda ch, msg: heard.append(msg)
        )
        subscriber.start(reactor)
        self.addCleanup(subscriber.disconnect)
        yield wait_for(lambda: None in heard, what="the first subscription")
        yield self.fail_over()
        heard.clear()
        yield wait_for(lambda: None in heard, timeout=60, what="the subscription again")

        def published():
            servers.ask(self.replica.port, "PUBLISH", channel, "42")
            return "42" in heard

        yield wait_for(published, what="a wake-up published on the new primary")


class WaitReplicasTests(SentinelCase):
    @defer.inlineCallbacks
    def setUp(self):
        yield self.start_primary_and_replica()
        # The store's timeout well past WAIT's (one second): on a loaded
        # machine an add whose WAIT came back short must not be mistaken
        # for one Redis did not answer in time.
        self.store = self.store_on(
            f"redis://127.0.0.1:{self.primary.port}/0", timeout=STORE_TIMEOUT, wait_replicas=1
        )

    @defer.inlineCallbacks
    def test_an_add_answers_once_the_replica_holds_it(self):
        for i in range(20):
            added = yield self.store.add(make_task(f"t{i}"))
            self.assertEqual(added, (f"q.t{i}", True))
            key = self.store.keys.task("q", f"q.t{i}")
            self.assertEqual(servers.ask(self.replica.port, "EXISTS", key), 1, f"t{i}")

    @defer.inlineCallbacks
    def test_a_claim_made_while_an_add_waits_for_its_replica_goes_after_it(self):
        adding = self.store.add(make_task("t1"))
        claimed = claim(self.store)
        self.assertEqual((yield adding), ("q.t1", True))
        self.assertEqual([task.id for task in (yield claimed).tasks], ["q.t1"])

    @defer.inlineCallbacks
    def test_an_add_no_replica_confirms_fails_as_unavailable_and_its_retry_is_not_doubled(self):
        os.kill(self.replica.process.pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(self.replica.process.pid, signal.SIGCONT))
        started = reactor.seconds()
        with self.assertRaises(StoreUnavailable) as caught:
            yield self.store.add(make_task(name="once"))
        self.assertLess(reactor.seconds() - started, STORE_TIMEOUT, "past the store's timeout")
        self.assertIn("only 0 of 1 Redis replicas confirmed", str(caught.exception))
        os.kill(self.replica.process.pid, signal.SIGCONT)
        # Until a probe finds the replica again, adds are refused unwritten.
        added = []

        def retried():
            d = self.store.add(make_task("t2", name="once"))
            d.addCallbacks(added.append, lambda f: f.trap(StoreUnavailable))
            return d.addCallback(lambda _: bool(added))

        yield wait_for(retried, what="the retry to be taken")
        self.assertEqual(added, [("q.t1", False)], "the retry with its name found the first")

    @defer.inlineCallbacks
    def test_while_replicas_are_short_adds_are_refused_at_once_and_not_written(self):
        os.kill(self.replica.process.pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(self.replica.process.pid, signal.SIGCONT))
        with self.assertRaises(StoreUnavailable):
            yield self.store.add(make_task("t1"))
        started = reactor.seconds()
        with self.assertRaises(StoreUnavailable) as caught:
            yield self.store.add(make_task("t2"))
        self.assertLess(reactor.seconds() - started, 0.5, "it waited for the replicas")
        self.assertIn("only 0 of 1 Redis replicas confirmed", str(caught.exception))
        self.assertIn("nothing was written", str(caught.exception))
        key = self.store.keys.task("q", "q.t2")
        self.assertEqual(servers.ask(self.primary.port, "EXISTS", key), 0, "half-written")

    @defer.inlineCallbacks
    def test_a_cancel_and_a_pause_wait_for_the_replica_too(self):
        yield self.store.add(make_task("t1"))
        os.kill(self.replica.process.pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(self.replica.process.pid, signal.SIGCONT))
        with self.assertRaises(StoreUnavailable) as caught:
            yield self.store.cancel("q.t1")
        self.assertIn("only 0 of 1 Redis replicas confirmed", str(caught.exception))
        with self.assertRaises(StoreUnavailable):
            yield self.store.pause("q")

    @defer.inlineCallbacks
    def test_the_script_is_sent_again_to_a_primary_that_lost_it(self):
        yield self.store.add(make_task("t1"))
        servers.ask(self.primary.port, "SCRIPT", "FLUSH")
        added = yield self.store.add(make_task("t2"))
        self.assertEqual(added, ("q.t2", True))
