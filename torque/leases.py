"""Renewing a node's leases while its requests are in flight.

A claimed task is leased for a few seconds (``--lease``, 10 by default),
whatever its timeout, so a node that dies (kill -9, power loss) leaves its
tasks to the other nodes within seconds.  While the node lives, the
:class:`LeaseKeeper` renews the lease of every attempt it holds (in flight,
or finished with its outcome not yet recorded) every third of a lease, in
one store call for the whole node: one Redis round trip per period, however
many tasks and queues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from torque.storage import Store, StoreUnavailable

log = Logger()

# Renewals per lease: a renewal that fails (Redis slow for a moment) leaves
# two more tries before the lease ends.
RENEWALS_PER_LEASE = 3


class LeaseKeeper(Service):
    """Renews the leases of every attempt the schedulers hold.

    :param schedulers: gives the node's schedulers now (queues come and
        go); each has ``held()``, its ``(queue, task id, attempt)`` leases,
        and ``renewed(held, until, lost)``, told when they now end.
    :param period: seconds between renewals; a third of the store's lease
        by default.
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        schedulers: Callable[[], Iterable],
        period: float | None = None,
    ):
        self.store = store
        self.clock = clock
        self.schedulers = schedulers
        self.period = store.lease / RENEWALS_PER_LEASE if period is None else period
        self._failing = False
        self._loop = LoopingCall(self.renew)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.period, now=False)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def renew(self) -> defer.Deferred:
        """Renew every lease held now, in one call.  Never fails, or the
        ``LoopingCall`` would stop for good."""
        held = [(scheduler, scheduler.held()) for scheduler in self.schedulers()]
        held = [(scheduler, leases) for scheduler, leases in held if leases]
        if not held:
            return defer.succeed(None)
        sent_at = self.clock.seconds()
        d = self.store.renew([lease for _, leases in held for lease in leases], sent_at)

        def renewed(lost):
            if self._failing:
                self._failing = False
                log.info("leases renewed again")
            until = sent_at + self.store.lease
            for scheduler, leases in held:
                scheduler.renewed(leases, until, set(lost))

        def failed(failure):
            failure.trap(StoreUnavailable)
            if not self._failing:
                self._failing = True
                log.warn(
                    "could not renew leases: {error}; their tasks go to other nodes "
                    "if this lasts past their lease",
                    error=failure.getErrorMessage(),
                )

        d.addCallbacks(renewed, failed)
        d.addErrback(lambda f: log.failure("renewing leases failed", f))
        return d
