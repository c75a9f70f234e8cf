"""Every Redis key torque uses; :mod:`torque.scripts` has the Lua scripts
that change them.

The layout is public (README.rst, "Redis key layout"): other programs may add
tasks by writing it directly.  With the default prefix ``torque:``:

``torque:task:<id>``               hash: the task (fields below)
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
``torque:queue:<q>:minute:<t>``    hash: ``delivered``, ``retried``, ``dead``
                                   in the minute starting at <t>; expires
``torque:queues``                  sorted set: every queue that holds or held a
                                   task, each scored 0 so that it is ordered
                                   by name (paged with ZRANGEBYLEX)
``torque:wake:<q>``                pub/sub channel: a due time, on every add
``torque:nodes``                   sorted set: node id -> its heartbeat's end
``torque:node:<id>``               hash: a live node (``id``, ``host``, ``pid``,
                                   ``version``, ``queues``, ``in_flight``,
                                   ``started_at``, ``seen_at``); expires

A task's state is *where its id is*: in ``due`` it is scheduled, in
``running`` a node holds a lease on it, in ``dead`` it is a dead letter; a
hash with ``delivered_at`` and no set is the hour-long record of a delivery.
Every change of state is one script of :mod:`torque.scripts`, so it is
atomic: two nodes can never both hold a task.
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

# Seconds a per-minute counter outlives its minute: the dashboard charts the
# last few minutes, so two hours is plenty.
MINUTE_TTL = 7200


@attrs.frozen
class Keys:
    """Key names under one prefix; tests use a fresh prefix each."""

    prefix: str = "torque:"

    @property
    def task_prefix(self) -> str:
        return self.prefix + "task:"

    def task(self, task_id: str) -> str:
        return self.task_prefix + task_id

    def attempts(self, task_id: str) -> str:
        return self.prefix + "attempts:" + task_id

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

    def rate(self, queue: str) -> str:
        return self.queue_prefix(queue) + "rate"

    def stats(self, queue: str) -> str:
        return self.queue_prefix(queue) + "stats"

    def minute(self, queue: str, at: int) -> str:
        return f"{self.queue_prefix(queue)}minute:{at}"

    @property
    def queues(self) -> str:
        return self.prefix + "queues"

    def wake(self, queue: str) -> str:
        return f"{self.prefix}wake:{queue}"

    @property
    def nodes(self) -> str:
        return self.prefix + "nodes"

    def node(self, node_id: str) -> str:
        return self.prefix + "node:" + node_id
