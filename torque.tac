"""Run torque with ``twistd -ny torque.tac``, configured by environment
variables: ``TORQUE_PORT``, ``TORQUE_QUEUES`` (comma-separated),
``TORQUE_REDIS_URL``, ``TORQUE_API_TOKEN``... (README.rst, "Running a node").
The same Options, read the same way, and makeService as ``twistd torque``."""

import os

from twisted.application import service
from twisted.python import usage

from torque.tap import makeService, options_from_environ

try:
    options = options_from_environ(os.environ)
except usage.UsageError as e:
    # An unknown TORQUE_* variable or a bad value: say which, and start nothing.
    raise SystemExit(f"torque.tac: {e}") from None
application = service.Application("torque")
makeService(options).setServiceParent(application)
