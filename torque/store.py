"""The task store: tasks in Redis, every change of state one Lua script.

:class:`RedisStore` wraps a txredisapi connection (or pool).  Every call is
bounded by ``timeout``: txredisapi lets a command issued during an outage
wait for Redis forever, and a node must answer 503 instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from torque import scripts
from torque.coalesce import Coalescer
from torque.connection import down_reason, is_cluster
from torque.hosts import HostBudgets
from torque.keys import SETTINGS_CHANGED, Keys
from torque.queue_settings import SETTINGS, decode, encode
from torque.redis_errors import NOT_NOW, not_now
from torque.replicas import ReplicaGate
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
    Claim,
    DeadPage,
    Minute,
    NodeInfo,
    QueuePage,
    QueueStats,
    StoreUnavailable,
    TaskPage,
    history_entry,
    settled_entry,
)
from torque.task import Task

DEFAULT_KEYS = Keys()
# Tasks one script call purges, retries or deletes: each call holds Redis
# for about a millisecond, so other clients go on between them.
BATCH = 1000
# Tasks one coalesced add call takes at most (POST /tasks/batch's limit).
MAX_ADDS = 1000
# Seconds an add with --redis-wait-replicas waits for its replicas at most
# (Redis WAIT): on a healthy network they confirm in about a round trip.
WAIT_TIMEOUT = 1.0


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
        self._adds = Coalescer(clock, self.add_many, limit=MAX_ADDS)
        self.wait_replicas = wait_replicas
        self.replicas = ReplicaGate(clock, wait_replicas)
        # On a Redis Cluster the scripts publish with SPUBLISH.
        self._script = scripts.sharded if is_cluster(redis) else str

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
        together) go to Redis as one :meth:`add_many` call: one script call
        and one reply to parse instead of one each.

        :returns: a Deferred firing with ``(id, True)``, or with
            ``(existing id, False)`` when a live task already has its name.
        """
        reason = down_reason(self.redis)
        if reason is not None:
            return defer.fail(StoreUnavailable(reason))  # at once, as _call
        return self._adds.submit(task)

    def add_many(self, tasks: Sequence[Task]) -> defer.Deferred:
        """Store ``tasks`` in order, in one script call (one round trip),
        each as :meth:`add` would; one wake-up per queue.

        :returns: a Deferred firing with an ``(id, created)`` per task.
        """
        if not tasks:
            return defer.succeed([])
        k = self.keys
        keys = [k.queues]
        args: list = [k.prefix]
        for task in tasks:
            fields = task.to_fields()
            name_key = k.name(task.queue, task.name) if task.name else k.task(task.id)
            keys += [k.task(task.id), k.due(task.queue), name_key]
            args += [
                task.id,
                repr(task.due_at),
                task.queue,
                "1" if task.name else "0",
                k.wake(task.queue),
                len(fields),
                *fields,
            ]
        d = self._write(scripts.ADD, keys, args)
        return d.addCallback(_added)

    def _write(self, script: str, keys: Sequence[str], args: Sequence) -> defer.Deferred:
        """A write whose answer promises something to a client (an add, a
        cancel, a pause or resume): with ``wait_replicas``, answered only
        once that many replicas hold it.  Outcomes of deliveries don't
        wait: one lost in a failover means a delivery again, which
        at-least-once allows; bulk changes (purge, dead letters) neither,
        and are said again after a failover."""
        if self.wait_replicas:
            return self._replicated(script, keys, args)
        return self._eval(script, keys, args)

    def _replicated(self, script: str, keys: Sequence[str], args: Sequence) -> defer.Deferred:
        """Run ``script``, then ``WAIT`` for ``wait_replicas`` replicas to
        hold its writes, on the same connection (a pipeline takes one out of
        the pool for both: ``WAIT`` counts the writes of its own
        connection).  Fails with :class:`StoreUnavailable` when fewer
        replicas confirm in time: then the write may or may not survive a
        failover."""
        reason = down_reason(self.redis)
        if reason is not None:
            # Back, the primary may be a new one without its replicas yet:
            # probe before letting every add hold a connection for WAIT.
            self.replicas.shut(reason)
            return defer.fail(StoreUnavailable(reason))
        reason = self.replicas.refusal()
        if reason is not None:
            return defer.fail(StoreUnavailable(reason))
        work = defer.ensureDeferred(self._run_and_wait(script, list(keys), [str(a) for a in args]))
        # Bounded without cancelling: a pipeline cancelled while it waits
        # for a connection would lose that connection from the pool.
        bounded = defer.Deferred()

        def settle(result):
            if not bounded.called:
                bounded.callback(result)
            return None  # a late failure is already answered (timed out)

        def time_out():
            if not bounded.called:
                bounded.errback(defer.TimeoutError())

        def stop_timer(result):
            if timer.active():
                timer.cancel()
            return result

        def shut(failure):
            failure.trap(StoreUnavailable)
            self.replicas.shut(failure.getErrorMessage())
            return failure

        timer = self.clock.callLater(self.timeout, time_out)
        work.addBoth(settle)
        bounded.addBoth(stop_timer)
        return bounded.addErrback(self._unavailable).addErrback(shut)

    async def _run_and_wait(self, script: str, keys: list, args: list):
        script = self._script(script)
        sha = hashlib.sha1(script.encode()).hexdigest()
        wait_ms = int(min(WAIT_TIMEOUT, self.timeout / 2) * 1000)
        for command, body in (("EVALSHA", sha), ("EVAL", script)):
            pipe = await self.redis.pipeline()
            pipe.execute_command(command, body, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.wait_replicas, wait_ms)
            try:
                reply, replicas = await pipe.execute_pipeline()
            except defer.FirstError as e:
                error = e.subFailure.value
                if command == "EVALSHA" and str(error).startswith("NOSCRIPT"):
                    continue  # a new primary (or a restart): send the script itself
                raise error from None
            break
        self.replicas.observed(int(replicas))
        if int(replicas) < self.wait_replicas:
            raise StoreUnavailable(
                f"only {replicas} of {self.wait_replicas} Redis replicas confirmed the write "
                "in time (--redis-wait-replicas): it may or may not survive a failover; "
                "add it again (with a name, so that it is added once)"
            )
        return reply

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
        k = self.keys
        d = self._eval(
            scripts.CLAIM,
            k.queue(queue),
            [
                repr(now),
                limit,
                k.prefix,
                k.queue_prefix(queue),
                timeout,
                self.lease,
                max_errors,
                HISTORY_LENGTH,
                self.dead_max,
                self.dead_ttl,
                repr(float(rate)),
                *_host_args(hosts),
            ],
        )
        return d.addCallback(_claimed)

    def renew(self, held: Sequence[tuple[str, str, int]], now: float) -> defer.Deferred:
        """Renew the leases of ``held`` attempts, ``(queue, task id,
        attempt)`` in any queues, in one round trip (one script call): each
        lasts ``lease`` seconds from ``now`` again if it still holds.  Fires
        with the ids whose lease was not renewed."""
        if not held:
            return defer.succeed([])
        running: dict[str, int] = {}
        args: list = [repr(now + self.lease), self.keys.prefix]
        for queue, task_id, attempt in held:
            index = running.setdefault(self.keys.running(queue), len(running) + 1)
            args += [index, task_id, attempt]
        return self._eval(scripts.RENEW, list(running), args)

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
        for task, decision, *duration in outcomes:
            entry = settled_entry(task, decision, now, *duration)
            args += [task.id, task.attempts, *_settle_args(decision), json.dumps(entry)]
        return self._eval(scripts.SETTLE, k.queue(queue), args)

    def _settle_head(self, queue: str, now: float) -> list:
        """The arguments SETTLE and COMPLETE open with (their ARGV[1..7])."""
        k = self.keys
        prefix = k.queue_prefix(queue)
        return [
            repr(now),
            k.prefix,
            prefix,
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
        return self._eval(scripts.COMPLETE, k.queue(queue), args).addCallback(bool)

    def completion_key(self, candidate: str) -> defer.Deferred:
        """The key completion tokens are signed with, shared by every node:
        ``candidate`` if there was none yet."""
        k = self.keys
        return self._eval(scripts.COMPLETION_KEY, [k.completion_key], [candidate])

    def describe(self, task_id: str) -> defer.Deferred:
        """A task's fields plus ``status`` and ``history`` (its last
        attempts, newest first: see :func:`history_entry`), or ``None`` if
        there's no such task (or its delivery record has expired)."""
        k = self.keys
        d = self._eval(
            scripts.DESCRIBE, [k.task(task_id), k.attempts(task_id)], [task_id, k.prefix]
        )
        return d.addCallback(_described)

    def pause(self, queue: str, create: bool = False) -> defer.Deferred:
        """Stop every node from claiming the queue's tasks; adds go on.
        Fires with whether the queue exists (if not, nothing changed,
        unless ``create``: then it is made, paused)."""
        k = self.keys
        args = [queue, "1" if create else "0"]
        d = self._write(scripts.PAUSE, [k.queues, *k.queue(queue)], args)
        return d.addCallback(bool)

    def resume(self, queue: str) -> defer.Deferred:
        """Let nodes claim the queue's tasks again, and wake them.  Fires
        with whether the queue exists."""
        k = self.keys
        now = self.clock.seconds()
        d = self._write(
            scripts.RESUME,
            [k.queues, *k.queue(queue)],
            [queue, k.wake(queue), repr(now)],
        )
        return d.addCallback(bool)

    def delete_queue(self, queue: str) -> defer.Deferred:
        """Forget an empty queue.  Fires with ``(state, scheduled, running,
        dead)``: ``deleted``, ``unknown``, or ``busy`` while it holds tasks
        (nothing changed)."""
        k = self.keys
        keys = [k.queues, *k.queue(queue), k.settings(queue)]
        d = self._eval(scripts.DELETE_QUEUE, keys, [queue])
        return d.addCallback(lambda r: (r[0], int(r[1]), int(r[2]), int(r[3])))

    def get_settings(self, queue: str) -> defer.Deferred:
        """The queue's own settings, typed: only the fields it has."""
        d = self._call("execute_command", "HGETALL", self.keys.settings(queue))
        return d.addCallback(lambda flat: decode(_pairs(flat)))

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
        return d.addCallback(lambda flat: decode(_pairs(flat)))

    def queue_page(
        self,
        after: str | None,
        limit: int,
        now: float,
        minutes: int = RECENT_MINUTES,
        names_only: bool = False,
    ) -> defer.Deferred:
        """A :class:`QueuePage` of the registry: up to ``limit`` queues by
        name, after the name ``after`` (``None``: from the first), each a
        :class:`QueueStats` with ``minutes`` of recent counts (or only its
        name).  One round trip, whose cost is the page's alone."""
        d = self._eval(
            scripts.QUEUE_PAGE,
            [self.keys.queues],
            [self.keys.prefix, repr(now), minutes, after or "", limit, "1" if names_only else "0"],
        )

        def page(reply):
            rows = reply[1:] if names_only else [_queue_stats(row, now) for row in reply[1:]]
            return QueuePage(rows, reply[0] or None)

        return d.addCallback(page)

    def beat(self, node: NodeInfo, ttl: float) -> defer.Deferred:
        """Renew ``node``'s heartbeat: it counts as live for ``ttl`` seconds."""
        k = self.keys
        args = [node.id, ttl, repr(node.started_at), *node.to_fields()]
        return self._eval(scripts.BEAT, [k.nodes, k.node(node.id)], args)

    def leave(self, node_id: str) -> defer.Deferred:
        """Drop a node's heartbeat at once (it is stopping)."""
        k = self.keys
        return self._eval(scripts.LEAVE, [k.nodes, k.node(node_id)], [node_id])

    def live_nodes(self) -> defer.Deferred:
        """The nodes whose heartbeat holds, oldest first: :class:`NodeInfo`."""
        k = self.keys
        d = self._eval(scripts.LIVE_NODES, [k.nodes], [k.prefix, MAX_NODES])
        return d.addCallback(lambda rows: [NodeInfo.from_fields(_pairs(row)) for row in rows])

    def cancel(self, task_id: str, keep_name: float = 0.0) -> defer.Deferred:
        """Delete a task; fires with the state it was in, ``""`` if none.
        Its name stays taken ``keep_name`` seconds (0: freed at once)."""
        k = self.keys
        return self._write(
            scripts.CANCEL,
            [k.task(task_id), k.attempts(task_id)],
            [task_id, k.prefix, repr(float(keep_name))],
        )

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
        d = self._eval(
            scripts.RUN_NOW, [self.keys.task(task_id)], [task_id, self.keys.prefix, repr(now)]
        )
        return d.addCallback(lambda r: (r[0], r[1] or None, float(r[2]) if r[2] else None))

    def queue_stats(self, queues: Sequence[str], now: float) -> defer.Deferred:
        """Counts of ``queues`` in one round trip, each O(1) or O(log n) in
        Redis: a list of :class:`QueueStats`.  (Every queue: page through
        them with :meth:`queue_page`.)"""
        d = self._eval(
            scripts.QUEUE_STATS,
            [self.keys.queues],
            [self.keys.prefix, repr(now), RECENT_MINUTES, *queues],
        )
        return d.addCallback(lambda rows: [_queue_stats(row, now) for row in rows])

    @defer.inlineCallbacks
    def purge(self, queue: str):
        """Delete every scheduled task of ``queue``, ``batch`` at a time;
        running ones finish, dead letters stay.  Fires with how many."""
        k = self.keys
        purged = 0
        while True:
            removed, left = yield self._eval(
                scripts.PURGE, k.queue(queue), [k.prefix, k.queue_prefix(queue), self.batch]
            )
            purged += removed
            if removed < self.batch or not left:
                return purged

    def dead_letters(self, queue: str, offset: int = 0, limit: int = 50) -> defer.Deferred:
        """A :class:`DeadPage` of ``queue``'s dead letters, newest first."""
        k = self.keys
        d = self._eval(scripts.DEAD_PAGE, [k.dead(queue)], [k.prefix, offset, limit])
        return d.addCallback(_dead_page)

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
            scripts.TASK_PAGE, [key], [self.keys.prefix, limit, max_bytes, score, task_id]
        )
        return d.addCallback(_task_page, state)

    def retry_dead(self, queue: str, ids: Sequence[str] | None, now: float):
        """Make dead letters (``None``: all of them) due at ``now`` with a
        fresh budget of attempts, and wake the queue's schedulers.  Ids that
        aren't dead letters of ``queue`` are passed over.  Fires with how
        many moved."""
        k = self.keys
        args = [k.prefix, k.queue_prefix(queue), repr(now), k.wake(queue), HISTORY_LENGTH]
        return self._in_batches(scripts.RETRY_DEAD, k.queue(queue), args, ids)

    def delete_dead(self, queue: str, ids: Sequence[str] | None):
        """Delete dead letters (``None``: all of them); fires with how
        many.  Ids that aren't dead letters of ``queue`` are passed over."""
        k = self.keys
        args = [k.prefix, k.queue_prefix(queue)]
        return self._in_batches(scripts.DELETE_DEAD, k.queue(queue), args, ids)

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


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _added(reply) -> list[tuple[str, bool]]:
    return [(reply[i], bool(reply[i + 1])) for i in range(0, len(reply), 2)]


def _claimed(reply) -> Claim:
    heads = [float(score) for score in reply[:2] if score != ""]
    tasks = [Task.from_fields(item[0], _pairs(item[1:])) for item in reply[3:]]
    skipped, past, *waiting = reply[2]
    return Claim(tasks, min(heads) if heads else None, int(skipped), int(past), tuple(waiting))


def _host_args(hosts: HostBudgets | None) -> list:
    """The ``CLAIM`` script's arguments from ARGV[12] on."""
    if hosts is None:
        return []
    args = [hosts.default, hosts.max_skip, hosts.max_postpone, len(hosts.budgets)]
    for host, budget in hosts.budgets.items():
        hold = hosts.holds.get(host)
        args += [host, budget, "" if hold is None else repr(hold)]
    return args


def _described(reply) -> dict | None:
    if not reply:
        return None
    history = [_history(text) for text in reply[1]]
    return {"status": reply[0], "history": history, **_pairs(reply[2:])}


def _history(text: str) -> dict[str, Any]:
    """An entry as the scripts wrote it (Lua's cjson leaves out what is
    nil), with every key of :func:`history_entry`."""
    entry = json.loads(text)
    return history_entry(
        entry.get("at"),
        entry.get("outcome"),
        entry.get("attempt"),
        entry.get("duration"),
        entry.get("status"),
        entry.get("error"),
    )


def _queue_stats(row, now: float) -> QueueStats:
    name, scheduled, due, running, dead, delivered, failed, paused, head, known, recent = row
    oldest = now - float(head) if head != "" and float(head) <= now else 0.0
    minutes = tuple(
        Minute(int(recent[i]), int(recent[i + 1]), int(recent[i + 2]), int(recent[i + 3]))
        for i in range(0, len(recent), 4)
    )
    return QueueStats(
        name=name,
        scheduled=int(scheduled),
        due=int(due),
        running=int(running),
        dead=int(dead),
        delivered=int(delivered),
        failed=int(failed),
        oldest_due_age=oldest,
        paused=bool(int(paused)),
        known=bool(int(known)) or bool(int(scheduled) or int(running) or int(dead)),
        recent=minutes,
    )


def _dead_page(reply) -> DeadPage:
    letters = []
    for item in reply[1:]:
        fields = _pairs(item[2:])
        fields["dead_at"] = fields.get("dead_at") or item[1]
        letters.append((item[0], fields))
    return DeadPage(int(reply[0]), letters)


def _task_page(reply, state: str) -> TaskPage:
    tasks = []
    for item in reply[2:]:
        history = [_history(text) for text in item[1]]
        fields = _pairs(item[2:])
        # A waiting task keeps its lease in the running set (SPEC 4 "Later").
        status = "waiting" if "waiting_until" in fields else state
        tasks.append((item[0], {"status": status, "history": history, **fields}))
    after = (float(reply[0]), reply[1]) if reply[0] != "" else None
    return TaskPage(tasks, after)
