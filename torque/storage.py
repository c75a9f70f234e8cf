"""What the scheduler, the API and the heartbeat may ask of a task store.

:class:`Store` is the interface, one docstring per method; the records its
calls return (:class:`Claim`, :class:`QueueStats`, :class:`TaskPage`, …)
and the limits both stores keep live beside it.  Pure: no Redis client is
imported here, so the modules that only call a store don't load one.

:class:`torque.store.RedisStore` keeps the tasks in Redis;
``tests/memory_store.py`` is its in-memory double for unit tests.  Both
satisfy :class:`Store` (``tests/test_storage.py``) and are held to the same
contract against real Redis (``tests/test_store.py``).  Every method returns
a Deferred, which fails with :class:`StoreUnavailable` when Redis can't
answer now.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
from twisted.internet.defer import Deferred

from torque.hosts import HostBudgets
from torque.retry import Decision
from torque.task import Task

# How long a delivery's record (and its task name) outlives it.
DELIVERED_TTL = 3600
# Attempts kept in a task's history, newest first.
HISTORY_LENGTH = 10
# Dead letters kept per queue, and for how long (Sidekiq keeps 10,000 for
# 180 days; a web hook's payload goes stale sooner).
DEAD_MAX = 10_000
DEAD_TTL = 7 * 86400.0
# Seconds a lease lasts (``--lease``), renewed while the request runs: how
# long after a node dies (kill -9, power loss) its tasks wait to be
# delivered again, whatever their timeout.
LEASE = 10.0
# Minutes of per-minute delivery counts that queue stats carry.
RECENT_MINUTES = 15


class StoreUnavailable(Exception):
    """Redis did not answer in time, the connection is gone, or Redis
    refused for a while (out of memory, ``MISCONF``, … see
    :mod:`torque.redis_errors`): try again later."""


@attrs.frozen
class Claim:
    """Tasks leased to the caller, and when the queue next needs a look
    (the earliest due time or lease end), or ``None`` if it is empty.

    :param skipped: due tasks passed over because their host was at its
        budget (:class:`torque.hosts.HostBudgets`); they are still due.
    :param found_past: tasks taken from behind a passed-over one (looking
        past the saturated hosts paid off).
    :param waiting: the hosts whose due tasks were passed over, in the
        order met.
    """

    tasks: list[Task]
    next_at: float | None
    skipped: int = 0
    found_past: int = 0
    waiting: tuple[str, ...] = ()


@attrs.frozen
class Minute:
    """Attempts' outcomes recorded in the minute starting at ``at``."""

    at: int
    delivered: int = 0
    retried: int = 0
    dead: int = 0


@attrs.frozen
class QueueStats:
    """One queue, counted in Redis (so true across every node).

    :param scheduled: tasks waiting, due or not (their status is
        ``scheduled``); ``due`` of them are due already.
    :param delivered: running total of delivered attempts.
    :param failed: running total of failed attempts (retried or dead).
    :param oldest_due_age: seconds the earliest due task has been waiting,
        0 when none is due.
    :param known: the queue is in the registry (it holds or held a task).
    :param recent: per-minute outcome counts, oldest minute first.
    """

    name: str
    scheduled: int = 0
    due: int = 0
    running: int = 0
    dead: int = 0
    delivered: int = 0
    failed: int = 0
    oldest_due_age: float = 0.0
    paused: bool = False
    known: bool = False
    recent: tuple[Minute, ...] = ()


@attrs.frozen
class QueuePage:
    """A page of the registry's queues, ordered by name; ``next_cursor``
    is ``None`` on the last page."""

    queues: list  # QueueStats, or names only
    next_cursor: str | None


@attrs.frozen
class NodeInfo:
    """A live node, as its heartbeat says.

    :param queues: the queues it processes, or ``None`` for every queue
        (``--queue '*'``).
    :param in_flight: requests it had in flight at its last heartbeat.
    :param seen_at: its last heartbeat.
    :param worker: its number under a ``--workers`` supervisor (1 to N),
        0 for a node of one process.
    :param supervisor_pid: that supervisor's process id (0: none).
    """

    id: str
    host: str = ""
    pid: int = 0
    version: str = ""
    queues: tuple[str, ...] | None = ()
    in_flight: int = 0
    started_at: float = 0.0
    seen_at: float = 0.0
    worker: int = 0
    supervisor_pid: int = 0

    def processes(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def to_fields(self) -> list[str]:
        queues = "*" if self.queues is None else json.dumps(list(self.queues))
        return [
            *("id", self.id, "host", self.host, "pid", str(self.pid), "version", self.version),
            *("queues", queues, "in_flight", str(self.in_flight)),
            *("started_at", repr(self.started_at), "seen_at", repr(self.seen_at)),
            *("worker", str(self.worker), "supervisor_pid", str(self.supervisor_pid)),
        ]

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> NodeInfo:
        queues = fields.get("queues", "[]")
        try:
            shown = None if queues == "*" else tuple(json.loads(queues))
        except ValueError:
            shown = ()
        return cls(
            id=fields.get("id", ""),
            host=fields.get("host", ""),
            pid=int(fields.get("pid") or 0),
            version=fields.get("version", ""),
            queues=shown,
            in_flight=int(fields.get("in_flight") or 0),
            started_at=float(fields.get("started_at") or 0),
            seen_at=float(fields.get("seen_at") or 0),
            worker=int(fields.get("worker") or 0),
            supervisor_pid=int(fields.get("supervisor_pid") or 0),
        )


# Nodes ``GET /nodes`` lists at most.
MAX_NODES = 1000


@attrs.frozen
class DeadPage:
    """A page of dead letters, newest first: ``(id, fields)`` pairs, the
    fields as the task hash holds them (``dead_at`` always set)."""

    total: int
    letters: list[tuple[str, dict[str, str]]]


@attrs.frozen
class TaskPage:
    """A page of a queue's tasks in one state, in order: ``(id, fields)``
    pairs, the fields as :meth:`Store.describe` gives them (``status``
    and ``history`` included).  ``after`` is the position (score, id) of
    the page's last task, to start the next page from: ``None`` on the
    last page."""

    tasks: list[tuple[str, dict[str, Any]]]
    after: tuple[float, str] | None


# The states a queue's tasks can be listed in, and the set each lives in.
# ``waiting`` (a handler took the task over, SPEC 4 "Later") lives in the
# running set (its lease lasts until the handler's deadline) with the field
# ``waiting_until``: it has no set of its own, and its page is always empty.
LISTED_STATES = {"scheduled": "due", "running": "running", "waiting": None, "dead": "dead"}
# Bytes of request bodies one page of tasks carries at most (past them it
# ends early): a page's size must not depend on what clients put in bodies.
PAGE_BYTES = 1 << 20


def history_entry(
    at: float,
    outcome: str,
    attempt: int | None = None,
    duration: float | None = None,
    status: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One entry of a task's attempt history, as both stores return it.

    :param outcome: a decision's label (:mod:`torque.retry`: ``delivered``,
        ``retried``, ``dead``, ``postponed``, ``waiting``), or ``requeued``
        (taken back from the dead letters: not an attempt).
    """
    return {
        "attempt": attempt,
        "at": at,
        "duration": duration,
        "outcome": outcome,
        "status": status,
        "error": error,
    }


def minute_buckets(now: float, minutes: int = RECENT_MINUTES) -> list[int]:
    """The starts of the last ``minutes`` minutes, ``now``'s last."""
    last = int(math.floor(now / 60) * 60)
    return [last - 60 * (minutes - 1 - i) for i in range(minutes)]


def settled_entry(task: Task, decision: Decision, now: float, duration: float | None = None):
    """The history entry of an attempt that ended in ``decision``: its
    ``outcome`` is the decision's label (:mod:`torque.retry`)."""
    error = getattr(decision, "error", None)
    return history_entry(now, decision.label, task.attempts, duration, decision.status, error)


@runtime_checkable
class Store(Protocol):
    """A task store: tasks, queues and nodes, each change of state atomic.

    Times are seconds since the epoch, passed in by the caller (its clock)
    where the answer depends on them.
    """

    #: seconds a claim's or a renewal's lease lasts (the scheduler counts
    #: on it to know when another node may have the task).
    lease: float

    def ping(self) -> Deferred[Any]:
        """Fires once the store answers: a health check."""

    def add(self, task: Task) -> Deferred[tuple[str, bool]]:
        """Store ``task`` and wake the queue's schedulers.

        :returns: a Deferred firing with ``(id, True)``, or with
            ``(existing id, False)`` when a live task already has its name.
        """

    def add_many(self, tasks: Sequence[Task]) -> Deferred[list[tuple[str, bool]]]:
        """Store ``tasks`` in order, in one round trip, each as :meth:`add`
        would (a name taken earlier in the same call is a duplicate too),
        and wake each queue once.

        :returns: a Deferred firing with an ``(id, created)`` per task, in
            order: ``(existing id, False)`` for a duplicate name.
        """

    def claim(
        self,
        queue: str,
        now: float,
        limit: int,
        timeout: float,
        max_errors: int,
        rate: float = 0.0,
        hosts: HostBudgets | None = None,
    ) -> Deferred[Claim]:
        """Lease up to ``limit`` due tasks of ``queue``; a :class:`Claim`.
        Tasks whose lease ended first are settled as a failed attempt
        (``retried``, or ``dead`` on their last attempt).

        :param timeout: the node's request timeout, for tasks without their
            own (unused since leases last ``lease`` seconds whatever the
            timeout, renewed with :meth:`renew`; kept for callers).
        :param max_errors: the node's limit, for tasks without their own:
            a lost lease on the last attempt buries the task.
        :param rate: dispatches per second for the queue (``--rate``),
            shared by every claimer; 0 for no limit.  While it holds due
            tasks back, the claim's ``next_at`` is when it won't.
        :param hosts: how many tasks each target host may have claimed and
            which hosts are held (:mod:`torque.hosts`): a host at its budget
            is passed over, not waited for, and a held host's due tasks are
            postponed to the hold's end without spending an attempt.
            ``None``: the due tasks in order.

        A claim made while an :meth:`add` to the same queue is on its way
        (its Deferred has not fired) sees that add: a node that takes an add
        for a queue it processes claims at once, and the task goes out one
        round trip after its add, not two.
        """

    def renew(self, held: Sequence[tuple[str, str, int]], now: float) -> Deferred[list[str]]:
        """Renew the leases of ``held`` attempts, ``(queue, task id,
        attempt)`` in any queues, in one round trip: each lasts ``lease``
        seconds from ``now`` again, if it still holds (the task is running
        with that attempt).

        :returns: a Deferred firing with the ids whose lease was not
            renewed (settled, cancelled, or lost to another node).
        """

    def settle(self, queue: str, outcomes: Sequence[tuple], now: float) -> Deferred[int]:
        """Record decisions on claimed tasks in one round trip.

        :param outcomes: ``(task, decision)`` or ``(task, decision,
            duration)``: the attempt's duration goes into its history
            (:func:`settled_entry`).
        :returns: a Deferred firing with how many were applied; a decision
            on an attempt that is no longer the task's latest is dropped.
        """

    def complete(self, queue: str, task: Task, decision: Decision, now: float) -> Deferred[bool]:
        """Record the word of a handler that took ``task`` over (its status
        is ``waiting``: SPEC 4 "Later"), as :meth:`settle` records an
        attempt's decision.  Fires with whether it was applied: not when
        the task is no longer waiting on attempt ``task.attempts`` (its
        word came already, or its deadline passed and a claim counted the
        attempt as failed)."""

    def completion_key(self, candidate: str) -> Deferred[str]:
        """The key every node signs completion tokens with
        (:mod:`torque.completion`): ``candidate`` when there is none yet
        (the first node to ask makes it), else the one in force."""

    def describe(self, task_id: str) -> Deferred[dict[str, Any] | None]:
        """A task's fields plus ``status`` and ``history`` (its last
        attempts, newest first: see :func:`history_entry`), or ``None`` if
        there's no such task (or its delivery record has expired)."""

    def cancel(self, task_id: str, keep_name: float = 0.0) -> Deferred[str]:
        """Delete a task; fires with the state it was in, ``""`` if none
        (a delivered task stays, and ``"delivered"`` is the answer).

        :param keep_name: seconds the task's name stays taken (an add of
            that name is a duplicate of the cancelled id meanwhile, as Cloud
            Tasks keeps a deleted task's name); 0 frees it at once.
        """

    def named(self, queue: str, name: str) -> Deferred[str | None]:
        """The id that holds ``name`` in ``queue`` (a live task's, a
        delivery record's or a cancelled task's whose name is kept), or
        ``None``: how a front door finds a task by its name."""

    def door_records(self, door: str) -> Deferred[dict[str, str]]:
        """Every record a compatible front door (SPEC 10) keeps beside the
        tasks, ``{key: text}`` (the Cloud Tasks door's queues): a few
        thousand at most, read whole."""

    def door_record(self, door: str, key: str) -> Deferred[str | None]:
        """One record of ``door``, or ``None``."""

    def put_door_record(
        self, door: str, key: str, text: str, only_new: bool = False
    ) -> Deferred[bool]:
        """Write one record of ``door``; fires with whether it was written
        (with ``only_new``, an existing record is left as it is)."""

    def delete_door_record(self, door: str, key: str) -> Deferred[bool]:
        """Delete one record of ``door``; fires with whether there was one."""

    def run_now(self, task_id: str, now: float) -> Deferred[tuple[str, str | None, float | None]]:
        """Make a scheduled task due at ``now`` (an overdue one keeps its
        place) and wake its queue's schedulers.

        :returns: a Deferred firing with ``(state, queue, due_at)``: state
            ``""`` when there is no such task, and the task moved only when
            it is ``"scheduled"`` (``due_at`` is ``None`` otherwise).
        """

    def get_settings(self, queue: str) -> Deferred[dict[str, int | float]]:
        """The queue's own settings (:data:`torque.queue_settings.SETTINGS`):
        only the fields it has, each typed; ``{}`` when it has none (or no
        such queue).  One cheap read, made by every node's scheduler of the
        queue at each safety tick and when told the settings changed."""

    def set_settings(
        self, queue: str, changes: dict[str, int | float | None]
    ) -> Deferred[dict[str, int | float]]:
        """Change some of the queue's settings at once (``None`` clears a
        field: the node's option applies again), tell every node processing
        the queue (its wake channel), and fire with the settings after the
        change, as :meth:`get_settings` gives them.  The values must be
        checked already (:func:`torque.queue_settings.check_changes`); an
        unknown field fails with ``ValueError`` and changes nothing.  The
        queue need not hold a task."""

    def pause(self, queue: str, create: bool = False) -> Deferred[bool]:
        """Stop every node from claiming the queue's tasks; adds go on.
        Fires with whether the queue exists (if not, nothing changed).

        :param create: make the queue, paused, if it does not exist (a
            front door's queue can be made paused before its first task).
        """

    def resume(self, queue: str) -> Deferred[bool]:
        """Let nodes claim the queue's tasks again, and wake them.  Fires
        with whether the queue exists."""

    def delete_queue(self, queue: str) -> Deferred[tuple[str, int, int, int]]:
        """Forget an empty queue, its settings too.  Fires with ``(state, scheduled, running,
        dead)``: ``deleted``, ``unknown``, or ``busy`` while it holds tasks
        (nothing changed)."""

    def queue_page(
        self,
        after: str | None,
        limit: int,
        now: float,
        minutes: int = RECENT_MINUTES,
        names_only: bool = False,
    ) -> Deferred[QueuePage]:
        """A :class:`QueuePage` of the registry: up to ``limit`` queues by
        name, after the name ``after`` (``None``: from the first), each a
        :class:`QueueStats` with ``minutes`` of recent counts (or only its
        name).  Its cost is the page's alone."""

    def queue_stats(self, queues: Sequence[str], now: float) -> Deferred[list[QueueStats]]:
        """Counts of ``queues`` (known or not) in one round trip: a list
        of :class:`QueueStats` with :data:`RECENT_MINUTES` of recent
        counts."""

    def purge(self, queue: str) -> Deferred[int]:
        """Delete every scheduled task of ``queue``; running ones finish,
        dead letters stay.  Fires with how many."""

    def task_page(
        self,
        queue: str,
        state: str,
        after: tuple[float, str] | None = None,
        limit: int = 50,
        max_bytes: int = PAGE_BYTES,
    ) -> Deferred[TaskPage]:
        """A :class:`TaskPage` of ``queue``'s tasks in ``state`` (one of
        :data:`LISTED_STATES`), in their set's order: scheduled ones by due
        time, running ones by lease end, dead ones by time of death; ties by
        id.  Its cost is the page's alone.

        :param after: the position to start after (a previous page's
            ``after``); the task there may have left the set meanwhile.
        :param max_bytes: request bodies a page carries at most; the page
            ends early past them (it always holds one task).
        """

    def dead_letters(self, queue: str, offset: int = 0, limit: int = 50) -> Deferred[DeadPage]:
        """A :class:`DeadPage` of ``queue``'s dead letters, newest first."""

    def retry_dead(self, queue: str, ids: Sequence[str] | None, now: float) -> Deferred[int]:
        """Make dead letters (``None``: all of them) due at ``now`` with a
        fresh budget of attempts (history: ``requeued``), and wake the
        queue's schedulers.  Ids that aren't dead letters of ``queue`` are
        passed over.  Fires with how many moved."""

    def delete_dead(self, queue: str, ids: Sequence[str] | None) -> Deferred[int]:
        """Delete dead letters (``None``: all of them); fires with how
        many.  Ids that aren't dead letters of ``queue`` are passed over."""

    def beat(self, node: NodeInfo, ttl: float) -> Deferred[Any]:
        """Renew ``node``'s heartbeat: it counts as live for ``ttl`` seconds."""

    def leave(self, node_id: str) -> Deferred[Any]:
        """Drop a node's heartbeat at once (it is stopping)."""

    def live_nodes(self) -> Deferred[list[NodeInfo]]:
        """The nodes whose heartbeat holds, oldest first (at most
        :data:`MAX_NODES`): :class:`NodeInfo`."""
