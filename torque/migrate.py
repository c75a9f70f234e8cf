"""Move a Redis from torque's old key layout to the current one.

    python -m torque.migrate --redis redis://host:6379 [--redis-prefix torque:]

The old layout (before every key of a queue carried its hash tag): tasks at
``<prefix>task:<id>`` and ``<prefix>attempts:<id>``, a queue's keys at
``<prefix>queue:<q>:…``, and (older still) a registry of queues kept as a
set.  The current one is :mod:`torque.keys`.  A node refuses to start on a
Redis that holds the old one (:func:`find_old_layout`) and names this
command; run it once, with every node stopped.

Every task moves into its queue's slot with the id ``<q>.<old id>``: its due
time, attempt history, dead letters and the names that point at it come
along; the queue's totals, settings, pause flag, rate bucket and per-minute
counts too.  A lease does not survive: a task that was running is due again
at once (its request may have been in flight: it may be delivered twice).
Each batch of tasks moves in one script (copy, then delete: a task is in the
old layout or the new, never half), so a run that stops half-way is simply
run again.  It runs on one Redis (or the primary behind Sentinel): a Redis
Cluster never held the old layout, whose scripts spanned slots.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import attrs
from twisted.internet import defer

from torque.connection import glob_escape
from torque.keys import Keys, task_id

# The old layout's names, kept here only to read it.
OLD_TASK = "task:"
OLD_ATTEMPTS = "attempts:"
OLD_QUEUE = "queue:"
# A queue's own keys that move as they are (their time to live kept).
QUEUE_KEYS = ("paused", "stats", "rate", "settings")
# Tasks one script call moves: each call holds Redis for about a millisecond.
BATCH = 500
# The start-up check's bound: SCAN calls, of keys each (it looks at 20,000
# keys of the keyspace at most, a few milliseconds of Redis); and seconds
# the check may take before it is tried again.
SCAN_CALLS = 20
SCAN_COUNT = 1000
CHECK_TIMEOUT = 5.0

COMMAND = "python -m torque.migrate --redis <url> --redis-prefix {prefix}"

# Move tasks of one queue from an old sorted set to a new one.
# KEYS[1] the old set   KEYS[2] the new set   then four per task: old hash,
# old history, new hash, new history
# ARGV[1] '1' when the tasks were running (they become due at ARGV[2], now)
# ARGV[2] now   then two per task: old id, new id
# Returns how many moved (a member whose hash is gone is dropped, as a claim
# would drop it).
_MOVE_TASKS = """
local running, now = ARGV[1] == '1', ARGV[2]
local moved = 0
for i = 3, #ARGV, 2 do
  local k = 2 + (i - 3) * 2 + 1
  local old, new = ARGV[i], ARGV[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], old)
  if score then
    if redis.call('EXISTS', KEYS[k]) == 1 then
      redis.call('RENAME', KEYS[k], KEYS[k + 2])
    end
    if redis.call('EXISTS', KEYS[k + 1]) == 1 then
      redis.call('RENAME', KEYS[k + 1], KEYS[k + 3])
    end
    if redis.call('EXISTS', KEYS[k + 2]) == 1 then
      if running then
        score = now
        redis.call('HDEL', KEYS[k + 2], 'waiting_until')
        redis.call('HSET', KEYS[k + 2], 'due_at', now)
      end
      redis.call('ZADD', KEYS[2], score, new)
      moved = moved + 1
    end
    redis.call('ZREM', KEYS[1], old)
  end
end
return moved
"""

# Move one key as it is (its time to live kept), if it is there.
# KEYS[1] old   KEYS[2] new   Returns 1 if it moved.
_MOVE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""

# Move a name: its value becomes the new id (ARGV[1] .. the old one).
# KEYS[1] old   KEYS[2] new   ARGV[1] '<q>.'   Returns 1 if it moved.
_MOVE_NAME = """
local id = redis.call('GET', KEYS[1])
if not id then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if string.sub(id, 1, #ARGV[1]) ~= ARGV[1] then id = ARGV[1] .. id end
redis.call('SET', KEYS[2], id)
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('DEL', KEYS[1])
return 1
"""

# The registry as a sorted set, every score 0 (an older torque kept a set).
# KEYS[1] the registry   Returns how many names it holds.
_REGISTRY = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  local names = redis.call('SMEMBERS', KEYS[1])
  redis.call('DEL', KEYS[1])
  for i = 1, #names, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #names) do
      args[#args + 1] = 0
      args[#args + 1] = names[j]
    end
    redis.call('ZADD', KEYS[1], unpack(args))
  end
end
return redis.call('ZCARD', KEYS[1])
"""


@attrs.frozen
class OldKeys:
    """The old layout's key names under one prefix."""

    prefix: str = "torque:"

    def task(self, task_id: str) -> str:
        return self.prefix + OLD_TASK + task_id

    def attempts(self, task_id: str) -> str:
        return self.prefix + OLD_ATTEMPTS + task_id

    def queue(self, queue: str, part: str) -> str:
        return f"{self.prefix}{OLD_QUEUE}{queue}:{part}"

    def queue_of(self, key: str) -> str | None:
        """The queue an old queue key belongs to."""
        head = self.prefix + OLD_QUEUE
        if not key.startswith(head):
            return None
        queue, colon, _ = key[len(head) :].partition(":")
        return queue if colon and queue else None


def refusal(found: str, prefix: str) -> str:
    """What a node says when it refuses to start on the old layout."""
    return (
        f"this Redis holds torque's old key layout ({found}); stop every node and run, "
        f"once: {COMMAND.format(prefix=prefix)} (docs/redis-keys.rst)"
    )


@defer.inlineCallbacks
def find_old_layout(redis, prefix: str = "torque:"):
    """A key of the old layout under ``prefix``, or ``None``.  Bounded, for
    a node's start: the registry's type and its first 100 queues' old keys,
    and ``SCAN_CALLS`` calls of ``SCAN`` (of ``SCAN_COUNT`` keys each) for
    old task hashes and old queue keys (written by hand, never
    registered)."""
    old, new = OldKeys(prefix), Keys(prefix)
    kind = yield redis.execute_command("TYPE", new.queues)
    if kind == "set":
        return f"{new.queues} is a set"
    if kind == "zset":
        queues = yield redis.execute_command("ZRANGE", new.queues, 0, 99)
        for queue in queues:
            for part in ("due", "running", "dead"):
                if (yield redis.execute_command("EXISTS", old.queue(queue, part))):
                    return old.queue(queue, part)
    pattern = glob_escape(prefix) + "[tq][au][se][ku]*"  # task: or queue:, and a few others
    cursor = "0"
    for _ in range(SCAN_CALLS):
        cursor, found = yield redis.execute_command(
            "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
        )
        for key in found:
            if key.startswith((old.task(""), prefix + OLD_QUEUE)):
                return key
        if str(cursor) == "0":
            break
    return None


def refuse_old_layout(redis, prefix: str, clock, refuse: Callable[[str], None]) -> None:
    """At a node's start: look for the old layout (:func:`find_old_layout`)
    until Redis answers (once a second, each look bounded), and call
    ``refuse`` with the message naming the migration if it is there."""

    def look():
        d = find_old_layout(redis, prefix)
        d.addTimeout(CHECK_TIMEOUT, clock)
        d.addCallbacks(found, lambda _: clock.callLater(1.0, look))

    def found(where):
        if where is not None:
            refuse(refusal(where, prefix))

    look()


@attrs.define
class Moved:
    """What a migration moved."""

    queues: dict[str, dict[str, int]] = attrs.field(factory=dict)
    records: int = 0  # task hashes in no set (delivery records)

    def count(self, queue: str, what: str, n: int = 1) -> None:
        counts = self.queues.setdefault(queue, {})
        counts[what] = counts.get(what, 0) + n

    def line(self, queue: str) -> str:
        counts = self.queues.get(queue, {})
        shown = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        return f"queue {queue}: {shown or 'nothing to move'}"


async def _scan(redis, pattern: str) -> list[str]:
    """Every key matching ``pattern`` (a glob), with SCAN."""
    keys, cursor = [], "0"
    while True:
        cursor, found = await redis.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        keys += found
        if str(cursor) == "0":
            return list(dict.fromkeys(keys))


async def migrate(redis, prefix: str, now: float, say: Callable[[str], None] = print) -> Moved:
    """Move everything of the old layout under ``prefix``; see the module."""
    old, new = OldKeys(prefix), Keys(prefix)
    moved = Moved()
    await redis.eval(_REGISTRY, [new.queues], [])
    queues = set(await redis.execute_command("ZRANGE", new.queues, 0, -1))
    old_queue_keys = await _scan(redis, glob_escape(prefix + OLD_QUEUE) + "*")
    queues |= {q for q in map(old.queue_of, old_queue_keys) if q}
    for queue in sorted(queues):
        for state, part in (("scheduled", "due"), ("running", "running"), ("dead", "dead")):
            target = "dead" if part == "dead" else "due"
            n = await _move_set(redis, old, new, queue, part, target, now)
            moved.count(queue, "scheduled" if part == "running" else state, n)
            if part == "running":
                moved.count(queue, "were running (due now)", n)
        names = [k for k in old_queue_keys if k.startswith(old.queue(queue, "name:"))]
        for key in names:
            name = key[len(old.queue(queue, "name:")) :]
            if await redis.eval(_MOVE_NAME, [key, new.name(queue, name)], [queue + "."]):
                moved.count(queue, "names")
        others = [old.queue(queue, part) for part in QUEUE_KEYS] + [
            k for k in old_queue_keys if k.startswith(old.queue(queue, "minute:"))
        ]
        for key in others:
            part = key[len(old.queue(queue, "")) :]
            if await redis.eval(_MOVE_KEY, [key, new.queue_prefix(queue) + part], []):
                moved.count(queue, "queue keys")
        await redis.execute_command("ZADD", new.queues, "NX", 0, queue)
        say(moved.line(queue))
    # What is left of the old tasks: records of deliveries (no set holds
    # them), or hashes written by hand and never put in a set.
    for key in await _scan(redis, glob_escape(old.task("")) + "*"):
        old_id = key[len(old.task("")) :]
        queue = await redis.execute_command("HGET", key, "queue") or "default"
        new_id = task_id(queue, old_id)
        if await redis.eval(_MOVE_KEY, [key, new.task(queue, new_id)], []):
            await redis.eval(_MOVE_KEY, [old.attempts(old_id), new.attempts(queue, new_id)], [])
            moved.records += 1
    if moved.records:
        say(f"{moved.records} task records in no queue's set (delivery records)")
    return moved


async def _move_set(redis, old: OldKeys, new: Keys, queue: str, part, target, now) -> int:
    """Move every task of one old set, a batch per script call."""
    source = old.queue(queue, part)
    destination = getattr(new, target)(queue)
    total = 0
    while True:
        ids = await redis.execute_command("ZRANGE", source, 0, BATCH - 1)
        if not ids:
            return total
        keys, args = [source, destination], ["1" if part == "running" else "0", repr(now)]
        for old_id in ids:
            new_id = task_id(queue, old_id)
            keys += [
                old.task(old_id),
                old.attempts(old_id),
                new.task(queue, new_id),
                new.attempts(queue, new_id),
            ]
            args += [old_id, new_id]
        total += await redis.eval(_MOVE_TASKS, keys, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m torque.migrate",
        description="Move a Redis from torque's old key layout to the current one "
        "(docs/redis-keys.rst). Stop every node first.",
    )
    parser.add_argument("--redis", required=True, help="redis://, rediss://, unix:// or "
                        "redis+sentinel:// URL, as a node's --redis")  # fmt: skip
    parser.add_argument("--redis-prefix", default="torque:", help="as the nodes' (torque:)")
    options = parser.parse_args(argv)

    from twisted.internet import task

    from torque.connection import connect_pool
    from torque.redis_url import parse_redis_url

    async def run(reactor):
        redis = connect_pool(parse_redis_url(options.redis), reactor=reactor)
        try:
            moved = await migrate(redis, options.redis_prefix, reactor.seconds())
            left = await find_old_layout(redis, options.redis_prefix)
        finally:
            await redis.disconnect()
        if not moved.queues and not moved.records:
            print("nothing to migrate: no key of the old layout under", options.redis_prefix)
        if left is not None:
            raise SystemExit(f"still left in the old layout: {left}")
        print("done: the nodes can start")

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main(sys.argv[1:])
