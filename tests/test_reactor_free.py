"""Only the wiring touches the global reactor: importing any other torque
module installs none, so each takes the reactor (or a ``Clock``) it is given.

Checked in a fresh interpreter, since this test run's own reactor is
installed long before the test starts.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

from twisted.trial import unittest

import torque

#: Modules that may install the global reactor, and why.
MAY_INSTALL = {
    # The composition root: it builds the node on the global reactor.
    "tap": "the wiring",
    # txredisapi does ``from twisted.internet import reactor`` at module level
    # (and calls the global reactor inside its pool), so importing it installs
    # the reactor: it is confined to the modules below that talk to Redis.
    "store": "imports txredisapi",
    "connection": "imports txredisapi",
    "cluster": "imports txredisapi",
    "cluster_wake": "imports txredisapi",
    "sentinel": "imports txredisapi",
    # The migration command connects through torque.connection.
    "migrate": "imports txredisapi",
    # klein's klein._app does ``from twisted.internet import reactor`` at
    # module level too: torque's API and each door's Klein app.
    "api": "imports klein",
    # The Cloud Tasks door is a Klein app of its own.
    "cloudtasks.api": "imports klein",
    # The QStash door is a Klein app of its own: its routes share
    # torque.qstash.http's app.
    "qstash.http": "imports klein",
    "qstash.routes": "imports klein",
    "qstash.queue_routes": "imports klein",
    "qstash.dlq_routes": "imports klein",
}

PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    if "twisted.internet.reactor" in sys.modules:
        print(name)
        break
"""


def torque_modules() -> list[str]:
    """Every module of torque, its subpackages' too (``cloudtasks.api``)."""
    found = pkgutil.walk_packages(torque.__path__, prefix="torque.")
    return sorted(info.name.removeprefix("torque.") for info in found)


class ReactorFreeTests(unittest.TestCase):
    def test_no_module_but_the_wiring_installs_the_reactor(self):
        modules = [f"torque.{name}" for name in torque_modules() if name not in MAY_INSTALL]
        self.assertIn("torque.options", modules)  # the probe does look at something
        result = subprocess.run(
            [sys.executable, "-c", PROBE, *modules],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "", "importing it installed the global reactor")

    def test_the_list_of_exceptions_names_real_modules(self):
        self.assertLessEqual(set(MAY_INSTALL), set(torque_modules()))
