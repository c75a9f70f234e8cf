"""Every Redis key torque uses, named here and nowhere else:
:class:`Keys` for Python, :data:`LUA` (the prelude every script of
:mod:`torque.scripts` opens with) for the keys a script only learns as it
runs.  :mod:`torque.scripts` has the Lua scripts that change them.

The layout is public (docs/redis-keys.rst, which lists the task hash's
fields): other programs may add tasks by writing it directly.  It is the
same on one Redis, behind Sentinel and on a Redis Cluster.  Every key of a
queue carries the queue's name as a hash tag, ``{q}``, so a queue lives in
one hash slot (on one primary of a cluster), and a task id carries its
queue, ``<q>.<token>`` (``.`` is in neither the queue alphabet nor a
token's), so the slot of ``GET /tasks/<id>`` is known from the id alone.
With the default prefix ``torque:``:

``torque:{q}:task:<id>``           hash: the task
``torque:{q}:attempts:<id>``       list: the task's last attempts, newest
                                   first, each a JSON object
``torque:{q}:due``                 sorted set: id -> due time (Unix seconds)
``torque:{q}:running``             sorted set: id -> lease end (Unix seconds)
``torque:{q}:dead``                sorted set: id -> time it died
``torque:{q}:name:<name>``         string: the id of the task named <name>
``torque:{q}:paused``              string: present while the queue is paused
``torque:{q}:stats``               hash: running totals ``delivered``, ``failed``
``torque:{q}:rate``                hash: the ``--rate`` token bucket, ``tokens``
                                   and ``at``
``torque:{q}:settings``            hash: the queue's own settings (``rate``,
                                   ``concurrency``, … see
                                   :mod:`torque.queue_settings`), each the
                                   decimal text of its value
``torque:{q}:minute:<t>``          hash: ``delivered``, ``retried``, ``dead``
                                   in the minute starting at <t>; expires
``torque:{q}:wake``                pub/sub channel: a due time, on every add
                                   (once per queue for adds stored together:
                                   their earliest); ``settings`` when the
                                   queue's settings changed

Records of no one queue, which no script touches (plain commands, so that a
script never spans two slots):

``torque:queues``                  sorted set: every queue that holds or held a
                                   task, each scored 0 so that it is ordered
                                   by name (paged with ZRANGEBYLEX)
``torque:completion-key``          string: the key every node signs completion
                                   tokens with (:mod:`torque.completion`)
``torque:nodes``                   sorted set: node id -> its start time
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

Every key a script touches is in its ``KEYS`` when the caller can know it.
The exception: keys of tasks whose ids (or names) a script only learns as
it runs — a claim and its lost-lease sweep pop ids from ``due`` and
``running``, dead letters past the cap are trimmed, a purge or a page reads
ids from a set, a task's name is read from its hash, the minute's counter
is the minute of ``now``.  The prelude (:data:`LUA`) derives those from the
queue's key prefix, which it takes from one of the script's ``KEYS``
(``K.queue_of``), never from an argument: they carry the same hash tag, so
they are in the same slot (Redis Cluster allows that; a strict managed
service that refuses every undeclared key would refuse those scripts,
which say so with ``--!df flags=allow-undeclared-keys``, a plain comment to
Redis).  tests/test_keys.py checks both: every key a script touched in the
store's contract is in its slot, and every script's ``KEYS`` share one.
"""

import attrs

# The parts of every key name, used by :class:`Keys` below and by the Lua
# prelude (:data:`LUA`) that every script of :mod:`torque.scripts` opens with:
# nowhere else is a key named.
TASK = "task:"
ATTEMPTS = "attempts:"
DUE = "due"
RUNNING = "running"
DEAD = "dead"
NAME = "name:"
PAUSED = "paused"
RATE = "rate"
STATS = "stats"
SETTINGS = "settings"
MINUTE = "minute:"
WAKE = "wake"
QUEUES = "queues"
NODES = "nodes"
COMPLETION_KEY = "completion-key"
NODE = "node:"
DOOR = "door:"

# Between a task id's queue and its token: in neither alphabet
# (torque.task.QUEUE_RE, URL-safe tokens), so an id names its queue.
ID_SEPARATOR = "."
_QUEUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_QUEUE = 100  # torque.task.QUEUE_RE's bound

# The message on a queue's wake channel that says its settings changed.
SETTINGS_CHANGED = "settings"

# Seconds a per-minute counter outlives its minute: the dashboard charts the
# last few minutes, so two hours is plenty.
MINUTE_TTL = 7200

# The flag comment that marks a script touching keys it learns as it runs
# (Dragonfly reads it; to Redis it is a comment, unlike a ``#!lua`` line).
UNDECLARED = "--!df flags=allow-undeclared-keys\n"


def task_id(queue: str, token: str) -> str:
    """The id of a task of ``queue``: ``<queue>.<token>``."""
    return queue + ID_SEPARATOR + token


def queue_of_id(task_id: str) -> str | None:
    """The queue a task id names, or ``None`` for an id that names none
    (no separator, or no valid queue before it): no task has such an id."""
    queue, separator, token = task_id.partition(ID_SEPARATOR)
    if not separator or not token or not 0 < len(queue) <= MAX_QUEUE:
        return None
    if not _QUEUE_CHARS.issuperset(queue):
        return None
    return queue


@attrs.frozen
class Keys:
    """Key names under one prefix; tests use a fresh prefix each."""

    prefix: str = "torque:"

    def queue_prefix(self, queue: str) -> str:
        """What every key of ``queue`` starts with: the prefix and the
        queue's hash tag."""
        return f"{self.prefix}{{{queue}}}:"

    def task(self, queue: str, task_id: str) -> str:
        """A task's hash, in its queue's slot: ``queue`` is the one its id
        names (:func:`queue_of_id`)."""
        return self.queue_prefix(queue) + TASK + task_id

    def attempts(self, queue: str, task_id: str) -> str:
        return self.queue_prefix(queue) + ATTEMPTS + task_id

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

    def minute(self, queue: str, at: int) -> str:
        return f"{self.queue_prefix(queue)}{MINUTE}{at:d}"

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

    def wake(self, queue: str) -> str:
        return self.queue_prefix(queue) + WAKE

    @property
    def wake_pattern(self) -> str:
        """The glob pattern (PSUBSCRIBE) of every queue's wake channel."""
        return _glob_escape(self.prefix + "{") + "*" + _glob_escape("}:" + WAKE)

    def queue_of_wake(self, channel: str) -> str | None:
        """The queue whose wake channel ``channel`` is, or ``None``."""
        head, tail = self.prefix + "{", "}:" + WAKE
        if not (channel.startswith(head) and channel.endswith(tail)):
            return None
        return channel[len(head) : -len(tail)] or None

    @property
    def queues(self) -> str:
        return self.prefix + QUEUES

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


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _lua(text: str) -> str:
    return "'" + text + "'"


# The same names in Lua, for the keys a script only learns as it runs (the
# ids it pops, the name a task holds, the minute of "now"); every key the
# caller can know comes in ``KEYS``.  ``qp`` is a queue's key prefix, which
# K.queue_of takes from the script's KEYS (the queue's due set), never from
# an argument: so every key named here is in the slot of the script's KEYS.
LUA = f"""
local K = {{}}
function K.task(qp, id) return qp .. {_lua(TASK)} .. id end
function K.attempts(qp, id) return qp .. {_lua(ATTEMPTS)} .. id end
function K.name(qp, name) return qp .. {_lua(NAME)} .. name end
function K.minute(qp, at) return qp .. {_lua(MINUTE)} .. string.format('%d', at) end
-- A queue's keys: its fixed ones from KEYS[i..i+5] (as Keys.queue gives
-- them), and its key prefix (for the keys of its tasks, names and minutes),
-- which is its due set's name without {_lua(DUE)}.
function K.queue_of(keys, i)
  return {{prefix = string.sub(keys[i], 1, -{len(DUE) + 1}), due = keys[i],
          running = keys[i + 1], dead = keys[i + 2], stats = keys[i + 3],
          paused = keys[i + 4], rate = keys[i + 5]}}
end
"""
