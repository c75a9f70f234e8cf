"""The Cloud Tasks door driven by Google's Node client, ``@google-cloud/tasks``
in REST (``fallback``) mode, against a real node and receiver.

The package is installed by the first run into ``.cache/npm`` (git-ignored)
with npm.  Major version 6: version 7 wants Node 22, and Debian's is 20.
The test fails, naming what is missing, when Node or npm is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.node import ROOT, start_node, start_receiver, wait_for

NPM_DIR = os.path.join(ROOT, ".cache", "npm")
PACKAGE = "@google-cloud/tasks@6"
SCRIPT = os.path.join(ROOT, "tests", "cloudtasks_node_client.js")
TOKEN = "node-secret"


def install() -> str:
    """Node's path, once the package is in :data:`NPM_DIR`."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        raise AssertionError(
            f"this test needs Node.js and npm ({missing} not found): apt-get install nodejs npm"
        )
    installed = os.path.join(NPM_DIR, "node_modules", "@google-cloud", "tasks", "package.json")
    if not os.path.exists(installed):
        os.makedirs(NPM_DIR, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", NPM_DIR, "--no-audit", "--no-fund", PACKAGE],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return node


class NodeClientTests(unittest.TestCase):
    timeout = 900

    @defer.inlineCallbacks
    def test_the_node_client_drives_every_route(self):
        node_js = yield deferToThread(install)
        receiver = start_receiver(self)
        node = yield start_node(self, "--api-token", TOKEN)
        env = {**os.environ, "NODE_PATH": os.path.join(NPM_DIR, "node_modules")}
        ran = yield deferToThread(
            subprocess.run,
            [node_js, SCRIPT, str(node.port), TOKEN, receiver.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        self.assertEqual(ran.returncode, 0, ran.stderr)
        out = json.loads(ran.stdout)
        self.assertEqual(
            out["created"],
            {"name": "projects/node-proj/locations/us-central1/queues/node-q", "state": "RUNNING",
             "rate": 5},
        )  # fmt: skip
        self.assertEqual(out["duplicateQueue"], 409)
        self.assertEqual(out["got"], {"attempts": 4})
        self.assertEqual(out["queues"], ["node-gone", "node-q"])
        self.assertEqual(out["updated"], {"rate": 2, "attempts": 4})
        self.assertEqual(
            (out["paused"], out["resumed"], out["purged"]), ("PAUSED", "RUNNING", True)
        )
        self.assertEqual(out["deletedQueue"], 404)
        self.assertEqual(out["task"]["body"], "Hello, World!")
        self.assertEqual(out["task"]["view"], "FULL")
        self.assertEqual(out["duplicateTask"], 409)
        self.assertEqual(out["full"], {"method": "PUT", "deadline": 30})
        self.assertEqual(out["tasks"], ["n1", "n2", "n3", "run-me"])
        self.assertEqual((out["deletedTask"], out["missingTask"], out["oidc"]), (404, 404, 501))
        yield wait_for(lambda: receiver.to("/node/run"), what="the run task's delivery")
        (delivery,) = receiver.to("/node/run")
        self.assertEqual((delivery.method, delivery.body), ("PUT", b"Hello, World!"))
        self.assertEqual(delivery.headers["x-cloudtasks-taskname"], "run-me")
        self.assertEqual(delivery.headers["x-cloudtasks-queuename"], "node-q")
