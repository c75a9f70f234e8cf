"""Where a wake-up goes: the schedulers a node runs, one per queue, started
and retired as queues come and go.

A wake-up (an add through this node's API, or a message on a queue's wake
channel) goes to its queue's scheduler.  On a ``--queue '*'`` node it also
starts that scheduler when there is none yet, and :meth:`QueueRouter.idle`
retires one whose queue has stayed empty and unstirred a while.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from twisted.application.service import IServiceCollection
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from torque.keys import SETTINGS_CHANGED, Keys
from torque.task import QUEUE_RE

log = Logger()

# Seconds a scheduler of a '*' node stays without a wake-up, its queue empty,
# before it is retired (it polls Redis every --poll-interval meanwhile).
RETIRE_AFTER = 60.0
# Seconds within which a wake-up for the same queue and due time is the echo
# of one already served (see QueueRouter.wake).
ECHO_WINDOW = 2.0


class QueueRouter:
    """The schedulers of one node, by queue.

    :param parent: the node: schedulers are its child services, started
        with it (or at once, when it runs).
    :param clock: when each scheduler was last stirred.
    :param keys: the wake channels' names.
    :param all_queues: a ``--queue '*'`` node, which starts and retires
        schedulers as queues come and go.
    """

    def __init__(
        self, parent: IServiceCollection, clock: IReactorTime, keys: Keys, all_queues: bool
    ):
        self.parent = parent
        self.clock = clock
        self.keys = keys
        self.all_queues = all_queues
        #: ``queue -> QueueScheduler``, set before the first :meth:`process`.
        self.new_scheduler: Callable | None = None
        self.schedulers = {}
        self._stirred: dict[str, float] = {}  # queue -> its scheduler's last wake-up
        # (queue, due time) -> when it woke its scheduler, oldest first (an
        # OrderedDict: a dict whose first entries are deleted over and over
        # takes longer and longer to find its first one)
        self._served: OrderedDict[tuple[str, float], float] = OrderedDict()

    def process(self, queue: str) -> None:
        """Run a scheduler for ``queue`` on this node, unless one runs."""
        if queue not in self.schedulers and QUEUE_RE.fullmatch(queue):
            scheduler = self.new_scheduler(queue)
            self.schedulers[queue] = scheduler
            self._stirred[queue] = self.clock.seconds()
            scheduler.setServiceParent(self.parent)  # started at once if the node runs
            if self.all_queues and self.parent.running:
                log.info("queue {queue}: new, processing it", queue=queue)

    def idle(self, queue: str) -> None:
        """``queue`` held no task when the registry was read: with ``--queue
        '*'``, retire its scheduler if nothing stirred it (a wake-up, its
        start) for :data:`RETIRE_AFTER` seconds and it has no request in
        flight.  Its next add (a wake-up) starts a new one at once."""
        scheduler = self.schedulers.get(queue)
        if scheduler is None or not self.all_queues:
            return
        if scheduler.in_flight or scheduler._claiming is not None:
            return
        if self.clock.seconds() - self._stirred.get(queue, 0.0) < RETIRE_AFTER:
            return
        del self.schedulers[queue]
        self._stirred.pop(queue, None)
        scheduler.disownServiceParent()  # stops it
        log.info("queue {queue}: empty and idle, no longer polled", queue=queue)

    def wake(self, queue: str, due_at: float | None = None) -> None:
        """Wake ``queue``'s scheduler for a task due at ``due_at``.

        An add through this node's API wakes its scheduler twice: once here
        when Redis answers the add, and again when the add's message on
        the wake channel comes round, a few milliseconds later, while the
        first wake-up's claim is often still in flight (so the scheduler
        claims once more right after it, for nothing, and before the
        delivery it just started is even sent).  Each wake-up follows the
        write that caused it, so whichever of the two comes first leads to
        a claim made after the task was stored: the second, the same queue
        and the very same due time within :data:`ECHO_WINDOW` seconds, is
        dropped.  (Another add with the very same due time, to the same
        queue, in that window, would be due in the future, where a wake-up
        only sets the timer the first one set; or is a tie to the
        microsecond, which the safety tick covers.)
        """
        if self.all_queues and self.parent.running:
            self.process(queue)
            self._stirred[queue] = self.clock.seconds()
        scheduler = self.schedulers.get(queue)
        if scheduler is None:
            return  # (no echo to remember: a queue this node doesn't process)
        if due_at is not None and self._echo(queue, due_at):
            return
        scheduler.wake(due_at)

    def claim_now(self, queue: str, due_at: float) -> bool:
        """An add to ``queue`` of a task due at ``due_at`` was just handed
        to the store (its answer to come): if the task is due and this
        node's scheduler of the queue has no claim on its way, it claims at
        once.  The store sends that claim after the add, in the same script
        call (:meth:`torque.storage.Store.claim`), so the task goes out one
        round trip after its add, not two.  Whether it claimed; if it did,
        the add needs no wake-up, and its message on the wake channel is
        recognised as :meth:`wake`'s echo is."""
        scheduler = self.schedulers.get(queue)
        now = self.clock.seconds()
        if scheduler is None or due_at > now or not scheduler.claim_now():
            return False
        self._echo(queue, due_at)  # (remembers it)
        self._stirred[queue] = now
        return True

    def _echo(self, queue: str, due_at: float) -> bool:
        """Whether a wake-up for ``queue`` at ``due_at`` was served within
        :data:`ECHO_WINDOW` seconds; if not, remember this one."""
        now = self.clock.seconds()
        served = self._served
        while served:  # forget the old ones (oldest first)
            if now - next(iter(served.values())) <= ECHO_WINDOW:
                break
            served.popitem(last=False)
        if (queue, due_at) in served:
            del served[queue, due_at]  # each wake-up has one echo
            return True
        served[queue, due_at] = now
        return False

    def woken(self, channel: str | None, message: str | None) -> None:
        """A message on a wake channel (``channel`` ``None``: subscribed
        again, by pattern, so every queue may have missed some)."""
        if channel is None:  # (re)subscribed by pattern: look at every queue
            for queue in list(self.schedulers):
                self.wake(queue)
            return
        queue = self.keys.queue_of_wake(channel)
        if queue is None:
            return
        if message == SETTINGS_CHANGED:
            scheduler = self.schedulers.get(queue)
            if scheduler is not None:
                scheduler.reload_settings()
            return
        try:
            self.wake(queue, float(message))
        except (TypeError, ValueError):
            self.wake(queue)
