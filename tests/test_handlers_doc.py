"""docs/handlers.rst's worked example runs as written: the handler takes its
task over (``202``, ``Torque-Complete-Within``), reports back with
``client.complete`` when its job ends, and the task is delivered, on a node
with an API token the handler does not know."""

import json
import os
import socket
import sys

import treq
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tests.node import free_port, start_node, wait_for
from tests.test_docs import ROOT, doctree

TOKEN = "api-s3cret"


def example() -> str:
    from docutils import nodes

    tree = doctree(os.path.join(ROOT, "docs", "handlers.rst"))
    blocks = [node.astext() for node in tree.findall(nodes.literal_block)]
    (code,) = [block for block in blocks if block.startswith("import threading")]
    return code


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Ended(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)

    def stop(self, process) -> defer.Deferred:
        if process.pid:
            process.signalProcess("KILL")
        return self.ended


class HandlersDocTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_the_worked_example_reports_back_and_its_task_is_delivered(self):
        node = yield start_node(self, "--api-token", TOKEN)
        port = free_port()
        code = example()
        self.assertIn('("127.0.0.1", 8000)', code)
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write(code.replace('("127.0.0.1", 8000)', f'("127.0.0.1", {port})'))
        env = {**os.environ, "TORQUE_URL": node.url}
        env.pop("TORQUE_API_TOKEN", None)
        ended = _Ended()
        hook = reactor.spawnProcess(ended, sys.executable, [sys.executable, path], env=env)
        self.addCleanup(lambda: ended.stop(hook))
        yield wait_for(lambda: listening(port), what="the example's server")

        headers = {"Authorization": f"Bearer {TOKEN}"}
        status, added, _ = yield node.post(
            data={"url": f"http://127.0.0.1:{port}/encode"}, headers=headers
        )
        self.assertEqual(status, 201)

        @defer.inlineCallbacks
        def task():
            response = yield treq.get(
                f"{node.url}/tasks/{added['id']}", headers=headers, persistent=False
            )
            return json.loads((yield response.content()))

        yield wait_for(lambda: task().addCallback(lambda t: t["status"] == "waiting"))
        yield wait_for(lambda: task().addCallback(lambda t: t["status"] == "delivered"))
        shown = yield task()
        self.assertEqual([e["outcome"] for e in shown["history"]], ["delivered", "waiting"])
        self.assertEqual(shown["attempts"], 1)
