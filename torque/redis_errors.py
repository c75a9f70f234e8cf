"""Which errors from Redis mean "not now".

Redis refuses commands for reasons that pass: it is out of memory
(``maxmemory`` with ``noeviction``), it cannot write its snapshot
(``MISCONF``), it is a replica or lost its master mid-failover, it is still
loading its data.  None of them is the client's fault or a bug in torque: a
node answers ``503`` with ``Retry-After`` and tries again later, as it does
when Redis is unreachable.  Any other error reply is a bug, and stays one.
"""

from __future__ import annotations

import re

# The first word of Redis's error reply, and what it means for an operator.
NOT_NOW = {
    "OOM": "Redis is out of memory (maxmemory)",
    "MISCONF": "Redis cannot save to disk and refuses writes",
    "READONLY": "Redis is a read-only replica",
    "LOADING": "Redis is loading its data set",
    "NOREPLICAS": "Redis has too few replicas to accept writes",
    "MASTERDOWN": "Redis lost the link to its master",
    "TRYAGAIN": "Redis is moving keys between nodes",
    "CLUSTERDOWN": "the Redis cluster is down",
    "BUSY": "Redis is busy running a script",
}

# Redis 6 wraps an error raised inside a script: "Error running script (call
# to f_…): @user_script:5: -OOM command not allowed …".  Redis 7 passes the
# error on as it is.
_WRAPPED = re.compile(r"(?:^|\s)-([A-Z]+)\s")


def not_now(message: str) -> str | None:
    """The code of ``message`` (an error reply, without txredisapi's
    ``ERR`` prefix) if it means "not now", else ``None``."""
    code = message.split(" ", 1)[0]
    if code in NOT_NOW:
        return code
    if message.startswith(("Error running script", "ERR Error running script")):
        for wrapped in _WRAPPED.findall(message):
            if wrapped in NOT_NOW:
                return wrapped
    return None
