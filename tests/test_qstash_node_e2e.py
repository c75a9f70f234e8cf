"""End to end with the official ``@upstash/qstash`` client for Node,
unmodified: it publishes, enqueues, batches, reads and cancels messages,
manages a queue and the DLQ on a real node, and its ``Receiver`` verifies a
real delivery (and refuses it with other keys).

The package is installed on first run into the git-ignored ``.cache/npm``
(``npm install --prefix .cache/npm @upstash/qstash@2``); without Node and
npm the test fails, naming what is missing.
"""

from __future__ import annotations

import json
import os
import shutil

import treq
from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.node import ROOT, start_node, start_receiver, wait_for

CACHE = os.path.join(ROOT, ".cache", "npm")
PACKAGE = "@upstash/qstash@2"
DRIVER = os.path.join(ROOT, "tests", "qstash_node", "drive.js")


@defer.inlineCallbacks
def installed_package() -> defer.Deferred:
    """Node, with ``@upstash/qstash`` in the cache; fails naming what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in [("node", node), ("npm", npm)] if p is None)
        raise AssertionError(
            f"{missing} not found on PATH: this test needs Node.js 20 and npm "
            f"(apt-get install nodejs npm) to install {PACKAGE}"
        )
    if not os.path.isdir(os.path.join(CACHE, "node_modules", "@upstash", "qstash")):
        out, err, code = yield getProcessOutputAndValue(
            npm, ["install", "--no-save", "--prefix", CACHE, PACKAGE], env=dict(os.environ)
        )
        if code != 0:
            raise AssertionError(f"npm install {PACKAGE} failed ({code}):\n{out!r}\n{err!r}")
    return node


class QStashNodeClientTests(unittest.TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def drive(self, node_bin: str, env: dict[str, str]) -> defer.Deferred:
        full = {**os.environ, "NODE_PATH": os.path.join(CACHE, "node_modules"), **env}
        full["UPSTASH_DISABLE_TELEMETRY"] = "1"
        out, err, code = yield getProcessOutputAndValue(node_bin, [DRIVER], env=full)
        self.assertEqual(code, 0, f"the Node client failed:\n{err.decode()}")
        return json.loads(out.decode().strip().splitlines()[-1])

    @defer.inlineCallbacks
    def test_the_official_node_client_drives_the_door(self):
        node_bin = yield installed_package()
        receiver = start_receiver(self)
        receiver.respond("/js-down", 500)
        node = yield start_node(self, "--api-token", "js-token")
        common = {"QSTASH_URL": node.url, "QSTASH_TOKEN": "js-token", "RECEIVER": receiver.url}
        ids = yield self.drive(node_bin, {**common, "PHASE": "publish"})
        for path in ["/js", "/js-queued", "/js-batch-a", "/js-batch-b"]:
            yield wait_for(lambda p=path: receiver.to(p), what=path)
        yield wait_for(lambda: self.is_dead(node, ids["dead"]), what="the dead letter")
        (delivery,) = receiver.to("/js")
        print("\n@upstash/qstash delivery headers as the receiver saw them:")
        print(json.dumps(delivery.headers))
        self.assertEqual(delivery.headers["upstash-message-id"], ids["json"])
        self.assertEqual(json.loads(delivery.body), {"hello": "js"})
        signed = {
            "signature": delivery.headers["upstash-signature"],
            "body": delivery.body.decode(),
            "url": receiver.url + "/js?x=1",
        }
        keys = yield self.get(node, "/v2/keys")
        result = yield self.drive(
            node_bin,
            {
                **common,
                "PHASE": "inspect",
                "IDS": json.dumps(ids),
                "DELIVERY": json.dumps(signed),
                "KEYS": json.dumps(keys),
            },
        )
        self.assertEqual(
            result["got"],
            {
                "messageId": ids["raw"],
                "method": "PUT",
                "body": "raw",
                "header": {"X-From": ["js"], "Content-Type": ["text/plain;charset=UTF-8"]},
            },
        )
        self.assertEqual(result["afterCancel"], "404")
        self.assertEqual(result["queue"], {"name": "js-queue", "parallelism": 3, "paused": True})
        self.assertEqual(result["queues"], [["js-queue", 3]])
        self.assertEqual(result["dlq"], [[ids["dead"], 500]])
        self.assertEqual(result["retried"], [ids["dead"]])
        self.assertIs(result["verified"], True)
        self.assertIn("signature", result["refused"].lower())
        self.assertEqual(receiver.to("/js-raw"), [])
        yield wait_for(lambda: len(receiver.to("/js-down")) == 2, what="the retried message")

    @defer.inlineCallbacks
    def get(self, node, path: str):
        headers = {"Authorization": "Bearer js-token"}
        response = yield treq.get(node.url + path, headers=headers, persistent=False)
        return (yield response.json())

    @defer.inlineCallbacks
    def is_dead(self, node, task_id: str):
        return (yield self.get(node, f"/tasks/{task_id}")).get("status") == "dead"


class MissingNodeTests(unittest.TestCase):
    def test_without_node_and_npm_it_fails_naming_them(self):
        self.patch(os, "environ", {**os.environ, "PATH": os.path.abspath(self.mktemp())})
        failure = self.failureResultOf(installed_package(), AssertionError)
        self.assertIn("node and npm not found on PATH", str(failure.value))
