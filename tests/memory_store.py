"""An in-memory task store: a test double for :class:`torque.store.RedisStore`,
and like it a :class:`torque.storage.Store` (``tests/test_storage.py``).

It keeps the same data the Lua scripts keep (hashes of strings, sorted sets
as dicts of scores) so that the real ``Task.from_fields`` reads it, and
``tests/test_store.py`` holds it to the same contract as the Redis store.
Scheduler and API unit tests use it to run on a ``Clock`` with no I/O.

It must not be kinder than Redis: given a ``clock`` and a ``latency``, every
call changes the data at once (as a script runs whole) but its answer
arrives ``latency`` seconds later on that clock, so a scheduler test sees
the world move during a round trip, as it does against a real server.
"""

import contextlib
import math
from collections import defaultdict

from twisted.internet import defer

from torque.hosts import host_of
from torque.keys import queue_of_id
from torque.queue_settings import SETTINGS, decode, encode
from torque.retry import DEAD, DELIVERED, POSTPONED, RETRIED, WAITING
from torque.storage import (
    DEAD_MAX,
    DEAD_TTL,
    DELIVERED_TTL,
    HISTORY_LENGTH,
    LEASE,
    LISTED_STATES,
    PAGE_BYTES,
    RECENT_MINUTES,
    Claim,
    DeadPage,
    Minute,
    QueuePage,
    QueueStats,
    StoreUnavailable,
    TaskPage,
    history_entry,
    minute_buckets,
    settled_entry,
)
from torque.task import Task

LEASE_LOST = "lease expired: the node died or lost Redis mid-request"
NO_WORD = "no word from the handler by its deadline (Torque-Complete-Within)"


class MemoryStore:
    def __init__(
        self,
        lease: float = LEASE,
        dead_max: int = DEAD_MAX,
        dead_ttl: float = DEAD_TTL,
        clock=None,
        latency: float = 0.0,
    ):
        """
        :param clock: where answers are delayed (an ``IReactorTime``);
            needed when ``latency`` is not 0.
        :param latency: seconds from a call to its answer (0: at once).
        """
        if latency and clock is None:
            raise ValueError("a latency needs a clock")
        self.clock = clock
        self.latency = latency
        self.lease = lease
        self.renewals: list[list] = []  # each renew call's held attempts, for assertions
        self.dead_max = dead_max
        self.dead_ttl = dead_ttl
        self.tasks: dict[str, dict[str, str]] = {}  # as their hashes: no queue
        self.queue_of: dict[str, str] = {}  # task id -> the queue it was added to
        self.history: dict[str, list[dict]] = {}
        self.due: dict[str, dict[str, float]] = {}
        self.running: dict[str, dict[str, float]] = {}
        self.dead: dict[str, dict[str, float]] = {}
        self.names: dict[tuple[str, str], str] = {}
        # Names kept after their task was cancelled: (queue, name) -> (id,
        # until); with no clock they are kept for good.
        self.kept_names: dict[tuple[str, str], tuple[str, float]] = {}
        self.doors: dict[str, dict[str, str]] = {}
        self.paused: set[str] = set()
        self.buckets: dict[str, tuple[float, float]] = {}  # --rate: (tokens, at)
        self.settings: dict[str, dict[str, str]] = {}  # as the hash holds them
        self.settings_told: list[str] = []  # queues whose nodes were told of a change
        self.signing_key: str | None = None  # of completion tokens
        self.queues: set[str] = set()
        self.stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.minutes: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.expires: dict[str, float] = {}
        self.available = True
        self.claims: list[tuple[str, float, int]] = []  # (queue, now, limit), for assertions
        self.settled: list[list] = []
        self.nodes: dict[str, tuple] = {}  # id -> (NodeInfo, live until)
        self.now: float | None = None  # live_nodes' clock, when set

    def _answer(self, result=None) -> defer.Deferred:
        if not self.available:
            answer = defer.fail(StoreUnavailable("Redis did not answer in time"))
        else:
            answer = defer.succeed(result)
        if not self.latency:
            return answer
        late = defer.Deferred()
        self.clock.callLater(self.latency, answer.chainDeferred, late)
        return late

    @contextlib.contextmanager
    def at_once(self):
        """Answer without latency inside the block: for a test's own look
        at the data, which should not move the clock."""
        latency, self.latency = self.latency, 0.0
        try:
            yield self
        finally:
            self.latency = latency

    def _sets(self, queue: str):
        return (
            self.due.setdefault(queue, {}),
            self.running.setdefault(queue, {}),
            self.dead.setdefault(queue, {}),
        )

    def _count(self, queue, now, outcome, stat):
        self.stats[queue][stat] += 1
        self.minutes[(queue, int(math.floor(now / 60) * 60))][outcome] += 1

    def _remember(self, task_id, entry):
        history = self.history.setdefault(task_id, [])
        history.insert(0, entry)
        del history[HISTORY_LENGTH:]

    def _forget(self, queue, task_id):
        fields = self.tasks.pop(task_id, None) or {}
        self.queue_of.pop(task_id, None)
        self.history.pop(task_id, None)
        name = fields.get("name", "")
        if name and self.names.get((queue, name)) == task_id:
            del self.names[(queue, name)]

    def ping(self):
        return self._answer("PONG")

    def add(self, task: Task):
        if not self.available:
            return self._answer()
        return self._answer(self._add(task))

    def add_many(self, tasks):
        if not self.available:
            return self._answer()
        return self._answer([self._add(task) for task in tasks])

    def _add(self, task: Task):
        if task.name:
            holder = self.names.get((task.queue, task.name))
            if holder in self.tasks:
                return (holder, False)
            kept = self._kept_name(task.queue, task.name)
            if kept is not None:
                return (kept, False)
            self.names[(task.queue, task.name)] = task.id
        flat = task.to_fields()
        self.tasks[task.id] = dict(zip(flat[::2], flat[1::2], strict=True))
        self.queue_of[task.id] = task.queue
        self._sets(task.queue)[0][task.id] = task.due_at
        self.queues.add(task.queue)
        return (task.id, True)

    def _bury(self, queue, task_id, now, status, error):
        due, running, dead = self._sets(queue)
        due.pop(task_id, None)
        running.pop(task_id, None)
        dead[task_id] = now
        fields = self.tasks[task_id]
        fields.update(dead_at=repr(now), last_status=str(status), last_error=error)
        if self.names.get((queue, fields.get("name", ""))) == task_id:
            del self.names[(queue, fields["name"])]
        self._count(queue, now, DEAD, "failed")
        self._trim_dead(queue, now)

    def _trim_dead(self, queue, now):
        dead = self._sets(queue)[2]
        by_age = sorted(dead.items(), key=_score)
        old = [i for i, at in by_age if at < now - self.dead_ttl][:100]
        for task_id in old:
            del dead[task_id]
            self._forget(queue, task_id)
        over = len(dead) - self.dead_max
        for task_id, _ in sorted(dead.items(), key=_score)[: min(max(over, 0), 100)]:
            del dead[task_id]
            self._forget(queue, task_id)

    def claim(self, queue, now, limit, timeout, max_errors, rate=0.0, hosts=None):
        if not self.available:
            return self._answer()
        self.claims.append((queue, now, limit))
        if rate > 0:
            capacity = max(rate, 1)
            tokens, at = self.buckets.get(queue, (capacity, now))
            tokens = min(capacity, tokens + max(0, now - at) * rate)
            limit = min(limit, math.floor(tokens))
        self._trim_dead(queue, now)
        due, running, _ = self._sets(queue)
        for task_id in [i for i, end in sorted(running.items(), key=_score) if end <= now]:
            fields = self.tasks.get(task_id)
            if fields is None:
                del running[task_id]
                continue
            attempts = int(fields.get("attempts", 0))
            lost = NO_WORD if fields.pop("waiting_until", None) is not None else LEASE_LOST
            if attempts >= int(fields.get("max_errors", max_errors)):
                self._remember(task_id, history_entry(now, DEAD, attempts, error=lost))
                fields["last_attempt_at"] = repr(now)
                self._bury(queue, task_id, now, "", lost)
            else:
                self._remember(task_id, history_entry(now, RETRIED, attempts, error=lost))
                del running[task_id]
                due[task_id] = now
                fields.update(
                    due_at=repr(now),
                    last_status="",
                    last_error=lost,
                    last_attempt_at=repr(now),
                )
                self._count(queue, now, RETRIED, "failed")
        tasks = []
        skipped = past = 0
        waiting = []

        def take(task_id, fields):
            fields["attempts"] = str(int(fields.get("attempts", 0)) + 1)
            running[task_id] = now + self.lease
            tasks.append(Task.from_fields(task_id, {**fields, "queue": queue}))

        if queue not in self.paused and limit > 0 and hosts is None:
            for task_id, _ in sorted(due.items(), key=_score)[:limit]:
                if due[task_id] > now:
                    break
                del due[task_id]
                fields = self.tasks.get(task_id)
                if fields is not None:
                    take(task_id, fields)
        elif queue not in self.paused and limit > 0:
            budget = dict(hosts.budgets)
            holds = {h: at for h, at in hosts.holds.items() if at > now}
            postponed = 0
            for task_id, score in sorted(due.items(), key=_score):
                if score > now:
                    break
                if len(tasks) >= limit or skipped > hosts.max_skip:
                    break
                if postponed >= hosts.max_postpone:
                    break
                fields = self.tasks.get(task_id)
                if fields is None:
                    del due[task_id]
                    continue
                host = host_of(fields.get("url", ""))
                left = budget.get(host, hosts.default)
                if host in holds:
                    due[task_id] = holds[host]
                    fields["due_at"] = repr(holds[host])
                    postponed += 1
                elif left <= 0:
                    skipped += 1
                    if host not in waiting:
                        waiting.append(host)
                else:
                    budget[host] = left - 1
                    del due[task_id]
                    take(task_id, fields)
                    past += skipped > 0
        heads = [min(s.values()) for s in (due, running) if s]
        if rate > 0:
            tokens -= len(tasks)
            self.buckets[queue] = (tokens, now)
            if due and min(due.values()) <= now and tokens < 1:
                heads[0] = now + (1 - tokens) / rate
        return self._answer(
            Claim(tasks, min(heads) if heads else None, skipped, past, tuple(waiting))
        )

    def renew(self, held, now):
        if not self.available:
            return self._answer()
        self.renewals.append(list(held))
        lost = []
        for queue, task_id, attempt in held:
            running = self.running.setdefault(queue, {})
            fields = self.tasks.get(task_id)
            held_now = fields and fields.get("attempts") == str(attempt)
            if task_id in running and held_now and "waiting_until" not in fields:
                running[task_id] = now + self.lease
            else:
                lost.append(task_id)
        return self._answer(lost)

    def settle(self, queue, outcomes, now):
        if not self.available:
            return self._answer()
        self.settled.append(list(outcomes))
        applied = 0
        for task, decision, *duration in outcomes:
            fields = self.tasks.get(task.id)
            if fields is None or fields.get("attempts") != str(task.attempts):
                continue
            applied += 1
            self._settle_one(queue, fields, task, decision, now, *duration)
        return self._answer(applied)

    def complete(self, queue, task, decision, now):
        if not self.available:
            return self._answer()
        fields = self.tasks.get(task.id)
        running = self._sets(queue)[1]
        if (
            fields is None
            or fields.get("attempts") != str(task.attempts)
            or "waiting_until" not in fields
            or task.id not in running
        ):
            return self._answer(False)
        self._settle_one(queue, fields, task, decision, now)
        return self._answer(True)

    def completion_key(self, candidate):
        if not self.available:
            return self._answer()
        if self.signing_key is None:
            self.signing_key = candidate
        return self._answer(self.signing_key)

    def _settle_one(self, queue, fields, task, decision, now, *duration):
        due, running, dead = self._sets(queue)
        self._remember(task.id, settled_entry(task, decision, now, *duration))
        status = "" if decision.status is None else str(decision.status)
        fields.pop("waiting_until", None)
        if decision.label == DELIVERED:
            for s in (due, running, dead):
                s.pop(task.id, None)
            fields.update(delivered_at=repr(now), last_status=status, last_attempt_at=repr(now))
            for field in ("body", "headers", "last_error"):
                fields.pop(field, None)
            self.expires[task.id] = now + DELIVERED_TTL
            self._count(queue, now, DELIVERED, "delivered")
        elif decision.label == RETRIED:
            running.pop(task.id, None)
            due[task.id] = decision.at
            fields.update(
                due_at=repr(decision.at),
                last_status=status,
                last_error=decision.error,
                last_attempt_at=repr(now),
            )
            self._count(queue, now, RETRIED, "failed")
        elif decision.label == POSTPONED:
            running.pop(task.id, None)
            due[task.id] = decision.at
            fields["attempts"] = str(int(fields["attempts"]) - 1)
            fields.update(due_at=repr(decision.at), last_status=status, last_attempt_at=repr(now))
            fields.pop("last_error", None)
        elif decision.label == WAITING:
            running[task.id] = decision.until
            fields.update(
                waiting_until=repr(decision.until),
                last_status=status,
                last_attempt_at=repr(now),
            )
            fields.pop("last_error", None)
        else:
            fields["last_attempt_at"] = repr(now)
            self._bury(queue, task.id, now, status, decision.error)

    def _status(self, task_id, fields):
        queue = self.queue_of[task_id]
        due, running, dead = self._sets(queue)
        if task_id in running:
            return "waiting" if "waiting_until" in fields else "running"
        if task_id in dead:
            return "dead"
        if "delivered_at" in fields:
            return "delivered"
        return "scheduled"

    def _by_id(self, task_id):
        """A task's fields found by its id alone, as Redis finds them: in
        the queue its id names (torque.keys.queue_of_id), or not at all."""
        fields = self.tasks.get(task_id)
        if fields is None or queue_of_id(task_id) != self.queue_of[task_id]:
            return None
        return fields

    def describe(self, task_id):
        fields = self._by_id(task_id)
        if fields is None:
            return self._answer(None)
        history = [dict(entry) for entry in self.history.get(task_id, [])]
        status = self._status(task_id, fields)
        queue = self.queue_of[task_id]
        return self._answer({"status": status, "history": history, **fields, "queue": queue})

    def _kept_name(self, queue, name):
        """The cancelled id that still keeps ``name``, or ``None``."""
        kept = self.kept_names.get((queue, name))
        if kept is None:
            return None
        task_id, until = kept
        if self.clock is not None and self.clock.seconds() >= until:
            del self.kept_names[(queue, name)]
            return None
        return task_id

    def cancel(self, task_id, keep_name=0.0):
        if not self.available:
            return self._answer()
        fields = self._by_id(task_id)
        if fields is None:
            return self._answer("")
        status = self._status(task_id, fields)
        if status == "delivered":
            return self._answer(status)
        queue = self.queue_of[task_id]
        for s in self._sets(queue):
            s.pop(task_id, None)
        name = fields.get("name", "")
        if keep_name > 0 and name and self.names.get((queue, name)) == task_id:
            now = self.clock.seconds() if self.clock is not None else 0.0
            self.kept_names[(queue, name)] = (task_id, now + keep_name)
        self._forget(queue, task_id)
        return self._answer(status)

    def named(self, queue, name):
        if not self.available:
            return self._answer()
        holder = self.names.get((queue, name))
        return self._answer(holder if holder is not None else self._kept_name(queue, name))

    def door_records(self, door):
        return self._answer(dict(self.doors.get(door, {})))

    def door_record(self, door, key):
        return self._answer(self.doors.get(door, {}).get(key))

    def put_door_record(self, door, key, text, only_new=False):
        if not self.available:
            return self._answer()
        records = self.doors.setdefault(door, {})
        if only_new and key in records:
            return self._answer(False)
        records[key] = text
        return self._answer(True)

    def delete_door_record(self, door, key):
        if not self.available:
            return self._answer()
        return self._answer(self.doors.get(door, {}).pop(key, None) is not None)

    def run_now(self, task_id, now):
        if not self.available:
            return self._answer()
        fields = self._by_id(task_id)
        if fields is None:
            return self._answer(("", None, None))
        queue = self.queue_of[task_id]
        status = self._status(task_id, fields)
        if status != "scheduled":
            return self._answer((status, queue, None))
        due = self._sets(queue)[0]
        due_at = min(due.get(task_id, now), now)
        due[task_id] = due_at
        fields["due_at"] = repr(due_at)
        return self._answer(("scheduled", queue, due_at))

    def _exists(self, queue):
        return queue in self.queues or any(self._sets(queue))

    def pause(self, queue, create=False):
        if not self.available:
            return self._answer()
        if not self._exists(queue) and not create:
            return self._answer(False)
        self.paused.add(queue)
        self.queues.add(queue)
        return self._answer(True)

    def resume(self, queue):
        if not self.available:
            return self._answer()
        self.paused.discard(queue)
        return self._answer(self._exists(queue))

    def delete_queue(self, queue):
        if not self.available:
            return self._answer()
        counts = tuple(len(s) for s in self._sets(queue))
        if any(counts):
            return self._answer(("busy", *counts))
        known = queue in self.queues or queue in self.paused or queue in self.stats
        self.queues.discard(queue)
        self.paused.discard(queue)
        self.stats.pop(queue, None)
        self.buckets.pop(queue, None)
        known = self.settings.pop(queue, None) is not None or known
        return self._answer(("deleted" if known else "unknown", 0, 0, 0))

    def get_settings(self, queue):
        return self._answer(decode(self.settings.get(queue, {})))

    def set_settings(self, queue, changes):
        if not self.available:
            return self._answer()
        unknown = sorted(set(changes) - set(SETTINGS))
        if unknown:
            return defer.fail(ValueError(f"unknown queue settings: {', '.join(unknown)}"))
        fields = self.settings.setdefault(queue, {})
        for name, value in changes.items():
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = encode(value)
        if not fields:
            del self.settings[queue]  # as Redis drops an empty hash
        self.settings_told.append(queue)
        return self._answer(decode(fields))

    def queue_page(self, after, limit, now, minutes=RECENT_MINUTES, names_only=False):
        if not self.available:
            return self._answer()
        names = sorted(q for q in self.queues if after is None or q > after)
        page, more = names[:limit], len(names) > limit
        if not names_only:
            page = self._stats(page, now, minutes)
        return self._answer(QueuePage(page, page_end(page) if more else None))

    def beat(self, node, ttl):
        if not self.available:
            return self._answer()
        self.nodes[node.id] = (node, node.seen_at + ttl)
        return self._answer(1)

    def leave(self, node_id):
        if not self.available:
            return self._answer()
        self.nodes.pop(node_id, None)
        return self._answer(1)

    def live_nodes(self):
        """Live by the clock of the last heartbeat written (Redis expires
        the real ones by its own clock)."""
        if not self.available:
            return self._answer()
        now = max((node.seen_at for node, _ in self.nodes.values()), default=0.0)
        now = self.now if self.now is not None else now
        live = [(n.started_at, n) for n, until in self.nodes.values() if until > now]
        return self._answer([n for _, n in sorted(live, key=lambda x: x[0])])

    def queue_stats(self, queues, now):
        if not self.available:
            return self._answer()
        return self._answer(self._stats(queues, now))

    def _stats(self, queues, now, minutes=RECENT_MINUTES):
        rows = []
        for queue in queues:
            due, running, dead = self._sets(queue)
            head = min(due.values()) if due else None
            recent = tuple(
                Minute(at, **self.minutes.get((queue, at), {}))
                for at in (minute_buckets(now, minutes) if minutes else [])
            )
            stats = self.stats.get(queue, {})
            rows.append(
                QueueStats(
                    name=queue,
                    scheduled=len(due),
                    due=sum(1 for at in due.values() if at <= now),
                    running=len(running),
                    dead=len(dead),
                    delivered=stats.get("delivered", 0),
                    failed=stats.get("failed", 0),
                    oldest_due_age=now - head if head is not None and head <= now else 0.0,
                    paused=queue in self.paused,
                    known=queue in self.queues or bool(due or running or dead),
                    recent=recent,
                )
            )
        return rows

    def purge(self, queue):
        if not self.available:
            return self._answer()
        due = self._sets(queue)[0]
        purged = len(due)
        for task_id in list(due):
            del due[task_id]
            self._forget(queue, task_id)
        return self._answer(purged)

    def dead_letters(self, queue, offset=0, limit=50):
        if not self.available:
            return self._answer()
        dead = self._sets(queue)[2]
        newest = sorted(dead.items(), key=_score, reverse=True)[offset : offset + limit]
        letters = []
        for task_id, at in newest:
            fields = {**self.tasks.get(task_id, {}), "queue": queue}
            fields["dead_at"] = fields.get("dead_at") or repr(at)
            letters.append((task_id, fields))
        return self._answer(DeadPage(len(dead), letters))

    def task_page(self, queue, state, after=None, limit=50, max_bytes=PAGE_BYTES):
        kind = LISTED_STATES[state]
        if kind is None:  # as the Redis store: no set, so no call
            return defer.succeed(TaskPage([], None))
        if not self.available:
            return self._answer()
        members = sorted(
            (score, task_id) for task_id, score in getattr(self, kind).get(queue, {}).items()
        )
        if after is not None:
            members = [m for m in members if m > (float(after[0]), after[1])]
        tasks, taken, size = [], [], 0
        for score, task_id in members[: limit + 1]:
            fields = self.tasks.get(task_id)
            body = len((fields or {}).get("body", "").encode())
            if len(taken) == limit or (taken and size + body > max_bytes):
                return self._answer(TaskPage(tasks, taken[-1]))
            taken.append((score, task_id))
            size += body
            if fields is not None:
                history = [dict(entry) for entry in self.history.get(task_id, [])]
                status = "waiting" if "waiting_until" in fields else state
                shown = {"status": status, "history": history, **fields, "queue": queue}
                tasks.append((task_id, shown))
        return self._answer(TaskPage(tasks, None))

    def _dead_ids(self, queue, ids):
        dead = self._sets(queue)[2]
        if ids is None:
            return [task_id for task_id, _ in sorted(dead.items(), key=_score)]
        return [task_id for task_id in dict.fromkeys(ids) if task_id in dead]

    def retry_dead(self, queue, ids, now):
        if not self.available:
            return self._answer()
        due, _, dead = self._sets(queue)
        moved = 0
        for task_id in self._dead_ids(queue, ids):
            del dead[task_id]
            fields = self.tasks.get(task_id)
            if fields is None:
                continue
            moved += 1
            due[task_id] = now
            fields.update(due_at=repr(now), attempts="0")
            fields.pop("dead_at", None)
            name = fields.get("name", "")
            if name and self.names.get((queue, name)) not in self.tasks:
                self.names[(queue, name)] = task_id
            self._remember(task_id, history_entry(now, "requeued"))
        return self._answer(moved)

    def delete_dead(self, queue, ids):
        if not self.available:
            return self._answer()
        dead = self._sets(queue)[2]
        doomed = self._dead_ids(queue, ids)
        for task_id in doomed:
            del dead[task_id]
            self._forget(queue, task_id)
        return self._answer(len(doomed))


def _score(item):
    return (item[1], item[0])


def page_end(page) -> str:
    last = page[-1]
    return last if isinstance(last, str) else last.name
