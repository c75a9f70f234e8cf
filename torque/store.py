"""The task store: tasks in Redis, every change of state one Lua script.

:class:`RedisStore` wraps a txredisapi connection (or pool).  Every call is
bounded by ``timeout``: txredisapi lets a command issued during an outage
wait for Redis forever, and a node must answer 503 instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from torque import keys as scripts
from torque.keys import Keys
from torque.retry import Decision, Delivered, Retry
from torque.task import Task

# How long a delivery's record (and its task name) outlives it.
DELIVERED_TTL = 3600
DEFAULT_KEYS = Keys()


class StoreUnavailable(Exception):
    """Redis did not answer in time, or the connection is gone."""


@attrs.frozen
class Claim:
    """Tasks leased to the caller, and when the queue next needs a look
    (the earliest due time or lease end), or ``None`` if it is empty."""

    tasks: list[Task]
    next_at: float | None


class RedisStore:
    """Tasks and queues in Redis.

    :param redis: a txredisapi connection handler (lazy pool).
    :param clock: times the calls out.
    :param timeout: seconds a call may take before it fails with
        :class:`StoreUnavailable`.
    :param lease_margin: seconds a lease outlasts its task's timeout.
    """

    def __init__(
        self,
        redis,
        clock: IReactorTime,
        keys: Keys = DEFAULT_KEYS,
        timeout: float = 5.0,
        lease_margin: float = 30.0,
    ):
        self.redis = redis
        self.clock = clock
        self.keys = keys
        self.timeout = timeout
        self.lease_margin = lease_margin

    def _call(self, method: str, *args) -> defer.Deferred:
        d = defer.maybeDeferred(getattr(self.redis, method), *args)
        d.addTimeout(self.timeout, self.clock)
        d.addErrback(self._unavailable)
        return d

    def _eval(self, script: str, keys: Sequence[str], args: Sequence) -> defer.Deferred:
        return self._call("eval", script, list(keys), [str(a) for a in args])

    @staticmethod
    def _unavailable(failure):
        failure.trap(defer.TimeoutError, txredisapi.ConnectionError, ConnectionError)
        raise StoreUnavailable(f"Redis did not answer: {failure.getErrorMessage()}")

    def ping(self) -> defer.Deferred:
        return self._call("ping")

    def add(self, task: Task) -> defer.Deferred:
        """Store ``task`` and wake the queue's schedulers.

        :returns: a Deferred firing with ``(id, True)``, or with
            ``(existing id, False)`` when a live task already has its name.
        """
        k = self.keys
        name_key = k.name(task.queue, task.name) if task.name else k.task(task.id)
        d = self._eval(
            scripts.ADD,
            [k.task(task.id), k.due(task.queue), name_key, k.queues],
            [
                task.id,
                repr(task.due_at),
                task.queue,
                "1" if task.name else "0",
                k.wake(task.queue),
                k.task_prefix,
                *task.to_fields(),
            ],
        )
        return d.addCallback(lambda reply: (reply[0], bool(reply[1])))

    def claim(
        self, queue: str, now: float, limit: int, timeout: float, max_errors: int
    ) -> defer.Deferred:
        """Lease up to ``limit`` due tasks of ``queue``; a :class:`Claim`.

        :param timeout: the node's request timeout, for tasks without their
            own; a lease lasts a task's timeout plus ``lease_margin``.
        :param max_errors: the node's limit, for tasks without their own:
            a lost lease on the last attempt buries the task.
        """
        k = self.keys
        d = self._eval(
            scripts.CLAIM,
            [k.due(queue), k.running(queue), k.paused(queue)],
            [
                repr(now),
                limit,
                k.task_prefix,
                k.queue_prefix(queue),
                timeout,
                self.lease_margin,
                max_errors,
            ],
        )
        return d.addCallback(_claimed)

    def settle(self, queue: str, outcomes: Sequence[tuple[Task, Decision]], now: float):
        """Record decisions on claimed tasks in one round trip.

        :returns: a Deferred firing with how many were applied; a decision
            on an attempt that is no longer the task's latest is dropped.
        """
        k = self.keys
        args = [repr(now), k.task_prefix, k.queue_prefix(queue), DELIVERED_TTL]
        for task, decision in outcomes:
            args += [task.id, task.attempts, *_settle_args(decision)]
        return self._eval(scripts.SETTLE, [k.due(queue), k.running(queue)], args)

    def describe(self, task_id: str) -> defer.Deferred:
        """A task's fields plus ``status``, or ``None`` if there's no such
        task (or its delivery record has expired)."""
        d = self._eval(scripts.DESCRIBE, [self.keys.task(task_id)], [task_id, self.keys.prefix])
        return d.addCallback(_described)

    def pause(self, queue: str) -> defer.Deferred:
        """Stop every node from claiming the queue's tasks; adds go on."""
        return self._call("set", self.keys.paused(queue), "1")

    def resume(self, queue: str) -> defer.Deferred:
        return self._call("delete", self.keys.paused(queue))

    def cancel(self, task_id: str) -> defer.Deferred:
        """Delete a task; fires with the state it was in, ``""`` if none."""
        return self._eval(scripts.CANCEL, [self.keys.task(task_id)], [task_id, self.keys.prefix])


def _settle_args(decision: Decision) -> list:
    if isinstance(decision, Delivered):
        return ["done", "", decision.status, ""]
    status = "" if decision.status is None else decision.status
    action = "retry" if isinstance(decision, Retry) else "dead"
    at = repr(decision.at) if isinstance(decision, Retry) else ""
    return [action, at, status, decision.error]


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _claimed(reply) -> Claim:
    heads = [float(score) for score in reply[:2] if score != ""]
    tasks = [Task.from_fields(item[0], _pairs(item[1:])) for item in reply[2:]]
    return Claim(tasks, min(heads) if heads else None)


def _described(reply) -> dict | None:
    if not reply:
        return None
    return {"status": reply[0], **_pairs(reply[1:])}
