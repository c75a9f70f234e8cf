"""The entry points as a user runs them: real ``twistd`` processes.

``TORQUE_API_TOKEN=s3cret twistd -n torque`` requires the token; a
misspelt ``TORQUE_*`` variable stops ``twistd torque`` and ``torque.tac``
alike, naming it; ``twistd torque --version`` prints torque's version; the
embedded Redis's data directory is logged as an absolute path.
"""

from __future__ import annotations

import os
from importlib import metadata

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

import torque
from tests.node import ROOT, TWISTD, _NodeProcess, start_node


@defer.inlineCallbacks
def run_twistd(testcase, *argv: str, env: dict[str, str] | None = None):
    """Run ``twistd *argv`` to its end, in a scratch directory; its exit
    code and everything it wrote."""
    workdir = os.path.abspath(testcase.mktemp())
    os.makedirs(workdir)
    process = _NodeProcess()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    transport = reactor.spawnProcess(process, TWISTD, [TWISTD, *argv], env=full_env, path=workdir)
    testcase.addCleanup(lambda: process.ended.called or transport.signalProcess("KILL"))
    code = yield process.ended
    return code, process.output.decode("utf-8", "replace")


class EnvironmentTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_twistd_torque_requires_the_token_from_the_environment(self):
        node = yield start_node(self, env={"TORQUE_API_TOKEN": "s3cret"})

        def status(path, token=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            d = treq.get(node.url + path, headers=headers, persistent=False)
            return d.addCallback(lambda r: r.content().addCallback(lambda _: r.code))

        self.assertEqual((yield status("/queues")), 401, "no token")
        self.assertEqual((yield status("/queues", "wrong")), 401, "a wrong token")
        self.assertEqual((yield status("/queues", "s3cret")), 200, "the token")
        self.assertEqual((yield status("/health")), 200, "health is open")

    @defer.inlineCallbacks
    def test_a_misspelt_variable_stops_both_entry_points_naming_it(self):
        env = {"TORQUE_PROT": "9000", "TORQUE_REDIS_URL": "redis://127.0.0.1:1/0"}
        for name, argv in [
            ("twistd torque", ["-n", "--pidfile=", "torque"]),
            ("torque.tac", ["-n", "--pidfile=", "-y", os.path.join(ROOT, "torque.tac")]),
        ]:
            code, output = yield run_twistd(self, *argv, env=env)
            self.assertNotEqual(code, 0, f"{name}:\n{output}")
            self.assertIn("TORQUE_PROT is not a torque option", output, name)
            self.assertNotIn("torque node: queues", output, f"{name} started a node")

    @defer.inlineCallbacks
    def test_a_bad_value_stops_the_node_naming_the_variable(self):
        env = {"TORQUE_MAX_TASK_ERRORS": "lots", "TORQUE_REDIS_URL": "redis://127.0.0.1:1/0"}
        code, output = yield run_twistd(self, "-n", "--pidfile=", "torque", env=env)
        self.assertNotEqual(code, 0, output)
        self.assertIn("TORQUE_MAX_TASK_ERRORS: 'lots' is not a whole number", output)


class VersionTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_twistd_torque_version_prints_torques_version(self):
        code, output = yield run_twistd(self, "torque", "--version")
        self.assertEqual((code, output.strip()), (0, f"torque {torque.__version__}"))

    def test_the_distribution_is_txtorque(self):
        # ("torque" on PyPI is an unrelated project.)  After this rename an
        # older checkout's install needs: pip uninstall torque, and install again.
        try:
            distribution = metadata.distribution("txtorque")
        except metadata.PackageNotFoundError:
            self.fail("no txtorque distribution installed: pip install -e . again")
        self.assertEqual(
            (distribution.metadata["Name"], distribution.version), ("txtorque", torque.__version__)
        )


class DataDirectoryTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_the_embedded_redis_data_directory_is_logged_absolute(self):
        node = yield start_node(self, embedded=True)
        expected = os.path.join(node.workdir, "torque-data")
        self.assertIn(f"embedded Redis keeps its data in {expected}", node.output)
