"""An in-memory task store: a test double for :class:`torque.store.RedisStore`.

It keeps the same data the Lua scripts keep (hashes of strings, sorted sets
as dicts of scores) so that the real ``Task.from_fields`` reads it, and
``tests/test_store.py`` holds it to the same contract as the Redis store.
Scheduler and API unit tests use it to run on a ``Clock`` with no I/O.
"""

from twisted.internet import defer

from torque.retry import Delivered, Retry
from torque.store import DELIVERED_TTL, Claim, StoreUnavailable
from torque.task import Task


class MemoryStore:
    def __init__(self, lease_margin: float = 30.0):
        self.lease_margin = lease_margin
        self.tasks: dict[str, dict[str, str]] = {}
        self.due: dict[str, dict[str, float]] = {}
        self.running: dict[str, dict[str, float]] = {}
        self.dead: dict[str, dict[str, float]] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.paused: set[str] = set()
        self.expires: dict[str, float] = {}
        self.available = True
        self.claims: list[tuple[str, float, int]] = []  # (queue, now, limit), for assertions
        self.settled: list[list] = []

    def _answer(self, result=None) -> defer.Deferred:
        if not self.available:
            return defer.fail(StoreUnavailable("Redis did not answer: test outage"))
        return defer.succeed(result)

    def _sets(self, queue: str):
        return (
            self.due.setdefault(queue, {}),
            self.running.setdefault(queue, {}),
            self.dead.setdefault(queue, {}),
        )

    def ping(self):
        return self._answer("PONG")

    def add(self, task: Task):
        if not self.available:
            return self._answer()
        if task.name:
            holder = self.names.get((task.queue, task.name))
            if holder in self.tasks:
                return self._answer((holder, False))
            self.names[(task.queue, task.name)] = task.id
        flat = task.to_fields()
        self.tasks[task.id] = dict(zip(flat[::2], flat[1::2], strict=True))
        self._sets(task.queue)[0][task.id] = task.due_at
        return self._answer((task.id, True))

    def _bury(self, queue, task_id, now, status, error):
        due, running, dead = self._sets(queue)
        due.pop(task_id, None)
        running.pop(task_id, None)
        dead[task_id] = now
        fields = self.tasks[task_id]
        fields.update(dead_at=repr(now), last_status=str(status), last_error=error)
        if self.names.get((queue, fields.get("name", ""))) == task_id:
            del self.names[(queue, fields["name"])]

    def claim(self, queue, now, limit, timeout, max_errors):
        if not self.available:
            return self._answer()
        self.claims.append((queue, now, limit))
        due, running, _ = self._sets(queue)
        for task_id in [i for i, end in sorted(running.items(), key=_score) if end <= now]:
            fields = self.tasks.get(task_id)
            error = "lease expired: the node died or lost Redis mid-request"
            if fields is None:
                del running[task_id]
            elif int(fields.get("attempts", 0)) >= int(fields.get("max_errors", max_errors)):
                self._bury(queue, task_id, now, "", error)
            else:
                del running[task_id]
                due[task_id] = now
                fields.update(due_at=repr(now), last_error=error)
        tasks = []
        if queue not in self.paused:
            for task_id, _ in sorted(due.items(), key=_score)[:limit]:
                if due[task_id] > now:
                    break
                del due[task_id]
                fields = self.tasks.get(task_id)
                if fields is None:
                    continue
                fields["attempts"] = str(int(fields.get("attempts", 0)) + 1)
                lease = float(fields.get("timeout", timeout)) + self.lease_margin
                running[task_id] = now + lease
                tasks.append(Task.from_fields(task_id, fields))
        heads = [min(s.values()) for s in (due, running) if s]
        return self._answer(Claim(tasks, min(heads) if heads else None))

    def settle(self, queue, outcomes, now):
        if not self.available:
            return self._answer()
        self.settled.append(list(outcomes))
        due, running, dead = self._sets(queue)
        applied = 0
        for task, decision in outcomes:
            fields = self.tasks.get(task.id)
            if fields is None or fields.get("attempts") != str(task.attempts):
                continue
            applied += 1
            status = "" if decision.status is None else str(decision.status)
            if isinstance(decision, Delivered):
                for s in (due, running, dead):
                    s.pop(task.id, None)
                fields.update(delivered_at=repr(now), last_status=status, last_attempt_at=repr(now))
                fields.pop("body", None)
                fields.pop("headers", None)
                self.expires[task.id] = now + DELIVERED_TTL
            elif isinstance(decision, Retry):
                running.pop(task.id, None)
                due[task.id] = decision.at
                fields.update(
                    due_at=repr(decision.at),
                    last_status=status,
                    last_error=decision.error,
                    last_attempt_at=repr(now),
                )
            else:
                fields["last_attempt_at"] = repr(now)
                self._bury(queue, task.id, now, status, decision.error)
        return self._answer(applied)

    def _status(self, task_id, fields):
        queue = fields.get("queue", "default")
        due, running, dead = self._sets(queue)
        if task_id in running:
            return "running"
        if task_id in dead:
            return "dead"
        if "delivered_at" in fields:
            return "delivered"
        return "scheduled"

    def describe(self, task_id):
        fields = self.tasks.get(task_id)
        if fields is None:
            return self._answer(None)
        return self._answer({"status": self._status(task_id, fields), **fields})

    def cancel(self, task_id):
        fields = self.tasks.pop(task_id, None)
        if fields is None:
            return self._answer("")
        status = self._status(task_id, fields)
        for s in self._sets(fields.get("queue", "default")):
            s.pop(task_id, None)
        queue, name = fields.get("queue", "default"), fields.get("name", "")
        if self.names.get((queue, name)) == task_id:
            del self.names[(queue, name)]
        return self._answer(status)

    def pause(self, queue):
        self.paused.add(queue)
        return self._answer()

    def resume(self, queue):
        self.paused.discard(queue)
        return self._answer()


def _score(item):
    return (item[1], item[0])
