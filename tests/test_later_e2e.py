"""End to end, "not yet" and "later" (SPEC 4): a real ``twistd`` node, a
real receiver that answers with ``Torque-Postpone`` or ``202`` and
``Torque-Complete-Within``, and the handler's word back on the API with the
delivery's completion token."""

import json

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for

TOKEN = "api-s3cret"


def answer_with(receiver, path: str, *headers: dict):
    """Answers to ``path`` carry these headers in turn (the last repeats)."""
    plan = list(headers)
    render = receiver.render

    def render_with_headers(request):
        if request.path.decode() == path:
            extra = plan.pop(0) if len(plan) > 1 else plan[0]
            for name, value in extra.items():
                request.setHeader(name, value)
        return render(request)

    receiver.render = render_with_headers


class LaterTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def call(self, method, path, token=TOKEN, body=None):
        headers = {"Authorization": f"Bearer {token}"}
        kwargs = {"json": body} if body is not None else {}
        response = yield treq.request(
            method, self.node.url + path, headers=headers, persistent=False, **kwargs
        )
        return response.code, json.loads((yield response.content()))

    @defer.inlineCallbacks
    def add(self, path: str) -> str:
        status, body, _ = yield self.node.post(
            json_body={"url": self.receiver.url + path},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.assertEqual(status, 201)
        return body["id"]

    @defer.inlineCallbacks
    def status_is(self, task_id: str, status: str):
        code, body = yield self.call("GET", f"/tasks/{task_id}")
        return code == 200 and body["status"] == status

    @defer.inlineCallbacks
    def setUp(self):
        self.receiver = start_receiver(self)
        self.node = yield start_node(self, "--api-token", TOKEN, "--min-task-delay", "0.2")

    @defer.inlineCallbacks
    def test_a_postponed_task_comes_back_without_spending_an_attempt(self):
        self.receiver.respond("/not-yet", 503, 200)
        answer_with(self.receiver, "/not-yet", {"Torque-Postpone": "1"}, {})
        task_id = yield self.add("/not-yet")
        yield wait_for(lambda: self.status_is(task_id, "delivered"), what="the delivery")
        first, second = self.receiver.to("/not-yet")
        self.assertEqual(
            [first.headers["x-torque-retry-count"], second.headers["x-torque-retry-count"]],
            ["0", "0"],
            "the postponement spent no attempt",
        )
        self.assertGreaterEqual(second.at - first.at, 0.9)
        _, body = yield self.call("GET", f"/tasks/{task_id}")
        self.assertEqual([e["outcome"] for e in body["history"]], ["delivered", "postponed"])

    @defer.inlineCallbacks
    def test_a_handler_takes_a_task_over_and_reports_back_with_its_token(self):
        self.receiver.respond("/long", 202)
        answer_with(self.receiver, "/long", {"Torque-Complete-Within": "300"})
        done = yield self.add("/long")
        failed = yield self.add("/long")
        for task_id in (done, failed):
            yield wait_for(lambda t=task_id: self.status_is(t, "waiting"), what="waiting")
        tokens = {
            r.headers["x-torque-task-id"]: r.headers["torque-completion-token"]
            for r in self.receiver.to("/long")
        }
        self.assertEqual(set(tokens), {done, failed})

        # The token authorises its own task's completion, nothing else.
        code, _ = yield self.call("POST", f"/tasks/{failed}/complete", tokens[done])
        self.assertEqual(code, 403, "another task")
        for method, path in [("GET", f"/tasks/{done}"), ("DELETE", f"/tasks/{done}"),
                             ("POST", f"/tasks/{done}/run"), ("GET", "/queues")]:  # fmt: skip
            code, _ = yield self.call(method, path, tokens[done])
            self.assertEqual(code, 401, (method, path))
        self.assertTrue((yield self.status_is(done, "waiting")))

        code, body = yield self.call("POST", f"/tasks/{done}/complete", tokens[done])
        self.assertEqual((code, body), (200, {"id": done, "status": "delivered"}))
        self.assertTrue((yield self.status_is(done, "delivered")))

        # A failure reported: retried after retry_after, and this time it is delivered.
        self.receiver.respond("/long", 200)
        answer_with(self.receiver, "/long", {})
        report = {"error": "encoder crashed", "retry_after": 1}
        code, body = yield self.call("POST", f"/tasks/{failed}/fail", tokens[failed], report)
        self.assertEqual((code, body["status"]), (200, "scheduled"))
        yield wait_for(lambda: self.status_is(failed, "delivered"), what="the retry")
        _, body = yield self.call("GET", f"/tasks/{failed}")
        outcomes = [(e["outcome"], e["error"]) for e in body["history"]]
        self.assertEqual(
            outcomes,
            [("delivered", None), ("retried", "the handler reported: encoder crashed"),
             ("waiting", None)],
        )  # fmt: skip
        self.assertEqual(len(self.receiver.to("/long")), 3)

    @defer.inlineCallbacks
    def test_no_word_by_the_deadline_is_a_failed_attempt(self):
        self.receiver.respond("/forgotten", 202, 200)
        answer_with(self.receiver, "/forgotten", {"Torque-Complete-Within": "1"}, {})
        task_id = yield self.add("/forgotten")
        yield wait_for(lambda: self.status_is(task_id, "delivered"), what="the retry")
        first, second = self.receiver.to("/forgotten")
        self.assertEqual(second.headers["x-torque-retry-count"], "1")
        self.assertNotEqual(
            first.headers["torque-completion-token"], second.headers["torque-completion-token"]
        )
        _, body = yield self.call("GET", f"/tasks/{task_id}")
        self.assertEqual(
            [e["outcome"] for e in body["history"]], ["delivered", "retried", "waiting"]
        )
        self.assertIn("no word from the handler", body["history"][1]["error"])
