"""A node's log stays quiet about its own HTTP connections: deliveries to a
handler that closes every connection (``Connection: close``) log no
``Starting factory`` / ``Stopping factory`` lines.  A real ``twistd`` node
and a real receiver."""

import re

from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for

FACTORY_LINE = re.compile(r"(Starting|Stopping) factory")


class QuietLogTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_twenty_deliveries_to_a_closing_handler_log_no_factory_lines(self):
        receiver = start_receiver(self)
        receiver.close_after("/close")
        node = yield start_node(self, "--queue", "default")
        ids = []
        for _ in range(20):
            status, body, _response = yield node.post(
                data={"url": receiver.url + "/close", "params": "{}"}
            )
            self.assertEqual(status, 201, body)
            ids.append(body["id"])
        yield wait_for(lambda: len(receiver.to("/close")) == 20, what="20 deliveries")

        @defer.inlineCallbacks
        def all_delivered():
            states = yield defer.gatherResults([node.has_status(i, "delivered") for i in ids])
            return all(states)

        yield wait_for(all_delivered, what="20 delivered tasks")
        self.assertEqual(
            {r.headers.get("connection") for r in receiver.to("/close")} - {None},
            set(),
            "torque asked for no connection: close itself",
        )
        lines = [line for line in node.output.splitlines() if FACTORY_LINE.search(line)]
        self.assertEqual(len(lines), 0, "\n".join(lines[:2] + [f"… {len(lines)} lines"]))
