"""Run torque with ``twistd -ny torque.tac``, configured by environment
variables: ``TORQUE_PORT``, ``TORQUE_QUEUES`` (comma-separated),
``TORQUE_REDIS_URL``, ``TORQUE_MAX_TASK_ERRORS``... (README.rst, "Options").
The same Options and makeService as ``twistd torque``."""

import os

from twisted.application import service

from torque.tap import makeService, options_from_environ

application = service.Application("torque")
makeService(options_from_environ(os.environ)).setServiceParent(application)
