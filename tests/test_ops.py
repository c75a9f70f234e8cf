"""Operating torque over the API (SPEC §6): task history and actions,
queues, dead letters; on ``StubTreq`` over the in-memory store and a Clock."""

from __future__ import annotations

import json

from twisted.logger import globalLogPublisher

from tests.test_api import HOOK, APITestCase
from torque.retry import Dead, Delivered, Retry
from torque.storage import NodeInfo

SECRETS = {
    "Authorization": "Bearer live-secret",
    "Cookie": "session=abc",
    "X-Api-Key": "k-123",
    "X-Auth-Token": "t-456",
    "X-Client-Secret": "s-789",
    "Stripe-Signature": "sig",
}
PLAIN = {"X-Request-Id": "r-1", "Accept": "application/json"}


class OpsTestCase(APITestCase):
    def setUp(self):
        super().setUp()
        self.ids = iter(f"t{i}" for i in range(1, 100))

    def claim(self, queue="default", now=None, limit=10):
        now = self.clock.seconds() if now is None else now
        return self.successResultOf(self.store.claim(queue, now, limit, 60.0, 20)).tasks

    def settle(self, task, decision, queue="default", duration=0.125):
        now = self.clock.seconds()
        self.successResultOf(self.store.settle(queue, [(task, decision, duration)], now))

    def bury(self, queue="default", url=HOOK, status=404):
        """Add a task whose first attempt is refused; its id."""
        _, body = self.add(json={"url": url, "queue": queue})
        (task,) = [t for t in self.claim(queue) if t.id == body["id"]]
        self.settle(task, Dead(status, f"refused by the handler: HTTP {status}"), queue)
        return body["id"]

    def json_call(self, method, path, body):
        return self.call(method, path, data=json.dumps(body))


class TaskHistoryTests(OpsTestCase):
    def test_get_shows_the_attempt_history_newest_first(self):
        self.add(data={"url": HOOK})
        (task,) = self.claim()
        self.clock.advance(1)
        self.settle(task, Retry(1003.0, 503, "HTTP 503: busy"), duration=0.25)
        _, body = self.call("GET", "/tasks/default.t1")
        self.assertEqual(
            body["history"],
            [
                {
                    "attempt": 1,
                    "at": 1001.0,
                    "duration": 0.25,
                    "outcome": "retried",
                    "status": 503,
                    "error": "HTTP 503: busy",
                }
            ],
        )
        self.assertEqual((body["attempts"], body["last_status"]), (1, 503))

    def test_new_task_has_an_empty_history(self):
        self.add(data={"url": HOOK})
        self.assertEqual(self.call("GET", "/tasks/default.t1")[1]["history"], [])

    def test_secret_headers_are_redacted_but_stored_intact(self):
        self.add(json={"url": HOOK, "headers": {**SECRETS, **PLAIN}})
        _, body = self.call("GET", "/tasks/default.t1")
        self.assertEqual(body["headers"], {**{k: "[redacted]" for k in SECRETS}, **PLAIN})
        self.assertEqual(
            json.loads(self.store.tasks["default.t1"]["headers"]), {**SECRETS, **PLAIN}
        )

    def test_duplicate_answer_redacts_headers_too(self):
        self.add(json={"url": HOOK, "name": "n", "headers": {"Authorization": "Bearer x"}})
        response, body = self.add(json={"url": HOOK, "name": "n"})
        self.assertEqual((response.code, body["headers"]), (200, {"Authorization": "[redacted]"}))

    def test_cancel_of_a_running_task_says_its_attempt_finishes(self):
        self.add(data={"url": HOOK})
        self.claim()
        response, body = self.call("DELETE", "/tasks/default.t1")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            (body["status"], body["running_attempt_finishes"]), ("running", True), body
        )

    def test_cancel_of_a_scheduled_task(self):
        self.add(data={"url": HOOK})
        _, body = self.call("DELETE", "/tasks/default.t1")
        self.assertEqual((body["status"], body["running_attempt_finishes"]), ("scheduled", False))

    def test_cancel_of_an_unknown_task_is_404(self):
        self.assertError(*self.call("DELETE", "/tasks/nope"), 404, "id")

    def test_a_delivered_task_can_not_be_cancelled(self):
        self.add(data={"url": HOOK})
        (task,) = self.claim()
        self.settle(task, Delivered(200))
        self.assertError(*self.call("DELETE", "/tasks/default.t1"), 409, "id")
        self.assertEqual(self.call("GET", "/tasks/default.t1")[1]["status"], "delivered")


class RunNowTests(OpsTestCase):
    def test_run_makes_a_later_task_due_now_and_wakes_the_queue(self):
        self.add(data={"url": HOOK, "delay": "600"})
        self.clock.advance(5)
        response, body = self.call("POST", "/tasks/default.t1/run")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            body, {"id": "default.t1", "queue": "default", "status": "scheduled", "due_at": 1005.0}
        )
        self.assertEqual(self.woken[-1], ("default", 1005.0))
        self.assertEqual([t.id for t in self.claim()], ["default.t1"])

    def test_run_of_an_unknown_task_is_404(self):
        self.assertError(*self.call("POST", "/tasks/nope/run"), 404, "id")

    def test_run_of_a_dead_task_is_409_pointing_at_retry(self):
        task_id = self.bury()
        response, body = self.call("POST", f"/tasks/{task_id}/run")
        self.assertError(response, body, 409, "id")
        self.assertIn("/queues/default/dead/retry", body["error"]["message"])

    def test_run_of_a_running_task_is_409(self):
        self.add(data={"url": HOOK})
        self.claim()
        self.assertError(*self.call("POST", "/tasks/default.t1/run"), 409, "id")


class QueueTests(OpsTestCase):
    def test_no_queues_yet(self):
        response, body = self.call("GET", "/queues")
        self.assertEqual((response.code, body), (200, {"queues": [], "next_cursor": None}))

    def test_queues_show_counts_in_each_state(self):
        self.add(json={"url": HOOK, "queue": "mail"})
        self.add(json={"url": HOOK, "queue": "mail", "delay": 60})
        self.add(json={"url": HOOK, "queue": "default"})
        self.clock.advance(7)
        _, body = self.call("GET", "/queues")
        mail, default = sorted(body["queues"], key=lambda q: q["name"], reverse=True)
        self.assertEqual(
            {k: v for k, v in mail.items() if k != "recent"},
            {
                "name": "mail",
                "scheduled": 2,
                "due": 1,
                "running": 0,
                "dead": 0,
                "delivered": 0,
                "failed": 0,
                "oldest_due_age": 7.0,
                "paused": False,
                "processed_by": 0,
                "open_circuits": [],
            },
        )
        self.assertEqual(len(mail["recent"]), 15)
        self.assertEqual(mail["recent"][-1], {"at": 960, "delivered": 0, "retried": 0, "dead": 0})
        self.assertEqual(default["name"], "default")

    def test_one_queue(self):
        self.bury("mail")
        self.add(json={"url": HOOK, "queue": "mail"})
        response, body = self.call("GET", "/queues/mail")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            (body["name"], body["scheduled"], body["dead"], body["failed"]), ("mail", 1, 1, 1)
        )

    def test_unknown_queue_is_404_and_a_bad_name_400(self):
        self.assertError(*self.call("GET", "/queues/nothing"), 404, "queue")
        self.assertError(*self.call("GET", "/queues/no.dots"), 400, "queue")

    def test_pause_and_resume(self):
        self.add(data={"url": HOOK})
        response, body = self.call("POST", "/queues/default/pause")
        self.assertEqual((response.code, body), (200, {"name": "default", "paused": True}))
        self.assertTrue(self.call("GET", "/queues/default")[1]["paused"])
        self.assertEqual(self.claim(), [], "a paused queue dispatches nothing")
        response, body = self.call("POST", "/queues/default/resume")
        self.assertEqual((response.code, body), (200, {"name": "default", "paused": False}))
        self.assertEqual(self.woken[-1], ("default", 1000.0), "resume wakes the scheduler")
        self.assertEqual([t.id for t in self.claim()], ["default.t1"])

    def test_a_paused_queue_still_takes_adds(self):
        self.call("POST", "/queues/q1/pause")
        response, _ = self.add("/queues/q1/tasks", json={"url": HOOK})
        self.assertEqual(response.code, 201)
        self.assertEqual(self.call("GET", "/queues/q1")[1]["scheduled"], 1)

    def test_pausing_a_queue_that_never_existed_is_404_and_creates_nothing(self):
        self.assertError(*self.call("POST", "/queues/later/pause"), 404, "queue")
        self.assertError(*self.call("POST", "/queues/later/resume"), 404, "queue")
        self.assertEqual(self.call("GET", "/queues")[1]["queues"], [])
        self.assertError(*self.call("GET", "/queues/later"), 404, "queue")

    def test_pause_of_a_bad_name_is_400(self):
        self.assertError(*self.call("POST", "/queues/a%20b/pause"), 400, "queue")

    def test_purge_deletes_the_scheduled_tasks(self):
        dead = self.bury()
        self.add(data={"url": HOOK})
        self.add(data={"url": HOOK, "delay": "60"})
        response, body = self.call("DELETE", "/queues/default/tasks")
        self.assertEqual((response.code, body), (200, {"queue": "default", "purged": 2}))
        queue = self.call("GET", "/queues/default")[1]
        self.assertEqual((queue["scheduled"], queue["dead"]), (0, 1))
        self.assertEqual(self.call("GET", f"/tasks/{dead}")[1]["status"], "dead")

    def test_queues_are_paged_by_name(self):
        for name in ["e", "c", "a", "d", "b"]:
            self.add(json={"url": HOOK, "queue": name})
        seen, cursor = [], ""
        for _ in range(3):
            response, body = self.call("GET", f"/queues?limit=2&cursor={cursor}")
            self.assertEqual(response.code, 200)
            self.assertLessEqual(len(body["queues"]), 2)
            seen += [q["name"] for q in body["queues"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        self.assertEqual((seen, cursor), (["a", "b", "c", "d", "e"], None))
        for i in range(50):
            self.add(json={"url": HOOK, "queue": f"z{i:02d}"})
        _, first = self.call("GET", "/queues")
        self.assertEqual((len(first["queues"]), first["next_cursor"]), (50, "z44"), "50 by default")

    def test_bad_paging_of_queues_is_400(self):
        self.assertError(*self.call("GET", "/queues?limit=0"), 400, "limit")
        self.assertError(*self.call("GET", "/queues?limit=201"), 400, "limit")
        self.assertError(*self.call("GET", "/queues?cursor=no.such"), 400, "cursor")

    def beat(self, node_id, queues, started_at=900.0):
        node = NodeInfo(node_id, "host", 1, "0.1", queues, 0, started_at, self.clock.seconds())
        self.successResultOf(self.store.beat(node, 15.0))

    def test_a_queue_no_live_node_processes_says_processed_by_0(self):
        self.add(data={"url": HOOK})  # default
        self.add(json={"url": HOOK, "queue": "foobar"})
        self.beat("n1", ("foobar",))
        _, body = self.call("GET", "/queues")
        self.assertEqual({q["name"]: q["processed_by"] for q in body["queues"]},
                         {"default": 0, "foobar": 1})  # fmt: skip
        self.assertEqual(self.call("GET", "/queues/default")[1]["processed_by"], 0)
        self.beat("n2", None)  # every queue
        _, body = self.call("GET", "/queues")
        self.assertEqual({q["name"]: q["processed_by"] for q in body["queues"]},
                         {"default": 1, "foobar": 2})  # fmt: skip

    def test_an_add_to_a_queue_no_live_node_processes_is_logged_once_a_minute(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.api.processed = lambda queue: queue != "lost"

        def warnings():
            return [e["queue"] for e in events if "no live node" in e.get("log_format", "")]

        self.add(json={"url": HOOK, "queue": "lost"})
        self.add(json={"url": HOOK, "queue": "lost"})
        self.add(json={"url": HOOK, "queue": "found"})
        self.assertEqual(warnings(), ["lost"])
        self.clock.advance(60)
        self.add(json={"url": HOOK, "queue": "lost"})
        self.assertEqual(warnings(), ["lost", "lost"])

    def test_nodes_lists_the_live_nodes(self):
        self.beat("n1", None, started_at=950.0)
        self.beat("n2", ("a", "b"), started_at=940.0)
        response, body = self.call("GET", "/nodes")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            body["nodes"],
            [
                {"id": "n2", "host": "host", "pid": 1, "version": "0.1", "queues": ["a", "b"],
                 "in_flight": 0, "started_at": 940.0, "seen_at": 1000.0, "worker": None,
                 "supervisor_pid": None},
                {"id": "n1", "host": "host", "pid": 1, "version": "0.1", "queues": "*",
                 "in_flight": 0, "started_at": 950.0, "seen_at": 1000.0, "worker": None,
                 "supervisor_pid": None},
            ],
        )  # fmt: skip
        self.successResultOf(self.store.leave("n2"))
        self.assertEqual([n["id"] for n in self.call("GET", "/nodes")[1]["nodes"]], ["n1"])

    def test_delete_queue_forgets_an_empty_queue_only(self):
        dead = self.bury("mail")
        self.add(json={"url": HOOK, "queue": "mail"})
        response, body = self.call("DELETE", "/queues/mail")
        self.assertError(response, body, 409, "queue")
        self.assertIn("1 scheduled", body["error"]["message"])
        self.call("DELETE", "/queues/mail/tasks")
        self.assertError(*self.call("DELETE", "/queues/mail"), 409, "queue")
        self.call("DELETE", "/queues/mail/dead", data=json.dumps({"ids": [dead]}))
        response, body = self.call("DELETE", "/queues/mail")
        self.assertEqual((response.code, body), (200, {"name": "mail", "deleted": True}))
        self.assertEqual(self.call("GET", "/queues")[1]["queues"], [])
        self.assertError(*self.call("GET", "/queues/mail"), 404, "queue")
        self.assertError(*self.call("DELETE", "/queues/mail"), 404, "queue")
        self.assertError(*self.call("DELETE", "/queues/no.dots"), 400, "queue")

    def test_queues_allow_only_get(self):
        response, body = self.call("PUT", "/queues")
        self.assertError(response, body, 405)
        self.assertIn("GET", response.headers.getRawHeaders("allow")[0])


class DeadLetterTests(OpsTestCase):
    def test_dead_letters_newest_first_with_their_errors(self):
        first = self.bury(status=404)
        self.clock.advance(1)
        second = self.bury(status=410)
        response, body = self.call("GET", "/queues/default/dead")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            {k: body[k] for k in ("queue", "total", "offset", "limit")},
            {"queue": "default", "total": 2, "offset": 0, "limit": 50},
        )
        self.assertEqual([t["id"] for t in body["tasks"]], [second, first])
        letter = body["tasks"][0]
        self.assertEqual(
            (letter["status"], letter["last_status"], letter["last_error"], letter["dead_at"]),
            ("dead", 410, "refused by the handler: HTTP 410", 1001.0),
        )
        self.assertNotIn("body", letter)

    def test_dead_letters_are_paged(self):
        ids = []
        for _ in range(3):
            ids.append(self.bury())
            self.clock.advance(1)
        _, body = self.call("GET", "/queues/default/dead?offset=1&limit=1")
        self.assertEqual(([t["id"] for t in body["tasks"]], body["total"]), ([ids[1]], 3))

    def test_bad_paging_is_400(self):
        for query, field in [("limit=0", "limit"), ("limit=501", "limit"),
                             ("offset=-1", "offset"), ("limit=ten", "limit")]:  # fmt: skip
            self.assertError(*self.call("GET", f"/queues/default/dead?{query}"), 400, field)

    def test_dead_letter_secrets_are_redacted(self):
        _, body = self.add(json={"url": HOOK, "headers": {"X-Hook-Token": "t"}})
        (task,) = self.claim()
        self.settle(task, Dead(400, "no"))
        _, page = self.call("GET", "/queues/default/dead")
        self.assertEqual(page["tasks"][0]["headers"], {"X-Hook-Token": "[redacted]"})

    def test_retry_all(self):
        a, b = self.bury(), self.bury()
        self.clock.advance(3)
        response, body = self.call("POST", "/queues/default/dead/retry")
        self.assertEqual((response.code, body), (200, {"queue": "default", "retried": 2}))
        self.assertEqual(self.woken[-1], ("default", 1003.0))
        task = self.call("GET", f"/tasks/{a}")[1]
        self.assertEqual(
            (task["status"], task["attempts"], task["due_at"]), ("scheduled", 0, 1003.0)
        )
        self.assertEqual(task["history"][0]["outcome"], "requeued")
        self.assertEqual(sorted(t.id for t in self.claim()), sorted([a, b]))

    def test_retry_the_ids_given(self):
        a, b = self.bury(), self.bury()
        _, body = self.json_call("POST", "/queues/default/dead/retry", {"ids": [b, "nope"]})
        self.assertEqual(body["retried"], 1)
        self.assertEqual(self.call("GET", f"/tasks/{a}")[1]["status"], "dead")
        self.assertEqual(self.call("GET", f"/tasks/{b}")[1]["status"], "scheduled")

    def test_retry_of_nothing_wakes_nobody(self):
        woken = len(self.woken)
        _, body = self.call("POST", "/queues/default/dead/retry")
        self.assertEqual((body["retried"], len(self.woken)), (0, woken))

    def test_delete_the_ids_given_then_all(self):
        a = self.bury()
        self.bury()
        self.bury()
        _, body = self.json_call("DELETE", "/queues/default/dead", {"ids": [a]})
        self.assertEqual(body, {"queue": "default", "deleted": 1})
        self.assertError(*self.call("GET", f"/tasks/{a}"), 404, "id")
        _, body = self.call("DELETE", "/queues/default/dead")
        self.assertEqual(body["deleted"], 2)
        self.assertEqual(self.call("GET", "/queues/default/dead")[1]["total"], 0)

    def test_bad_bodies_are_400_and_change_nothing(self):
        task_id = self.bury()
        cases = [
            (b"{nope", "body", "invalid_json"),
            (b'["a"]', "body", "invalid_json"),
            (b"{}", "ids", "missing_field"),
            (b'{"ids": "a"}', "ids", "invalid_field"),
            (b'{"ids": [1]}', "ids", "invalid_field"),
            (b'{"ids": [""]}', "ids", "invalid_field"),
            (b'{"ids": [], "all": true}', "all", "unknown_field"),
        ]
        for method, path in [("POST", "/dead/retry"), ("DELETE", "/dead")]:
            for raw, field, code in cases:
                response, body = self.call(method, "/queues/default" + path, data=raw)
                self.assertError(response, body, 400, field)
                self.assertEqual(body["error"]["code"], code, raw)
        self.assertEqual(self.call("GET", f"/tasks/{task_id}")[1]["status"], "dead")

    def test_too_many_ids_is_400(self):
        ids = [f"t{i}" for i in range(10_001)]
        self.assertError(
            *self.json_call("DELETE", "/queues/default/dead", {"ids": ids}), 400, "ids"
        )

    def test_bad_queue_name_is_400(self):
        for method, path in [("GET", "/dead"), ("POST", "/dead/retry"), ("DELETE", "/dead"),
                             ("DELETE", "/tasks"), ("POST", "/resume")]:  # fmt: skip
            self.assertError(*self.call(method, "/queues/x.y" + path), 400, "queue")


class OpsStoreDownTests(OpsTestCase):
    """Every operation answers 503 with Retry-After when Redis doesn't."""

    ENDPOINTS = [
        ("GET", "/tasks/default.t1"),
        ("DELETE", "/tasks/default.t1"),
        ("POST", "/tasks/default.t1/run"),
        ("GET", "/queues"),
        ("GET", "/queues/default"),
        ("POST", "/queues/default/pause"),
        ("POST", "/queues/default/resume"),
        ("DELETE", "/queues/default/tasks"),
        ("GET", "/queues/default/dead"),
        ("POST", "/queues/default/dead/retry"),
        ("DELETE", "/queues/default/dead"),
        ("DELETE", "/queues/default"),
        ("GET", "/nodes"),
    ]

    def test_every_operation_answers_503(self):
        self.add(data={"url": HOOK})
        self.store.available = False
        for method, path in self.ENDPOINTS:
            response, body = self.call(method, path)
            self.assertError(response, body, 503)
            self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"], path)
