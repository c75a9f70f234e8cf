"""``--workers N``: one node on every core, as a supervisor and N workers.

The supervisor opens the API's listening socket itself and passes it to
each worker at spawn (``spawnProcess``'s ``childFDs``, as descriptor
:data:`~torque.worker.LISTEN_FD`); each worker serves it with
``reactor.adoptStreamPort`` (:class:`torque.worker.AdoptedEndpoint`), and
the kernel hands each new connection to one of the workers waiting in
``accept``.  Chosen over ``SO_REUSEPORT`` (every worker binding the port
itself) because:

* the port is bound once, by the process that owns it: ``--port tcp:0``
  gets *one* port, a privileged port is bound before ``twistd`` drops its
  privileges, and a unix socket (``--port unix:…``, which ``SO_REUSEPORT``
  can't share) works the same way;
* a connection waiting in the shared queue is taken by whichever worker is
  free, and none is lost when a worker dies (with ``SO_REUSEPORT``, the
  connections queued on a dying worker's socket are reset);
* it needs no socket option that some kernels lack.

Its cost: one accept queue can spread connections unevenly between workers
(the one that wakes first takes more); with keep-alive clients the effect
lasts as long as the connections do.  Deliveries, most of the work, are
spread by Redis, not by connections: each worker claims due tasks for
itself.

The supervisor also owns the embedded Redis (with no ``--redis``), and a
directory for prometheus_client's multiprocess mode, so that ``/metrics``
from any worker sums every worker's counters.  It makes no Redis
connection of its own.

A worker that dies is started again, at once, or after a back-off when it
dies at start (:mod:`torque.worker_pool`).  On SIGTERM the
supervisor sends SIGTERM to every worker, which drains as a lone node does
(SPEC §4 Shutdown), and waits for them before it exits.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger

from torque.worker import LISTEN_FD
from torque.worker_pool import WorkerPool

log = Logger()


class _NoAccept(protocol.ServerFactory):
    """The supervisor's own factory for the shared socket: it never
    accepts (its port stops reading at once); the workers do."""

    noisy = False

    def buildProtocol(self, addr):
        return None


def worker_command(argv: list[str], listen_fd: int | None, redis_url: str | None):
    """A worker's command from its index: ``python -m torque.worker``
    with the supervisor's own options, the embedded Redis's URL, and
    ``--workers 1`` (the command line wins over ``TORQUE_WORKERS``)."""
    extra = ["--redis", redis_url] if redis_url else []

    def command(index: int) -> tuple[str, list[str]]:
        fd = "-" if listen_fd is None else str(listen_fd)
        args = [sys.executable, "-m", "torque.worker", str(index), fd]
        return sys.executable, [*args, *argv, *extra, "--workers", "1"]

    return command


class Supervisor(Service):
    """A node of ``--workers N`` processes (see the module's doc).

    :param options: the node's options (``options.argv``: its command line).
    :param reactor: the reactor (time, listening, processes).
    :param spawn: ``reactor.spawnProcess`` by default.
    """

    def __init__(self, options, reactor, spawn: Callable | None = None):
        self.options = options
        self.reactor = reactor
        self.spawn = spawn or reactor.spawnProcess
        self.port = None
        self.embedded = None
        self.metrics_dir: str | None = None
        self.pool: WorkerPool | None = None

    def privilegedStartService(self) -> None:
        """Listen (a privileged port needs it before ``twistd`` drops
        privileges): the workers adopt this socket."""
        super().privilegedStartService()
        endpoint = self.options["endpoint"]
        if endpoint:
            d = endpoints.serverFromString(self.reactor, endpoint).listen(_NoAccept())
            d.addCallback(self._listening)
            d.addErrback(self._failed)

    def _listening(self, port) -> None:
        from torque.site import describe_address

        port.stopReading()  # the workers accept, never the supervisor
        self.port = port
        log.info(
            "supervisor: the API's socket {address} is shared by {n} workers",
            address=describe_address(port.getHost()),
            n=self.options["workers"],
        )

    def _failed(self, failure) -> None:
        log.failure("the API could not listen", failure)
        self.reactor.stop()

    def startService(self) -> None:
        super().startService()
        o = self.options
        redis_url = None
        if not o["redis"]:
            from torque.embedded import EmbeddedRedis

            self.embedded = EmbeddedRedis(o["data-dir"])
            self.embedded.startService()
            redis_url = f"unix://{self.embedded.socket_path}"
        if o["endpoint"] and self.port is None:
            return  # listening failed, and the reactor is stopping
        self.metrics_dir = tempfile.mkdtemp(prefix="torque-metrics-")
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        listen_fd = LISTEN_FD if self.port is not None else None
        fds = {LISTEN_FD: self.port.fileno()} if self.port is not None else {}
        command = worker_command(self.options.argv, listen_fd, redis_url)
        self.pool = WorkerPool(o["workers"], self.reactor, self.spawn, command, env, fds)
        self.pool.start()

    @defer.inlineCallbacks
    def stopService(self):
        """Drain every worker, then close the socket and the embedded Redis."""
        super().stopService()
        if self.port is not None:
            # The workers hold their own copies: they take connections until
            # each stops listening on SIGTERM.
            self.port.stopListening()
        if self.pool is not None:
            yield self.pool.stop(timeout=self.options["task-timeout"] + 30)
        if self.embedded is not None:
            self.embedded.stopService()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
