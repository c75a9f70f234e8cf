"""Every Lua script that changes torque's keys (:mod:`torque.keys`): a
change of a task's state is one script, so it is atomic, and two nodes can
never both hold a task.  Each script opens with its ``KEYS``/``ARGV``
legend; :class:`torque.store.RedisStore` is the only caller.
"""

from torque.keys import MINUTE_TTL

# Shared by every script that ends, records or drops a task.  ``cfg`` holds
# the key prefix (``pfx``) and the limits: ``history`` attempts kept per
# task, and at most ``dead_max`` dead letters per queue, none older than
# ``dead_age`` seconds.  ``qp`` is the queue's key prefix.
_COMMON = (
    """
local function count(qp, now, field)
  local bucket = qp .. 'minute:' .. string.format('%d', math.floor(now / 60) * 60)
  redis.call('HINCRBY', bucket, field, 1)
  redis.call('EXPIRE', bucket, """
    + str(MINUTE_TTL)
    + """)
end

-- Push one entry (JSON text) on a task's attempt history, keeping the newest.
local function remember(cfg, id, entry)
  local list = cfg.pfx .. 'attempts:' .. id
  redis.call('LPUSH', list, entry)
  redis.call('LTRIM', list, 0, cfg.history - 1)
end

-- Delete a task's hash and history, and free its name if it holds it.
local function forget(cfg, qp, id)
  local key = cfg.pfx .. 'task:' .. id
  local name = redis.call('HGET', key, 'name')
  if name and name ~= '' then
    local holder = qp .. 'name:' .. name
    if redis.call('GET', holder) == id then redis.call('DEL', holder) end
  end
  redis.call('DEL', key, cfg.pfx .. 'attempts:' .. id)
end

local function drop_dead(cfg, qp, ids)
  for _, id in ipairs(ids) do
    redis.call('ZREM', qp .. 'dead', id)
    forget(cfg, qp, id)
  end
end

-- The cap on dead letters, oldest first.  At most 100 go per call, so even
-- a lowered cap never blocks Redis for long; every burial and every claim
-- trims, so the set converges on the cap.
local function trim_dead(cfg, qp, now)
  local dead = qp .. 'dead'
  drop_dead(cfg, qp, redis.call('ZRANGEBYSCORE', dead, '-inf',
                                '(' .. (now - cfg.dead_age), 'LIMIT', 0, 100))
  local over = redis.call('ZCARD', dead) - cfg.dead_max
  if over > 0 then
    drop_dead(cfg, qp, redis.call('ZRANGE', dead, 0, math.min(over, 100) - 1))
  end
end

-- A dead task releases its name at once, so that a failed task never
-- blocks a later one of the same name.
local function bury(cfg, qp, key, id, now, status, err)
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
  count(qp, tonumber(now), 'dead')
  trim_dead(cfg, qp, tonumber(now))
end
"""
)


_REGISTRY = """
-- The queue registry is a sorted set, every score 0, so that it is ordered by
-- name and paged with ZRANGEBYLEX.  Before it was a set: the first script to
-- meet such a set turns it into the sorted set (once; 25,000 names take a
-- few milliseconds).
local function registry(key)
  if redis.call('TYPE', key).ok == 'set' then
    local names = redis.call('SMEMBERS', key)
    redis.call('DEL', key)
    for i = 1, #names, 1000 do
      local args = {}
      for j = i, math.min(i + 999, #names) do
        args[#args + 1] = 0
        args[#args + 1] = names[j]
      end
      redis.call('ZADD', key, unpack(args))
    end
  end
  return key
end

-- A queue exists while it is in the registry or holds a task (tasks written
-- to Redis directly may not have registered their queue).
local function holds(qp)
  return redis.call('ZCARD', qp .. 'due') + redis.call('ZCARD', qp .. 'running')
         + redis.call('ZCARD', qp .. 'dead')
end
"""

ADD = (
    _REGISTRY
    + """
-- Add a task, unless its name is taken by a live task.
-- KEYS[1] task hash   KEYS[2] due zset   KEYS[3] name key (or the task
-- hash again when unnamed)   KEYS[4] queue registry
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
redis.call('ZADD', registry(KEYS[4]), 'NX', 0, ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return {ARGV[1], 1}
"""
)

CLAIM = (
    _COMMON
    + """
-- Lease up to ARGV[2] due tasks of one queue to the caller.
-- KEYS[1] due zset   KEYS[2] running zset   KEYS[3] paused flag
-- KEYS[4] rate bucket (hash: tokens, at)
-- ARGV[1] now   ARGV[2] limit   ARGV[3] task key prefix
-- ARGV[4] queue key prefix   ARGV[5] default timeout   ARGV[6] lease margin
-- ARGV[7] default max_errors   ARGV[8] key prefix   ARGV[9] history length
-- ARGV[10] dead letters kept at most   ARGV[11] their maximum age
-- ARGV[12] dispatches per second for the queue, 0 for no limit: a token
-- bucket in KEYS[4], so every node claiming from the queue shares it
-- Returns {next due, next lease end, {id, field, value, ...}, ...}; the
-- first two are scores ('' when the set is empty), for the caller's timer:
-- when the rate holds back due tasks, "next due" is the next token's time.
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local rate = tonumber(ARGV[12])
local tokens = 0
if rate > 0 then
  -- A second's worth of dispatches at most (one, below one a second).
  local bucket = redis.call('HMGET', KEYS[4], 'tokens', 'at')
  local capacity = math.max(rate, 1)
  tokens = tonumber(bucket[1]) or capacity
  local elapsed = math.max(0, now - (tonumber(bucket[2]) or now))
  tokens = math.min(capacity, tokens + elapsed * rate)
  limit = math.min(limit, math.floor(tokens))
end
local cfg = {pfx = ARGV[8], history = tonumber(ARGV[9]),
             dead_max = tonumber(ARGV[10]), dead_age = tonumber(ARGV[11])}
-- Dead letters past their age go here too, not only when another task dies:
-- a queue where nothing dies any more still sheds its old ones.  Paused or
-- not, every claim does it; it costs O(log n) when nothing is that old.
trim_dead(cfg, ARGV[4], now)
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
    remember(cfg, id, cjson.encode({attempt = attempts, at = now,
                                    outcome = 'dead', error = err}))
    redis.call('HSET', key, 'last_attempt_at', ARGV[1])
    bury(cfg, ARGV[4], key, id, ARGV[1], '', err)
  else
    remember(cfg, id, cjson.encode({attempt = attempts, at = now,
                                    outcome = 'retried', error = err}))
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    -- No answer came: an earlier attempt's status is no longer the last.
    redis.call('HSET', key, 'due_at', ARGV[1], 'last_status', '', 'last_error', err,
               'last_attempt_at', ARGV[1])
    redis.call('HINCRBY', ARGV[4] .. 'stats', 'failed', 1)
    count(ARGV[4], now, 'retried')
  end
end
local out = {'', ''}
if redis.call('EXISTS', KEYS[3]) == 0 and limit > 0 then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
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
if rate > 0 then
  tokens = tokens - (#out - 2)
  redis.call('HSET', KEYS[4], 'tokens', string.format('%.17g', tokens), 'at', ARGV[1])
  redis.call('EXPIRE', KEYS[4], 3600)
  if head[2] and tonumber(head[2]) <= now and tokens < 1 then
    out[1] = string.format('%.17g', now + (1 - tokens) / rate)
  end
end
return out
"""
)

SETTLE = (
    _COMMON
    + """
-- Record the outcomes of a batch of attempts in one round trip.
-- KEYS[1] due zset   KEYS[2] running zset
-- ARGV[1] now   ARGV[2] key prefix   ARGV[3] queue key prefix
-- ARGV[4] seconds a delivery record (and its name) is kept
-- ARGV[5] history length   ARGV[6] dead letters kept at most
-- ARGV[7] their maximum age
-- then seven per outcome: id, attempt, action (the decision's label,
-- torque.retry: 'delivered', 'retried' or 'dead'),
-- retry time, HTTP status ('' if none), error ('' if none), and the entry
-- for the task's attempt history (JSON text).
-- An outcome whose attempt is no longer the task's latest (its lease ran out
-- and another node claimed it, or it was cancelled) is ignored.
-- Returns how many outcomes were applied.
local now = ARGV[1]
local qp = ARGV[3]
local cfg = {pfx = ARGV[2], history = tonumber(ARGV[5]),
             dead_max = tonumber(ARGV[6]), dead_age = tonumber(ARGV[7])}
local applied = 0
for i = 8, #ARGV, 7 do
  local id, attempt, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = cfg.pfx .. 'task:' .. id
  if redis.call('HGET', key, 'attempts') == attempt then
    applied = applied + 1
    local status, err = ARGV[i + 4], ARGV[i + 5]
    remember(cfg, id, ARGV[i + 6])
    if action == 'delivered' then
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', qp .. 'dead', id)
      redis.call('HSET', key, 'delivered_at', now, 'last_status', status,
                 'last_attempt_at', now)
      -- An earlier attempt's error is no longer the task's last word.
      redis.call('HDEL', key, 'body', 'headers', 'last_error')
      redis.call('EXPIRE', key, ARGV[4])
      redis.call('EXPIRE', cfg.pfx .. 'attempts:' .. id, ARGV[4])
      local name = redis.call('HGET', key, 'name')
      if name and name ~= '' then
        local holder = qp .. 'name:' .. name
        if redis.call('GET', holder) == id then redis.call('EXPIRE', holder, ARGV[4]) end
      end
      redis.call('HINCRBY', qp .. 'stats', 'delivered', 1)
      count(qp, tonumber(now), 'delivered')
    elseif action == 'retried' then
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZADD', KEYS[1], ARGV[i + 3], id)
      redis.call('HSET', key, 'due_at', ARGV[i + 3], 'last_status', status,
                 'last_error', err, 'last_attempt_at', now)
      redis.call('HINCRBY', qp .. 'stats', 'failed', 1)
      count(qp, tonumber(now), 'retried')
    else
      redis.call('HSET', key, 'last_attempt_at', now)
      bury(cfg, qp, key, id, now, status, err)
    end
  end
end
return applied
"""
)

DESCRIBE = """
-- A task's fields, its state (which is where its id is) and its history.
-- KEYS[1] task hash   ARGV[1] id   ARGV[2] key prefix
-- Returns {state, {history entry, ...}, field, value, ...} or an empty list.
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
table.insert(task, 1, redis.call('LRANGE', ARGV[2] .. 'attempts:' .. ARGV[1], 0, -1))
table.insert(task, 1, state)
return task
"""

CANCEL = """
-- Delete a task wherever it is.  A running attempt finishes, but its outcome
-- finds no task and is dropped, so it is never retried.  A delivered task is
-- left alone: its record keeps its name (idempotency) for its hour.
-- KEYS[1] task hash   ARGV[1] id   ARGV[2] key prefix
-- Returns the state the task was in, or '' if there was no such task.
local queue = redis.call('HGET', KEYS[1], 'queue')
if not queue then return '' end
if redis.call('HEXISTS', KEYS[1], 'delivered_at') == 1 then return 'delivered' end
local qp = ARGV[2] .. 'queue:' .. queue .. ':'
local state = 'scheduled'
if redis.call('ZREM', qp .. 'running', ARGV[1]) == 1 then state = 'running' end
if redis.call('ZREM', qp .. 'dead', ARGV[1]) == 1 then state = 'dead' end
redis.call('ZREM', qp .. 'due', ARGV[1])
local name = redis.call('HGET', KEYS[1], 'name')
if name and name ~= '' and redis.call('GET', qp .. 'name:' .. name) == ARGV[1] then
  redis.call('DEL', qp .. 'name:' .. name)
end
redis.call('DEL', KEYS[1], ARGV[2] .. 'attempts:' .. ARGV[1])
return state
"""

RUN_NOW = """
-- Make a scheduled task due now (one already overdue keeps its place).
-- KEYS[1] task hash   ARGV[1] id   ARGV[2] key prefix   ARGV[3] now
-- Returns {state, queue, due_at}: state '' when there is no such task, and
-- the task is only moved when the state is 'scheduled'.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', '', ''} end
local queue = redis.call('HGET', KEYS[1], 'queue') or 'default'
local qp = ARGV[2] .. 'queue:' .. queue .. ':'
if redis.call('ZSCORE', qp .. 'running', ARGV[1]) then return {'running', queue, ''} end
if redis.call('ZSCORE', qp .. 'dead', ARGV[1]) then return {'dead', queue, ''} end
if redis.call('HEXISTS', KEYS[1], 'delivered_at') == 1 then
  return {'delivered', queue, ''}
end
local due = ARGV[3]
local score = redis.call('ZSCORE', qp .. 'due', ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[3]) then due = score end
redis.call('ZADD', qp .. 'due', due, ARGV[1])
redis.call('HSET', KEYS[1], 'due_at', due)
redis.call('PUBLISH', ARGV[2] .. 'wake:' .. queue, due)
return {'scheduled', queue, due}
"""

PAUSE = (
    _REGISTRY
    + """
-- KEYS[1] paused flag   KEYS[2] queue registry   ARGV[1] queue
-- ARGV[2] queue key prefix
-- Every claim reads the flag, so every node stops at its next claim.
-- Returns 0, changing nothing, for a queue that does not exist: a pause must
-- not create one.
local known = redis.call('ZSCORE', registry(KEYS[2]), ARGV[1])
if not known and holds(ARGV[2]) == 0 then return 0 end
if not known then redis.call('ZADD', KEYS[2], 0, ARGV[1]) end
redis.call('SET', KEYS[1], '1')
return 1
"""
)

RESUME = (
    _REGISTRY
    + """
-- KEYS[1] paused flag   KEYS[2] queue registry   ARGV[1] wake channel
-- ARGV[2] now   ARGV[3] queue   ARGV[4] queue key prefix
-- The wake-up makes every node's scheduler claim at once.
-- Returns 0 for a queue that does not exist.
if not redis.call('ZSCORE', registry(KEYS[2]), ARGV[3]) and holds(ARGV[4]) == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""
)

DELETE_QUEUE = (
    _REGISTRY
    + """
-- Forget an empty queue: its place in the registry, its pause flag, its
-- running totals and rate bucket (its per-minute counts expire by
-- themselves).  A queue that holds a task is left alone.
-- KEYS[1] queue registry   ARGV[1] queue   ARGV[2] queue key prefix
-- Returns {state, scheduled, running, dead}: state 'deleted', 'busy' (it
-- holds tasks; the counts say which) or 'unknown'.
local qp = ARGV[2]
local counts = {redis.call('ZCARD', qp .. 'due'), redis.call('ZCARD', qp .. 'running'),
                redis.call('ZCARD', qp .. 'dead')}
if counts[1] + counts[2] + counts[3] > 0 then
  return {'busy', counts[1], counts[2], counts[3]}
end
local known = redis.call('ZREM', registry(KEYS[1]), ARGV[1])
local extra = redis.call('DEL', qp .. 'paused', qp .. 'stats', qp .. 'rate')
if known == 0 and extra == 0 then return {'unknown', 0, 0, 0} end
return {'deleted', 0, 0, 0}
"""
)

_QUEUE_ROW = """
-- One queue's counts, each one O(1) or O(log n) command: no task is read.
-- Returns {name, scheduled, due, running, dead, delivered, failed, paused,
-- earliest due time or '', known, {minute, delivered, retried, dead, ...}},
-- the last ``minutes`` minutes oldest first.
local function queue_row(pfx, reg, q, now, minutes)
  local qp = pfx .. 'queue:' .. q .. ':'
  local stats = redis.call('HMGET', qp .. 'stats', 'delivered', 'failed')
  local head = redis.call('ZRANGE', qp .. 'due', 0, 0, 'WITHSCORES')
  local first = math.floor(now / 60) * 60 - 60 * (minutes - 1)
  local recent = {}
  for m = 0, minutes - 1 do
    local at = string.format('%d', first + 60 * m)
    local c = redis.call('HMGET', qp .. 'minute:' .. at, 'delivered', 'retried', 'dead')
    recent[#recent + 1] = at
    recent[#recent + 1] = c[1] or '0'
    recent[#recent + 1] = c[2] or '0'
    recent[#recent + 1] = c[3] or '0'
  end
  return {
    q,
    redis.call('ZCARD', qp .. 'due'),
    redis.call('ZCOUNT', qp .. 'due', '-inf', string.format('%.17g', now)),
    redis.call('ZCARD', qp .. 'running'),
    redis.call('ZCARD', qp .. 'dead'),
    stats[1] or '0',
    stats[2] or '0',
    redis.call('EXISTS', qp .. 'paused'),
    head[2] or '',
    redis.call('ZSCORE', reg, q) and 1 or 0,
    recent,
  }
end
"""

QUEUE_STATS = (
    _REGISTRY
    + _QUEUE_ROW
    + """
-- Counts of the queues named.
-- KEYS[1] queue registry   ARGV[1] key prefix   ARGV[2] now
-- ARGV[3] minutes of recent counts   ARGV[4..] queue names
-- Returns one row (see queue_row) per queue, in the order given.
local reg = registry(KEYS[1])
local out = {}
for i = 4, #ARGV do
  out[#out + 1] = queue_row(ARGV[1], reg, ARGV[i], tonumber(ARGV[2]), tonumber(ARGV[3]))
end
return out
"""
)

QUEUE_PAGE = (
    _REGISTRY
    + _QUEUE_ROW
    + """
-- A page of the registry's queues, by name, with their counts: the cost is
-- the page's, whatever the number of queues.
-- KEYS[1] queue registry   ARGV[1] key prefix   ARGV[2] now
-- ARGV[3] minutes of recent counts   ARGV[4] the page starts after this
-- name ('' from the first)   ARGV[5] queues per page   ARGV[6] '1' for the
-- names only (no counts)
-- Returns {next cursor ('' on the last page), row or name, ...}.
local reg = registry(KEYS[1])
local limit = tonumber(ARGV[5])
local from = ARGV[4] == '' and '-' or '(' .. ARGV[4]
local names = redis.call('ZRANGEBYLEX', reg, from, '+', 'LIMIT', 0, limit + 1)
local out = {''}
if #names > limit then
  names[#names] = nil
  out[1] = names[#names]
end
for _, q in ipairs(names) do
  if ARGV[6] == '1' then
    out[#out + 1] = q
  else
    out[#out + 1] = queue_row(ARGV[1], reg, q, tonumber(ARGV[2]), tonumber(ARGV[3]))
  end
end
return out
"""
)

BEAT = """
-- A node's heartbeat: its hash, which expires unless renewed (Redis's own
-- clock decides, so the nodes' clocks need not agree), and its id in the
-- index of nodes.
-- KEYS[1] node index   KEYS[2] node hash   ARGV[1] id   ARGV[2] seconds the
-- heartbeat lasts   ARGV[3] when the node started (its place in the index)
-- ARGV[4..] field, value, ...
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2])))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

LEAVE = """
-- KEYS[1] node index   KEYS[2] node hash   ARGV[1] id
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

LIVE_NODES = """
-- The nodes whose heartbeat has not expired; the index forgets the others.
-- KEYS[1] node index   ARGV[1] node key prefix   ARGV[2] nodes at most
-- Returns {{field, value, ...}, ...}, oldest first.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local node = redis.call('HGETALL', ARGV[1] .. id)
  if #node == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    out[#out + 1] = node
  end
end
return out
"""

PURGE = (
    _COMMON
    + """
-- Delete a batch of a queue's scheduled tasks, earliest due first; the
-- caller repeats until it is done, so Redis is never blocked for long.
-- KEYS[1] due zset   ARGV[1] key prefix   ARGV[2] queue key prefix
-- ARGV[3] batch size
-- Returns {tasks deleted, tasks left in the due set}.
local cfg = {pfx = ARGV[1]}
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
for _, id in ipairs(ids) do forget(cfg, ARGV[2], id) end
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return {#ids, redis.call('ZCARD', KEYS[1])}
"""
)

DEAD_PAGE = """
-- A page of a queue's dead letters, newest first.
-- KEYS[1] dead zset   ARGV[1] task key prefix   ARGV[2] offset   ARGV[3] limit
-- Returns {total, {id, dead_at, field, value, ...}, ...}.
local offset = tonumber(ARGV[2])
local ids = redis.call('ZREVRANGE', KEYS[1], offset, offset + tonumber(ARGV[3]) - 1,
                       'WITHSCORES')
local out = {redis.call('ZCARD', KEYS[1])}
for i = 1, #ids, 2 do
  local task = redis.call('HGETALL', ARGV[1] .. ids[i])
  table.insert(task, 1, ids[i + 1])
  table.insert(task, 1, ids[i])
  out[#out + 1] = task
end
return out
"""

RETRY_DEAD = (
    _COMMON
    + """
-- Move dead letters back to the due set, due now, with a fresh budget of
-- attempts (their history keeps the old ones).
-- KEYS[1] dead zset   KEYS[2] due zset
-- ARGV[1] key prefix   ARGV[2] queue key prefix   ARGV[3] now
-- ARGV[4] wake channel   ARGV[5] history length   ARGV[6] batch size
-- ARGV[7..] ids (none: the oldest batch of the dead letters)
-- Returns {dead letters moved, dead letters left}.
local cfg = {pfx = ARGV[1], history = tonumber(ARGV[5])}
local qp = ARGV[2]
local ids = {}
for i = 7, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[6]) - 1) end
local moved = 0
for _, id in ipairs(ids) do
  local key = cfg.pfx .. 'task:' .. id
  if redis.call('ZREM', KEYS[1], id) == 1 and redis.call('EXISTS', key) == 1 then
    moved = moved + 1
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    redis.call('HSET', key, 'due_at', ARGV[3], 'attempts', '0')
    redis.call('HDEL', key, 'dead_at')
    -- Its name was freed when it died: take it back unless a live task has.
    local name = redis.call('HGET', key, 'name')
    if name and name ~= '' then
      local holder = redis.call('GET', qp .. 'name:' .. name)
      if not holder or redis.call('EXISTS', cfg.pfx .. 'task:' .. holder) == 0 then
        redis.call('SET', qp .. 'name:' .. name, id)
      end
    end
    remember(cfg, id, cjson.encode({at = tonumber(ARGV[3]), outcome = 'requeued'}))
  end
end
if moved > 0 then redis.call('PUBLISH', ARGV[4], ARGV[3]) end
return {moved, redis.call('ZCARD', KEYS[1])}
"""
)

DELETE_DEAD = (
    _COMMON
    + """
-- Delete dead letters (tasks and histories).
-- KEYS[1] dead zset   ARGV[1] key prefix   ARGV[2] queue key prefix
-- ARGV[3] batch size   ARGV[4..] ids (none: the oldest batch)
-- Returns {dead letters deleted, dead letters left}.
local cfg = {pfx = ARGV[1]}
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1) end
local deleted = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    deleted = deleted + 1
    forget(cfg, ARGV[2], id)
  end
end
return {deleted, redis.call('ZCARD', KEYS[1])}
"""
)

TASK_PAGE = """
-- A page of the tasks in one of a queue's sorted sets, in the set's own
-- order (score, then id), starting just after a position (score, id).
-- KEYS[1] the set (due, running or dead)   ARGV[1] key prefix
-- ARGV[2] tasks at most   ARGV[3] bytes of bodies a page carries at most
-- (past them the page ends early; it always holds one task)
-- ARGV[4] the position's score ('' for the first page)   ARGV[5] its id
-- Returns {next score, next id, {id, {history entry, ...}, field, value,
-- ...}, ...}; the next position is '' '' on the last page.
-- Every step is O(log n) or the page's own size: where the page starts is
-- found by rank, never by walking the set, even through a million tasks of
-- one score (a bulk add with one eta).  So is a position whose task left the
-- set (claimed, delivered, cancelled) since the previous page was read.
local set, limit, budget = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- Redis orders members of one score byte by byte (memcmp); Lua's own '<'
-- follows the server's locale, so the bytes are compared here.
local function at_most(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end
local start = 0
if ARGV[4] ~= '' then
  local score, id = ARGV[4], ARGV[5]
  start = redis.call('ZCOUNT', set, '-inf', '(' .. score)
  local stop = start + redis.call('ZCOUNT', set, score, score)
  -- The first member of this score whose id sorts after the position's.
  while start < stop do
    local middle = math.floor((start + stop) / 2)
    if at_most(redis.call('ZRANGE', set, middle, middle)[1], id) then
      start = middle + 1
    else
      stop = middle
    end
  end
end
-- One more than the page, to know whether another page follows.
local members = redis.call('ZRANGE', set, start, start + limit, 'WITHSCORES')
local out = {'', ''}
local taken, bytes, last = 0, 0, nil
for i = 1, #members, 2 do
  local id = members[i]
  local key = ARGV[1] .. 'task:' .. id
  local size = redis.call('HSTRLEN', key, 'body')
  if taken == limit or (taken > 0 and bytes + size > budget) then
    out[1], out[2] = members[last + 1], members[last]
    break
  end
  taken, bytes, last = taken + 1, bytes + size, i
  local task = redis.call('HGETALL', key)
  -- A set member without its hash (a half-written hand-made task) is
  -- passed over, but still counts: a page's work stays bounded.
  if #task > 0 then
    table.insert(task, 1, redis.call('LRANGE', ARGV[1] .. 'attempts:' .. id, 0, -1))
    table.insert(task, 1, id)
    out[#out + 1] = task
  end
end
return out
"""
