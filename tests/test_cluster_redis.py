"""torque.cluster against a real three-primary Redis Cluster
(tests/redis_cluster.py): scripts reach the owner of their slot, and a slot
that moves while it is used is followed through ASK and MOVED."""

from __future__ import annotations

import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.node import wait_for
from tests.redis_cluster import (
    begin_move,
    cli,
    cluster_ports,
    cluster_seeds,
    end_move,
    move_slot,
    owner_port,
    start_cluster,
)
from torque.cluster import ClusterConnection
from torque.cluster_slots import key_slot
from torque.cluster_wake import ShardedSubscriber
from torque.connection import connect_pool
from torque.redis_url import RedisAddress

PUBLISH = "return redis.call('SPUBLISH', KEYS[1], ARGV[1])"
SET = "return redis.call('SET', KEYS[1], ARGV[1])"
GET = "return redis.call('GET', KEYS[1])"


@defer.inlineCallbacks
def subscribed(testcase, redis, channels):
    """A :class:`ShardedSubscriber` on ``redis``, subscribed to ``channels``
    (each heard as subscribed), stopped when the test ends: it, and the
    ``(channel, message)`` pairs it hears."""
    heard = []
    subscriber = ShardedSubscriber(redis, reactor, lambda c, m: heard.append((c, m)))
    testcase.addCleanup(subscriber.disconnect)
    for channel in channels:
        yield subscriber.subscribe(channel)
    yield wait_for(lambda: all((c, None) in heard for c in channels), what="subscribed")
    return subscriber, heard


class ClusterRedisTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.redis = ClusterConnection(
            cluster_seeds()[:1], lambda address: connect_pool(address, reactor=reactor), reactor
        )
        self.addCleanup(self.redis.disconnect)
        self.prefix = f"test:{uuid.uuid4().hex[:12]}"

    @defer.inlineCallbacks
    def test_each_script_runs_on_the_primary_that_owns_its_keys(self):
        queues = [f"q{i}" for i in range(30)]
        for queue in queues:
            yield self.redis.eval(SET, [f"{self.prefix}:{{{queue}}}:x"], [queue])
        ports = set()
        for queue in queues:
            key = f"{self.prefix}:{{{queue}}}:x"
            self.assertEqual((yield self.redis.eval(GET, [key], [])), queue)
            port = owner_port(key_slot(key))
            # The key is on that primary, read there without torque.
            self.assertEqual(cli(port, "GET", key), queue)
            ports.add(port)
        self.assertEqual(ports, set(cluster_ports()))  # 30 queues spread over all three
        self.assertEqual((yield self.redis.ping()), "PONG")

    @defer.inlineCallbacks
    def test_a_slot_moved_while_in_use_is_followed_through_ask_and_moved(self):
        old = f"{self.prefix}:{{mover}}:old"
        new = f"{self.prefix}:{{mover}}:new"
        slot = key_slot(old)
        yield self.redis.eval(SET, [old], ["before"])
        source = owner_port(slot)
        target = next(port for port in cluster_ports() if port != source)
        self.addCleanup(self._give_back, slot, source, target)

        # Migration under way: keys not yet moved are answered with ASK.
        begin_move(slot, source, target)
        yield self.redis.eval(SET, [new], ["during"])  # not on the source: ASK
        self.assertEqual(cli(target, "-c", "GET", new), "during")
        self.assertEqual(self.redis.map.owner(slot)[1], source)  # ASK changes no map

        # Migration done: the source now answers MOVED.
        end_move(slot, source, target)
        self.assertEqual((yield self.redis.eval(GET, [old], [])), "before")
        self.assertEqual(self.redis.map.owner(slot)[1], target)

    @defer.inlineCallbacks
    def test_wake_ups_come_through_sharded_pub_sub_and_follow_a_moved_slot(self):
        channels = [f"{self.prefix}:{{q{i}}}:wake" for i in range(6)]
        subscriber, heard = yield subscribed(self, self.redis, channels)
        for channel in channels:  # published from a script, in the channel's own slot
            yield self.redis.eval(PUBLISH, [channel], ["12.5"])
        yield wait_for(lambda: all((c, "12.5") in heard for c in channels), what="smessages")

        channel = channels[0]
        slot = key_slot(channel)
        source = owner_port(slot)
        target = next(port for port in cluster_ports() if port != source)
        self.addCleanup(self._give_back, slot, source, target)
        heard.clear()
        move_slot(slot, source, target)  # Redis unsubscribes the channel on the source
        yield wait_for(lambda: (channel, None) in heard, what="subscribed again on the new owner")
        self.assertEqual(subscriber.channels[channel][1], target)
        yield self.redis.eval(PUBLISH, [channel], ["13.5"])
        yield wait_for(lambda: (channel, "13.5") in heard, what="a wake-up from the new owner")

    def _give_back(self, slot: int, source: int, target: int) -> None:
        cli(target, "CLUSTER", "SETSLOT", str(slot), "STABLE")
        cli(source, "CLUSTER", "SETSLOT", str(slot), "STABLE")
        if owner_port(slot) != source:
            move_slot(slot, target, source)


class ClusterFailoverTests(unittest.TestCase):
    """A cluster of its own, three primaries and a replica each, where a
    primary is killed."""

    timeout = 180

    def setUp(self):
        self.ports, self.processes = start_cluster(3, replicas=1)
        self.addCleanup(lambda: [p.kill() for p in self.processes.values()])
        seeds = [RedisAddress(host="127.0.0.1", port=port) for port in self.ports]
        self.redis = ClusterConnection(
            seeds, lambda address: connect_pool(address, reactor=reactor), reactor
        )
        self.addCleanup(self.redis.disconnect)

    def bounded(self, d, seconds=2.0):
        """As the store calls Redis: every command bounded by a timeout."""
        return d.addTimeout(seconds, reactor)

    @defer.inlineCallbacks
    def test_a_killed_primary_is_replaced_by_its_replica_and_scripts_follow(self):
        keys = [f"{{q{i}}}:x" for i in range(30)]
        for key in keys:
            yield self.bounded(self.redis.eval(SET, [key], ["0"]))
        victim = self.redis.node_for(key_slot(keys[0]))
        on_victim = [k for k in keys if self.redis.node_for(key_slot(k)) == victim]
        self.processes[victim[1]].kill()  # kill -9
        killed_at = reactor.seconds()

        failed = []

        @defer.inlineCallbacks
        def every_key_written(value):
            try:
                for key in keys:
                    yield self.bounded(self.redis.eval(SET, [key], [value]))
            except Exception as e:
                failed.append(e)
                return False
            return True

        yield wait_for(lambda: every_key_written("1"), timeout=90, what="the replica to take over")
        recovered_after = reactor.seconds() - killed_at
        self.assertTrue(failed, "the kill went unnoticed: was a primary killed?")
        new_owner = self.redis.node_for(key_slot(on_victim[0]))
        self.assertNotEqual(new_owner, victim)
        for key in keys:
            self.assertEqual((yield self.bounded(self.redis.eval(GET, [key], []))), "1")
        self.assertLess(recovered_after, 90)

    @defer.inlineCallbacks
    def test_wake_ups_resume_from_the_replica_that_took_over(self):
        channels = [f"{{q{i}}}:wake" for i in range(12)]
        subscriber, heard = yield subscribed(self, self.redis, channels)
        victim = subscriber.channels[channels[0]]
        on_victim = [c for c in channels if subscriber.channels[c] == victim]
        self.processes[victim[1]].kill()  # kill -9

        def heard_after_publishing(channel):
            # A message published before the new subscription is in place
            # is lost (the subscription's "look now" covers it in a node):
            # publish until one is heard.
            d = self.bounded(self.redis.eval(PUBLISH, [channel], ["7.5"]))
            return d.addCallbacks(lambda _: (channel, "7.5") in heard, lambda _: False)

        # Once the replica takes the slots, the subscriber (its connection to
        # the victim lost) moves the channels there, and hears them again.
        yield wait_for(
            lambda: all(subscriber.channels.get(c) not in (None, victim) for c in on_victim),
            timeout=90,
            what="the channels to move to the new primary",
        )
        for channel in on_victim:
            yield wait_for(
                lambda c=channel: heard_after_publishing(c),
                timeout=30,
                interval=0.2,
                what=f"a wake-up on {channel} from the new primary",
            )
