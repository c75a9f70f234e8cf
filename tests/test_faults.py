"""Fault injection, end to end: real nodes killed, stopped and multiplied, a
real redis-server stopped and started, receivers that misbehave.

The promise under test: an accepted task (201) is delivered at least once,
and under normal operation exactly once, whatever happens to nodes,
connections or Redis.
"""

import collections
import json
import os
import shutil
import signal
import tempfile
import time

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for
from tests.redis_server import fresh_keys, redis_address
from torque.connection import connect_pool
from torque.embedded import EmbeddedRedis
from torque.store import RedisStore
from torque.task import Task


def arrivals(receiver, path=None) -> collections.Counter:
    """How many times each task id arrived (at ``path``, if given)."""
    requests = receiver.to(path) if path else receiver.requests
    return collections.Counter(r.headers["x-torque-task-id"] for r in requests)


def report(scenario: str, injected: str, accepted: int, counts, recovery: float) -> None:
    """Append what a scenario measured to ``$TORQUE_FAULT_REPORT`` (JSON
    lines), when set: the table of the reliability issue's closing note."""
    path = os.environ.get("TORQUE_FAULT_REPORT")
    if not path:
        return
    row = {
        "scenario": scenario,
        "injected": injected,
        "accepted": accepted,
        "delivered": len(counts),
        "duplicates": sum(n - 1 for n in counts.values()),
        "recovery_s": round(recovery, 2),
    }
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")


@defer.inlineCallbacks
def add_many(node, url: str, count: int, **fields):
    """Add ``count`` tasks through the node's API, 16 at a time."""
    sem = defer.DeferredSemaphore(16)
    answers = yield defer.gatherResults(
        [sem.run(node.post, data={"url": url, **fields}) for _ in range(count)]
    )
    assert all(status == 201 for status, _, _ in answers), answers[:3]
    return [body["id"] for _, body, _ in answers]


class CrashTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_kill_9_mid_request_redelivers_after_the_lease(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        options = ("--task-timeout", "2", "--lease", "4")
        first = yield start_node(self, *options)
        _, body, _ = yield first.post(data={"url": receiver.url + "/slow"})
        yield wait_for(lambda: receiver.to("/slow"), what="the first attempt")
        yield first.kill()
        killed_at = time.monotonic()
        receiver.holding.clear()
        second = yield start_node(self, *options, prefix=first.prefix)
        yield wait_for(lambda: len(receiver.to("/slow")) == 2, what="the redelivery")
        recovered = time.monotonic() - killed_at
        self.assertGreaterEqual(recovered, 2.0, "redelivered before the lease")
        self.assertEqual(arrivals(receiver, "/slow"), {body["id"]: 2})
        report("kill -9 mid-request", "SIGKILL with the request in flight; lease 4 s",
               1, arrivals(receiver, "/slow"), recovered)  # fmt: skip
        yield wait_for(lambda: second.has_status(body["id"], "delivered"))
        _, task = yield second.get(f"/tasks/{body['id']}")
        self.assertEqual(task["attempts"], 2)

    @defer.inlineCallbacks
    def test_sigterm_lets_the_request_in_flight_finish_and_records_it(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        node = yield start_node(self, "--task-timeout", "20")
        _, body, _ = yield node.post(data={"url": receiver.url + "/slow"})
        yield wait_for(lambda: receiver.to("/slow"))
        stopped = node.stop()
        try:
            yield wait_for(lambda: not self.listening(node), what="the API to stop listening")
        except AssertionError:
            print(node.output)
            raise
        self.assertFalse(stopped.called, "the node exited with a request in flight")
        self.assertEqual(receiver.release(200), 1)
        released_at = time.monotonic()
        yield stopped
        stop_took = time.monotonic() - released_at
        # twistd ends itself with the signal that stopped it, after a clean stop.
        self.assertEqual(node.exit_signal, signal.SIGTERM)
        self.assertIn("Server Shut Down", node.output)
        yield node.restart()
        yield wait_for(lambda: node.has_status(body["id"], "delivered"))
        self.assertEqual(arrivals(receiver), {body["id"]: 1})
        report("SIGTERM mid-request", "SIGTERM with the request in flight, then a restart",
               1, arrivals(receiver), stop_took)  # fmt: skip

    def listening(self, node) -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", node.port)) == 0

    @defer.inlineCallbacks
    def test_backlog_survives_a_restart_of_node_and_embedded_redis(self):
        receiver = start_receiver(self)
        node = yield start_node(self, embedded=True)
        # Due in 10 s: on a loaded machine 300 adds took over 2 s, and the
        # first tasks were delivered before the stop.
        ids = yield add_many(node, receiver.url + "/backlog", 300, delay="10")
        yield node.stop()
        self.assertEqual(receiver.requests, [], "tasks were due before the node stopped")
        restarted_at = time.monotonic()
        yield node.restart()
        yield wait_for(lambda: len(receiver.requests) >= 300, timeout=60, what="300 deliveries")
        drained = time.monotonic() - restarted_at
        yield wait_for(lambda: node.has_status(ids[-1], "delivered"))
        self.assertEqual(arrivals(receiver), dict.fromkeys(ids, 1))
        report("restart with a backlog", "node and embedded Redis stopped and started, "
               "300 tasks scheduled 10 s ahead", 300, arrivals(receiver), drained)  # fmt: skip


class ManyNodesTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_nodes_sharing_a_queue_deliver_each_task_exactly_once(self):
        receiver = start_receiver(self)
        keys = fresh_keys()
        nodes = yield defer.gatherResults(
            [start_node(self, "--concurrency", "20", prefix=keys.prefix) for _ in range(3)]
        )
        redis = connect_pool(redis_address())
        self.addCleanup(redis.disconnect)
        store = RedisStore(redis, reactor, keys)
        now = started = time.time()
        ids = [f"many-{i}" for i in range(3000)]
        yield defer.gatherResults(
            [
                store.add(Task(id=i, queue="default", url=receiver.url + "/many", due_at=now))
                for i in ids
            ]
        )
        yield wait_for(lambda: len(receiver.requests) >= 3000, timeout=120, what="3000 arrivals")
        counts = arrivals(receiver)
        self.assertEqual(set(counts), set(ids), "lost tasks")
        self.assertEqual([i for i, n in counts.items() if n > 1], [], "duplicates")
        self.assertEqual(len(nodes), 3)
        report("many nodes, one queue", "3 nodes draining one queue", 3000, counts,
               time.time() - started)  # fmt: skip


class RedisOutageTests(unittest.TestCase):
    timeout = 180

    def start_redis(self, directory):
        server = EmbeddedRedis(directory)
        server.startService()
        self.addCleanup(server.stopService)
        return server

    @defer.inlineCallbacks
    def test_outage_gives_503s_then_everything_resumes_by_itself(self):
        receiver = start_receiver(self)
        directory = tempfile.mkdtemp(prefix="torque-outage-")  # short: a socket path
        self.addCleanup(shutil.rmtree, directory, True)
        redis = self.start_redis(directory)
        url = f"unix://{redis.socket_path}"
        # Delivery after the outage can only come from a wake-up message
        # (the poll is an hour away), so this also proves re-subscription.
        worker = yield start_node(self, "--port", "none", "--poll-interval", "3600",
                                  "--min-task-delay", "0.2", redis=url, health=None)  # fmt: skip
        api = yield start_node(self, "--queue", "none", redis=url, prefix=worker.prefix)
        _, before, _ = yield api.post(data={"url": receiver.url + "/before", "delay": "4"})
        redis.stopService()
        started = time.monotonic()
        status, answer, _ = yield api.post(data={"url": receiver.url + "/during"})
        self.assertEqual((status, answer["error"]["code"]), (503, "unavailable"))
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual((yield api.get("/health"))[0], 503)
        yield wait_for(lambda: time.monotonic() - started > 10, timeout=20)
        self.start_redis(directory)
        back_at = time.monotonic()
        yield wait_for(lambda: api.get("/health").addCallback(lambda r: r[0] == 200))
        yield wait_for(lambda: receiver.to("/before"), what="the task accepted before")
        recovered = time.monotonic() - back_at
        _, after, _ = yield api.post(data={"url": receiver.url + "/after"})
        yield wait_for(lambda: receiver.to("/after"), what="a wake-up after the outage")
        self.assertEqual(arrivals(receiver, "/before"), {before["id"]: 1})
        self.assertEqual(receiver.to("/during"), [])
        waits = worker.output.count("waiting for Redis")
        self.assertEqual(waits, 1, "the scheduler should log the outage once, not spin")
        report("Redis outage", "redis-server stopped for 10 s; one add during it got 503",
               2, arrivals(receiver), recovered)  # fmt: skip


class _Hang(protocol.Protocol):
    def dataReceived(self, data):
        pass


class _Reset(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.abortConnection()


class _Garbage(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(b"this is not HTTP\r\n\r\n")
        self.transport.loseConnection()


class _HugeBody(protocol.Protocol):
    """Answers 200 with a 100 MB body, sent slowly; counts the bytes sent
    on the factory (one per test: a count on the class outlived the test,
    and a second run in the same process never answered)."""

    started = False

    def dataReceived(self, data):
        if self.started:
            return
        self.started = True
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        self.send()

    def send(self):
        if self.transport.connected and self.factory.sent < 100_000_000:
            self.transport.write(b"x" * 65536)
            self.factory.sent += 65536
            reactor.callLater(0.001, self.send)


class _Redirect(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n"
        )


class MisbehavingReceiverTests(unittest.TestCase):
    timeout = 180

    def serve(self, kind) -> str:
        factory = protocol.Factory.forProtocol(kind)
        factory.sent = 0
        self.factories[kind] = factory
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/"

    @defer.inlineCallbacks
    def outcome(self, node, url):
        _, body, _ = yield node.post(data={"url": url})
        yield wait_for(
            lambda: node.get(f"/tasks/{body['id']}").addCallback(
                lambda r: r[1]["status"] in ("delivered", "dead") and r[1]
            ),
            what=f"the outcome for {url}",
        )
        _, task = yield node.get(f"/tasks/{body['id']}")
        return task

    @defer.inlineCallbacks
    def test_each_misbehaviour_ends_as_spec_section_4_says(self):
        self.factories = {}
        node = yield start_node(
            self, "--task-timeout", "1", "--max-task-errors", "2", "--min-task-delay", "0.1"
        )
        hang, reset, garbage, huge, redirect = yield defer.gatherResults(
            [
                self.outcome(node, self.serve(kind))
                for kind in (_Hang, _Reset, _Garbage, _HugeBody, _Redirect)
            ]
        )
        self.assertEqual((hang["status"], hang["attempts"]), ("dead", 2))
        self.assertIn("timed out", hang["last_error"])
        self.assertEqual((reset["status"], reset["attempts"]), ("dead", 2))
        self.assertEqual((garbage["status"], garbage["attempts"]), ("dead", 2))
        self.assertEqual((huge["status"], huge["last_status"]), ("delivered", 200))
        self.assertLess(self.factories[_HugeBody].sent, 100_000_000, "the node read the body")
        self.assertEqual((redirect["status"], redirect["last_status"]), ("dead", 302))
        self.assertEqual(redirect["attempts"], 1)
        rss_kb = _rss_kb(node)
        self.assertLess(rss_kb, 200_000, "the node's memory grew with the body")


def _rss_kb(node) -> int:
    with open(f"/proc/{node.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
