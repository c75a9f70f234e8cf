"""``POST /tasks/batch`` (SPEC §3), driven by ``StubTreq`` over the
in-memory store and a ``Clock``."""

from __future__ import annotations

import json

from twisted.trial import unittest

from tests.test_api import HOOK, APITestCase
from torque import batch
from torque.submission import InvalidTask
from torque.targets import TargetGuard, TargetRules
from torque.task import Task


class BatchTests(APITestCase):
    def setUp(self):
        super().setUp()
        self.api.new_id = lambda queue: f"{queue}.t{next(self.numbers)}"
        self.numbers = iter(range(1, 2000))

    def batch(self, tasks, **kwargs):
        return self.call("POST", "/tasks/batch", json=tasks, **kwargs)

    def test_each_task_is_stored_and_answered_in_order(self):
        response, body = self.batch(
            [{"url": HOOK, "params": {"a": 1}}, {"url": HOOK + "/2", "queue": "q2", "delay": 5}]
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            body["results"],
            [
                {
                    "status": 201,
                    "task": {"id": "default.t1", "queue": "default", "name": None, "url": HOOK,
                             "status": "scheduled", "due_at": 1000.0, "created_at": 1000.0},
                },
                {
                    "status": 201,
                    "task": {"id": "q2.t2", "queue": "q2", "name": None, "url": HOOK + "/2",
                             "status": "scheduled", "due_at": 1005.0, "created_at": 1000.0},
                },
            ],
        )  # fmt: skip
        self.assertEqual(self.store.tasks["default.t1"]["body"], "a=1")
        self.assertEqual(
            self.store.due, {"default": {"default.t1": 1000.0}, "q2": {"q2.t2": 1005.0}}
        )

    def test_valid_tasks_are_stored_when_others_are_refused(self):
        response, body = self.batch(
            [{"url": HOOK}, {"url": "ftp://nope"}, "not an object", {"url": HOOK, "colour": 1}]
        )
        self.assertEqual(response.code, 200)
        results = body["results"]
        self.assertEqual([r["status"] for r in results], [201, 400, 400, 400])
        self.assertEqual([r["error"]["field"] for r in results[1:]], ["url", "body", "colour"])
        self.assertEqual(results[3]["error"]["code"], "unknown_field")
        self.assertEqual(set(results[1]), {"status", "error"})
        self.assertEqual(list(self.store.tasks), [results[0]["task"]["id"]])

    def test_a_duplicate_name_answers_the_existing_task(self):
        self.call("POST", "/hooks/add", json={"url": HOOK, "name": "nightly"})
        _, body = self.batch(
            [
                {"url": HOOK, "name": "nightly"},
                {"url": HOOK, "name": "n2"},
                {"url": HOOK, "name": "n2"},
            ]
        )
        first, second, third = body["results"]
        self.assertEqual((first["status"], first["task"]["duplicate"]), (200, True))
        self.assertEqual(
            (first["task"]["id"], first["task"]["status"]), ("default.t1", "scheduled")
        )
        self.assertEqual((second["status"], "duplicate" in second["task"]), (201, False))
        self.assertEqual((third["status"], third["task"]["id"]), (200, second["task"]["id"]))
        self.assertEqual(len(self.store.tasks), 2)

    def test_each_queue_is_woken_once_with_its_earliest_due_time(self):
        self.batch(
            [{"url": HOOK, "delay": 5}, {"url": HOOK, "delay": 2}, {"url": HOOK, "queue": "q2"}]
        )
        self.assertEqual(sorted(self.woken), [("default", 1002.0), ("q2", 1000.0)])

    def test_one_store_call_for_the_whole_batch(self):
        calls = []
        add_many = self.store.add_many
        self.store.add_many = lambda tasks: calls.append(len(tasks)) or add_many(tasks)
        self.batch([{"url": HOOK}] * 1000)
        self.assertEqual(calls, [1000])

    def test_a_body_that_is_not_a_batch_is_refused_whole(self):
        for body in ({"url": HOOK}, [], [{"url": HOOK}] * 1001):
            with self.subTest(body=str(body)[:40]):
                response, answer = self.batch(body)
                self.assertError(response, answer, 400, "body")
        response, answer = self.call("POST", "/tasks/batch", data=b"[{", headers={
            "Content-Type": "application/json"})  # fmt: skip
        self.assertError(response, answer, 400, "body")
        self.assertEqual(self.store.tasks, {})

    def test_redis_down_is_a_503_and_nothing_is_stored(self):
        self.store.available = False
        response, body = self.batch([{"url": HOOK}])
        self.assertError(response, body, 503)
        self.assertEqual(self.store.tasks, {})

    def test_a_refused_target_is_that_tasks_error(self):
        guard = TargetGuard(TargetRules.parse(["app.test"]))
        checked = []
        check_url = guard.check_url
        guard.check_url = lambda url: checked.append(url) or check_url(url)
        self.api.targets = guard
        other = "http://other.test/x"
        _, body = self.batch([{"url": HOOK}, {"url": other}, {"url": HOOK}, {"url": other}])
        self.assertEqual([r["status"] for r in body["results"]], [201, 400, 201, 400])
        self.assertEqual(body["results"][1]["error"]["code"], "target_not_allowed")
        self.assertEqual(body["results"][1]["error"]["field"], "url")
        self.assertEqual(len(self.store.tasks), 2)
        self.assertEqual(checked, [HOOK, other], "each distinct URL checked once")

    def test_405_allows_only_post(self):
        """/tasks/batch also matches /tasks/<task_id>, whose GET and DELETE
        are not its methods."""
        for method in ("PUT", "OPTIONS"):
            response, body = self.call(method, "/tasks/batch")
            self.assertError(response, body, 405)
            self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])

    def test_the_answer_is_json_with_its_content_type(self):
        response, body = self.batch([{"url": HOOK}, {"url": 1}])
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual([r["status"] for r in body["results"]], [201, 400])

    def test_new_tasks_are_counted_once_per_queue(self):
        counted = []
        self.api.metrics.task_added = lambda queue, count=1: counted.append((queue, count))
        self.batch([{"url": HOOK}, {"url": HOOK, "queue": "q2"}, {"url": 1}] + [{"url": HOOK}] * 3)
        self.assertEqual(sorted(counted), [("default", 4), ("q2", 1)])

    def test_the_counts_reach_the_metrics(self):
        self.batch([{"url": HOOK}] * 3 + [{"url": HOOK, "queue": "q2"}])
        added = self.api.metrics.added
        self.assertEqual(added.labels("default")._value.get(), 3.0)
        self.assertEqual(added.labels("q2")._value.get(), 1.0)


class ResultTests(unittest.TestCase):
    """A new task's result is written from a template (batch._ADDED): it
    must be what json.dumps writes for batch.added_result."""

    def test_an_added_result_is_what_json_dumps_writes(self):
        tasks = [
            Task(id="t1", queue="default", url=HOOK, due_at=1000.0, created_at=1000.0),
            Task(id="é\"\\", queue="q-2", url=HOOK + "/é?a=\"1\"", name="n_1",
                 due_at=1e22 + 0.5, created_at=1700000000.123456),
            Task(id="t\u2028", queue="q", url="http://x.test/\U0001f600",
                 due_at=0.1, created_at=0.1),
        ]  # fmt: skip
        # A Clock's time may be an int, and 0 == 0.0: each as json.dumps has it.
        tasks.append(Task(id="t4", queue="q", url=HOOK, due_at=0, created_at=0.0))
        shown, _ = batch.results(tasks, [(task.id, True) for task in tasks])
        for task, text in zip(tasks, shown, strict=True):
            wanted = json.dumps(batch.added_result(task), separators=batch.SEPARATORS)
            self.assertEqual(text, wanted)

    def test_the_answer_holds_every_result_in_order(self):
        tasks = [Task(id=f"t{n}", queue="default", url=HOOK) for n in range(3)]
        parsed = [tasks[0], InvalidTask("url", "no"), tasks[1], tasks[2]]
        shown, duplicates = batch.results(parsed, [("t0", True), ("t9", False), ("t2", True)])
        self.assertEqual(duplicates, {2: "t9"})
        results = json.loads(batch.answer(shown))["results"]
        self.assertEqual([r["status"] for r in results], [201, 400, 200, 201])
        self.assertEqual(results[2], {"status": 200, "task": {"id": "t9", "duplicate": True}})
        self.assertEqual(
            results[1]["error"], {"code": "invalid_field", "message": "no", "field": "url"}
        )
