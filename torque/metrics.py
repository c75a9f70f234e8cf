"""Prometheus metrics: what this node did, and what Redis holds.

Two kinds, with different sources:

* **This node's counters and histograms** (tasks added through its API,
  attempts it made by outcome, their duration, the time from add to
  delivery) live in a :class:`~prometheus_client.CollectorRegistry` of the
  node's own, never the process-global one, so that two nodes in one process
  (tests, an embedding application) don't mix their numbers.  Sum them over
  nodes in PromQL.
* **The queues' gauges** (tasks by state, the backlog, the age of the oldest
  due task, paused) are read from Redis at scrape time, so any node answers
  for the whole cluster and a node that processes nothing still reports
  them.  Don't sum those over nodes: every node reports the same numbers.

Rendering is synchronous (:func:`prometheus_client.generate_latest`), on the
reactor thread, after the Redis round trips: no thread pool, unlike
``prometheus_client.twisted.MetricsResource``.

**At most** :data:`METRICS_QUEUES` **queues** have gauges, the first ones by
name, read :data:`METRICS_PAGE` at a time (each one bounded Redis reply, with
the reactor free between them); ``torque_queue_metrics_truncated`` is 1 when
there are more.  A scrape then costs the same with 25,000 queues as with
1,000, and never holds the reactor for long: 25,000 queues would be 200,000
series a scrape (tens of megabytes, seconds of rendering), more than a
Prometheus server should take from one target.  ``GET /queues`` pages
through all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from torque.retry import DELIVERED, Decision, Outcome
from torque.storage import QueueStats
from torque.task import Task

CONTENT_TYPE = CONTENT_TYPE_LATEST

# A request's duration: most web hooks answer in milliseconds, the timeout
# is a minute by default.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# From add to delivery, delays and retries included: seconds to days.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)


# Queues whose gauges a scrape carries at most, and per Redis round trip.
METRICS_QUEUES = 1000
METRICS_PAGE = 200


@defer.inlineCallbacks
def metric_queues(store, now: float, most: int = METRICS_QUEUES, page: int = METRICS_PAGE):
    """The first ``most`` queues by name (:class:`QueueStats` without recent
    counts), a page at a time; and whether there are more.

    :returns: a Deferred firing with ``(queues, truncated)``.
    """
    queues: list[QueueStats] = []
    after = None
    while True:
        got = yield store.queue_page(after, min(page, most - len(queues)), now, minutes=0)
        queues += got.queues
        after = got.next_cursor
        if after is None or len(queues) >= most:
            return queues, after is not None


class Metrics:
    """One node's metrics.

    :param clock: for the add-to-delivery lag (``now - created_at``).
    :param multiprocess_dir: a worker's (``--workers``): prometheus_client's
        multiprocess directory, where each worker's counters and histograms
        live in a file of its own, so that a scrape through the shared port,
        whichever worker takes it, sums every worker's (a dead worker's
        file stays: counters never go back).  The process must have been
        started with ``PROMETHEUS_MULTIPROC_DIR`` set to it, which
        prometheus_client reads when imported.
    """

    def __init__(self, clock: IReactorTime, multiprocess_dir: str | None = None):
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.exposed = self.registry  # what a scrape renders
        if multiprocess_dir is not None:
            from prometheus_client import multiprocess, values

            if not getattr(values.ValueClass, "_multiprocess", False):
                raise RuntimeError(
                    "multiprocess metrics need PROMETHEUS_MULTIPROC_DIR set when the process starts"
                )
            self.exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposed, path=multiprocess_dir)
        self.added = Counter(
            "torque_tasks_added",
            "Tasks added through this node's API (duplicates of a name not counted)",
            ["queue"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "torque_deliveries",
            "Delivery attempts this node made, by outcome: delivered, retried, dead, "
            "postponed or waiting (a handler took the task over)",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "torque_delivery_duration_seconds",
            "Seconds an attempt took, from request to answer (or failure)",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lag = Histogram(
            "torque_delivery_lag_seconds",
            "Seconds from a task's add to its delivery, delay and retries included",
            ["queue"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

        # (queue, outcome) -> its attempts, duration and lag series.
        self._series: dict[tuple[str, str], tuple] = {}
        self._added: dict[str, object] = {}  # queue -> its added series
        self.open_circuits = Gauge(
            "torque_open_circuits",
            "Target hosts whose circuit is open on this node (their tasks wait for a probe)",
            registry=self.registry,
        )

    def task_added(self, queue: str, count: int = 1) -> None:
        """``count`` tasks were added to ``queue`` (a batch counts each of
        its queues once; the series is looked up once per queue)."""
        series = self._added.get(queue)
        if series is None:
            series = self._added[queue] = self.added.labels(queue)
        series.inc(count)

    def attempt_finished(self, task: Task, outcome: Outcome, decision: Decision) -> None:
        """A scheduler's ``on_attempt`` hook: called once per attempt.

        The labelled series are looked up once per queue and outcome
        (``labels()`` costs twice what counting does, per delivery).
        """
        series = self._series.get((task.queue, decision.label))
        if series is None:
            series = self._series[task.queue, decision.label] = (
                self.attempts.labels(task.queue, decision.label),
                self.duration.labels(task.queue),
                self.lag.labels(task.queue),
            )
        attempts, duration, lag = series
        attempts.inc()
        duration.observe(max(outcome.duration, 0.0))
        if decision.label == DELIVERED and task.created_at:
            lag.observe(max(self.clock.seconds() - task.created_at, 0.0))

    def render(self, queues: Sequence[QueueStats] | None, truncated: bool = False) -> bytes:
        """The exposition text: this node's metrics, then the queues'
        gauges (``None``: Redis didn't answer, so ``torque_redis_up 0``).

        :param truncated: there are more queues than ``queues``.
        """
        return generate_latest(self.exposed) + queue_exposition(queues, truncated)


def queue_exposition(queues: Sequence[QueueStats] | None, truncated: bool = False) -> bytes:
    """The queues' gauges in the Prometheus text format, written here rather
    than by ``prometheus_client``, which took 140 ms of the reactor for
    1,000 queues (this takes a tenth of that).  Queue names match
    ``[A-Za-z0-9_-]+``, so a label value needs no escaping.

    :param queues: ``None`` when Redis didn't answer: then only
        ``torque_redis_up 0``.
    """
    out = [
        "# HELP torque_redis_up 1 when Redis answered this scrape, else 0 (and no queue metrics)",
        "# TYPE torque_redis_up gauge",
        f"torque_redis_up {0.0 if queues is None else 1.0}",
    ]
    if queues is None:
        return ("\n".join(out) + "\n").encode()
    out += [
        f"# HELP torque_queue_metrics_truncated 1 when there are more queues than the "
        f"{METRICS_QUEUES} (first by name) that have gauges here; GET /queues lists them all",
        "# TYPE torque_queue_metrics_truncated gauge",
        f"torque_queue_metrics_truncated {1.0 if truncated else 0.0}",
    ]

    def family(name, kind, text, samples):
        sample = name + "_total" if kind == "counter" else name  # as prometheus_client does
        out.append(f"# HELP {sample} {text}")
        out.append(f"# TYPE {sample} {kind}")
        for q in queues:
            for extra, value in samples(q):
                out.append(f'{sample}{{queue="{q.name}"{extra}}} {float(value)!r}')

    family(
        "torque_queue_tasks",
        "gauge",
        "Tasks in the queue by state (scheduled includes due), every node's",
        lambda q: [(f',state="{state}"', getattr(q, state)) for state in TASK_STATES],
    )
    family(
        "torque_queue_due_tasks",
        "gauge",
        "Scheduled tasks already due and not yet claimed: the backlog",
        lambda q: [("", q.due)],
    )
    family(
        "torque_queue_oldest_due_age_seconds",
        "gauge",
        "Seconds the earliest due task has waited to be claimed (0: none due)",
        lambda q: [("", q.oldest_due_age)],
    )
    family(
        "torque_queue_paused",
        "gauge",
        "1 while the queue is paused",
        lambda q: [("", 1 if q.paused else 0)],
    )
    family(
        "torque_queue_attempts",
        "counter",
        "Attempts' outcomes recorded in Redis by every node: delivered or failed",
        lambda q: [(',outcome="delivered"', q.delivered), (',outcome="failed"', q.failed)],
    )
    return ("\n".join(out) + "\n").encode()


TASK_STATES = ("scheduled", "running", "dead")
