"""``POST /tasks/<id>/complete`` and ``/fail``: a handler that took its task
over reports back with the delivery's completion token, which authorises
that one task's completion and nothing else."""

from treq.testing import StubTreq

from tests.test_api import HOOK, APITestCase
from tests.test_store import claim
from torque.api import TorqueAPI
from torque.auth import RequireToken
from torque.completion import CompletionKey, attempt_of, token_for
from torque.retry import RetryPolicy, Waiting

API_TOKEN = "s3cret"


class CompletionTests(APITestCase):
    def setUp(self):
        super().setUp()
        self.key = CompletionKey(self.store.completion_key)
        self.api = TorqueAPI(
            self.store,
            self.clock,
            wake=lambda queue, due_at: self.woken.append((queue, due_at)),
            new_id=lambda queue: f"{queue}.{next(self.ids)}",
            completion_key=self.key,
            policy=RetryPolicy(max_errors=3, min_delay=10.0, jitter=0.0),
        )
        self.stub = StubTreq(RequireToken(self.api.resource(), [API_TOKEN]))

    def waiting(self, *task_ids: str) -> dict[str, str]:
        """Add tasks and have their first attempt taken over; their tokens."""
        now = self.clock.seconds()
        for _ in task_ids:
            self.add(data=dict(url=HOOK), headers={"Authorization": f"Bearer {API_TOKEN}"})
        tasks = self.successResultOf(claim(self.store, now=now, queue="default")).tasks
        outcomes = [(task, Waiting(now + 600, 202)) for task in tasks]
        self.successResultOf(self.store.settle("default", outcomes, now))
        key = self.successResultOf(self.key.get())
        return {task.id: token_for(key, task.id, task.attempts) for task in tasks}

    def report(self, task_id, token, verb="complete", **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.call("POST", f"/tasks/{task_id}/{verb}", headers=headers, **kw)

    def status(self, task_id):
        return self.successResultOf(self.store.describe(task_id))["status"]

    def test_the_token_completes_its_task(self):
        tokens = self.waiting("default.t1")
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        _, shown = self.call("GET", "/tasks/default.t1", headers=headers)
        self.assertEqual(shown["status"], "waiting")
        self.assertEqual(shown["waiting_until"], self.clock.seconds() + 600)
        response, body = self.report("default.t1", tokens["default.t1"])
        self.assertEqual((response.code, body), (200, {"id": "default.t1", "status": "delivered"}))
        self.assertEqual(self.status("default.t1"), "delivered")
        response, body = self.report("default.t1", tokens["default.t1"])
        self.assertError(response, body, 409, "id")

    def test_the_token_of_another_task_is_forbidden(self):
        tokens = self.waiting("default.t1", "default.t2")
        response, body = self.report("default.t2", tokens["default.t1"])
        self.assertError(response, body, 403, "authorization")
        response, body = self.report(
            "default.t2", tokens["default.t1"], "fail", json={"error": "x"}
        )
        self.assertError(response, body, 403, "authorization")
        self.assertEqual(self.status("default.t2"), "waiting")

    def test_the_token_opens_no_other_route(self):
        tokens = self.waiting("default.t1")
        for method, path in [
            ("GET", "/tasks/default.t1"),
            ("DELETE", "/tasks/default.t1"),
            ("POST", "/tasks/default.t1/run"),
            ("GET", "/queues"),
            ("PATCH", "/queues/default"),
            ("POST", "/hooks/add"),
            ("GET", "/tasks/default.t1/complete"),
            ("POST", "/tasks/default.t1/complete/x"),
        ]:
            with self.subTest(method=method, path=path):
                headers = {"Authorization": f"Bearer {tokens['default.t1']}"}
                response, body = self.call(method, path, headers=headers, json={})
                self.assertError(response, body, 401)
        self.assertEqual(self.status("default.t1"), "waiting")

    def test_a_made_up_or_missing_token_is_refused(self):
        self.waiting("default.t1")
        forged = "tct.1." + "A" * 43
        self.assertError(*self.report("default.t1", forged), 403, "authorization")
        self.assertError(*self.report("default.t1", None), 401)
        self.assertError(*self.report("default.t1", "nonsense"), 401)

    def test_an_api_token_works_too(self):
        self.waiting("default.t1")
        response, body = self.report("default.t1", API_TOKEN)
        self.assertEqual((response.code, body["status"]), (200, "delivered"))

    def test_fail_retries_after_retry_after_or_the_backoff(self):
        tokens = self.waiting("default.t1", "default.t2")
        now = self.clock.seconds()
        body = {"error": "encoder crashed", "retry_after": 30}
        response, answer = self.report("default.t1", tokens["default.t1"], "fail", json=body)
        self.assertEqual((response.code, answer["status"]), (200, "scheduled"))
        info = self.successResultOf(self.store.describe("default.t1"))
        self.assertEqual(float(info["due_at"]), now + 30)
        self.assertEqual(info["last_error"], "the handler reported: encoder crashed")
        self.assertIn(("default", now + 30), self.woken)
        self.report("default.t2", tokens["default.t2"], "fail", json={"error": "no"})
        info = self.successResultOf(self.store.describe("default.t2"))
        self.assertEqual(float(info["due_at"]), now + 10, "the node's min delay")

    def test_fail_follows_the_queues_settings(self):
        self.successResultOf(self.store.set_settings("default", {"max_errors": 1}))
        tokens = self.waiting("default.t1")
        response, body = self.report(
            "default.t1", tokens["default.t1"], "fail", json={"error": "no"}
        )
        self.assertEqual((response.code, body["status"]), (200, "dead"))

    def test_a_token_of_an_earlier_attempt_is_a_conflict(self):
        tokens = self.waiting("default.t1")
        key = self.successResultOf(self.key.get())
        self.assertEqual(attempt_of(key, tokens["default.t1"], "default.t1"), 1)
        self.clock.advance(601)  # no word by the deadline: retried
        self.successResultOf(claim(self.store, now=self.clock.seconds(), queue="default"))
        self.assertError(*self.report("default.t1", tokens["default.t1"]), 409, "id")

    def test_a_task_that_is_not_waiting_is_a_conflict(self):
        self.add(data=dict(url=HOOK), headers={"Authorization": f"Bearer {API_TOKEN}"})
        self.assertError(*self.report("default.t1", API_TOKEN), 409, "id")
        self.assertError(*self.report("nope", API_TOKEN), 404, "id")

    def test_a_bad_failure_body_names_its_field(self):
        tokens = self.waiting("default.t1")
        for body, field in [
            ({}, "error"),
            ({"error": ""}, "error"),
            ({"error": 5}, "error"),
            ({"error": "x", "retry_after": -1}, "retry_after"),
            ({"error": "x", "retry_after": "soon"}, "retry_after"),
            ({"error": "x", "colour": 1}, "colour"),
        ]:
            with self.subTest(body=body):
                response, answer = self.report(
                    "default.t1", tokens["default.t1"], "fail", json=body
                )
                self.assertError(response, answer, 400, field)
        self.assertEqual(self.status("default.t1"), "waiting")

    def test_an_open_node_takes_a_word_without_a_token(self):
        self.stub = StubTreq(self.api.resource())
        self.waiting("default.t1")
        response, body = self.call("POST", "/tasks/default.t1/complete")
        self.assertEqual((response.code, body["status"]), (200, "delivered"))
