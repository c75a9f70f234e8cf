"""Every Redis key torque uses, named here and nowhere else:
:class:`Keys` for Python, :data:`LUA` (the prelude every script of
:mod:`torque.scripts` opens with) for the keys a script only learns as it
runs.  :mod:`torque.scripts` has the Lua scripts that change them.

The layout is public (docs/redis-keys.rst, which lists the task hash's
fields): other programs may add tasks by writing it directly.  With the default prefix ``torque:``:

``torque:task:<id>``               hash: the task
``torque:attempts:<id>``           list: the task's last attempts, newest
                                   first, each a JSON object
``torque:queue:<q>:due``           sorted set: id -> due time (Unix seconds)
``torque:queue:<q>:running``       sorted set: id -> lease end (Unix seconds)
``torque:queue:<q>:dead``          sorted set: id -> time it died
``torque:queue:<q>:name:<name>``   string: the id of the task named <name>
``torque:queue:<q>:paused``        string: present while the queue is paused
``torque:queue:<q>:stats``         hash: running totals ``delivered``, ``failed``
``torque:queue:<q>:rate``          hash: the ``--rate`` token bucket, ``tokens``
                                   and ``at``
``torque:queue:<q>:settings``      hash: the queue's own settings (``rate``,
                                   ``concurrency``, … see
                                   :mod:`torque.queue_settings`), each the
                                   decimal text of its value
``torque:queue:<q>:minute:<t>``    hash: ``delivered``, ``retried``, ``dead``
                                   in the minute starting at <t>; expires
``torque:queues``                  sorted set: every queue that holds or held a
                                   task, each scored 0 so that it is ordered
                                   by name (paged with ZRANGEBYLEX)
``torque:wake:<q>``                pub/sub channel: a due time, on every add
                                   (once per queue for adds stored together:
                                   their earliest); ``settings`` when the
                                   queue's settings changed
``torque:completion-key``          string: the key every node signs completion
                                   tokens with (:mod:`torque.completion`)
``torque:nodes``                   sorted set: node id -> its heartbeat's end
``torque:node:<id>``               hash: a live node (``id``, ``host``, ``pid``,
                                   ``version``, ``queues``, ``in_flight``,
                                   ``started_at``, ``seen_at``); expires
``torque:door:<door>``             hash: what a compatible front door keeps
                                   (SPEC 10), ``<key> -> text``: the Cloud
                                   Tasks door keeps its queues there

A task's state is *where its id is*: in ``due`` it is scheduled, in
``running`` a node holds a lease on it, in ``dead`` it is a dead letter; a
hash with ``delivered_at`` and no set is the hour-long record of a delivery.
Every change of state is one script of :mod:`torque.scripts`, so it is
atomic: two nodes can never both hold a task.
"""

import attrs

# The parts of every key name, used by :class:`Keys` below and by the Lua
# prelude (:data:`LUA`) that every script of :mod:`torque.scripts` opens with:
# nowhere else is a key named.
TASK = "task:"
ATTEMPTS = "attempts:"
QUEUE = "queue:"
DUE = "due"
RUNNING = "running"
DEAD = "dead"
NAME = "name:"
PAUSED = "paused"
RATE = "rate"
STATS = "stats"
SETTINGS = "settings"
MINUTE = "minute:"
QUEUES = "queues"
WAKE = "wake:"
NODES = "nodes"
COMPLETION_KEY = "completion-key"
NODE = "node:"
DOOR = "door:"

# The message on a queue's wake channel that says its settings changed.
SETTINGS_CHANGED = "settings"

# Seconds a per-minute counter outlives its minute: the dashboard charts the
# last few minutes, so two hours is plenty.
MINUTE_TTL = 7200


@attrs.frozen
class Keys:
    """Key names under one prefix; tests use a fresh prefix each."""

    prefix: str = "torque:"

    @property
    def task_prefix(self) -> str:
        return self.prefix + TASK

    def task(self, task_id: str) -> str:
        return self.task_prefix + task_id

    def attempts(self, task_id: str) -> str:
        return self.prefix + ATTEMPTS + task_id

    def queue_prefix(self, queue: str) -> str:
        return f"{self.prefix}{QUEUE}{queue}:"

    def due(self, queue: str) -> str:
        return self.queue_prefix(queue) + DUE

    def running(self, queue: str) -> str:
        return self.queue_prefix(queue) + RUNNING

    def dead(self, queue: str) -> str:
        return self.queue_prefix(queue) + DEAD

    def name(self, queue: str, name: str) -> str:
        return self.queue_prefix(queue) + NAME + name

    def paused(self, queue: str) -> str:
        return self.queue_prefix(queue) + PAUSED

    def rate(self, queue: str) -> str:
        return self.queue_prefix(queue) + RATE

    def stats(self, queue: str) -> str:
        return self.queue_prefix(queue) + STATS

    def settings(self, queue: str) -> str:
        return self.queue_prefix(queue) + SETTINGS

    def queue(self, queue: str) -> list[str]:
        """One queue's fixed keys, in the order the Lua prelude's
        ``K.queue_of`` reads them from ``KEYS``: due, running, dead, stats,
        paused, rate."""
        return [
            self.due(queue),
            self.running(queue),
            self.dead(queue),
            self.stats(queue),
            self.paused(queue),
            self.rate(queue),
        ]

    @property
    def queues(self) -> str:
        return self.prefix + QUEUES

    def wake(self, queue: str) -> str:
        return f"{self.prefix}{WAKE}{queue}"

    @property
    def completion_key(self) -> str:
        return self.prefix + COMPLETION_KEY

    @property
    def nodes(self) -> str:
        return self.prefix + NODES

    def node(self, node_id: str) -> str:
        return self.prefix + NODE + node_id

    def door(self, door: str) -> str:
        return self.prefix + DOOR + door


def _lua(text: str) -> str:
    return "'" + text + "'"


# The same names in Lua, for the keys a script only learns as it runs (the
# ids it pops, the queue a task hash names, the name a task holds, the
# minute of "now"); every fixed key comes in ``KEYS``.  ``pfx`` is the key
# prefix, ``qp`` a queue's key prefix.
LUA = f"""
local K = {{}}
function K.task(pfx, id) return pfx .. {_lua(TASK)} .. id end
function K.attempts(pfx, id) return pfx .. {_lua(ATTEMPTS)} .. id end
function K.queue_prefix(pfx, q) return pfx .. {_lua(QUEUE)} .. q .. ':' end
function K.name(qp, name) return qp .. {_lua(NAME)} .. name end
function K.minute(qp, at) return qp .. {_lua(MINUTE)} .. string.format('%d', at) end
function K.wake(pfx, q) return pfx .. {_lua(WAKE)} .. q end
function K.node(pfx, id) return pfx .. {_lua(NODE)} .. id end
-- A queue's keys: its fixed ones from KEYS[i..i+5] (as Keys.queue gives
-- them) when the caller knows the queue, with ``qp`` its key prefix (for its
-- name and minute keys); or (K.queue_named) from its name, for a queue
-- learned from a task hash.
function K.queue_of(keys, i, qp)
  return {{prefix = qp, due = keys[i], running = keys[i + 1], dead = keys[i + 2],
          stats = keys[i + 3], paused = keys[i + 4], rate = keys[i + 5]}}
end
function K.queue_named(pfx, q)
  local qp = K.queue_prefix(pfx, q)
  return {{prefix = qp, due = qp .. {_lua(DUE)}, running = qp .. {_lua(RUNNING)},
          dead = qp .. {_lua(DEAD)}, stats = qp .. {_lua(STATS)},
          paused = qp .. {_lua(PAUSED)}, rate = qp .. {_lua(RATE)}}}
end
"""
