"""A node's heartbeat (:mod:`torque.heartbeat`) and its watch over the queue
registry for ``--queue '*'`` (:mod:`torque.watcher`), on a Clock over the
in-memory store."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.heartbeat import Heartbeat
from torque.storage import NodeInfo
from torque.task import Task
from torque.watcher import QueueWatcher

NODE = NodeInfo("n1", "host", 42, "0.1", None, 0, 1000.0, 0.0)


class HeartbeatTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.store = MemoryStore()
        self.in_flight = 0
        self.heartbeat = Heartbeat(
            self.store, self.clock, NODE, lambda: self.in_flight, interval=5.0, ttl=15.0
        )

    def live(self):
        self.store.now = self.clock.seconds()
        return self.successResultOf(self.store.live_nodes())

    def test_beats_at_start_and_every_interval_with_the_requests_in_flight(self):
        self.heartbeat.startService()
        (node,) = self.live()
        self.assertEqual((node.id, node.seen_at, node.in_flight), ("n1", 1000.0, 0))
        self.in_flight = 7
        self.clock.advance(5.0)
        (node,) = self.live()
        self.assertEqual((node.seen_at, node.in_flight, node.queues), (1005.0, 7, None))

    def test_a_node_that_stops_beating_drops_out_after_the_ttl(self):
        self.heartbeat.startService()
        self.heartbeat._loop.stop()  # as if the node hung or died
        self.clock.advance(14.0)
        self.assertEqual(len(self.live()), 1)
        self.clock.advance(1.0)
        self.assertEqual(self.live(), [])

    def test_stopping_withdraws_the_heartbeat_at_once(self):
        self.heartbeat.startService()
        self.successResultOf(self.heartbeat.stopService())
        self.assertEqual(self.live(), [])
        self.clock.advance(5.0)
        self.assertEqual(self.live(), [], "no beat after the stop")

    def test_redis_down_neither_stops_the_loop_nor_raises(self):
        self.store.available = False
        self.heartbeat.startService()
        self.clock.advance(5.0)
        self.store.available = True
        self.clock.advance(5.0)
        self.assertEqual([n.seen_at for n in self.live()], [1010.0])

    def test_knows_after_a_beat_which_queues_a_live_node_processes(self):
        self.assertTrue(self.heartbeat.processed("any"), "not known yet: no warning")
        other = NodeInfo("n2", "host", 43, "0.1", ("a",), 0, 990.0, 1000.0)
        self.successResultOf(self.store.beat(other, 15.0))
        only_a = Heartbeat(self.store, self.clock, NodeInfo("n3", queues=()), interval=5.0)
        only_a.startService()
        self.assertEqual((only_a.processed("a"), only_a.processed("b")), (True, False))
        self.heartbeat.startService()  # a node for every queue
        self.clock.advance(5.0)
        self.assertTrue(only_a.processed("b"))


class WatcherTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.store = MemoryStore()
        self.found: list[str] = []
        self.empty: list[str] = []
        self.watcher = QueueWatcher(
            self.store, self.clock, self.found.append, self.empty.append, page=2
        )

    def add(self, queue):
        self.store.add(Task(id=f"{queue}.t", queue=queue, url="http://app.test/", due_at=1000.0))

    def test_reads_one_page_a_second_and_starts_over_at_the_end(self):
        for queue in ["e", "d", "c", "b", "a"]:
            self.add(queue)
        self.watcher.startService()
        self.assertEqual(self.found, ["a", "b"])
        self.clock.advance(1.0)
        self.assertEqual(self.found, ["a", "b", "c", "d"])
        self.clock.advance(1.0)
        self.assertEqual(self.found[4:], ["e"])
        self.add("aa")  # a new queue, before the cursor: found on the next round
        self.clock.advance(1.0)
        self.assertEqual(self.found[5:], ["a", "aa"])

    def test_a_new_queue_is_found_within_a_second(self):
        self.watcher.startService()
        self.assertEqual(self.found, [])
        self.add("emails")
        self.clock.advance(1.0)
        self.assertEqual(self.found, ["emails"])

    def test_a_queue_that_holds_no_task_is_reported_empty(self):
        self.add("busy")
        self.add("done")
        self.store.cancel("done.t")
        self.watcher.startService()
        self.assertEqual((self.found, self.empty), (["busy"], ["done"]))

    def test_redis_down_does_not_stop_the_watch(self):
        self.store.available = False
        self.watcher.startService()
        self.clock.advance(1.0)
        self.store.available = True
        self.add("q")
        self.clock.advance(1.0)
        self.assertEqual(self.found, ["q"])
