"""What torque's log lines may hold, and how they are written.

:func:`quoted`: a log line quotes at most ``QUOTE_LIMIT`` characters of
anything a client (or a web hook's answer) sent, printable, so one request
with a 15 KB path can't write a 15 KB line, nor forge a line of its own.

:func:`json_observer`: a JSON log for ``twistd --logger
torque.logs.json_observer``.  One JSON object per line, with every field of
the event: an attempt's line carries ``task_id``, ``queue``, ``attempt``,
``status``, ``error`` and ``duration`` as values, ready for a log pipeline,
beside ``text`` (the human-readable line).
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
)
from twisted.python.failure import Failure
from zope.interface import provider

#: Characters of client data a log line quotes at most.
QUOTE_LIMIT = 300


def quoted(data: str | bytes | None, limit: int = QUOTE_LIMIT) -> str | None:
    """``data`` fit for a log line: bytes read as Latin-1 (every byte
    stands for itself), what is not printable escaped (a newline can't
    start a forged line), and cut after ``limit`` characters, saying how
    long it was."""
    if data is None:
        return None
    text = data.decode("latin-1") if isinstance(data, bytes) else str(data)
    shown = text[: limit + 1]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    if len(shown) > limit:
        return shown[:limit] + f"... ({len(text)} characters in all)"
    return shown


def log_crash(log: Logger, request, failure: Failure) -> None:
    """What an API's last-resort error handler writes: the failure, with
    the request's method and path quoted."""
    log.failure(
        "unhandled error in {method} {path}",
        failure,
        method=quoted(request.method),
        path=quoted(request.path),
    )


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
