"""The task store: tasks in Redis, every change of state one Lua script.

:class:`RedisStore` wraps a txredisapi connection (or pool); it reads the
scripts' answers with :mod:`torque.replies`.  Every call is bounded by
``timeout``: txredisapi lets a command issued during an outage wait for
Redis forever, and a node must answer 503 instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from torque import replies, scripts
from torque.coalesce import Coalescer
from torque.hosts import HostBudgets
from torque.keys import SETTINGS_CHANGED, Keys, queue_of_id
from torque.queue_settings import SETTINGS, decode, encode
from torque.redis_errors import NOT_NOW, not_now
from torque.redis_state import down_reason, is_cluster
from torque.replicas import ReplicatedWrites
from torque.retry import Decision
from torque.storage import (
    DEAD_MAX,
    DEAD_TTL,
    DELIVERED_TTL,
    HISTORY_LENGTH,
    LEASE,
    LISTED_STATES,
    MAX_NODES,
    PAGE_BYTES,
    RECENT_MINUTES,
    NodeInfo,
    QueuePage,
    StoreUnavailable,
    TaskPage,
    settled_entry,
)
from torque.task import Task

DEFAULT_KEYS = Keys()
# Tasks one script call purges, retries or deletes: each call holds Redis
# for about a millisecond, so other clients go on between them.
BATCH = 1000
# Tasks one coalesced add call takes at most (POST /tasks/batch's limit).
MAX_ADDS = 1000
# Seconds a store trusts its own registration of a queue (one ZADD the
# first time it adds to it): past them it registers it again, in case
# another node deleted the queue (DELETE /queues/<q>) since.
REGISTER_AGAIN = 60.0


class RedisStore:
    """Tasks and queues in Redis: a :class:`torque.storage.Store`.

    :param redis: a txredisapi connection handler (lazy pool).
    :param clock: times the calls out.
    :param timeout: seconds a call may take before it fails with
        :class:`StoreUnavailable`.
    :param lease: seconds a claim's or a renewal's lease lasts, whatever the
        task's timeout: the node renews it while the request runs.
    :param dead_max: dead letters kept per queue; past it the oldest go.
    :param dead_ttl: seconds a dead letter is kept: older ones go at the
        queue's next claim (every node's claims, paused or not) or death.
    :param batch: tasks per script call when purging, retrying or deleting
        many, so one call never holds Redis for long.
    :param wait_replicas: an add fires only once this many replicas hold
        it (``WAIT`` on the connection that ran it), else fails with
        :class:`StoreUnavailable`; 0 for once the primary has it.
    """

    def __init__(
        self,
        redis,
        clock: IReactorTime,
        keys: Keys = DEFAULT_KEYS,
        timeout: float = 5.0,
        lease: float = LEASE,
        dead_max: int = DEAD_MAX,
        dead_ttl: float = DEAD_TTL,
        batch: int = BATCH,
        wait_replicas: int = 0,
    ):
        self.redis = redis
        self.clock = clock
        self.keys = keys
        self.timeout = timeout
        self.lease = lease
        self.dead_max = dead_max
        self.dead_ttl = dead_ttl
        self.batch = batch
        self._adds = Coalescer(clock, self._add_turn, limit=MAX_ADDS)
        # Queue -> a claim that goes after this turn's adds to the queue:
        # its arguments and the Deferred it fires (see claim).
        self._after_adds: dict[str, tuple[list, defer.Deferred]] = {}
        self.wait_replicas = wait_replicas
        self._registered: dict[str, float] = {}  # queue -> when this store registered it
        # On a Redis Cluster the scripts publish with SPUBLISH.
        self._cluster = is_cluster(redis)
        self._script = scripts.sharded if self._cluster else str
        self._replicas = (
            ReplicatedWrites(redis, clock, wait_replicas, timeout, self._unavailable)
            if wait_replicas
            else None
        )

    def _call(self, method: str, *args) -> defer.Deferred:
        reason = down_reason(self.redis)
        if reason is not None:
            # Waiting for the timeout would only hold the caller: the
            # command would wait for a connection that isn't coming.
            return defer.fail(StoreUnavailable(reason))
        d = defer.maybeDeferred(getattr(self.redis, method), *args)
        d.addTimeout(self.timeout, self.clock)
        d.addErrback(self._unavailable)
        return d

    def _eval(self, script: str, keys: Sequence[str], args: Sequence) -> defer.Deferred:
        return self._call("eval", self._script(script), list(keys), [str(a) for a in args])

    @staticmethod
    def _unavailable(failure):
        if failure.check(defer.TimeoutError):
            raise StoreUnavailable("Redis did not answer in time")
        if failure.check(txredisapi.ResponseError):
            code = not_now(failure.getErrorMessage())
            if code is None:
                return failure
            raise StoreUnavailable(f"{NOT_NOW[code]}: {failure.getErrorMessage()}")
        failure.trap(txredisapi.ConnectionError, ConnectionError)
        raise StoreUnavailable(f"Redis is unreachable: {failure.getErrorMessage()}")

    def ping(self) -> defer.Deferred:
        return self._call("ping")

    def add(self, task: Task) -> defer.Deferred:
        """Store ``task`` and wake the queue's schedulers.

        The adds made in one turn of the reactor (the requests that arrived
        together) go to Redis as one call, as :meth:`add_many` would send
        them: one script call and one reply to parse instead of one each; a
        claim of their queue made meanwhile goes in that call (:meth:`claim`).

        :returns: a Deferred firing with ``(id, True)``, or with
            ``(existing id, False)`` when a live task already has its name.
        """
        reason = down_reason(self.redis)
        if reason is not None:
            return defer.fail(StoreUnavailable(reason))  # at once, as _call
        return self._adds.submit(task)

    def _add_turn(self, tasks: Sequence[Task]) -> defer.Deferred:
        """The adds of one turn (:meth:`add`), then any claim that waited
        for them and did not go in their script: on its own, after them."""
        queues = {task.queue for task in tasks}

        def claims_left(result):
            for queue in queues.intersection(self._after_adds):
                self._claim_alone(queue, *self._after_adds.pop(queue))
            return result

        return self._register_and_add(tasks, claims=True).addBoth(claims_left)

    def add_many(self, tasks: Sequence[Task]) -> defer.Deferred:
        """Store ``tasks`` in order, each as :meth:`add` would: one script
        call (one round trip) per queue, so that each stays in its queue's
        hash slot, and one wake-up per queue.  Their queues are registered
        first (:meth:`_register`).

        :returns: a Deferred firing with an ``(id, created)`` per task.
        """
        if not tasks:
            return defer.succeed([])
        return self._register_and_add(tasks)

    def _register_and_add(self, tasks: Sequence[Task], claims: bool = False) -> defer.Deferred:
        """Register the tasks' queues, then add them (:meth:`_add_to_queue`)."""
        d = self._register([task.queue for task in tasks])
        return d.addCallback(lambda _: self._add_by_queue(tasks, claims))

    def _register(self, queues: Sequence[str]) -> defer.Deferred:
        """Put ``queues`` in the registry (a plain ``ZADD``: the registry is
        no queue's key, so no script touches it) unless this store did so
        lately: one command per queue per process, not per add."""
        now = self.clock.seconds()
        new = [
            queue
            for queue in dict.fromkeys(queues)
            if not now - REGISTER_AGAIN < self._registered.get(queue, -REGISTER_AGAIN) <= now
        ]
        if not new:
            return defer.succeed(None)
        pairs = [part for queue in new for part in ("0", queue)]
        d = self._call("execute_command", "ZADD", self.keys.queues, "NX", *pairs)

        def registered(_):
            for queue in new:
                self._registered[queue] = now

        return d.addCallback(registered)

    def _add_by_queue(self, tasks: Sequence[Task], claims: bool = False) -> defer.Deferred:
        by_queue: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            by_queue.setdefault(task.queue, []).append(i)
        if len(by_queue) == 1:
            return self._add_to_queue(tasks, claims)
        calls = [
            self._add_to_queue([tasks[i] for i in group], claims) for group in by_queue.values()
        ]

        def in_order(answers):
            out: list = [None] * len(tasks)
            for group, reply in zip(by_queue.values(), answers, strict=True):
                for i, added in zip(group, reply, strict=True):
                    out[i] = added
            return out

        return _at_once(calls).addCallback(in_order)

    def _add_to_queue(self, tasks: Sequence[Task], claims: bool = False) -> defer.Deferred:
        """Store tasks of one queue in one ADD script call.

        :param claims: they are a turn's adds (:meth:`add`): a claim that
            waits for them goes in the same script call, after them."""
        k = self.keys
        queue = tasks[0].queue
        due_key, wake = k.due(queue), k.wake(queue)  # once a call, not a task
        keys: list[str] = []
        args: list = []
        for task in tasks:
            fields = task.to_fields()
            task_key = k.task(queue, task.id)
            keys += [task_key, due_key, k.name(queue, task.name) if task.name else task_key]
            args += [
                task.id,
                repr(task.due_at),
                "1" if task.name else "0",
                wake,
                str(len(fields)),
                *fields,
            ]
        after = self._after_adds.pop(queue, None) if claims and not self.wait_replicas else None
        if after is None:
            return self._write(scripts.ADD, keys, args).addCallback(replies.added)
        # A claim waits for these adds: one script call adds, then claims.
        claim_args, claimed = after
        d = self._eval(
            scripts.ADD_THEN_CLAIM,
            [*keys, *k.queue(queue)],
            [len(keys), len(args), *args, *claim_args],
        )

        def split(reply):
            claimed.callback(reply[1])  # first: the delivery goes out sooner
            return replies.added(reply[0])

        def failed(failure):
            claimed.errback(failure)
            return failure

        return d.addCallbacks(split, failed)

    def _write(self, script: str, keys: Sequence[str], args: Sequence) -> defer.Deferred:
        """A write whose answer promises something to a client (an add, a
        cancel, a pause or resume): with ``wait_replicas``, answered only
        once that many replicas hold it.  Outcomes of deliveries don't
        wait: one lost in a failover means a delivery again, which
        at-least-once allows; bulk changes (purge, dead letters) neither,
        and are said again after a failover."""
        if self._replicas is not None:
            return self._replicas.write(self._script(script), keys, args)
        return self._eval(script, keys, args)

    def claim(
        self,
        queue: str,
        now: float,
        limit: int,
        timeout: float,
        max_errors: int,
        rate: float = 0.0,
        hosts: HostBudgets | None = None,
    ) -> defer.Deferred:
        """Lease up to ``limit`` due tasks of ``queue``; a :class:`Claim`.

        :param timeout: the node's request timeout, for tasks without their
            own (unused: a lease lasts ``lease`` whatever the timeout).
        :param max_errors: the node's limit, for tasks without their own:
            a lost lease on the last attempt buries the task.
        :param rate: dispatches per second for the queue (``--rate``),
            shared by every claimer through Redis; 0 for no limit.  While it
            holds due tasks back, the claim's ``next_at`` is when it won't.
        :param hosts: what each target host may take (fairness, open
            circuits, throttles: :mod:`torque.hosts`); ``None`` takes the
            due tasks in order.
        """
        args = [
            repr(now),
            limit,
            "",
            "",
            timeout,
            self.lease,
            max_errors,
            HISTORY_LENGTH,
            self.dead_max,
            self.dead_ttl,
            repr(float(rate)),
            *_host_args(hosts),
        ]
        if queue not in self._after_adds and self._adds.holding(lambda t: t.queue == queue):
            # An add to the queue waits for the end of this turn: the claim
            # goes after it, in its script (see _add_to_queue).
            d = defer.Deferred()
            self._after_adds[queue] = (args, d)
        else:
            d = self._claim_alone(queue, args)
        return d.addCallback(replies.claimed, queue)

    def _claim_alone(
        self, queue: str, args: list, claimed: defer.Deferred | None = None
    ) -> defer.Deferred:
        d = self._eval(scripts.CLAIM, self.keys.queue(queue), args)
        return d if claimed is None else d.chainDeferred(claimed)

    def renew(self, held: Sequence[tuple[str, str, int]], now: float) -> defer.Deferred:
        """Renew the leases of ``held`` attempts, ``(queue, task id,
        attempt)`` in any queues, one script call per queue (each in its
        queue's slot), all at once: each lasts ``lease`` seconds from
        ``now`` again if it still holds.  Fires with the ids whose lease was
        not renewed."""
        if not held:
            return defer.succeed([])
        k = self.keys
        by_queue: dict[str, tuple[list, list]] = {}
        for queue, task_id, attempt in held:
            keys, args = by_queue.setdefault(queue, ([k.running(queue)], [repr(now + self.lease)]))
            keys.append(k.task(queue, task_id))
            args += [task_id, attempt]
        calls = [self._eval(scripts.RENEW, keys, args) for keys, args in by_queue.values()]

        def in_order(answers):
            lost = {task_id for reply in answers for task_id in reply}
            return [task_id for _, task_id, _ in held if task_id in lost]

        return _at_once(calls).addCallback(in_order)

    def settle(self, queue: str, outcomes: Sequence[tuple], now: float):
        """Record decisions on claimed tasks in one round trip.

        :param outcomes: ``(task, decision)`` or ``(task, decision,
            duration)``: the attempt's duration goes into its history.
        :returns: a Deferred firing with how many were applied; a decision
            on an attempt that is no longer the task's latest is dropped.
        """
        k = self.keys
        args = [
            *self._settle_head(queue, now),
        ]
        keys = k.queue(queue)
        for task, decision, *duration in outcomes:
            entry = settled_entry(task, decision, now, *duration)
            args += [task.id, task.attempts, *_settle_args(decision), json.dumps(entry)]
            keys += [k.task(queue, task.id), k.attempts(queue, task.id)]
        return self._eval(scripts.SETTLE, keys, args)

    def _settle_head(self, queue: str, now: float) -> list:
        """The arguments SETTLE and COMPLETE open with (their ARGV[1..7])."""
        return [
            repr(now),
            "",
            "",
            DELIVERED_TTL,
            HISTORY_LENGTH,
            self.dead_max,
            self.dead_ttl,
        ]

    def complete(self, queue: str, task: Task, decision: Decision, now: float):
        """Record the word of a handler that took ``task`` over: fires with
        whether it was applied (the task was still waiting, on
        ``task.attempts``)."""
        k = self.keys
        args = [
            *self._settle_head(queue, now),
            task.id,
            task.attempts,
            *_settle_args(decision),
            json.dumps(settled_entry(task, decision, now)),
        ]
        keys = [*k.queue(queue), k.task(queue, task.id), k.attempts(queue, task.id)]
        return self._eval(scripts.COMPLETE, keys, args).addCallback(bool)

    def completion_key(self, candidate: str) -> defer.Deferred:
        """The key completion tokens are signed with, shared by every node:
        ``candidate`` if there was none yet."""
        key = self.keys.completion_key
        # Plain commands: the key is no queue's (SET NX, then whichever won).
        d = self._call("execute_command", "SET", key, candidate, "NX")
        return d.addCallback(lambda _: self._call("get", key))

    def describe(self, task_id: str) -> defer.Deferred:
        """A task's fields plus ``status`` and ``history`` (its last
        attempts, newest first: see :func:`history_entry`), or ``None`` if
        there's no such task (or its delivery record has expired)."""
        k = self.keys
        queue = queue_of_id(task_id)
        if queue is None:
            return defer.succeed(None)  # no task has such an id
        keys = [k.task(queue, task_id), k.attempts(queue, task_id), *k.queue(queue)]
        d = self._eval(scripts.DESCRIBE, keys, [task_id])
        return d.addCallback(replies.described, queue)

    @defer.inlineCallbacks
    def pause(self, queue: str, create: bool = False):
        """Stop every node from claiming the queue's tasks; adds go on.
        Fires with whether the queue exists (if not, nothing changed,
        unless ``create``: then it is made, paused)."""
        if create:
            yield self._register([queue])
            known = True
        else:
            known = (yield self._call("zscore", self.keys.queues, queue)) is not None
        paused = yield self._write(scripts.PAUSE, self.keys.queue(queue), ["1" if known else "0"])
        return bool(paused)

    @defer.inlineCallbacks
    def resume(self, queue: str):
        """Let nodes claim the queue's tasks again, and wake them.  Fires
        with whether the queue exists."""
        k = self.keys
        known = (yield self._call("zscore", k.queues, queue)) is not None
        now = self.clock.seconds()
        resumed = yield self._write(
            scripts.RESUME, k.queue(queue), ["1" if known else "0", k.wake(queue), repr(now)]
        )
        return bool(resumed)

    @defer.inlineCallbacks
    def delete_queue(self, queue: str):
        """Forget an empty queue.  Fires with ``(state, scheduled, running,
        dead)``: ``deleted``, ``unknown``, or ``busy`` while it holds tasks
        (nothing changed)."""
        k = self.keys
        state, *counts = yield self._eval(
            scripts.DELETE_QUEUE, [*k.queue(queue), k.settings(queue)], []
        )
        if state != "busy":
            known = yield self._call("zrem", k.queues, queue)
            self._registered.pop(queue, None)
            state = "deleted" if state or known else "unknown"
        return (state, *(int(count) for count in counts))

    def get_settings(self, queue: str) -> defer.Deferred:
        """The queue's own settings, typed: only the fields it has."""
        d = self._call("execute_command", "HGETALL", self.keys.settings(queue))
        return d.addCallback(lambda flat: decode(replies.pairs(flat)))

    def set_settings(self, queue: str, changes: dict[str, int | float | None]):
        """Change some of the queue's settings at once (``None`` clears a
        field), tell the queue's nodes, and fire with the settings after."""
        unknown = sorted(set(changes) - set(SETTINGS))
        if unknown:
            return defer.fail(ValueError(f"unknown queue settings: {', '.join(unknown)}"))
        k = self.keys
        args = [k.wake(queue), SETTINGS_CHANGED]
        for name, value in changes.items():
            args += [name, "" if value is None else encode(value)]
        d = self._eval(scripts.SET_SETTINGS, [k.settings(queue)], args)
        return d.addCallback(lambda flat: decode(replies.pairs(flat)))

    @defer.inlineCallbacks
    def queue_page(
        self,
        after: str | None,
        limit: int,
        now: float,
        minutes: int = RECENT_MINUTES,
        names_only: bool = False,
    ):
        """A :class:`QueuePage` of the registry: up to ``limit`` queues by
        name, after the name ``after`` (``None``: from the first), each a
        :class:`QueueStats` with ``minutes`` of recent counts (or only its
        name).  Two round trips (the page of names, then every row at once),
        whose cost is the page's alone."""
        start = "-" if after is None else "(" + after
        names = yield self._call(
            "execute_command", "ZRANGEBYLEX", self.keys.queues, start, "+", "LIMIT", 0, limit + 1
        )
        cursor = None
        if len(names) > limit:
            names = names[:limit]
            cursor = names[-1]
        if names_only:
            return QueuePage(list(names), cursor)
        rows = yield self._rows(names, now, minutes, [True] * len(names))
        return QueuePage(rows, cursor)

    def beat(self, node: NodeInfo, ttl: float) -> defer.Deferred:
        """Renew ``node``'s heartbeat: it counts as live for ``ttl`` seconds
        (its hash, then its place in the index of nodes)."""
        k = self.keys
        d = self._eval(scripts.BEAT, [k.node(node.id)], [ttl, *node.to_fields()])
        d.addCallback(lambda _: self._call("zadd", k.nodes, repr(node.started_at), node.id))
        return d.addCallback(lambda _: 1)

    def leave(self, node_id: str) -> defer.Deferred:
        """Drop a node's heartbeat at once (it is stopping)."""
        k = self.keys
        d = self._call("delete", k.node(node_id))
        return d.addCallback(lambda _: self._call("zrem", k.nodes, node_id))

    @defer.inlineCallbacks
    def live_nodes(self):
        """The nodes whose heartbeat holds, oldest first: :class:`NodeInfo`.
        The index forgets the others."""
        k = self.keys
        ids = yield self._call("zrange", k.nodes, 0, MAX_NODES - 1)
        hashes = yield _at_once([self._call("execute_command", "HGETALL", k.node(i)) for i in ids])
        gone = [i for i, flat in zip(ids, hashes, strict=True) if not flat]
        if gone:
            yield self._call("zrem", k.nodes, *gone)
        return [NodeInfo.from_fields(replies.pairs(flat)) for flat in hashes if flat]

    def cancel(self, task_id: str, keep_name: float = 0.0) -> defer.Deferred:
        """Delete a task; fires with the state it was in, ``""`` if none.
        Its name stays taken ``keep_name`` seconds (0: freed at once)."""
        k = self.keys
        queue = queue_of_id(task_id)
        if queue is None:
            return defer.succeed("")  # no task has such an id
        keys = [k.task(queue, task_id), k.attempts(queue, task_id), *k.queue(queue)]
        return self._write(scripts.CANCEL, keys, [task_id, repr(float(keep_name))])

    def named(self, queue: str, name: str) -> defer.Deferred:
        """The id of the task that holds ``name`` in ``queue``, or ``None``."""
        return self._call("get", self.keys.name(queue, name))

    def door_records(self, door: str) -> defer.Deferred:
        """Every record ``door`` keeps: ``{key: text}``."""
        return self._call("hgetall", self.keys.door(door)).addCallback(dict)

    def door_record(self, door: str, key: str) -> defer.Deferred:
        """One record of ``door``, or ``None``."""
        return self._call("hget", self.keys.door(door), key)

    def put_door_record(
        self, door: str, key: str, text: str, only_new: bool = False
    ) -> defer.Deferred:
        """Write one record of ``door``; fires with whether it was written
        (with ``only_new``, not over an existing one)."""
        method = "hsetnx" if only_new else "hset"
        d = self._call(method, self.keys.door(door), key, text)
        return d.addCallback(lambda written: bool(written) or not only_new)

    def delete_door_record(self, door: str, key: str) -> defer.Deferred:
        """Delete one record of ``door``; fires with whether there was one."""
        return self._call("hdel", self.keys.door(door), key).addCallback(bool)

    def run_now(self, task_id: str, now: float) -> defer.Deferred:
        """Make a scheduled task due at ``now`` (an overdue one keeps its
        place) and wake its queue's schedulers.

        :returns: a Deferred firing with ``(state, queue, due_at)``: state
            ``""`` when there is no such task, and the task moved only when
            it is ``"scheduled"`` (``due_at`` is ``None`` otherwise).
        """
        k = self.keys
        queue = queue_of_id(task_id)
        if queue is None:
            return defer.succeed(("", None, None))  # no task has such an id
        keys = [k.task(queue, task_id), *k.queue(queue)]
        d = self._eval(scripts.RUN_NOW, keys, [task_id, repr(now), k.wake(queue)])
        return d.addCallback(
            lambda r: (r[0], queue if r[0] else None, float(r[1]) if r[1] else None)
        )

    @defer.inlineCallbacks
    def queue_stats(self, queues: Sequence[str], now: float):
        """Counts of ``queues``, each O(1) or O(log n) in Redis: a list of
        :class:`QueueStats`.  Two round trips (which are registered, then
        every queue's row at once, each in its queue's slot).  (Every queue:
        page through them with :meth:`queue_page`.)"""
        if not queues:
            return []
        scores = yield self._call("execute_command", "ZMSCORE", self.keys.queues, *queues)
        return (yield self._rows(queues, now, RECENT_MINUTES, [s is not None for s in scores]))

    def _rows(self, queues: Sequence[str], now: float, minutes: int, known: Sequence[bool]):
        """Every queue's :class:`QueueStats`, one QUEUE_ROW call each, at once."""
        k = self.keys
        first = int(now // 60) * 60 - 60 * (minutes - 1)
        at = [first + 60 * m for m in range(minutes)]
        calls = [
            self._eval(
                scripts.QUEUE_ROW,
                [*k.queue(queue), *(k.minute(queue, t) for t in at)],
                [repr(now), *at],
            )
            for queue in queues
        ]

        def rows(answers):
            return [
                replies.queue_stats([queue, *reply[:8], int(is_known), reply[8]], now)
                for queue, reply, is_known in zip(queues, answers, known, strict=True)
            ]

        return _at_once(calls).addCallback(rows)

    @defer.inlineCallbacks
    def purge(self, queue: str):
        """Delete every scheduled task of ``queue``, ``batch`` at a time;
        running ones finish, dead letters stay.  Fires with how many."""
        k = self.keys
        purged = 0
        while True:
            removed, left = yield self._eval(scripts.PURGE, k.queue(queue), [self.batch])
            purged += removed
            if removed < self.batch or not left:
                return purged

    def dead_letters(self, queue: str, offset: int = 0, limit: int = 50) -> defer.Deferred:
        """A :class:`DeadPage` of ``queue``'s dead letters, newest first."""
        k = self.keys
        d = self._eval(scripts.DEAD_PAGE, k.queue(queue), [offset, limit])
        return d.addCallback(replies.dead_page, queue)

    def task_page(
        self,
        queue: str,
        state: str,
        after: tuple[float, str] | None = None,
        limit: int = 50,
        max_bytes: int = PAGE_BYTES,
    ) -> defer.Deferred:
        """A :class:`TaskPage` of ``queue``'s tasks in ``state`` (one of
        :data:`LISTED_STATES`), in their set's order: scheduled ones by due
        time, running ones by lease end, dead ones by time of death; ties by
        id.  One round trip that costs the same in a queue of ten tasks or
        ten million.

        :param after: the position to start after (a previous page's
            ``after``); the task there may have left the set meanwhile.
        :param max_bytes: request bodies a page carries at most; the page
            ends early past them (it always holds one task).
        """
        kind = LISTED_STATES[state]
        if kind is None:
            return defer.succeed(TaskPage([], None))
        key = getattr(self.keys, kind)(queue)
        score, task_id = ("", "") if after is None else (repr(float(after[0])), after[1])
        d = self._eval(
            scripts.TASK_PAGE,
            [key, *self.keys.queue(queue)],
            ["", limit, max_bytes, score, task_id],
        )
        return d.addCallback(replies.task_page, state, queue)

    def retry_dead(self, queue: str, ids: Sequence[str] | None, now: float):
        """Make dead letters (``None``: all of them) due at ``now`` with a
        fresh budget of attempts, and wake the queue's schedulers.  Ids that
        aren't dead letters of ``queue`` are passed over.  Fires with how
        many moved."""
        k = self.keys
        args = [repr(now), k.wake(queue), HISTORY_LENGTH]
        return self._in_batches(scripts.RETRY_DEAD, k.queue(queue), args, ids)

    def delete_dead(self, queue: str, ids: Sequence[str] | None):
        """Delete dead letters (``None``: all of them); fires with how
        many.  Ids that aren't dead letters of ``queue`` are passed over."""
        return self._in_batches(scripts.DELETE_DEAD, self.keys.queue(queue), [], ids)

    @defer.inlineCallbacks
    def _in_batches(self, script: str, keys: list[str], args: list, ids: Sequence[str] | None):
        """Run a dead-letter script on ``ids`` a batch at a time, or with
        ``None`` on the whole set, oldest first.  Every call may leave fewer
        dead letters, but tasks may die meanwhile: the work is bounded by
        the size of the set at the start."""
        done = 0
        if ids is not None:
            for start in range(0, len(ids), self.batch):
                chunk = list(ids[start : start + self.batch])
                moved, _ = yield self._eval(script, keys, [*args, self.batch, *chunk])
                done += moved
            return done
        bound = None
        while True:
            moved, left = yield self._eval(script, keys, [*args, self.batch])
            bound = moved + left if bound is None else bound
            done += moved
            if moved < self.batch or not left or done >= bound:
                return done


def _settle_args(decision: Decision) -> list:
    """The action (the decision's label), retry time, status and error the
    ``SETTLE`` script takes for ``decision``."""
    status = "" if decision.status is None else decision.status
    at = getattr(decision, "at", getattr(decision, "until", None))
    return [
        decision.label,
        "" if at is None else repr(at),
        status,
        getattr(decision, "error", None) or "",
    ]


def _host_args(hosts: HostBudgets | None) -> list:
    """The ``CLAIM`` script's arguments from ARGV[12] on."""
    if hosts is None:
        return []
    args = [hosts.default, hosts.max_skip, hosts.max_postpone, len(hosts.budgets)]
    for host, budget in hosts.budgets.items():
        hold = hosts.holds.get(host)
        args += [host, budget, "" if hold is None else repr(hold)]
    return args


def _at_once(calls: Sequence[defer.Deferred]) -> defer.Deferred:
    """The results of calls made at once, in order, or the failure of the
    first that failed (:func:`_first_failure`)."""
    return defer.gatherResults(calls, consumeErrors=True).addErrback(_first_failure)


def _first_failure(failure):
    """The failure of the first of calls made at once (gatherResults wraps
    it), as one call would fail."""
    failure.trap(defer.FirstError)
    return failure.value.subFailure
