"""Every Redis key torque uses, and every Lua script that changes them.

The layout is public (README.rst, "Redis key layout"): other programs may add
tasks by writing it directly.  With the default prefix ``torque:``:

``torque:task:<id>``               hash: the task (fields below)
``torque:queue:<q>:due``           sorted set: id -> due time (Unix seconds)
``torque:queue:<q>:running``       sorted set: id -> lease end (Unix seconds)
``torque:queue:<q>:dead``          sorted set: id -> time it died
``torque:queue:<q>:name:<name>``   string: the id of the task named <name>
``torque:queue:<q>:paused``        string: present while the queue is paused
``torque:queue:<q>:stats``         hash: running totals ``delivered``, ``failed``
``torque:queues``                  set: every queue name ever added to
``torque:wake:<q>``                pub/sub channel: a due time, on every add

A task's state is *where its id is*: in ``due`` it is scheduled, in
``running`` a node holds a lease on it, in ``dead`` it is a dead letter; a
hash with ``delivered_at`` and no set is the hour-long record of a delivery.
Every change of state is one script below, so it is atomic: two nodes can
never both hold a task.
"""

import attrs

TASK_FIELDS = (
    "queue",
    "url",
    "method",
    "body",
    "content_type",
    "headers",
    "name",
    "timeout",
    "max_errors",
    "created_at",
    "due_at",
    "attempts",
    "last_status",
    "last_error",
    "last_attempt_at",
    "delivered_at",
    "dead_at",
)


@attrs.frozen
class Keys:
    """Key names under one prefix; tests use a fresh prefix each."""

    prefix: str = "torque:"

    @property
    def task_prefix(self) -> str:
        return self.prefix + "task:"

    def task(self, task_id: str) -> str:
        return self.task_prefix + task_id

    def queue_prefix(self, queue: str) -> str:
        return f"{self.prefix}queue:{queue}:"

    def due(self, queue: str) -> str:
        return self.queue_prefix(queue) + "due"

    def running(self, queue: str) -> str:
        return self.queue_prefix(queue) + "running"

    def dead(self, queue: str) -> str:
        return self.queue_prefix(queue) + "dead"

    def name(self, queue: str, name: str) -> str:
        return self.queue_prefix(queue) + "name:" + name

    def paused(self, queue: str) -> str:
        return self.queue_prefix(queue) + "paused"

    def stats(self, queue: str) -> str:
        return self.queue_prefix(queue) + "stats"

    @property
    def queues(self) -> str:
        return self.prefix + "queues"

    def wake(self, queue: str) -> str:
        return f"{self.prefix}wake:{queue}"


# Shared by the scripts that can end a task's life.  ``qp`` is the queue's key
# prefix (``torque:queue:<q>:``): a dead task releases its name at once, so
# that a failed task never blocks a later one of the same name.
_BURY = """
local function bury(qp, key, id, now, status, err)
  redis.call('ZREM', qp .. 'due', id)
  redis.call('ZREM', qp .. 'running', id)
  redis.call('ZADD', qp .. 'dead', now, id)
  redis.call('HSET', key, 'dead_at', now, 'last_status', status,
             'last_error', err)
  local name = redis.call('HGET', key, 'name')
  if name and name ~= '' then
    local holder = qp .. 'name:' .. name
    if redis.call('GET', holder) == id then redis.call('DEL', holder) end
  end
  redis.call('HINCRBY', qp .. 'stats', 'failed', 1)
end
"""

ADD = """
-- Add a task, unless its name is taken by a live task.
-- KEYS[1] task hash   KEYS[2] due zset   KEYS[3] name key (or the task
-- hash again when unnamed)   KEYS[4] queues set
-- ARGV[1] id   ARGV[2] due_at   ARGV[3] queue   ARGV[4] 1 if named
-- ARGV[5] wake channel   ARGV[6] task key prefix   ARGV[7..] field, value...
-- Returns {id, 1} when added, {existing id, 0} for a duplicate name.
if ARGV[4] == '1' then
  local holder = redis.call('GET', KEYS[3])
  if holder and redis.call('EXISTS', ARGV[6] .. holder) == 1 then
    return {holder, 0}
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[4] == '1' then redis.call('SET', KEYS[3], ARGV[1]) end
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return {ARGV[1], 1}
"""

CLAIM = (
    _BURY
    + """
-- Lease up to ARGV[2] due tasks of one queue to the caller.
-- KEYS[1] due zset   KEYS[2] running zset   KEYS[3] paused flag
-- ARGV[1] now   ARGV[2] limit   ARGV[3] task key prefix
-- ARGV[4] queue key prefix   ARGV[5] default timeout   ARGV[6] lease margin
-- ARGV[7] default max_errors
-- Returns {next due, next lease end, {id, field, value, ...}, ...}; the
-- first two are scores ('' when the set is empty), for the caller's timer.
local now = tonumber(ARGV[1])
-- A lease that ran out belongs to a node that died mid-request: that attempt
-- counts, and the task is due again (or dead, if it was the last one).
local lost = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(lost) do
  local key = ARGV[3] .. id
  local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
  local max_errors = tonumber(redis.call('HGET', key, 'max_errors') or ARGV[7])
  local err = 'lease expired: the node died or lost Redis mid-request'
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[2], id)
  elseif attempts >= max_errors then
    bury(ARGV[4], key, id, now, '', err)
  else
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('HSET', key, 'due_at', now, 'last_error', err)
  end
end
local out = {'', ''}
if redis.call('EXISTS', KEYS[3]) == 0 then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now,
                         'LIMIT', 0, tonumber(ARGV[2]))
  for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    local key = ARGV[3] .. id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, 'attempts', 1)
      local timeout = tonumber(redis.call('HGET', key, 'timeout') or ARGV[5])
      -- The lease outlasts the request's own timeout, so a live node always
      -- records its outcome before another node may take the task.
      redis.call('ZADD', KEYS[2], now + timeout + tonumber(ARGV[6]), id)
      local task = redis.call('HGETALL', key)
      table.insert(task, 1, id)
      out[#out + 1] = task
    end
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lease = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
out[1] = head[2] or ''
out[2] = lease[2] or ''
return out
"""
)

SETTLE = (
    _BURY
    + """
-- Record the outcomes of a batch of attempts in one round trip.
-- KEYS[1] due zset   KEYS[2] running zset
-- ARGV[1] now   ARGV[2] task key prefix   ARGV[3] queue key prefix
-- ARGV[4] seconds a delivery record (and its name) is kept
-- then six per outcome: id, attempt, action ('done', 'retry' or 'dead'),
-- retry time, HTTP status ('' if none), error ('' if none).
-- An outcome whose attempt is no longer the task's latest (its lease ran out
-- and another node claimed it, or it was cancelled) is ignored.
-- Returns how many outcomes were applied.
local now = ARGV[1]
local qp = ARGV[3]
local applied = 0
for i = 5, #ARGV, 6 do
  local id, attempt, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'attempts') == attempt then
    applied = applied + 1
    local status, err = ARGV[i + 4], ARGV[i + 5]
    if action == 'done' then
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', qp .. 'dead', id)
      redis.call('HSET', key, 'delivered_at', now, 'last_status', status,
                 'last_attempt_at', now)
      redis.call('HDEL', key, 'body', 'headers')
      redis.call('EXPIRE', key, ARGV[4])
      local name = redis.call('HGET', key, 'name')
      if name and name ~= '' then
        redis.call('EXPIRE', qp .. 'name:' .. name, ARGV[4])
      end
      redis.call('HINCRBY', qp .. 'stats', 'delivered', 1)
    elseif action == 'retry' then
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZADD', KEYS[1], ARGV[i + 3], id)
      redis.call('HSET', key, 'due_at', ARGV[i + 3], 'last_status', status,
                 'last_error', err, 'last_attempt_at', now)
      redis.call('HINCRBY', qp .. 'stats', 'failed', 1)
    else
      redis.call('HSET', key, 'last_attempt_at', now)
      bury(qp, key, id, now, status, err)
    end
  end
end
return applied
"""
)

DESCRIBE = """
-- A task's fields and its state, which is where its id is.
-- KEYS[1] task hash   ARGV[1] id   ARGV[2] key prefix
-- Returns {state, field, value, ...} or an empty list.
local task = redis.call('HGETALL', KEYS[1])
if #task == 0 then return {} end
local queue = redis.call('HGET', KEYS[1], 'queue') or 'default'
local qp = ARGV[2] .. 'queue:' .. queue .. ':'
local state = 'scheduled'
if redis.call('ZSCORE', qp .. 'running', ARGV[1]) then
  state = 'running'
elseif redis.call('ZSCORE', qp .. 'dead', ARGV[1]) then
  state = 'dead'
elseif redis.call('HEXISTS', KEYS[1], 'delivered_at') == 1 then
  state = 'delivered'
end
table.insert(task, 1, state)
return task
"""

CANCEL = """
-- Delete a task wherever it is.  A running attempt finishes, but its outcome
-- finds no task and is dropped, so it is never retried.
-- KEYS[1] task hash   ARGV[1] id   ARGV[2] key prefix
-- Returns the state the task was in, or '' if there was no such task.
local queue = redis.call('HGET', KEYS[1], 'queue')
if not queue then return '' end
local qp = ARGV[2] .. 'queue:' .. queue .. ':'
local state = 'scheduled'
if redis.call('ZREM', qp .. 'running', ARGV[1]) == 1 then state = 'running' end
if redis.call('ZREM', qp .. 'dead', ARGV[1]) == 1 then state = 'dead' end
redis.call('ZREM', qp .. 'due', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'delivered_at') == 1 then state = 'delivered' end
local name = redis.call('HGET', KEYS[1], 'name')
if name and name ~= '' and redis.call('GET', qp .. 'name:' .. name) == ARGV[1] then
  redis.call('DEL', qp .. 'name:' .. name)
end
redis.call('DEL', KEYS[1])
return state
"""
