"""Flow control end to end (SPEC §9): a real ``twistd`` node, real Redis, real
receivers on their own ports (a port is a host: ``127.0.0.1:<port>``).

* one hanging host does not hold up a healthy one in the same queue;
* a host that is down gets one probe per cool-down, and every task is
  delivered when it is back, none dead;
* a host that answers ``429`` past 20 requests a second is sent about that.
"""

import time

import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest
from twisted.web import resource, server

from tests.node import start_node, start_receiver, wait_for


def p99(values):
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


@defer.inlineCallbacks
def add_all(node, queue, url, count, prefix, path=None):
    """Add ``count`` tasks, 20 requests at a time; when each was sent, by
    path (``/<prefix><i>``, or ``path`` for them all)."""
    sent = {}
    semaphore = defer.DeferredSemaphore(20)

    @defer.inlineCallbacks
    def one(i):
        target = path or f"/{prefix}{i}"
        sent.setdefault(target, time.time())
        status, body, _ = yield node.post(json_body={"url": url + target, "queue": queue})
        assert status == 201, body

    yield defer.gatherResults([semaphore.run(one, i) for i in range(count)], consumeErrors=True)
    return sent


def sleep(seconds):
    """The scenario's own time (a host down for a while), not a wait for a
    condition: those poll with wait_for."""
    return task.deferLater(reactor, seconds, lambda: None)


class FairnessE2ETests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def lags(self, node, receiver, queue, count, prefix):
        """Add ``count`` tasks in one batch; each one's add-to-arrival time."""
        sent = yield add_all(node, queue, receiver.url, count, prefix)
        yield wait_for(
            lambda: len([r for r in receiver.requests if r.path in sent]) >= count,
            timeout=60,
            what=f"{count} deliveries of {prefix}",
        )
        return [r.at - sent[r.path] for r in receiver.requests if r.path in sent]

    @defer.inlineCallbacks
    def test_a_hanging_host_does_not_hold_up_a_healthy_one(self):
        hanging, healthy = start_receiver(self), start_receiver(self)
        hanging.hold("/never")
        node = yield start_node(self, "--concurrency", "100", "--task-timeout", "10")
        yield self.lags(node, healthy, "warm", 20, "w")  # connections, imports
        alone = yield self.lags(node, healthy, "alone", 200, "a")
        yield add_all(node, "mixed", hanging.url, 200, "n", path="/never")
        yield wait_for(lambda: len(hanging.held) >= 10, what="the hanging host at its cap")
        mixed = yield self.lags(node, healthy, "mixed", 200, "m")
        print(f"\nhealthy host p99: alone {p99(alone):.3f} s, beside a hanging host "
              f"{p99(mixed):.3f} s")  # fmt: skip
        # Before, 19.2 s (two rounds of 100 hanging requests): head-of-line
        # blocking costs the task timeout (10 s) at least.  Within 2x of the
        # same load alone, plus a quarter second for a shared machine's noise
        # (the adds themselves make most of the lag, and -j2 runs another
        # test beside this one).
        self.assertLess(p99(mixed), 2 * p99(alone) + 0.25)
        self.assertEqual(len(hanging.held), 10, "--host-concurrency 10: no more")


class FlakyHost(protocol.Factory):
    """A host on one port: while ``down`` it accepts a connection and drops
    it at once (a reset, as a crashed server behind a balancer does),
    counting each; up, it is a real web receiver."""

    def __init__(self, site):
        self.site = site
        self.down = True
        self.connections: list[float] = []  # when, while down

    def buildProtocol(self, addr):
        if not self.down:
            return self.site.buildProtocol(addr)
        self.connections.append(time.monotonic())
        return _Drop()


class _Drop(protocol.Protocol):
    def connectionMade(self):
        self.transport.abortConnection()


class Hits(resource.Resource):
    isLeaf = True

    def __init__(self, limit=None):
        super().__init__()
        self.limit = limit  # answers 200 to this many a second, 429 past it
        self.accepted: list[float] = []
        self.all: list[float] = []
        self.paths: set[str] = set()

    def render(self, request):
        now = time.monotonic()
        self.all.append(now)
        if self.limit is not None:
            recent = [t for t in self.accepted[-self.limit :] if t > now - 1.0]
            if len(recent) >= self.limit:
                request.setResponseCode(429)
                return b"slow down"
        self.accepted.append(now)
        self.paths.add(request.path.decode())
        return b"ok"


def listen(testcase, factory):
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}"


class BreakerE2ETests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_a_host_that_is_down_gets_one_probe_per_cooldown_then_everything(self):
        hits = Hits()
        host = FlakyHost(server.Site(hits))
        url = listen(self, host)
        # A 6 s outage with cool-downs capped at 1 s: the 60 s outage
        # with a 10 s cap, ten times faster.
        node = yield start_node(
            self, "--breaker-cooldown", "0.5", "--max-cooldown", "1",
            "--min-task-delay", "0.5", "--max-task-delay", "2",
        )  # fmt: skip
        yield add_all(node, "flaky", url, 30, "t")

        def opened():
            d = node.get("/queues/flaky")
            return d.addCallback(lambda answer: answer[1].get("open_circuits"))

        circuits = yield wait_for(opened, what="the circuit to open")
        self.assertEqual(circuits, [url.split("//")[1]])
        before = len(host.connections)
        yield sleep(5.0)
        probes = len(host.connections) - before
        print(f"\nconnections while down: {before} before the circuit opened, then {probes} "
              f"in 5 s (cool-down capped at 1 s)")  # fmt: skip
        self.assertGreaterEqual(probes, 2, "it keeps probing")
        self.assertLessEqual(probes, 6, "one probe per cool-down, not every task's retries")
        response = yield treq.get(node.url + "/metrics", persistent=False)
        self.assertIn(b"\ntorque_open_circuits 1.0\n", (yield response.content()))
        host.down = False
        yield wait_for(lambda: len(hits.paths) == 30, timeout=60, what="every task delivered")
        _, queue = yield node.get("/queues/flaky")
        self.assertEqual((queue["dead"], queue["open_circuits"]), (0, []))


class ThrottleE2ETests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_a_host_answering_429_past_20_a_second_gets_about_that(self):
        hits = Hits(limit=20)
        url = listen(self, server.Site(hits))
        node = yield start_node(self, "--min-task-delay", "0.5", "--max-task-delay", "4")
        started = time.monotonic()
        yield add_all(node, "busy", url, 300, "t")
        yield wait_for(lambda: len(hits.paths) == 300, timeout=120, what="every task delivered")
        learned = started + 5.0  # the learning period
        seconds = {}
        for t in hits.all:
            if t >= learned:
                seconds[int(t - learned)] = seconds.get(int(t - learned), 0) + 1
        full = [n for s, n in sorted(seconds.items()) if s < max(seconds)]  # whole seconds
        total = len(hits.all)
        print(f"\n300 tasks, {total} requests; per second after 5 s: {full}")
        self.assertTrue(full, "delivery lasted past the learning period")
        self.assertLessEqual(max(full), 25)
        _, queue = yield node.get("/queues/busy")
        self.assertEqual(queue["dead"], 0)
