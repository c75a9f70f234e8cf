"""``twistd -n torque --workers 2`` end to end: a real supervisor, two real
worker processes sharing its port, a real receiver, the test run's
redis-server."""

from __future__ import annotations

import collections
import os
import re
import signal
import socket

from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@defer.inlineCallbacks
def workers(node) -> dict[int, dict]:
    """The node's live workers by number, as ``GET /nodes`` shows them."""
    _, body = yield node.get("/nodes")
    return {n["worker"]: n for n in body["nodes"]}


@defer.inlineCallbacks
def two_workers(node) -> dict[int, dict]:
    """Wait until ``GET /nodes`` lists worker 1 and worker 2."""
    found = {}

    @defer.inlineCallbacks
    def listed():
        found.update((yield workers(node)))
        return {1, 2} <= set(found)

    yield wait_for(listed, what="GET /nodes to list workers 1 and 2")
    return found


class WorkersTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_nodes_lists_each_worker_of_the_supervisor(self):
        node = yield start_node(self, "--workers", "2")
        found = yield two_workers(node)
        self.assertEqual(sorted(found), [1, 2])
        supervisor = node.process.pid
        self.assertEqual({n["supervisor_pid"] for n in found.values()}, {supervisor})
        pids = {n["pid"] for n in found.values()}
        self.assertEqual(len(pids), 2)
        self.assertNotIn(supervisor, pids)

    @defer.inlineCallbacks
    def test_a_worker_killed_with_sigkill_is_started_again_and_the_port_keeps_answering(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--workers", "2")
        before = yield two_workers(node)
        killed = before[1]["pid"]
        os.kill(killed, signal.SIGKILL)

        @defer.inlineCallbacks
        def replaced():
            now = yield workers(node)
            return 1 in now and now[1]["pid"] != killed

        yield wait_for(replaced, timeout=60, what="a new worker 1 in GET /nodes")
        self.assertIn(f"worker 1 (pid {killed}) was killed by SIGKILL", node.output)
        self.assertTrue(alive(before[2]["pid"]), "worker 2 went down with worker 1")
        # Every connection through the shared port is served.
        ids = []
        for n in range(10):
            status, body, _ = yield node.post(data={"url": f"{receiver.url}/after/{n}"})
            self.assertEqual(status, 201)
            ids.append(body["id"])
        yield wait_for(lambda: len(receiver.requests) >= 10, what="10 deliveries")
        arrived = collections.Counter(r.headers["x-torque-task-id"] for r in receiver.requests)
        self.assertEqual(arrived, dict.fromkeys(ids, 1))

    @defer.inlineCallbacks
    def test_sigterm_drains_every_worker_then_the_supervisor_exits(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        node = yield start_node(self, "--workers", "2", "--task-timeout", "30")
        found = yield two_workers(node)
        _, body, _ = yield node.post(data={"url": receiver.url + "/slow"})
        yield wait_for(lambda: receiver.to("/slow"), what="the request in flight")
        stopped = node.stop()
        yield wait_for(lambda: not listening(node.port), what="the shared port to close")
        self.assertFalse(stopped.called, "the supervisor exited with a request in flight")
        self.assertEqual(receiver.release(200), 1)
        yield stopped
        self.assertEqual(node.exit_signal, signal.SIGTERM)  # twistd's clean stop
        self.assertIn("Server Shut Down", node.output)
        for worker in found.values():
            self.assertFalse(alive(worker["pid"]), f"worker {worker['worker']} outlived it")
        yield node.restart()
        yield wait_for(lambda: node.has_status(body["id"], "delivered"))
        self.assertEqual(len(receiver.to("/slow")), 1, "the drained request was made again")

    @defer.inlineCallbacks
    def test_metrics_through_the_shared_port_sum_every_worker(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--workers", "2")
        yield two_workers(node)
        total = 40
        for n in range(total):  # one connection each: the workers take turns
            status, _, _ = yield node.post(data={"url": f"{receiver.url}/m/{n}", "queue": "mq"})
            self.assertEqual(status, 201)
        yield wait_for(lambda: len(receiver.requests) >= total, what=f"{total} deliveries")
        added = re.compile(r'^torque_tasks_added_total\{queue="mq"\} (\S+)$', re.M)
        delivered = re.compile(
            r'^torque_deliveries_total\{outcome="delivered",queue="mq"\} (\S+)$', re.M
        )

        @defer.inlineCallbacks
        def scraped():
            text = yield metrics(node)
            return added.search(text), delivered.search(text)

        # The outcomes are counted when recorded, just after the requests.
        yield wait_for(
            lambda: scraped().addCallback(lambda m: m[1] and float(m[1].group(1)) == total),
            what="every delivery counted",
        )
        for _ in range(8):  # whichever worker takes the scrape
            found_added, found_delivered = yield scraped()
            self.assertEqual(float(found_added.group(1)), total)
            self.assertEqual(float(found_delivered.group(1)), total)


class SupervisedTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_the_supervisor_owns_the_embedded_redis_and_stops_it_after_the_workers(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--workers", "2", embedded=True)
        found = yield two_workers(node)
        self.assertEqual(node.output.count("embedded Redis /"), 1, "one embedded Redis, not three")
        status, body, _ = yield node.post(data={"url": receiver.url + "/e"})
        self.assertEqual(status, 201)
        yield wait_for(lambda: node.has_status(body["id"], "delivered"))
        redis_pid = embedded_redis_pid(node.process.pid)
        self.assertIsNotNone(redis_pid, "no redis-server under the supervisor")
        self.assertNotIn(redis_pid, [w["pid"] for w in found.values()])
        yield node.stop()
        self.assertFalse(alive(redis_pid), "the embedded Redis outlived the supervisor")
        self.assertNotIn("could not record", node.output)

    @defer.inlineCallbacks
    def test_the_tasks_of_a_worker_killed_mid_request_are_delivered_again(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        # A lease of 3 + 1 s: the task is due again 4 s after its claim.
        node = yield start_node(self, "--workers", "2", "--task-timeout", "3",
                                "--lease-margin", "1")  # fmt: skip
        yield two_workers(node)
        _, body, _ = yield node.post(data={"url": receiver.url + "/slow"})
        yield wait_for(lambda: receiver.to("/slow"), what="the request in flight")

        @defer.inlineCallbacks
        def holder():
            now = yield workers(node)
            busy = [w for w in now.values() if w["in_flight"]]
            return busy[0] if busy else None

        busy = yield wait_for(holder, what="a heartbeat with the request in flight")
        os.kill(busy["pid"], signal.SIGKILL)
        receiver.holding.clear()  # the next attempt is answered
        yield wait_for(lambda: len(receiver.to("/slow")) >= 2, timeout=60, what="a second attempt")
        yield wait_for(lambda: node.has_status(body["id"], "delivered"))
        self.assertIn(f"(pid {busy['pid']}) was killed by SIGKILL", node.output)


def embedded_redis_pid(supervisor: int) -> int | None:
    from pathlib import Path

    for task in Path(f"/proc/{supervisor}/task").glob("*"):
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"redis-server" in cmdline:
                return int(child)
    return None


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@defer.inlineCallbacks
def metrics(node) -> str:
    import treq

    response = yield treq.get(node.url + "/metrics", persistent=False)
    return (yield response.text())
