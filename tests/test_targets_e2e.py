"""End to end, with the defaults (no --allow-target): a real node refuses
tasks to its own API and to link-local addresses (cloud metadata), when
added and, for a task written straight into Redis, when dispatched."""

import time

from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, wait_for
from tests.redis_server import redis_address
from torque.connection import connect_pool
from torque.keys import Keys


class DefaultRefusalTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_a_task_cannot_pause_the_nodes_own_queue(self):
        node = yield start_node(self)
        pause = "/queues/default/pause"
        for url in [node.url + pause, f"http://localhost:{node.port}{pause}"]:
            status, body, _ = yield node.post(data={"url": url})
            self.assertEqual(status, 400, f"{url}: {body}")
            self.assertEqual(body["error"]["field"], "url")
            self.assertIn("own API", body["error"]["message"])
        # Written into Redis by hand (README), it is refused when dispatched.
        redis = connect_pool(redis_address())
        self.addCleanup(redis.disconnect)
        keys = Keys(node.prefix)
        now = repr(time.time())
        yield redis.execute_command(
            "HSET", keys.task("default", "default.to-self"), "queue", "default",
            "url", node.url + pause, "created_at", now,
        )  # fmt: skip
        yield redis.execute_command("ZADD", keys.due("default"), now, "default.to-self")
        yield redis.execute_command("PUBLISH", keys.wake("default"), now)

        @defer.inlineCallbacks
        def attempted():
            _, task = yield node.get("/tasks/default.to-self")
            return task if task["status"] in ("dead", "delivered") else None

        task = yield wait_for(attempted, what="the attempt")
        _, queue = yield node.get("/queues/default")
        self.assertIs(queue["paused"], False)
        self.assertEqual(task["status"], "dead")
        self.assertIn("own API", task["last_error"])

    @defer.inlineCallbacks
    def test_link_local_is_refused_unless_allow_target_names_it(self):
        metadata = "http://169.254.169.254/latest/meta-data/"
        node = yield start_node(self)
        status, body, _ = yield node.post(data={"url": metadata})
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"]["field"], "url")
        self.assertIn("link-local", body["error"]["message"])
        allowing = yield start_node(self, "--allow-target", "169.254.169.254")
        status, body, _ = yield allowing.post(data={"url": metadata, "delay": "3600"})
        self.assertEqual(status, 201, body)
