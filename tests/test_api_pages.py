"""``GET /queues/<q>/tasks``: a queue's tasks in one state, paged by an
opaque cursor; and ``GET /tasks/<id>`` showing only what is true of the
task's current state.  Unit tests over the in-memory store on a ``Clock``
(the store's paging is held to the real Redis in tests/test_store_pages.py).
"""

from __future__ import annotations

import base64
import itertools
import json

from twisted.trial import unittest

from tests.test_api import HOOK, APITestCase
from torque import cursor
from torque.retry import Dead, Delivered, Retry
from torque.submission import InvalidTask


def token(value) -> str:
    """A cursor-shaped string holding ``value``."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


class TaskListTests(APITestCase):
    def setUp(self):
        super().setUp()
        numbers = itertools.count(1)
        self.api.new_id = lambda queue: f"{queue}.t{next(numbers)}"

    def list(self, query="", queue="default"):
        response, body = self.call("GET", f"/queues/{queue}/tasks{query}")
        self.assertEqual(response.code, 200, body)
        return body

    def test_tasks_come_oldest_due_first_as_get_task_shows_them(self):
        for delay in ["30", "10", "20"]:
            self.add(json={"url": HOOK, "delay": delay, "headers": {"Authorization": "x"}})
        body = self.list()
        self.assertEqual(set(body), {"queue", "state", "tasks", "next_cursor"})
        self.assertEqual((body["queue"], body["state"], body["next_cursor"]),
                         ("default", "scheduled", None))  # fmt: skip
        self.assertEqual(
            [t["id"] for t in body["tasks"]], ["default.t2", "default.t3", "default.t1"]
        )
        for task in body["tasks"]:
            self.assertEqual(task, self.call("GET", f"/tasks/{task['id']}")[1])
        self.assertEqual(body["tasks"][0]["headers"], {"Authorization": "[redacted]"})

    def test_a_cursor_leads_through_every_page_once(self):
        for _ in range(5):
            self.add(json={"url": HOOK})  # all due at the same time
        seen, query = [], "?limit=2"
        while True:
            body = self.list(query)
            seen.append([t["id"] for t in body["tasks"]])
            if body["next_cursor"] is None:
                break
            self.assertIsInstance(body["next_cursor"], str)
            query = f"?limit=2&cursor={body['next_cursor']}"
        self.assertEqual(
            seen, [["default.t1", "default.t2"], ["default.t3", "default.t4"], ["default.t5"]]
        )

    def test_default_page_is_fifty_and_at_most_a_thousand(self):
        for _ in range(51):
            self.add(json={"url": HOOK})
        first = self.list()
        self.assertEqual(len(first["tasks"]), 50)
        self.assertEqual(len(self.list(f"?cursor={first['next_cursor']}")["tasks"]), 1)
        self.assertEqual(len(self.list("?limit=1000")["tasks"]), 51)

    def test_running_and_dead_tasks_are_listed_in_their_state(self):
        for _ in range(3):
            self.add(json={"url": HOOK})
        t1, t2 = self.successResultOf(self.store.claim("default", 1000.0, 2, 60.0, 20)).tasks
        self.successResultOf(self.store.settle("default", [(t2, Dead(410, "gone"))], 1000.0))
        running = self.list("?state=running")["tasks"]
        self.assertEqual([(t["id"], t["status"]) for t in running], [("default.t1", "running")])
        dead = self.list("?state=dead")["tasks"]
        self.assertEqual([(t["id"], t["status"], t["last_status"]) for t in dead],
                         [("default.t2", "dead", 410)])  # fmt: skip
        self.assertEqual([t["id"] for t in self.list("?state=scheduled")["tasks"]], ["default.t3"])

    def test_waiting_is_a_state_with_nothing_in_it_yet(self):
        self.add(json={"url": HOOK})
        self.assertEqual(self.list("?state=waiting")["tasks"], [])

    def test_an_unknown_queue_has_no_tasks(self):
        self.assertEqual(self.list(queue="nothing"), {
            "queue": "nothing", "state": "scheduled", "tasks": [], "next_cursor": None,
        })  # fmt: skip

    def test_bad_arguments_are_400_naming_the_field(self):
        for query, field in [
            ("?state=nope", "state"),
            ("?state=Scheduled", "state"),
            ("?state=%ff", "state"),
            ("?limit=0", "limit"),
            ("?limit=1001", "limit"),
            ("?limit=ten", "limit"),
            ("?cursor=nope", "cursor"),
            ("?cursor=%ff", "cursor"),
            (f"?cursor={token([1.0, 't1'])}", "cursor"),
            (f"?cursor={token(['NaN', 't1'])}", "cursor"),
            (f"?cursor={token(['1.0', ''])}", "cursor"),
            (f"?cursor={token(['1.0', 't1', 'x'])}", "cursor"),
            (f"?cursor={token({'1.0': 0, 't1': 0})}", "cursor"),
            (f"?cursor={token('12')}", "cursor"),
            ("?cursor=" + "A" * 3000, "cursor"),
        ]:
            response, body = self.call("GET", "/queues/default/tasks" + query)
            self.assertError(response, body, 400, field)
        self.assertError(*self.call("GET", "/queues/a.b/tasks"), 400, "queue")

    def test_redis_down_is_503(self):
        self.store.available = False
        response, body = self.call("GET", "/queues/default/tasks")
        self.assertError(response, body, 503)


class CursorTests(unittest.TestCase):
    def test_a_position_survives_the_round_trip_exactly(self):
        for position in [
            (1_800_000_000.123456789, "default.t1"),
            (0.1 + 0.2, "a/b?c=ü"),
            (-5.0, "x"),
        ]:
            text = cursor.encode_position(position)
            self.assertRegex(text, r"^[A-Za-z0-9_-]+$")
            self.assertEqual(cursor.decode_position(text), position)

    def test_no_position_is_no_cursor(self):
        self.assertIsNone(cursor.encode_position(None))

    def test_a_lone_surrogate_is_no_id(self):
        text = token(["1.0", "\ud800"])
        with self.assertRaises(InvalidTask) as raised:
            cursor.decode_position(text)
        self.assertEqual(raised.exception.field, "cursor")


class TaskFieldsTests(APITestCase):
    """Every field of GET /tasks/<id> is true of the task's current state."""

    def test_a_delivered_task_shows_no_error_body_or_headers_of_before(self):
        self.add(json={"url": HOOK, "json": {"a": 1}, "headers": {"X-A": "b"}})
        (task,) = self.successResultOf(self.store.claim("default", 1000.0, 1, 60.0, 20)).tasks
        retry = Retry(1001.0, 500, "HTTP 500: ok")
        self.successResultOf(self.store.settle("default", [(task, retry)], 1000.0))
        scheduled = self.call("GET", "/tasks/default.t1")[1]
        self.assertEqual((scheduled["last_status"], scheduled["last_error"]),
                         (500, "HTTP 500: ok"))  # fmt: skip
        self.assertEqual(scheduled["content_type"], "application/json")
        (task,) = self.successResultOf(self.store.claim("default", 1001.0, 1, 60.0, 20)).tasks
        self.successResultOf(self.store.settle("default", [(task, Delivered(200))], 1002.0))
        body = self.call("GET", "/tasks/default.t1")[1]
        self.assertEqual(
            {k: body[k] for k in ("status", "last_status", "last_error", "last_attempt_at")},
            {"status": "delivered", "last_status": 200, "last_error": None,
             "last_attempt_at": 1002.0},
        )  # fmt: skip
        self.assertEqual((body["body"], body["content_type"], body["headers"]), (None, None, {}))
        self.assertEqual([a["outcome"] for a in body["history"]], ["delivered", "retried"])


class DocumentedStatesTests(unittest.TestCase):
    def test_the_document_lists_the_states_the_store_does(self):
        from torque import openapi_schemas, storage

        self.assertEqual(openapi_schemas.LISTED_STATES, list(storage.LISTED_STATES))
