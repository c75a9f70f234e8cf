"""One worker process of a supervised node (``--workers N``).

The supervisor (:mod:`torque.supervisor`) runs ``python -m torque.worker
<index> <fd> <torque options…>``: a whole torque node (API and schedulers)
whose API serves the listening socket the supervisor opened and passed down
as descriptor ``<fd>`` (``-``: no API), with the supervisor's environment, so
it reads the same ``TORQUE_*`` options as the supervisor did.

It runs without ``twistd`` around it, because a worker must *exit* when it
cannot start (``twistd`` logs the error and keeps an empty reactor running),
so that the supervisor sees it and backs off.  Its log goes to stdout, one
JSON object per event (``{"level", "text"}``, a traceback inside the text),
which the supervisor writes to the node's log under its own name and level.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsText,
    globalLogBeginner,
)
from zope.interface import implementer

log = Logger()

#: The descriptor number a worker's listening socket gets.
LISTEN_FD = 3


@attrs.frozen
class WorkerRole:
    """What makes a node a supervised worker.

    :param index: its number under the supervisor, 1 to N (a restarted
        worker keeps its number).
    :param listen_fd: the inherited listening socket, or ``None`` (no API).
    :param metrics_dir: prometheus_client's multiprocess directory, shared by
        the supervisor's workers, so any worker's ``/metrics`` sums them all.
    :param supervisor_pid: the supervisor's process id.
    """

    index: int
    listen_fd: int | None = None
    metrics_dir: str | None = None
    supervisor_pid: int = 0


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """A server endpoint that serves an already listening socket, inherited
    from the supervisor (``reactor.adoptStreamPort``, which copies the
    descriptor: the inherited one is closed once adopted).  The socket is
    put in non-blocking mode, which Twisted needs (else the second
    ``accept`` of a burst blocks the reactor for good); the supervisor's
    is already, being Twisted's own."""

    def __init__(self, reactor, fd: int):
        self.reactor = reactor
        self.fd = fd

    def listen(self, factory):
        try:
            os.set_blocking(self.fd, False)
            with socket.socket(fileno=os.dup(self.fd)) as probe:
                family = probe.family
            port = self.reactor.adoptStreamPort(self.fd, family, factory)
        except Exception:
            return defer.fail()
        os.close(self.fd)
        return defer.succeed(port)


def line_observer(out):
    """A log observer writing one JSON line per event: the supervisor adds
    the time and the worker's name."""

    def format_event(event) -> str:
        level = event.get("log_level", LogLevel.info)
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        return json.dumps({"level": level.name, "text": text}) + "\n"

    return FilteringLogObserver(
        FileLogObserver(out, format_event), [LogLevelFilterPredicate(LogLevel.info)]
    )


def parse_argv(argv: list[str]) -> tuple[int, int | None, list[str]]:
    """``<index> <fd or -> <torque options…>``."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m torque.worker <index> <fd|-> [torque options]")
    fd = None if argv[1] == "-" else int(argv[1])
    return int(argv[0]), fd, argv[2:]


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a process of its own
    from twisted.internet import reactor
    from twisted.python import usage

    from torque.embedded import _die_with_parent
    from torque.options import Options
    from torque.tap import TorqueNode

    index, fd, args = parse_argv(sys.argv[1:] if argv is None else argv)
    _die_with_parent()  # a supervisor killed with -9 leaves no worker behind
    supervisor_pid = os.getppid()
    globalLogBeginner.beginLoggingTo([line_observer(sys.stdout)], redirectStandardIO=False)
    options = Options()
    try:
        options.parseOptions(args)
    except usage.UsageError as e:
        log.error("worker {index}: {error}", index=index, error=str(e))
        sys.exit(2)
    role = WorkerRole(index, fd, os.environ.get("PROMETHEUS_MULTIPROC_DIR"), supervisor_pid)
    node = TorqueNode(options, reactor, role=role)
    status = []
    stopping = []

    def stop_once() -> None:
        # One SIGTERM from the supervisor, and maybe another to the whole
        # process group (systemd, a terminal's Ctrl-C): one stop.
        if not stopping:
            stopping.append(True)
            reactor.stop()

    def start():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: reactor.callFromThread(stop_once))
        try:
            node.privilegedStartService()
            node.startService()
        except Exception:
            log.failure("worker {index} could not start", index=index)
            status.append(1)
            stop_once()

    def stop():
        if node.running:
            return node.stopService()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    sys.exit(status[0] if status else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
