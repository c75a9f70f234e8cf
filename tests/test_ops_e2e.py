"""Operating torque end to end: real ``twistd`` nodes, a real receiver, real
Redis.  Pause holds every node, metrics answer for the whole cluster from
any node, dead letters are retried and capped, history is recorded."""

from __future__ import annotations

import json

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for
from tests.redis_server import redis_address
from torque import __version__
from torque.connection import connect_pool
from torque.keys import Keys


@defer.inlineCallbacks
def call(node, method: str, path: str, body=None):
    """Any request to a node; fires with ``(status, parsed JSON)``."""
    kwargs = {"persistent": False}
    if body is not None:
        kwargs["data"] = json.dumps(body).encode()
    response = yield treq.request(method, node.url + path, **kwargs)
    content = yield response.content()
    return response.code, json.loads(content) if content else None


@defer.inlineCallbacks
def scrape(node) -> dict:
    response = yield treq.get(node.url + "/metrics", persistent=False)
    text = (yield response.content()).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@defer.inlineCallbacks
def lost_lease(testcase, prefix: str, task_id: str, url: str):
    """Write a task that a node died holding (its lease ran out long ago)
    straight into Redis, the way a dead node leaves it.  The next claim on
    the queue, by any node, recovers it: paused or not, so its recovery
    shows that a claim ran, and a paused queue's claim took nothing else."""
    redis = connect_pool(redis_address())
    testcase.addCleanup(redis.disconnect)
    keys = Keys(prefix)
    now = str(reactor.seconds())
    yield redis.execute_command(
        "HSET", keys.task("default", task_id), "queue", "default", "url", url, "attempts", "1",
        "created_at", now, "due_at", now,
    )  # fmt: skip
    yield redis.execute_command("ZADD", keys.running("default"), "0", task_id)


class PauseTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_pause_holds_every_node_until_resumed(self):
        receiver = start_receiver(self)
        first = yield start_node(self, "--poll-interval", "0.2")
        # A queue exists once it holds a task (a pause never creates one).
        yield first.post(data={"url": receiver.url + "/later", "delay": "600"})
        status, body = yield call(first, "POST", "/queues/default/pause")
        self.assertEqual((status, body), (200, {"name": "default", "paused": True}))
        _, added, _ = yield first.post(data={"url": receiver.url + "/held"})
        held = added["id"]
        # A claim by the first node after the add: it took nothing.
        yield lost_lease(self, first.prefix, "default.lost-1", receiver.url + "/lost")
        yield wait_for(
            lambda: first.has_status("default.lost-1", "scheduled"), what="a claim by first"
        )
        self.assertTrue((yield first.has_status(held, "scheduled")))
        # A second node that never saw the pause request holds too.
        second = yield start_node(self, "--poll-interval", "0.2", prefix=first.prefix)
        yield first.stop()
        yield lost_lease(self, first.prefix, "default.lost-2", receiver.url + "/lost")
        yield wait_for(
            lambda: second.has_status("default.lost-2", "scheduled"), what="a claim by second"
        )
        _, queue = yield second.get("/queues/default")
        self.assertEqual((queue["paused"], queue["scheduled"], queue["running"]), (True, 4, 0))
        self.assertEqual(receiver.requests, [], "a paused queue dispatches nothing")
        status, _ = yield call(second, "POST", "/queues/default/resume")
        self.assertEqual(status, 200)
        yield wait_for(lambda: receiver.to("/held"), what="the delivery after resume")
        yield wait_for(lambda: len(receiver.to("/lost")) == 2, what="the recovered tasks")
        yield wait_for(lambda: second.has_status(held, "delivered"))


class MetricsTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_any_node_answers_for_the_queues_and_each_for_its_own_work(self):
        receiver = start_receiver(self)
        worker = yield start_node(self)
        api_only = yield start_node(self, "--queue", "none", prefix=worker.prefix)
        _, added, _ = yield worker.post(data={"url": receiver.url + "/m"})
        yield wait_for(lambda: worker.has_status(added["id"], "delivered"))
        yield worker.post(data={"url": receiver.url + "/m", "delay": "600"})
        mine = yield scrape(worker)
        q = ("queue", "default")
        self.assertEqual(mine[("torque_tasks_added_total", (q,))], 2)
        self.assertEqual(mine[("torque_deliveries_total", (("outcome", "delivered"), q))], 1)
        self.assertEqual(mine[("torque_delivery_duration_seconds_count", (q,))], 1)
        self.assertEqual(mine[("torque_delivery_lag_seconds_count", (q,))], 1)
        theirs = yield scrape(api_only)
        self.assertNotIn(("torque_deliveries_total", (("outcome", "delivered"), q)), theirs)
        for samples in (mine, theirs):
            self.assertEqual(samples[("torque_redis_up", ())], 1)
            self.assertEqual(samples[("torque_queue_tasks", (q, ("state", "scheduled")))], 1)
            delivered = ("torque_queue_attempts_total", (("outcome", "delivered"), q))
            self.assertEqual(samples[delivered], 1)


class DeadLetterTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_history_then_retry_from_the_dead_letters(self):
        receiver = start_receiver(self)
        receiver.respond("/flip", 503, 404, 200)
        node = yield start_node(self, "--min-task-delay", "0.1")
        _, added, _ = yield node.post(data={"url": receiver.url + "/flip"})
        task_id = added["id"]
        yield wait_for(lambda: node.has_status(task_id, "dead"))
        _, got = yield node.get(f"/tasks/{task_id}")
        history = got["history"]
        self.assertEqual(
            [(h["attempt"], h["outcome"], h["status"]) for h in history],
            [(2, "dead", 404), (1, "retried", 503)],
        )
        self.assertTrue(all(h["duration"] > 0 for h in history), history)
        self.assertIn("HTTP 503", history[1]["error"])
        _, dead = yield node.get("/queues/default/dead")
        self.assertEqual([t["id"] for t in dead["tasks"]], [task_id])
        self.assertEqual(dead["tasks"][0]["last_status"], 404)
        status, body = yield call(node, "POST", "/queues/default/dead/retry", {"ids": [task_id]})
        self.assertEqual((status, body["retried"]), (200, 1))
        yield wait_for(lambda: node.has_status(task_id, "delivered"))
        _, got = yield node.get(f"/tasks/{task_id}")
        self.assertEqual(
            [(h["attempt"], h["outcome"]) for h in got["history"]],
            [(1, "delivered"), (None, "requeued"), (2, "dead"), (1, "retried")],
        )
        self.assertEqual(len(receiver.to("/flip")), 3)

    @defer.inlineCallbacks
    def test_dead_letters_are_capped_and_dropped(self):
        receiver = start_receiver(self)
        receiver.respond("/no", 400)
        node = yield start_node(self, "--dead-letter-max", "2")
        ids = []
        for _ in range(3):
            _, added, _ = yield node.post(data={"url": receiver.url + "/no"})
            ids.append(added["id"])
            yield wait_for(lambda: node.has_status(ids[-1], "dead"))
        _, dead = yield node.get("/queues/default/dead")
        self.assertEqual((dead["total"], [t["id"] for t in dead["tasks"]]), (2, ids[:0:-1]))
        status, _ = yield node.get(f"/tasks/{ids[0]}")
        self.assertEqual(status, 404, "the oldest dead letter went with the cap")
        status, body = yield call(node, "DELETE", "/queues/default/dead")
        self.assertEqual((status, body["deleted"]), (200, 2))

    @defer.inlineCallbacks
    def test_dead_letters_older_than_the_ttl_go_though_nothing_else_dies(self):
        receiver = start_receiver(self)
        receiver.respond("/no", 400)
        node = yield start_node(self, "--dead-letter-ttl", "1", "--poll-interval", "0.2")
        _, added, _ = yield node.post(data={"url": receiver.url + "/no"})
        yield wait_for(lambda: node.has_status(added["id"], "dead"))
        yield wait_for(lambda: node.get(f"/tasks/{added['id']}").addCallback(
            lambda answer: answer[0] == 404), what="the dead letter to age out")  # fmt: skip
        _, dead = yield node.get("/queues/default/dead")
        self.assertEqual((dead["total"], dead["tasks"]), (0, []))


class TaskAndQueueTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_run_now_delivers_a_later_task_at_once(self):
        receiver = start_receiver(self)
        node = yield start_node(self)
        _, added, _ = yield node.post(data={"url": receiver.url + "/soon", "delay": "600"})
        status, body = yield call(node, "POST", f"/tasks/{added['id']}/run")
        self.assertEqual((status, body["status"]), (200, "scheduled"))
        yield wait_for(lambda: receiver.to("/soon"), timeout=10, what="the run-now delivery")

    @defer.inlineCallbacks
    def test_purge_and_queue_counts(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--queue", "jobs")
        for _ in range(3):
            yield node.post("/queues/jobs/tasks", data={"url": receiver.url + "/x", "delay": "60"})
        status, queues = yield node.get("/queues")
        self.assertEqual(status, 200)
        (jobs,) = queues["queues"]
        self.assertEqual((jobs["name"], jobs["scheduled"], jobs["due"]), ("jobs", 3, 0))
        status, body = yield call(node, "DELETE", "/queues/jobs/tasks")
        self.assertEqual((status, body), (200, {"queue": "jobs", "purged": 3}))
        _, jobs = yield node.get("/queues/jobs")
        self.assertEqual(jobs["scheduled"], 0)
        status, body = yield call(node, "DELETE", "/queues/jobs")
        self.assertEqual((status, body), (200, {"name": "jobs", "deleted": True}))
        _, queues = yield node.get("/queues")
        self.assertEqual(queues, {"queues": [], "next_cursor": None})


class EveryQueueTests(unittest.TestCase):
    """``--queue`` defaults to ``*``: every queue, new ones included, on
    every node; a queue that no live node processes says so."""

    timeout = 120

    @defer.inlineCallbacks
    def test_a_default_node_delivers_to_a_queue_created_after_it_started(self):
        receiver = start_receiver(self)
        node = yield start_node(self)
        status, _, _ = yield node.post(
            "/queues/emails/tasks", json_body={"url": receiver.url + "/welcome"}
        )
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/welcome"), timeout=5, what="the emails task")
        _, queues = yield node.get("/queues")
        (emails,) = queues["queues"]
        self.assertEqual((emails["name"], emails["processed_by"]), ("emails", 1))
        self.assertIn("queue emails: new, processing it", node.output)

    @defer.inlineCallbacks
    def test_a_queue_created_through_another_node_is_processed_by_every_default_node(self):
        receiver = start_receiver(self)
        api_only = yield start_node(self, "--queue", "none")
        yield start_node(self, "--port", "none", prefix=api_only.prefix, health=None)
        yield wait_for(
            lambda: call(api_only, "GET", "/nodes").addCallback(lambda r: len(r[1]["nodes"]) == 2),
            what="both heartbeats",
        )
        yield api_only.post("/queues/reports/tasks", json_body={"url": receiver.url + "/report"})
        yield wait_for(lambda: receiver.to("/report"), timeout=5, what="the reports task")

    @defer.inlineCallbacks
    def test_a_queue_written_to_redis_directly_is_found_by_the_registry_poll(self):
        """No wake-up published: the watcher's page of the registry finds it."""
        receiver = start_receiver(self)
        node = yield start_node(self)
        redis = connect_pool(redis_address())
        self.addCleanup(redis.disconnect)
        keys = Keys(node.prefix)
        now = str(reactor.seconds())
        yield redis.execute_command(
            "HSET", keys.task("manual", "manual.by-hand"), "queue", "manual",
            "url", receiver.url + "/manual",
            "created_at", now, "due_at", now,
        )  # fmt: skip
        yield redis.execute_command("ZADD", keys.due("manual"), now, "manual.by-hand")
        yield redis.execute_command("ZADD", keys.queues, "0", "manual")
        yield wait_for(lambda: receiver.to("/manual"), timeout=10, what="the hand-written task")

    @defer.inlineCallbacks
    def test_a_queue_no_live_node_processes_shows_processed_by_0(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--queue", "foobar")
        yield wait_for(lambda: node.get("/nodes").addCallback(lambda r: r[1]["nodes"]))
        status, added, _ = yield node.post(data={"url": receiver.url + "/lost"})
        self.assertEqual(status, 201)
        yield wait_for(
            lambda: (
                "a task was added to queue default, which no live node processes" in node.output
            ),
            timeout=10,
            what="the warning in the log",
        )
        _, queues = yield node.get("/queues")
        (default,) = queues["queues"]
        self.assertEqual(
            (default["name"], default["due"], default["processed_by"]), ("default", 1, 0)
        )
        _, nodes = yield node.get("/nodes")
        (listed,) = nodes["nodes"]
        self.assertEqual(listed["queues"], ["foobar"])
        self.assertEqual(listed["version"], __version__)
        self.assertEqual((listed["worker"], listed["supervisor_pid"]), (None, None))  # one process
        self.assertEqual(
            sorted(listed), ["host", "id", "in_flight", "pid", "queues", "seen_at", "started_at",
                             "supervisor_pid", "version", "worker"],
        )  # fmt: skip
        # A node for every queue comes: the queue is processed, and delivered.
        every = yield start_node(self, prefix=node.prefix)
        yield wait_for(lambda: receiver.to("/lost"), timeout=10, what="the default task")
        _, queues = yield node.get("/queues")
        self.assertEqual(queues["queues"][0]["processed_by"], 1)
        _, nodes = yield node.get("/nodes")
        self.assertEqual([n["queues"] for n in nodes["nodes"]], [["foobar"], "*"])
        # A node that stops leaves the list at once.
        yield every.stop()
        _, nodes = yield node.get("/nodes")
        self.assertEqual([n["queues"] for n in nodes["nodes"]], [["foobar"]])
