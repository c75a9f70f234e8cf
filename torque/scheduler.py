"""One queue's scheduler: claim due tasks, dispatch them, record outcomes.

A task is claimed as soon as it is due, not on the next poll: a wake-up (an
add on this node, a message from another, a timer armed for the earliest due
time) starts a claim at once.  The ``LoopingCall`` tick is only the safety
net, for tasks written to Redis by hand or wake-ups lost in an outage.

Back-pressure is built in: a claim asks for at most as many tasks as there
are free slots (``concurrency`` minus the requests in flight).

A queue's own settings (``PATCH /queues/<q>``) override the node's options:
the scheduler reads them at every safety tick, and at once when a message on
the queue's wake channel says they changed (:meth:`QueueScheduler.reload_settings`).

Flow control per target host (:mod:`torque.hosts`): each claim carries what
each host may take, so a host at its ``host_concurrency``, throttled or
with an open circuit does not hold up the others.  Looking past a saturated
host's due tasks costs a claim; a *deep* claim looks up to
:data:`DEEP_SKIP` of them (on a wake-up, a timer, the tick, or when a host
whose tasks were passed over frees a slot and a shallow claim didn't find
them), a *shallow* one stops at the first (when a slot frees otherwise:
draining one host costs no more than before).  After a deep claim passed
over more than :data:`DEEP_COSTLY` due tasks and found nothing past them,
wake-ups claim shallow for :data:`DEEP_RETRY` seconds and a timer looks deep
at the end of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel

from torque.dispatch import Dispatcher
from torque.hosts import HostTable, host_of
from torque.logs import quoted
from torque.queue_settings import QueueConfig
from torque.retry import (
    DEAD,
    DELIVERED,
    POSTPONED,
    RETRIED,
    WAITING,
    Decision,
    Outcome,
    Postponed,
    Retry,
    RetryPolicy,
    next_step,
)
from torque.storage import Claim, Store, StoreUnavailable
from torque.task import Task

log = Logger()
DEFAULT_POLICY = RetryPolicy()
# Backoff between tries at recording outcomes that Redis refused or missed:
# from half a second, doubling, up to five.
RECORD_RETRY_INITIAL = 0.5
RECORD_RETRY_MAX = 5.0
# Due tasks of saturated hosts a deep claim passes over at most, and a
# shallow one (see the module's docstring).
DEEP_SKIP = 1000
SHALLOW_SKIP = 0
# Seconds after a costly deep claim (it passed over more than DEEP_COSTLY
# due tasks) that found nothing past the saturated hosts, during which
# wake-ups claim shallow (a timer looks deep at the end): a burst of adds to
# a saturated host must not make every claim read 1,000 tasks.
DEEP_RETRY = 0.25
DEEP_COSTLY = 250
# Seconds a freed slot of a host at its cap waits for more of its slots to
# free before a claim, unless half its cap is free already: a claim for
# every freed slot would cost a Redis script call per delivery.  (Measured
# on a single-host drain at the default cap of 10: 0.39 script calls per
# delivery before, 0.24 after on a loaded machine, where slots free in
# bunches; on an idle one half the cap frees first, 0.41 and 0.40.)
GATHER = 0.002


class QueueScheduler(Service):
    """Delivers the due tasks of one queue.

    :param timeout: the node's ``--task-timeout``, for tasks without one.
    :param concurrency: requests in flight at most, for this queue.
    :param poll_interval: seconds between safety-net ticks.
    :param rng: jitter source for the retry rule.
    :param on_attempt: called with ``(task, outcome, decision)`` after each
        attempt (the node's metrics).
    :param rate: dispatches per second at most (``--rate``), shared with
        every node that processes the queue; 0 for no limit.
    :param log_deliveries: log successful attempts too, not only failures
        (off by default: formatting a line per delivery is a cost on the
        hot path that a busy queue rarely wants).
    :param hosts: the node's flow control per target host, shared by its
        schedulers; ``None`` takes due tasks in order, whatever their host.
    :param host_concurrency: this queue's cap on requests in flight per
        host (``None``: the node's, ``hosts.host_concurrency``).
    """

    def __init__(
        self,
        queue: str,
        store: Store,
        dispatcher: Dispatcher,
        clock: IReactorTime,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: float = 60.0,
        concurrency: int = 100,
        poll_interval: float = 1.0,
        rng: Callable[[], float] = random.random,
        on_attempt: Callable[[Task, Outcome, Decision], object] | None = None,
        rate: float = 0.0,
        log_deliveries: bool = False,
        hosts: HostTable | None = None,
        host_concurrency: int | None = None,
    ):
        self.queue = queue
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.policy = policy
        self.timeout = timeout
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.rng = rng
        self.on_attempt = on_attempt
        self.rate = rate
        self.log_deliveries = log_deliveries
        # The node's options, before the queue's own settings.
        self.node_config = QueueConfig(timeout, concurrency, rate, policy)
        #: The queue's own settings as last read (``{}``: none, or not read).
        self.settings: dict[str, int | float] = {}
        self.hosts = hosts
        self.host_concurrency = host_concurrency
        self._deep = True  # the next claim looks past saturated hosts
        self._waiting: set[str] = set()  # hosts whose due tasks were passed over
        self._held_back = False  # the last claim passed due tasks over
        self._soon: IDelayedCall | None = None
        self._fruitless_at: float | None = None  # see DEEP_RETRY
        self.in_flight: dict[tuple[str, int], defer.Deferred] = {}
        self._claiming: defer.Deferred | None = None
        self._more = False  # there may be due tasks that no claim took yet
        self._timer: IDelayedCall | None = None
        self._outcomes: list[tuple[Task, Decision, float]] = []  # and the duration
        self._settling: defer.Deferred | None = None
        # When the lease of each attempt in flight or unrecorded ends, by
        # (task id, attempt): see _start.
        self._lease_ends: dict[tuple[str, int], float] = {}
        self._claim_sent_at = 0.0
        self._record_failures = 0  # failed tries in a row at recording outcomes
        self._record_timer: IDelayedCall | None = None
        self._redis_down = False
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock

    # -- the service -------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.poll_interval, now=True)

    def stopService(self) -> defer.Deferred:
        """Stop claiming, let the requests in flight finish (each is bounded
        by its timeout), record their outcomes, then fire."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for call in (self._record_timer, self._soon):
            if call is not None and call.active():
                call.cancel()
        claiming = self._claiming or defer.succeed(None)
        d = _settled(claiming)
        d.addCallback(lambda _: _settled(defer.DeferredList(list(self.in_flight.values()))))
        d.addCallback(lambda _: self._drain())
        return d

    @defer.inlineCallbacks
    def _drain(self):
        """Record every pending outcome; give up if Redis doesn't answer
        (those tasks' leases run out, and they are delivered again)."""
        while True:
            if self._settling is not None:
                yield _settled(self._settling)
            elif not self._outcomes:
                return
            elif not (yield self.flush()):
                log.error(
                    "queue {queue}: stopping with {count} outcomes unrecorded; "
                    "those tasks will be delivered again when their leases end",
                    queue=self.queue,
                    count=len(self._outcomes),
                )
                return

    # -- waking up ---------------------------------------------------------

    def tick(self) -> defer.Deferred:
        """The safety net: claim and record whatever is pending.  Never
        fails, or the ``LoopingCall`` would stop for good."""

        def failed(failure):
            log.failure("tick of queue {queue} failed", failure, queue=self.queue)

        # The settings are read beside the claim, not before it: the tick
        # costs no extra round trip (a new scheduler's first claim works
        # with the node's options).
        settings = self.reload_settings()
        d = defer.maybeDeferred(self.pump)
        d.addErrback(failed)
        d.addCallback(lambda _: self.flush())
        d.addErrback(failed)
        d.addCallback(lambda _: settings)
        return d

    def reload_settings(self) -> defer.Deferred:
        """Read the queue's own settings and apply them; never fails (a
        Redis that doesn't answer leaves the last ones in force)."""
        d = self.store.get_settings(self.queue)
        d.addCallback(self.apply_settings)
        d.addErrback(lambda f: f.trap(StoreUnavailable))  # the claims say so
        d.addErrback(
            lambda f: log.failure("reading the settings of queue {queue}", f, queue=self.queue)
        )
        return d

    def apply_settings(self, settings: dict[str, int | float]) -> None:
        """Work with the queue's own ``settings`` over the node's options
        from now on; a change claims at once (there may be more room)."""
        if settings == self.settings:
            return
        config = self.node_config.with_settings(settings)
        self.settings = settings
        self.timeout, self.concurrency = config.timeout, config.concurrency
        self.rate, self.policy = config.rate, config.policy
        log.info(
            "queue {queue}: settings {settings}",
            queue=self.queue,
            settings=", ".join(f"{k}={v:g}" for k, v in settings.items()) or "the node's",
        )
        self.pump()

    def wake(self, due_at: float | None = None) -> None:
        """A task was added that is due at ``due_at`` (``None``: now)."""
        if not self.running:
            return
        if due_at is None or due_at <= self.clock.seconds():
            self.pump()
        else:
            self._arm(due_at)

    def claim_now(self) -> bool:
        """Claim at once, unless a claim is on its way or no slot is free:
        an add to this queue was just handed to the store, and a claim made
        now sees it (:meth:`torque.storage.Store.claim`).  Whether a claim
        went."""
        if self._claiming is not None:
            return False
        self.pump()
        return self._claiming is not None

    def _arm(self, at: float | None) -> None:
        """Make sure a claim runs at ``at``; a timer only ever moves earlier.

        A time already past means a claim at once: a Redis answer naming
        the next due time arrives a round trip after the question, and a
        task may have fallen due in between.
        """
        if at is None or not self.running:
            return
        now = self.clock.seconds()
        if at <= now:
            self.pump()
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= at:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(at - now, self.pump)

    # -- claiming ----------------------------------------------------------

    def host_cap(self) -> int | None:
        """This queue's cap on requests in flight per host: the one place
        it is looked up.  The queue's own setting (``PATCH /queues/<q>``)
        wins over the scheduler's, and ``None`` is the node's
        ``--host-concurrency``."""
        return self.settings.get("host_concurrency", self.host_concurrency)

    def pump(self, deep: bool = True) -> defer.Deferred:
        """Claim due tasks into the free slots and start them.

        Only one claim runs at a time; a wake-up during a claim is
        remembered and served by another claim right after.

        :param deep: look past saturated hosts' due tasks (a wake-up, a
            timer, the tick); ``False`` when a slot freed.
        """
        if deep:
            self._deep = True
        if not self.running:
            return defer.succeed(None)
        if not self._record_failures:  # else the record backoff's timer flushes
            self.flush()  # outcomes that waited for this claim (_claim_soon)
        free = self.concurrency - len(self.in_flight)
        if self._claiming is not None or free <= 0:
            self._more = True
            return defer.succeed(None)
        self._more = False
        now = self._claim_sent_at = self.clock.seconds()
        budgets = None
        if self.hosts is not None:
            skip = DEEP_SKIP if self._deep else SHALLOW_SKIP
            fruitless = self._fruitless_at
            if skip == DEEP_SKIP and fruitless is not None and now < fruitless + DEEP_RETRY:
                skip = SHALLOW_SKIP
                self._arm(fruitless + DEEP_RETRY)
            budgets = self.hosts.budgets(now, self.host_cap(), skip)
            reserved = self.hosts.reserve(budgets, free)
        self._deep = False
        d = self.store.claim(
            self.queue, now, free, self.timeout, self.policy.max_errors, self.rate, budgets
        )
        self._claiming = d
        d.addCallbacks(self._claimed, self._claim_failed, callbackArgs=(free, now, budgets))
        if budgets is not None:  # its tasks, started, are in flight now
            d.addBoth(_passing, self.hosts.unreserve, reserved)
        d.addBoth(self._claim_ended)
        d.addErrback(lambda f: log.failure("claim on queue {queue} failed", f, queue=self.queue))
        return d

    def _claimed(self, claim: Claim, asked: int, asked_at: float, budgets=None) -> None:
        if self._redis_down:
            self._redis_down = False
            log.info("queue {queue}: Redis answers again, resuming", queue=self.queue)
        if budgets is not None:
            self._passed_over(claim, budgets, asked_at)
        for task in claim.tasks:
            self._start(task)
        if len(claim.tasks) == asked:
            self._more = True
        # A next due time after the claim's ``now`` is a task this claim
        # could not take yet: claim at that time, or at once if it passed
        # while the answer travelled.  One at or before it was held back
        # (the queue is paused, or the slots were full: ``_more`` covers
        # those), and claiming again at once would only spin.
        if claim.next_at is not None and claim.next_at > asked_at:
            self._arm(claim.next_at)

    def _passed_over(self, claim: Claim, budgets, asked_at: float) -> None:
        """Remember the hosts whose due tasks this claim passed over:
        when one of them frees a slot, a claim must find them again."""
        if budgets.max_skip >= DEEP_SKIP:
            self._waiting = set(claim.waiting)
            fruitless = claim.skipped > DEEP_COSTLY and not claim.found_past
            self._fruitless_at = asked_at if fruitless else None
        else:
            self._waiting.update(claim.waiting)
            # A waiting host had room but a shallow claim stopped before its
            # tasks: look deeper at once.
            taken = {host_of(task.url) for task in claim.tasks}
            room = [
                h
                for h in self._waiting
                if h not in taken and budgets.budgets.get(h, budgets.default) > 0
            ]
            if room and claim.skipped:
                self._deep = self._more = True
                self._fruitless_at = None  # there is something deeper
        self._held_back = bool(claim.skipped)
        for host in claim.waiting:  # another queue's request may free its slot
            self.hosts.wait(host, self.queue, self._slot_freed)
        if claim.skipped:
            # A throttled host's next request, or an open circuit's probe.
            self._arm(self.hosts.next_token_at(asked_at))

    def _claim_failed(self, failure) -> None:
        failure.trap(StoreUnavailable)
        # A wake-up or a timer that found Redis down would be lost until the
        # next safety tick: when that is far off, try again in a second.  A
        # tick every second or sooner already does, and two would spin.
        if self.poll_interval > 1.0:
            self._arm(self.clock.seconds() + 1.0)
        if not self._redis_down:
            self._redis_down = True
            log.warn(
                "queue {queue}: {error}; waiting for Redis",
                queue=self.queue,
                error=failure.getErrorMessage(),
            )

    def _claim_ended(self, result) -> None:
        self._claiming = None
        if self._more and not self._redis_down:
            self.pump(deep=False)
        return result

    # -- attempts ----------------------------------------------------------

    def _start(self, task: Task) -> None:
        # The claim script leased the task until the ``now`` this scheduler
        # sent plus the store's lease (it stores exactly that as the task's
        # score in the running set); the node's LeaseKeeper renews it while
        # the attempt is held (:meth:`renewed`).  Past it, any node's claim
        # may take the task again: its outcome here is stale, and isn't
        # retried beyond it.
        timeout = task.timeout or self.timeout
        self._lease_ends[task.id, task.attempts] = self._claim_sent_at + self.store.lease
        host = None
        if self.hosts is not None:
            host = host_of(task.url)
            self.hosts.started(host, self.clock.seconds(), self.queue)
        d = self.dispatcher.dispatch(task, timeout)
        # By attempt: a lease that ran out mid-request (Redis unreachable for
        # longer than a lease) lets this very scheduler claim the task again
        # while its earlier attempt is still in flight.
        self.in_flight[task.id, task.attempts] = d
        d.addCallback(self._finished, task, host)
        d.addErrback(self._crashed, task, host)

    def held(self) -> list[tuple[str, str, int]]:
        """The leases this scheduler holds: ``(queue, task id, attempt)``
        of every attempt in flight or with its outcome not yet recorded."""
        return [(self.queue, task_id, attempt) for task_id, attempt in self._lease_ends]

    def renewed(self, held, until: float, lost) -> None:
        """The leases ``held`` (as :meth:`held` gave them) now end at
        ``until``, except those of the task ids in ``lost`` (settled
        meanwhile, or taken by another node)."""
        ends = self._lease_ends
        for _, task_id, attempt in held:
            if task_id not in lost and (task_id, attempt) in ends:
                ends[task_id, attempt] = max(ends[task_id, attempt], until)

    def _crashed(self, failure, task: Task, host: str | None) -> None:
        # A bug, not a failed delivery: there is no outcome to record.
        self._lease_ends.pop((task.id, task.attempts), None)
        if host is not None:
            self.hosts.released(host, self.queue)
        log.failure("attempt on {task_id} failed", failure, task_id=task.id)

    def _finished(self, outcome, task: Task, host: str | None) -> None:
        """``host``: the task's, when the node has flow control."""
        del self.in_flight[task.id, task.attempts]
        now = self.clock.seconds()
        if host is not None:
            self.hosts.finished(host, outcome, now, self.queue)
        decision = next_step(task, outcome, now, self.policy, self.rng)
        if self.log_deliveries or decision.label != DELIVERED:
            _log_attempt(task, outcome, decision)
        if self.on_attempt is not None:
            self.on_attempt(task, outcome, decision)
        self._outcomes.append((task, decision, outcome.duration))
        if self._held_back and not self._more:
            # A claim goes out within GATHER seconds: the outcome goes with it.
            self._claim_soon(host)
            return
        self.flush()
        if self._more:
            self.pump(deep=False)

    def _slot_freed(self, host: str) -> None:
        """A slot of ``host``, whose due tasks a claim of this queue passed
        over, freed (maybe in another queue: :meth:`HostTable.wait`)."""
        if self.running:
            self._claim_soon(host)

    def _claim_soon(self, host: str) -> None:
        """A slot of ``host`` freed while due tasks were held back: claim
        (and record the outcomes that wait) once half its cap is free, or
        :data:`GATHER` seconds after the first slot freed, whichever comes
        first."""
        cap = self.host_cap()
        delay = 0.0 if 2 * self.hosts.free(host, cap) >= self.hosts.cap(cap) else GATHER
        soon = self._soon
        if soon is not None and soon.active():
            if soon.getTime() > self.clock.seconds() + delay:
                soon.reset(delay)
            return
        self._soon = self.clock.callLater(delay, self.pump, False)

    # -- recording outcomes ------------------------------------------------

    def flush(self) -> defer.Deferred:
        """Record pending outcomes in one round trip.  Outcomes that arrive
        while one is being recorded wait and go together in the next, so
        the write rate adapts to the load.

        An outcome Redis doesn't take (unreachable, out of memory, …) is
        logged as an error and tried again with a backoff, until Redis
        takes it or the task's lease ends (then another node may have the
        task: it will be delivered again, and that is logged too).

        :returns: a Deferred firing with ``True`` once recorded, ``False``
            when Redis didn't take them (they wait for the next try).
        """
        if self._settling is not None or not self._outcomes:
            return defer.succeed(True)
        self._drop_stale()
        if not self._outcomes:
            return defer.succeed(True)
        batch, self._outcomes = self._outcomes, []
        d = self.store.settle(self.queue, batch, self.clock.seconds())
        self._settling = d

        def recorded(_):
            self._settling = None
            for task, _, _ in batch:
                self._lease_ends.pop((task.id, task.attempts), None)
            if self._record_failures:
                log.info(
                    "queue {queue}: outcomes recorded again after {failures} failed tries",
                    queue=self.queue,
                    failures=self._record_failures,
                )
                self._record_failures = 0
            retries = [
                decision.at for _, decision, _ in batch if isinstance(decision, Retry | Postponed)
            ]
            if retries:
                self._arm(min(retries))
            if self._outcomes:
                self.flush()
            return True

        def failed(failure):
            self._settling = None
            self._outcomes[:0] = batch
            self._record_failures += 1
            delay = min(
                RECORD_RETRY_MAX, RECORD_RETRY_INITIAL * 2 ** min(self._record_failures - 1, 10)
            )
            fields = dict(queue=self.queue, count=len(batch), delay=delay)
            if failure.check(StoreUnavailable):
                log.error(
                    "queue {queue}: could not record {count} outcomes: {error}; "
                    "trying again in {delay:.1f}s",
                    error=failure.getErrorMessage(),
                    **fields,
                )
            else:
                log.failure(
                    "queue {queue}: could not record {count} outcomes; "
                    "trying again in {delay:.1f}s",
                    failure,
                    LogLevel.error,
                    **fields,
                )
            if self.running and not (self._record_timer and self._record_timer.active()):
                self._record_timer = self.clock.callLater(delay, self.flush)
            return False

        return d.addCallbacks(recorded, failed)

    def _drop_stale(self) -> None:
        """Give up the outcomes whose lease has ended: another node may own
        those tasks now (Redis would ignore the outcome once it does)."""
        now = self.clock.seconds()
        ends = self._lease_ends
        keep, stale = [], []
        for outcome in self._outcomes:
            task = outcome[0]
            ended = ends.get((task.id, task.attempts), now + 1) <= now
            (stale if ended else keep).append(outcome)
        if not stale:
            return
        self._outcomes = keep
        for task, _, _ in stale:
            del ends[task.id, task.attempts]
        log.error(
            "queue {queue}: gave up recording the outcomes of {count} tasks ({task_ids}): "
            "their leases ended, and they will be delivered again",
            queue=self.queue,
            count=len(stale),
            task_ids=", ".join(task.id for task, _, _ in stale[:10]),
        )


def _passing(result, call, *args):
    """``call(*args)``, as a callback that passes its result on."""
    call(*args)
    return result


def _settled(d: defer.Deferred) -> defer.Deferred:
    """A Deferred that fires (with None) when ``d`` does, without touching
    ``d``'s own result."""
    waiter = defer.Deferred()

    def fire(result):
        waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter


# The line logged for an attempt, by its decision's label: log level, text.
ATTEMPT_LINES = {
    DELIVERED: ("info", "task {task_id} delivered ({status}) in {duration:.3f}s"),
    RETRIED: ("info", "task {task_id} attempt {attempt} failed: {error}; retry at {retry_at:.3f}"),
    DEAD: ("warn", "task {task_id} is dead after attempt {attempt}: {error}"),
    POSTPONED: ("info", "task {task_id} postponed by its handler until {retry_at:.3f}"),
    WAITING: ("info", "task {task_id} taken over by its handler until {retry_at:.3f}"),
}


def _log_attempt(task: Task, outcome, decision: Decision) -> None:
    """One structured line per attempt: the event carries ``task_id``,
    ``queue``, ``attempt``, ``status``, ``error`` and ``duration`` for a
    JSON log observer (``twistd --logger torque.logs.json_observer``)."""
    fields = dict(
        task_id=task.id,
        queue=task.queue,
        attempt=task.attempts,
        duration=outcome.duration,
        status=getattr(outcome, "status", None),
        error=quoted(getattr(decision, "error", None)),
    )
    if isinstance(decision, Retry | Postponed):
        fields["retry_at"] = decision.at
    elif decision.label == WAITING:
        fields["retry_at"] = decision.until
    level, text = ATTEMPT_LINES[decision.label]
    getattr(log, level)(text, **fields)
