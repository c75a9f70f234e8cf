"""A node's heartbeat in Redis, so that ``GET /nodes`` lists the live nodes
and ``GET /queues`` can tell a queue that no live node processes.

Every ``interval`` seconds the node rewrites its hash (id, host, pid,
version, queues, requests in flight, start time) with a time to live of
``ttl``: a node that dies, or loses Redis, drops out of the list within
``ttl`` seconds, with no one to clean up after it.  Redis's clock decides
the expiry, so the nodes' clocks need not agree.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from torque.storage import NodeInfo, Store, StoreUnavailable

log = Logger()

# Seconds between heartbeats, and how long one lasts: a missed beat or two
# (a busy reactor, a Redis failover) does not make a live node look dead.
INTERVAL = 5.0
TTL = 15.0


class Heartbeat(Service):
    """Renews ``node``'s heartbeat until stopped, then withdraws it; after
    each beat, reads the live nodes, so that :meth:`processed` can tell
    (without a Redis call) whether a queue has a node to process it.

    :param node: the node's fixed facts (``in_flight`` and ``seen_at`` are
        filled in at each beat).
    :param in_flight: the node's requests in flight, now.
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        node: NodeInfo,
        in_flight: Callable[[], int] = lambda: 0,
        interval: float = INTERVAL,
        ttl: float = TTL,
    ):
        self.store = store
        self.clock = clock
        self.node = node
        self.in_flight = in_flight
        self.ttl = ttl
        self.interval = interval
        self.live: list[NodeInfo] | None = None  # as of the last beat; None: unknown
        self._loop = LoopingCall(self.beat)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        d = self.store.leave(self.node.id)
        return d.addErrback(lambda f: None)  # it expires by itself anyway

    def beat(self) -> defer.Deferred:
        """Write the heartbeat; never fails (the loop would stop)."""
        now = self.clock.seconds()
        node = attrs.evolve(self.node, in_flight=self.in_flight(), seen_at=now)
        d = self.store.beat(node, self.ttl)
        d.addCallback(lambda _: self.store.live_nodes())
        d.addCallback(self._read)
        d.addErrback(lambda f: f.trap(StoreUnavailable))  # the schedulers say so
        d.addErrback(lambda f: log.failure("heartbeat failed", f))
        return d

    def _read(self, nodes: list[NodeInfo]) -> None:
        self.live = nodes

    def processed(self, queue: str) -> bool:
        """Whether a live node processes ``queue``, as of the last beat
        (``True`` when not known yet)."""
        return self.live is None or any(node.processes(queue) for node in self.live)
