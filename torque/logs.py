"""A JSON log for ``twistd --logger torque.logs.json_observer``.

One JSON object per line, with every field of the event: an attempt's line
carries ``task_id``, ``queue``, ``attempt``, ``status``, ``error`` and
``duration`` as values, ready for a log pipeline, beside ``text`` (the
human-readable line).
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
)
from zope.interface import provider


def json_observer(out: IO[str] | None = None, level: LogLevel = LogLevel.info) -> ILogObserver:
    """The observer factory ``twistd --logger`` calls (with no arguments).

    :param out: where the lines go; standard output by default.
    :param level: the least severe level written.
    """
    stream = out or sys.stdout

    @provider(ILogObserver)
    def write(event: dict) -> None:
        event = {**event, "text": formatEvent(event)}
        stream.write(eventAsJSON(event) + "\n")
        stream.flush()

    return FilteringLogObserver(write, [LogLevelFilterPredicate(level)])
