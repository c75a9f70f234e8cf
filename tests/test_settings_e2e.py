"""End to end: ``PATCH /queues/<q>`` on one node changes how every node
works the queue, without a restart, within a second: two ``twistd`` nodes
on one Redis, a real receiver that holds the requests open."""

import json
import time

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for


@defer.inlineCallbacks
def patch(node, queue: str, body: dict):
    response = yield treq.request(
        "PATCH", f"{node.url}/queues/{queue}", json=body, persistent=False
    )
    return response.code, json.loads((yield response.content()))


class LiveSettingsTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_every_node_takes_a_new_concurrency_without_a_restart(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        # A safety tick half a minute away: only the wake channel's message
        # can bring the change within the bound below.
        options = ("--queue", "q", "--concurrency", "1", "--poll-interval", "30")
        a = yield start_node(self, *options, "--task-timeout", "30")
        b = yield start_node(self, *options, "--task-timeout", "30", prefix=a.prefix)
        self.addCleanup(receiver.release)  # before the nodes stop: they wait for them
        for _ in range(10):
            status, _, _ = yield a.post(json_body={"url": receiver.url + "/slow", "queue": "q"})
            self.assertEqual(status, 201)
        yield wait_for(lambda: len(receiver.held) == 2, what="one request held per node")

        sent = time.monotonic()
        status, body = yield patch(a, "q", {"concurrency": 3})
        self.assertEqual((status, body["settings"]), (200, {"concurrency": 3}))
        # Six held at once means both nodes work with 3 (each holds at most 3).
        yield wait_for(lambda: len(receiver.held) == 6, timeout=20, what="3 per node")
        took = time.monotonic() - sent
        print(f"\n  PATCH to both nodes at the new concurrency: {took:.3f} s")
        self.assertEqual(len(receiver.held), 6, "never more than 3 per node")
        status, shown = yield a.get("/queues/q")
        self.assertEqual(shown["settings"], {"concurrency": 3})
        status, shown = yield b.get("/queues/q")
        self.assertEqual(shown["settings"], {"concurrency": 3}, "the other node shows it too")
