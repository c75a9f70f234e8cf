"""README.rst's examples, run as written against the quick-start node.

Every ``.. code:: shell`` and ``.. code:: python`` block of the README is an
example a newcomer runs: the five-line receiver (the one block that starts an
``HTTPServer``) is started as it is, the others are run one after the other
against a node started as the quick start starts it (``twistd -n torque``,
embedded Redis), with only the port numbers changed (the test can't take
8090 and 8000 on a shared machine).  Then every task they added must be
delivered: no queue left with a scheduled, running or dead task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.node import free_port, start_node, wait_for
from tests.test_docs import ROOT, doctree


def examples() -> list[tuple[str, str]]:
    """``(language, text)`` of every runnable code block, in order."""
    from docutils import nodes

    blocks = []
    for node in doctree(os.path.join(ROOT, "README.rst")).findall(nodes.literal_block):
        classes = node.get("classes", [])
        for language in ("shell", "python"):
            if language in classes:
                blocks.append((language, node.astext()))
    return blocks


class ReadmeExamplesTests(unittest.TestCase):
    timeout = 180

    def test_the_readme_has_runnable_examples(self):
        languages = [language for language, _ in examples()]
        self.assertGreaterEqual(languages.count("shell"), 2)
        self.assertGreaterEqual(languages.count("python"), 2)
        receivers = [text for _, text in examples() if "HTTPServer" in text]
        self.assertEqual(len(receivers), 1, "one receiver in the README")
        self.assertLessEqual(len(receivers[0].strip().splitlines()), 10)

    @defer.inlineCallbacks
    def test_every_example_runs_as_written_and_its_tasks_are_delivered(self):
        node = yield start_node(self, embedded=True)
        hook_port = free_port()

        def as_here(text: str) -> str:
            return text.replace("8090", str(node.port)).replace("8000", str(hook_port))

        blocks = examples()
        (receiver_code,) = [text for _, text in blocks if "HTTPServer" in text]
        receiver = subprocess.Popen(
            [sys.executable, "-u", "-c", as_here(receiver_code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.mktemp_dir(),
        )
        self.addCleanup(receiver.wait)
        self.addCleanup(receiver.kill)
        yield wait_for(lambda: _listening(hook_port), what="the README's receiver")

        # The clients' default is http://localhost:8090: here, the node's port.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TORQUE_")}
        env["TORQUE_URL"] = f"http://localhost:{node.port}"
        for language, text in blocks:
            if text is receiver_code:
                continue
            argv = ["bash", "-c", as_here(text)] if language == "shell" else [
                sys.executable, "-c", as_here(text)
            ]  # fmt: skip
            done = yield threads.deferToThread(
                subprocess.run, argv, capture_output=True, text=True, timeout=60, env=env
            )
            self.assertEqual(done.returncode, 0, f"{text}\n->\n{done.stdout}{done.stderr}")
            self.assertNotIn('"error"', done.stdout, f"{text}\n->\n{done.stdout}")

        @defer.inlineCallbacks
        def all_delivered():
            status, body = yield node.get("/queues")
            queues = body["queues"]
            busy = [q for q in queues if q["scheduled"] or q["running"] or q["dead"]]
            return status == 200 and queues and not busy

        yield wait_for(all_delivered, timeout=60, what="every example's task delivered")
        receiver.kill()
        heard = receiver.communicate()[0].decode()
        deliveries = [line for line in heard.splitlines() if line.startswith("/")]
        self.assertIn("/hooks/do/foo foo=somevalue&baz=99", deliveries)  # as the README says
        self.assertIn(
            "/hooks/do/foo " + json.dumps({"order": 42}, separators=(",", ":")), deliveries
        )
        # Each task reached the receiver once: as many arrivals as the
        # queues' delivered totals, and at least one per example.
        _, body = yield node.get("/queues")
        delivered = sum(queue["delivered"] for queue in body["queues"])
        self.assertEqual(len(deliveries), delivered)
        self.assertGreaterEqual(delivered, len(blocks) - 1)

    def mktemp_dir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
