"""``--queue '*'``: a scheduler for every queue, new ones included.

A new queue is picked up two ways.  At once: its first add publishes on the
queue's wake channel, to which a ``*`` node is subscribed by pattern, and
the node starts a scheduler when a wake-up names a queue it doesn't know
(:meth:`torque.router.QueueRouter.wake`).  And as a safety net (a wake-up lost
in an outage, a queue written to Redis by another program): every
``interval`` seconds this watcher reads one page of the queue registry, with
each queue's counts, continuing where the last page ended, so a small
registry is read whole every second and a big one costs one bounded page a
second.

A scheduler polls Redis every ``--poll-interval``, so a node does not keep
one for every queue it ever saw: the watcher reports a queue that holds no
task (scheduled, running or dead) as empty, and the node retires its
scheduler if it has been idle a while (:meth:`torque.router.QueueRouter.idle`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from torque.storage import Store, StoreUnavailable

log = Logger()

# Queues a tick reads: one Redis reply of at most this many queues' counts
# (about 8 O(1) or O(log n) commands each).
PAGE = 500


class QueueWatcher(Service):
    """Calls ``found(queue)`` for every queue of the registry that holds a
    task, and ``empty(queue)`` for the others, a page per tick; both must be
    cheap for a queue they already know.

    :param interval: seconds between pages.
    :param page: queues per page.
    """

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        found: Callable[[str], object],
        empty: Callable[[str], object] = lambda queue: None,
        interval: float = 1.0,
        page: int = PAGE,
    ):
        self.store = store
        self.clock = clock
        self.found = found
        self.empty = empty
        self.interval = interval
        self.page = page
        self._after: str | None = None
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def tick(self) -> defer.Deferred:
        """Read the next page; never fails (the loop would stop)."""
        d = self.store.queue_page(self._after, self.page, self.clock.seconds(), minutes=0)
        d.addCallback(self._read)
        d.addErrback(lambda f: f.trap(StoreUnavailable))  # the schedulers say so
        d.addErrback(lambda f: log.failure("reading the queue registry failed", f))
        return d

    def _read(self, page) -> None:
        for queue in page.queues:
            if queue.scheduled or queue.running or queue.dead:
                self.found(queue.name)
            else:
                self.empty(queue.name)
        self._after = page.next_cursor
