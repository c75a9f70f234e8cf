"""Prometheus metrics: this node's counters and histograms, the queues'
gauges from the store, and ``GET /metrics`` parsed the way Prometheus would
(``prometheus_client.parser``)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.test_api import HOOK, APITestCase
from tests.test_scheduler import Hook
from torque.dispatch import Dispatcher
from torque.metrics import Metrics, metric_queues
from torque.retry import Dead, Delivered, NoResponse, Response, Retry, RetryPolicy
from torque.scheduler import QueueScheduler
from torque.storage import Minute, QueueStats
from torque.task import Task


def parse(text: str | bytes) -> dict[tuple[str, tuple], float]:
    """Every sample: ``(name, sorted labels) -> value``."""
    if isinstance(text, bytes):
        text = text.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def families(text: bytes) -> dict[str, str]:
    """Family name -> type."""
    return {f.name: f.type for f in text_string_to_metric_families(text.decode())}


def task(queue="q", created_at=100.0, attempts=1) -> Task:
    return Task(id="t1", queue=queue, url=HOOK, created_at=created_at, attempts=attempts)


class MetricsTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(130.0)
        self.metrics = Metrics(self.clock)

    def test_attempts_are_counted_by_outcome(self):
        m = self.metrics
        m.attempt_finished(task(), Response(503, 0.2), Retry(131.0, 503, "x"))
        m.attempt_finished(task(), NoResponse("refused", 0.01), Retry(131.0, None, "x"))
        m.attempt_finished(task(), Response(404, 0.05), Dead(404, "x"))
        m.attempt_finished(task(), Response(200, 0.3), Delivered(200))
        samples = parse(m.render([]))
        for outcome, count in [("retried", 2), ("dead", 1), ("delivered", 1)]:
            key = ("torque_deliveries_total", (("outcome", outcome), ("queue", "q")))
            self.assertEqual(samples[key], count)

    def test_duration_histogram(self):
        self.metrics.attempt_finished(task(), Response(200, 0.3), Delivered(200))
        self.metrics.attempt_finished(task(), Response(500, 7.0), Retry(1.0, 500, "x"))
        samples = parse(self.metrics.render([]))
        q = (("queue", "q"),)
        self.assertEqual(samples[("torque_delivery_duration_seconds_count", q)], 2)
        self.assertAlmostEqual(samples[("torque_delivery_duration_seconds_sum", q)], 7.3)
        bucket = ("torque_delivery_duration_seconds_bucket", (("le", "0.5"), ("queue", "q")))
        self.assertEqual(samples[bucket], 1)

    def test_lag_is_from_add_to_delivery_only_for_deliveries(self):
        self.metrics.attempt_finished(task(created_at=100.0), Response(500, 1), Retry(1, 500, ""))
        self.metrics.attempt_finished(task(created_at=100.0), Response(200, 1), Delivered(200))
        samples = parse(self.metrics.render([]))
        q = (("queue", "q"),)
        self.assertEqual(samples[("torque_delivery_lag_seconds_count", q)], 1)
        self.assertEqual(samples[("torque_delivery_lag_seconds_sum", q)], 30.0)

    def test_adds_are_counted_by_queue(self):
        self.metrics.task_added("a")
        self.metrics.task_added("a")
        self.metrics.task_added("b")
        samples = parse(self.metrics.render([]))
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "a"),))], 2)
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "b"),))], 1)

    def test_queue_gauges_come_from_the_stats_given(self):
        stats = QueueStats(
            "mail", scheduled=7, due=3, running=2, dead=4, delivered=90, failed=5,
            oldest_due_age=12.5, paused=True, known=True, recent=(Minute(60),),
        )  # fmt: skip
        samples = parse(self.metrics.render([stats]))
        mail = ("queue", "mail")
        for state, value in [("scheduled", 7), ("running", 2), ("dead", 4)]:
            self.assertEqual(samples[("torque_queue_tasks", (mail, ("state", state)))], value)
        self.assertEqual(samples[("torque_queue_due_tasks", (mail,))], 3)
        self.assertEqual(samples[("torque_queue_oldest_due_age_seconds", (mail,))], 12.5)
        self.assertEqual(samples[("torque_queue_paused", (mail,))], 1)
        attempts = "torque_queue_attempts_total"
        self.assertEqual(samples[(attempts, (("outcome", "delivered"), mail))], 90)
        self.assertEqual(samples[(attempts, (("outcome", "failed"), mail))], 5)
        self.assertEqual(samples[("torque_redis_up", ())], 1)

    def test_without_redis_only_the_nodes_own_metrics(self):
        self.metrics.task_added("a")
        text = self.metrics.render(None)
        samples = parse(text)
        self.assertEqual(samples[("torque_redis_up", ())], 0)
        self.assertNotIn("torque_queue_tasks", families(text))
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "a"),))], 1)

    def test_every_family_is_named_torque(self):
        self.metrics.task_added("a")
        self.metrics.attempt_finished(task(), Response(200, 0.1), Delivered(200))
        text = self.metrics.render([QueueStats("a")])
        self.assertTrue(all(name.startswith("torque_") for name in families(text)))

    def test_families_and_their_types(self):
        """The families README.rst lists, with the types Prometheus sees
        (besides prometheus_client's ``*_created`` timestamp gauges)."""
        self.metrics.task_added("a")
        self.metrics.attempt_finished(task(), Response(200, 0.1), Delivered(200))
        found = families(self.metrics.render([QueueStats("a")]))
        self.assertEqual(
            {name: kind for name, kind in found.items() if not name.endswith("_created")},
            {
                "torque_tasks_added": "counter",
                "torque_deliveries": "counter",
                "torque_delivery_duration_seconds": "histogram",
                "torque_delivery_lag_seconds": "histogram",
                "torque_redis_up": "gauge",
                "torque_queue_metrics_truncated": "gauge",
                "torque_queue_tasks": "gauge",
                "torque_queue_due_tasks": "gauge",
                "torque_queue_oldest_due_age_seconds": "gauge",
                "torque_queue_paused": "gauge",
                "torque_queue_attempts": "counter",
                "torque_open_circuits": "gauge",
            },
        )

    def test_each_node_has_its_own_registry(self):
        self.metrics.task_added("a")
        other = Metrics(self.clock)
        self.assertNotIn(("torque_tasks_added_total", (("queue", "a"),)), parse(other.render([])))


class SchedulerMetricsTests(unittest.TestCase):
    """The scheduler's ``on_attempt`` hook feeds the metrics."""

    def test_each_attempt_is_counted_once(self):
        clock = Clock()
        clock.advance(100.0)
        store = MemoryStore()
        metrics = Metrics(clock)
        scheduler = QueueScheduler(
            "q",
            store,
            Dispatcher(StubTreq(Hook(clock, 503, 200)), clock),
            clock,
            RetryPolicy(),
            poll_interval=3600.0,
            rng=lambda: 0.0,
            on_attempt=metrics.attempt_finished,
        )
        scheduler.startService()
        self.addCleanup(scheduler.stopService)
        store.add(Task(id="t1", queue="q", url=HOOK, due_at=100.0, created_at=100.0))
        scheduler.wake()
        clock.advance(1.0)
        samples = parse(metrics.render([]))
        q = ("queue", "q")
        self.assertEqual(samples[("torque_deliveries_total", (("outcome", "retried"), q))], 1)
        self.assertEqual(samples[("torque_deliveries_total", (("outcome", "delivered"), q))], 1)
        self.assertEqual(samples[("torque_delivery_lag_seconds_sum", (q,))], 1.0)
        self.assertEqual(store.history["t1"][1]["duration"], 0.0, "durations reach the store")


class MetricsEndpointTests(APITestCase):
    def setUp(self):
        super().setUp()
        self.metrics = self.api.metrics

    def scrape(self):
        d = self.stub.get("http://torque.test/metrics")
        self.stub.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(response.content())

    def test_scrape_parses_with_queue_gauges_from_the_store(self):
        self.add(data={"url": HOOK})
        self.add(json={"url": HOOK, "queue": "mail", "delay": 30})
        response, text = self.scrape()
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
        samples = parse(text)
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "default"),))], 1)
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "mail"),))], 1)
        scheduled = ("torque_queue_tasks", (("queue", "mail"), ("state", "scheduled")))
        self.assertEqual(samples[scheduled], 1)
        self.assertEqual(samples[("torque_queue_due_tasks", (("queue", "mail"),))], 0)
        self.assertEqual(samples[("torque_queue_due_tasks", (("queue", "default"),))], 1)

    def test_gauges_are_read_at_scrape_time_whoever_changed_the_queue(self):
        """A task another node added (straight into the store, not through
        this API) is in this node's gauges, and not in its own counter."""
        before = parse(self.scrape()[1])
        self.assertNotIn(("torque_queue_tasks", (("queue", "q"), ("state", "scheduled"))), before)
        self.store.add(Task(id="elsewhere", queue="q", url=HOOK, due_at=990.0))
        self.clock.advance(5)
        samples = parse(self.scrape()[1])
        self.assertEqual(
            samples[("torque_queue_tasks", (("queue", "q"), ("state", "scheduled")))], 1
        )
        self.assertEqual(samples[("torque_queue_oldest_due_age_seconds", (("queue", "q"),))], 15.0)
        self.assertNotIn(("torque_tasks_added_total", (("queue", "q"),)), samples)

    def test_a_duplicate_name_is_not_counted_as_added(self):
        self.add(json={"url": HOOK, "name": "once"})
        self.add(json={"url": HOOK, "name": "once"})
        samples = parse(self.scrape()[1])
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "default"),))], 1)

    def test_gauges_for_the_first_queues_by_name_and_a_flag_when_there_are_more(self):
        for name in ["c", "a", "b"]:
            self.add(json={"url": HOOK, "queue": name})
        self.api.metric_queues = 2
        samples = parse(self.scrape()[1])
        due = {labels[0][1] for name, labels in samples if name == "torque_queue_due_tasks"}
        self.assertEqual(due, {"a", "b"})
        self.assertEqual(samples[("torque_queue_metrics_truncated", ())], 1)
        self.api.metric_queues = 3
        samples = parse(self.scrape()[1])
        due = {labels[0][1] for name, labels in samples if name == "torque_queue_due_tasks"}
        self.assertEqual(due, {"a", "b", "c"})
        self.assertEqual(samples[("torque_queue_metrics_truncated", ())], 0)

    def test_queues_are_read_a_bounded_page_at_a_time(self):
        for i in range(7):
            self.store.add(Task(id=f"t{i}", queue=f"q{i}", url=HOOK, due_at=990.0))
        pages = []
        real = self.store.queue_page
        self.store.queue_page = lambda after, limit, *a, **kw: (
            pages.append((after, limit)) or real(after, limit, *a, **kw)
        )
        queues, truncated = self.successResultOf(metric_queues(self.store, 1000.0, 5, 2))
        self.assertEqual(([q.name for q in queues], truncated), ([f"q{i}" for i in range(5)], True))
        self.assertEqual(pages, [(None, 2), ("q1", 2), ("q3", 1)])

    def test_scrape_without_redis_still_answers(self):
        self.add(data={"url": HOOK})
        self.store.available = False
        response, text = self.scrape()
        self.assertEqual(response.code, 200)
        samples = parse(text)
        self.assertEqual(samples[("torque_redis_up", ())], 0)
        self.assertEqual(samples[("torque_tasks_added_total", (("queue", "default"),))], 1)
