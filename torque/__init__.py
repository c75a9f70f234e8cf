"""torque: a web-hook task queue on Twisted and Redis.

This package's ``__init__`` stays import-free so that ``torque.client`` can be
used from Django or Flask without pulling in Twisted.
"""

__version__ = "0.1.0"
