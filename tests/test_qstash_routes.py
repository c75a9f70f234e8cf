"""Unit tests of the QStash door's routes, driven by ``StubTreq`` over the
in-memory store and a ``Clock``: what the SDK tests can't easily reach
(a destination's query kept, all-or-nothing batches, error shapes, Redis
down, the door beside torque's own API)."""

from __future__ import annotations

import json

import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.api import TorqueAPI
from torque.doors import Doors
from torque.qstash.routes import PREFIXES, QStashAPI
from torque.qstash.signing_keys import SigningKeys

BASE = "http://torque.test"
HOOK = "https://example.com/hook"


class RoutesTestCase(unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.keys = SigningKeys()
        ids = (f"msg_{n}" for n in range(100))
        self.door = QStashAPI(
            self.store, self.clock, self.keys, new_id=lambda queue: f"{queue}.{next(ids)}"
        )
        api = TorqueAPI(self.store, self.clock)
        door = self.door.resource()
        self.stub = StubTreq(Doors(api.resource(), {path: door for path in PREFIXES}))

    def call(self, method, path, **kwargs):
        d = self.stub.request(method, BASE + path, **kwargs)
        self.stub.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(treq.content(response))
        return response, (json.loads(body) if body else None)

    def assertQStashError(self, response, body, status, text):
        self.assertEqual(response.code, status, body)
        self.assertEqual(set(body), {"error"})
        self.assertIn(text, body["error"])

    def task(self, task_id):
        return self.successResultOf(self.store.describe(task_id))


class PublishTests(RoutesTestCase):
    def test_the_destination_keeps_its_query_and_path(self):
        response, body = self.call("POST", f"/v2/publish/{HOOK}/a%20b?x=1&y=2", data=b"hi")
        self.assertEqual((response.code, body), (201, {"messageId": "default.msg_0"}))
        self.assertEqual(self.task("default.msg_0")["url"], HOOK + "/a%20b?x=1&y=2")

    def test_enqueue_names_the_queue_and_keeps_the_query(self):
        response, body = self.call("POST", f"/v2/enqueue/jobs/{HOOK}?x=1", data=b"hi")
        self.assertEqual(response.code, 201, body)
        fields = self.task("jobs.msg_0")
        self.assertEqual((fields["queue"], fields["url"]), ("jobs", HOOK + "?x=1"))

    def test_a_duplicate_is_a_202_with_the_first_id(self):
        headers = {"Upstash-Deduplication-Id": "d"}
        self.call("POST", f"/v2/publish/{HOOK}", data=b"1", headers=headers)
        response, body = self.call("POST", f"/v2/publish/{HOOK}", data=b"2", headers=headers)
        self.assertEqual(
            (response.code, body), (202, {"messageId": "default.msg_0", "deduplicated": True})
        )

    def test_a_destination_that_is_no_url_is_refused(self):
        response, body = self.call("POST", "/v2/publish/my-url-group", data=b"x")
        self.assertQStashError(response, body, 400, "URL groups")

    def test_a_bad_queue_name_is_refused(self):
        response, body = self.call("POST", f"/v2/enqueue/a.b/{HOOK}", data=b"x")
        self.assertQStashError(response, body, 400, "queue name")

    def test_a_batch_is_checked_whole_before_any_add(self):
        items = [
            {"destination": HOOK, "body": "ok"},
            {"destination": HOOK, "headers": {"Upstash-Retry-Delay": "1000"}, "body": "no"},
        ]
        response, body = self.call("POST", "/v2/batch", json=items)
        self.assertQStashError(response, body, 400, "Upstash-Retry-Delay")
        self.assertIsNone(self.task("default.msg_0"))
        response, body = self.call("POST", "/v2/batch", json=items[:1] * 2)
        self.assertEqual(
            (response.code, body),
            (201, [{"messageId": "default.msg_1"}, {"messageId": "default.msg_2"}]),
        )


class TargetTests(RoutesTestCase):
    def setUp(self):
        super().setUp()
        from torque.targets import TargetGuard, TargetRules

        rules = TargetRules.parse(["example.com"])
        self.door.targets = TargetGuard(rules, resolver=None, clock=self.clock)

    def test_a_batch_with_a_refused_target_adds_nothing(self):
        items = [{"destination": HOOK}, {"destination": "https://elsewhere.test/x"}]
        response, body = self.call("POST", "/v2/batch", json=items)
        self.assertQStashError(response, body, 400, "elsewhere.test")
        self.assertIsNone(self.task("default.msg_0"))


class ErrorTests(RoutesTestCase):
    def test_an_unknown_message_is_a_404(self):
        response, body = self.call("GET", "/v2/messages/msg_nope")
        self.assertQStashError(response, body, 404, "msg_nope")
        response, body = self.call("DELETE", "/v2/messages/msg_nope")
        self.assertQStashError(response, body, 404, "msg_nope")

    def test_what_torque_has_not_is_a_400_saying_so(self):
        for path, what in [
            ("/v2/schedules", "schedules"),
            ("/v2/topics/t/endpoints", "URL groups"),
        ]:
            response, body = self.call("GET", path)
            self.assertQStashError(response, body, 400, what)

    def test_redis_down_is_a_503(self):
        self.store.available = False
        response, body = self.call("POST", f"/v2/publish/{HOOK}", data=b"x")
        self.assertQStashError(response, body, 503, "Redis")
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])

    def test_keys_not_known_yet_is_a_503(self):
        response, body = self.call("GET", "/v2/keys")
        self.assertQStashError(response, body, 503, "signing keys")
        self.keys.current, self.keys.next = "sig_a", "sig_b"
        response, body = self.call("GET", "/v2/keys")
        self.assertEqual(body, {"current": "sig_a", "next": "sig_b"})

    def test_other_paths_are_torques_own_api(self):
        response, body = self.call("GET", "/v2/projects/p/locations/l/queues")
        self.assertEqual(response.code, 404)
        self.assertEqual(body["error"]["code"], "not_found")  # torque's shape
        response, body = self.call("GET", "/v2/queues")
        self.assertEqual((response.code, body), (200, []))


class QueueTests(RoutesTestCase):
    def test_upsert_keeps_created_at_and_sets_concurrency(self):
        self.call("POST", "/v2/queues", json={"queueName": "q", "parallelism": 4})
        self.clock.advance(5)
        self.call("POST", "/v2/queues", json={"queueName": "q", "parallelism": 2})
        _, shown = self.call("GET", "/v2/queues/q")
        self.assertEqual((shown["createdAt"], shown["updatedAt"]), (1_000_000, 1_005_000))
        self.assertEqual(shown["parallelism"], 2)
        self.assertEqual(self.successResultOf(self.store.get_settings("q")), {"concurrency": 2})

    def test_enqueue_makes_a_queue_of_parallelism_1_unless_torque_knows_it(self):
        self.call("POST", f"/v2/enqueue/fresh/{HOOK}", data=b"x")
        self.assertEqual(self.successResultOf(self.store.get_settings("fresh")), {"concurrency": 1})
        self.call("POST", "/queues/mine/tasks", data={"url": HOOK})  # torque's own API
        self.call("POST", f"/v2/enqueue/mine/{HOOK}", data=b"x")
        self.assertEqual(self.successResultOf(self.store.get_settings("mine")), {})
        _, shown = self.call("GET", "/v2/queues")
        self.assertEqual(
            [(q["name"], q["parallelism"]) for q in shown], [("fresh", 1), ("mine", 100)]
        )

    def test_bad_upserts_are_refused(self):
        for body, text in [
            ({"parallelism": 1}, "queueName"),
            ({"queueName": "q", "parallelism": 0}, "parallelism"),
            ({"queueName": "q", "parallelism": True}, "parallelism"),
            ({"queueName": "q", "paused": "yes"}, "paused"),
        ]:
            response, answer = self.call("POST", "/v2/queues", json=body)
            self.assertQStashError(response, answer, 400, text)

    def test_an_unknown_queue_is_a_404(self):
        for method, path in [
            ("GET", "/v2/queues/nope"),
            ("DELETE", "/v2/queues/nope"),
            ("POST", "/v2/queues/nope/pause"),
        ]:
            response, body = self.call(method, path)
            self.assertQStashError(response, body, 404, "nope")
