"""Keeps a supervisor's worker processes running (:mod:`torque.supervisor`).

A worker that dies is started again: at once if it had run for
:data:`START_WINDOW` seconds, else after a back-off that doubles up to
:data:`MAX_BACKOFF`, so a worker that can't start (a bad option, Redis
missing) is not a fork bomb; each death is logged with the worker's exit
status and its last words.  Each worker's output (one JSON object per log
event, :func:`torque.worker.line_observer`) is written to the
supervisor's log, at the worker's level, under the worker's number.
Stopping sends SIGTERM to every worker and waits for them all; one that
has not exited in time gets SIGKILL.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
from collections.abc import Callable

from twisted.internet import defer, error, protocol
from twisted.logger import Logger, LogLevel

log = Logger()

#: Seconds a worker must run to count as started: one that dies sooner is
#: restarted after a back-off.
START_WINDOW = 10.0
#: The first back-off, and the longest.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: Lines of a worker's output kept to say why it died.
TAIL = 20


def restart_delay(ran_for: float, failures: int) -> float:
    """Seconds before a dead worker is started again.

    :param ran_for: seconds it ran.
    :param failures: deaths at start in a row, this one included (0 when it
        had started).
    """
    if ran_for >= START_WINDOW or failures < 1:
        return 0.0
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (failures - 1))


class _Worker(protocol.ProcessProtocol):
    """One worker's process, relaying its log lines to the supervisor's."""

    def __init__(self, pool: WorkerPool, index: int):
        self.pool = pool
        self.index = index
        self.failures = 0  # deaths at start in a row
        self.process = None
        self.pid: int | None = None  # its last process's (kept after it ends)
        self.started_at = 0.0
        self.restart = None  # the pending restart's delayed call
        self.ended: defer.Deferred | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        self._buffer = b""

    def connectionMade(self):
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._relay(line.decode("utf-8", "replace"))

    errReceived = outReceived

    def _relay(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
            level, text = LogLevel.levelWithName(event["level"]), str(event["text"])
        except (ValueError, KeyError, TypeError, AttributeError):
            level, text = LogLevel.warn, line  # not from its logger: a crash, a print
        self.tail.append(text)
        log.emit(level, "worker {worker}: {text}", worker=self.index, text=text, pid=self.pid)

    def processEnded(self, reason) -> None:
        if self._buffer:
            self._relay(self._buffer.decode("utf-8", "replace"))
            self._buffer = b""
        self.pool._ended(self, reason.value)


class WorkerPool:
    """Keeps ``count`` worker processes running.

    :param clock: for the back-off (and the time a worker ran).
    :param spawn: ``reactor.spawnProcess`` or a double with its signature.
    :param command: a worker's ``(executable, args)`` from its index.
    :param env: the workers' environment.
    :param child_fds: ``childFDs`` beside the standard streams (the
        listening socket).
    """

    def __init__(
        self,
        count: int,
        clock,
        spawn: Callable,
        command: Callable[[int], tuple[str, list[str]]],
        env: dict[str, str] | None = None,
        child_fds: dict[int, int] | None = None,
    ):
        self.clock = clock
        self.spawn = spawn
        self.command = command
        self.env = env
        self.child_fds = child_fds or {}
        self.workers = [_Worker(self, index) for index in range(1, count + 1)]
        self.stopping = False
        #: workers started so far, restarts included
        self.spawned = 0

    def start(self) -> None:
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        worker.restart = None
        if self.stopping:
            return
        executable, args = self.command(worker.index)
        fds = {0: "w", 1: "r", 2: "r", **self.child_fds}
        worker.started_at = self.clock.seconds()
        worker.tail.clear()  # its last words are this life's
        try:
            worker.process = self.spawn(
                worker, executable, args, env=self.env, path=os.getcwd(), childFDs=fds
            )
        except Exception:  # no process at all (out of descriptors, say): try again later
            worker.failures += 1
            delay = restart_delay(0.0, worker.failures)
            log.failure(
                "worker {worker} could not be started: trying again in {delay:g} s",
                worker=worker.index,
                delay=delay,
            )
            worker.restart = self.clock.callLater(delay, self._spawn, worker)
            return
        worker.ended = defer.Deferred()
        worker.pid = getattr(worker.process, "pid", None)
        self.spawned += 1
        log.info("worker {worker} started (pid {pid})", worker=worker.index, pid=worker.pid)

    def _ended(self, worker: _Worker, status) -> None:
        ran_for = self.clock.seconds() - worker.started_at
        pid, worker.process = worker.pid, None
        ended, worker.ended = worker.ended, None
        how = describe_exit(status)
        if self.stopping:
            log.info("worker {worker} (pid {pid}) {how}", worker=worker.index, pid=pid, how=how)
        else:
            worker.failures = worker.failures + 1 if ran_for < START_WINDOW else 0
            delay = restart_delay(ran_for, worker.failures)
            said = f"; its last words: {worker.tail[-1]}" if worker.tail else ""
            log.error(
                "worker {worker} (pid {pid}) {how} after {ran_for:.1f} s{at_start}: "
                "starting it again {when}{said}",
                worker=worker.index,
                pid=pid,
                how=how,
                ran_for=ran_for,
                at_start=f", at start ({worker.failures} in a row)" if worker.failures else "",
                when=f"in {delay:g} s" if delay else "now",
                said=said,
            )
            worker.restart = self.clock.callLater(delay, self._spawn, worker)
        if ended is not None:
            ended.callback(None)

    def stop(self, timeout: float) -> defer.Deferred:
        """SIGTERM every worker (each drains its requests), and fire once
        they have all exited; a worker still there after ``timeout``
        seconds gets SIGKILL (its tasks come back when their leases end)."""
        self.stopping = True
        waits = []
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
                worker.restart = None
            if worker.process is None:
                continue
            _signal(worker.process, "TERM")
            waits.append(worker.ended)
        if not waits:
            return defer.succeed(None)
        overdue = self.clock.callLater(timeout, self._kill_all)
        done = defer.DeferredList(waits)

        def finished(result):
            if overdue.active():
                overdue.cancel()
            return None

        return done.addCallback(finished)

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                log.warn(
                    "worker {worker} (pid {pid}) did not stop in time: killing it",
                    worker=worker.index,
                    pid=worker.pid,
                )
                _signal(worker.process, "KILL")

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if worker.process is not None]


def _signal(process, name: str) -> None:
    # It may have just exited: its processEnded is on its way.
    with contextlib.suppress(error.ProcessExitedAlready):
        process.signalProcess(name)


def describe_exit(status) -> str:
    """``exited with code 1``, ``was killed by SIGKILL``, ``exited``."""
    signum = getattr(status, "signal", None)
    if signum:
        try:
            return f"was killed by {signal.Signals(signum).name}"
        except ValueError:
            return f"was killed by signal {signum}"
    code = getattr(status, "exitCode", None)
    return f"exited with code {code}" if code else "exited"
