"""schemathesis against a live node: generated and hostile requests to every
operation in ``/openapi.json`` never get a 5xx, and every answer is one the
document describes (status, content type, headers, body schema).

The node is a real ``twistd`` subprocess on the test run's redis-server.  It
processes no queue (``--queue none``): schemathesis invents task URLs, and a
test suite must not send requests to hosts it made up.  Relative URLs are
accepted (``--base-task-url``, a real receiver), so the fuzzer gets past url
validation more often.  schemathesis runs as a subprocess, from the reactor,
so the node's stdout keeps being read while it works.

Every schemathesis check runs (see ``CONFIG``), with one exception:
``positive_data_acceptance`` ("a request the schema allows is accepted") is
off for the three add operations, whose rules OpenAPI 3.0 can't state: ``eta``
at most 30 days after now, ``delay`` or ``eta`` and ``params`` or ``json``
but not both, no ``json`` for a GET, a body ``queue`` equal to the path's, a
url whose host IDNA accepts and that fits 2083 characters once joined to the
base URL.  The reverse, ``negative_data_rejection`` ("a request the schema
forbids is refused"), does run for them, so what the document says of a
submission is never looser than the node's checks.  It is off too for
``listTasks``, whose ``cursor`` is opaque: only a ``next_cursor`` the node
gave is one, and a schema can't say which strings those are (a made-up
cursor gets a 400 naming it).
"""

from __future__ import annotations

import os
import re
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tests.node import start_node, start_receiver
from torque import openapi

SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
TOKEN = "fuzz-token"

CONFIG = """\
[checks]
enabled = true

[[operations]]
include-operation-id = ["addTask", "addTaskAlias", "addTaskToQueue"]
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = ["listTasks"]
checks.positive_data_acceptance.enabled = false
"""


class _Collect(protocol.ProcessProtocol):
    """Gathers a child's output; ``ended`` fires with its exit code."""

    def __init__(self):
        self.output = bytearray()
        self.ended = defer.Deferred()
        self.running = True

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.running = False
        self.ended.callback(reason.value.exitCode)


class SchemathesisTests(unittest.TestCase):
    # Each run is some thousands of requests: about a minute on a quiet
    # 2-core machine, more when other tests run beside it.
    timeout = 240

    def setUp(self):
        if not os.path.exists(SCHEMATHESIS):
            self.fail("schemathesis is not installed: pip install -e '.[test]'")

    @defer.inlineCallbacks
    def fuzz(self, *node_args: str, headers: tuple[str, ...] = ()):
        receiver = start_receiver(self)
        node = yield start_node(
            self, "--queue", "none", "--base-task-url", receiver.url, *node_args
        )
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        config = os.path.join(workdir, "schemathesis.toml")
        with open(config, "w") as f:
            f.write(CONFIG)
        argv = [SCHEMATHESIS, "--no-color", "--config-file", config, "run"]
        argv += [node.url + "/openapi.json", "--seed", "1", "--max-examples", "50"]
        argv += ["--request-timeout", "10", "--workers", "1", "--continue-on-failure"]
        argv += ["--generation-database", "none", "--output-truncate", "false"]
        for header in headers:
            argv += ["-H", header]
        run = _Collect()
        process = reactor.spawnProcess(run, argv[0], argv, env=dict(os.environ), path=workdir)
        self.addCleanup(lambda: run.running and process.signalProcess("KILL"))
        code = yield run.ended
        report = run.output.decode("utf-8", "replace")
        if code != 0:
            tail = "\n".join(node.output.splitlines()[-60:])
            self.fail(
                f"schemathesis found problems (exit {code}):\n{report}\n"
                f"--- the node's log, last lines ---\n{tail}"
            )
        # Every operation was tested, but GET /openapi.json: schemathesis
        # leaves out the document it was given.
        tested = re.search(r"Tested:\s+(\d+)", report)
        operations = sum(len(item) for item in openapi.document()["paths"].values()) - 1
        self.assertEqual(int(tested.group(1)) if tested else None, operations, report)
        self.assertNotIn("Traceback", node.output)
        self.assertEqual(receiver.requests, [], "a node with --queue none delivered")

    def test_open_node(self):
        return self.fuzz()

    def test_node_with_an_api_token(self):
        # The document then requires the bearer token, so schemathesis's
        # ignored_auth check also sends each request without it, and with a
        # wrong one, and wants a 401.
        return self.fuzz("--api-token", TOKEN, headers=(f"Authorization: Bearer {TOKEN}",))
