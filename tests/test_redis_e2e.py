"""A node whose Redis fails, end to end: a real ``twistd`` node on a real
redis-server of the test's own (tests/scratch_redis.py), which the test
stops, freezes with SIGSTOP, fills to ``maxmemory`` or takes the disk from
(``MISCONF``).  SPEC §5: a 503 with ``Retry-After``, at once when the node
knows the connection is down, never a 500 nor a hang; outcomes Redis
refused are recorded once it takes them again."""

import json
import statistics
import time

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for
from tests.scratch_redis import ScratchRedis

# What a load balancer's probe allows: SPEC §5, "a probe with a 1 s timeout
# must see the 503".
PROBE_TIMEOUT = 1.0


@defer.inlineCallbacks
def probe(url: str, method: str = "GET", timeout: float = PROBE_TIMEOUT, **kwargs):
    """One request with a client timeout; fires with ``(status, headers,
    JSON body, seconds taken)``.  A timeout fails the test."""
    started = time.monotonic()
    response = yield treq.request(method, url, timeout=timeout, persistent=False, **kwargs)
    content = yield response.content()
    took = time.monotonic() - started
    return response.code, response.headers, json.loads(content) if content else None, took


class RedisStoppedTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_stopped_redis_is_a_503_at_once_and_the_node_recovers(self):
        receiver = start_receiver(self)
        redis = ScratchRedis(self)
        node = yield start_node(self, redis=redis.url)
        redis.stop()
        # The node learns it when the connection closes; from then on every
        # probe must see the 503 within its 1 s.
        yield wait_for(
            lambda: probe(node.url + "/health").addCallback(lambda r: r[0] == 503),
            what="/health to answer 503",
        )
        took = []
        for _ in range(20):
            status, headers, body, seconds = yield probe(node.url + "/health")
            self.assertEqual((status, body["status"]), (503, "unavailable"))
            self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
            took.append(seconds)
        self.assertLess(max(took), PROBE_TIMEOUT)
        print(f"\n/health with Redis stopped: median {statistics.median(took) * 1000:.1f} ms, "
              f"max {max(took) * 1000:.1f} ms over 20")  # fmt: skip
        status, headers, body, seconds = yield probe(
            node.url + "/hooks/add", "POST", data={"url": receiver.url + "/during"}
        )
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        self.assertLess(seconds, PROBE_TIMEOUT)
        redis.start()
        yield wait_for(
            lambda: probe(node.url + "/health").addCallback(lambda r: r[0] == 200),
            what="/health to answer 200 again",
        )
        status, _, added, _ = yield probe(
            node.url + "/hooks/add", "POST", data={"url": receiver.url + "/after"}
        )
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/after"), what="a delivery after the outage")
        self.assertEqual(receiver.to("/during"), [])

    @defer.inlineCallbacks
    def test_frozen_redis_is_a_503_after_the_command_timeout_never_a_hang(self):
        redis = ScratchRedis(self)
        node = yield start_node(self, redis=redis.url)
        redis.freeze()
        self.addCleanup(redis.thaw)
        status, headers, body, seconds = yield probe(node.url + "/health", timeout=30.0)
        self.assertEqual((status, body["status"]), (503, "unavailable"))
        self.assertIn("did not answer in time", body["error"])
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        self.assertGreater(seconds, 4.0, "a connected Redis gets the 5 s timeout")
        self.assertLess(seconds, 15.0)
        redis.thaw()
        yield wait_for(
            lambda: probe(node.url + "/health").addCallback(lambda r: r[0] == 200),
            what="/health to answer 200 again",
        )


class RedisRefusesTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_at_maxmemory_adds_and_ops_answer_503_with_retry_after(self):
        receiver = start_receiver(self)
        redis = ScratchRedis(self)
        node = yield start_node(self, redis=redis.url)
        # The queue exists (pausing one that never did is a 404).
        status, _, _ = yield node.post(data={"url": receiver.url + "/later", "delay": "600"})
        self.assertEqual(status, 201)
        redis.fill_memory()
        status, headers, body, _ = yield probe(
            node.url + "/hooks/add", "POST", timeout=10.0, data={"url": receiver.url + "/oom"}
        )
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        self.assertIn("out of memory", body["error"]["message"])
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        status, headers, body, _ = yield probe(
            node.url + "/queues/default/pause", "POST", timeout=10.0
        )
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        # PING still works at maxmemory: /health says Redis answers.
        self.assertEqual((yield probe(node.url + "/health", timeout=10.0))[0], 200)
        redis.free_memory()
        status, _, _, _ = yield probe(
            node.url + "/hooks/add", "POST", timeout=10.0, data={"url": receiver.url + "/ok"}
        )
        self.assertEqual(status, 201)
        self.assertNotIn("Unhandled", node.output)

    @defer.inlineCallbacks
    def test_misconf_answers_503_on_adds_and_health(self):
        redis = ScratchRedis(self)
        node = yield start_node(self, redis=redis.url)
        redis.lose_disk()
        status, headers, body, _ = yield probe(
            node.url + "/hooks/add", "POST", timeout=10.0, data={"url": "http://127.0.0.1:9/"}
        )
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        self.assertIn("MISCONF", body["error"]["message"])
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        status, headers, body, _ = yield probe(node.url + "/health", timeout=10.0)
        self.assertEqual((status, body["status"]), (503, "unavailable"))
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])

    @defer.inlineCallbacks
    def test_an_outcome_refused_at_maxmemory_is_recorded_once_redis_takes_it(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        redis = ScratchRedis(self)
        # A lease of 20 + 30 s: the outcome must be recorded long before.
        node = yield start_node(self, "--task-timeout", "20", redis=redis.url)
        _, added, _ = yield node.post(data={"url": receiver.url + "/slow"})
        yield wait_for(lambda: receiver.to("/slow"), what="the attempt")
        redis.fill_memory()
        self.assertEqual(receiver.release(200), 1)
        yield wait_for(
            lambda: "could not record 1 outcomes" in node.output, what="the error in the log"
        )
        self.assertIn("out of memory", node.output)
        self.assertTrue((yield node.has_status(added["id"], "running")))
        redis.free_memory()
        yield wait_for(
            lambda: node.has_status(added["id"], "delivered"), timeout=15, what="the outcome"
        )
        self.assertEqual(len(receiver.to("/slow")), 1)
