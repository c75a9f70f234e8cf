"""Unit tests of the Klein API, driven by ``StubTreq`` over an in-memory
store and a ``Clock``."""

from __future__ import annotations

import json

import treq
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.api import TorqueAPI
from torque.site import QuietSite

TORQUE = "http://torque.test"
HOOK = "http://app.test/hooks/do/foo"
SEED = {"url": HOOK, "params": '{"foo": "somevalue", "baz": 99}'}


class APITestCase(unittest.TestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.woken: list[tuple[str, float]] = []
        self.ids = iter(["t1", "t2", "t3"])
        self.api = TorqueAPI(
            self.store,
            self.clock,
            wake=lambda queue, due_at: self.woken.append((queue, due_at)),
            new_id=lambda queue: f"{queue}.{next(self.ids)}",
        )
        self.stub = StubTreq(self.api.resource())

    def call(self, method, path, **kwargs):
        """Make a request; return ``(response, parsed JSON body)``."""
        d = self.stub.request(method, TORQUE + path, **kwargs)
        self.stub.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(treq.content(response))
        return response, json.loads(body)

    def add(self, path="/hooks/add", **kwargs):
        return self.call("POST", path, **kwargs)

    def assertError(self, response, body, status, field=None):
        self.assertEqual(response.code, status)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(set(body), {"error"})
        self.assertIsInstance(body["error"]["code"], str)
        self.assertIsInstance(body["error"]["message"], str)
        if field is not None:
            self.assertEqual(body["error"]["field"], field)


class AddTests(APITestCase):
    def test_form_post_creates_the_task(self):
        response, body = self.add(data=SEED)
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/tasks/default.t1"])
        self.assertEqual(
            {k: body[k] for k in ("id", "queue", "name", "status", "due_at")},
            {
                "id": "default.t1",
                "queue": "default",
                "name": None,
                "status": "scheduled",
                "due_at": 1000.0,
            },
        )

    def test_form_params_are_stored_form_encoded(self):
        self.add(data=SEED)
        self.assertEqual(self.store.tasks["default.t1"]["body"], "foo=somevalue&baz=99")
        self.assertEqual(self.store.tasks["default.t1"]["url"], HOOK)
        self.assertEqual(self.store.due, {"default": {"default.t1": 1000.0}})

    def test_add_wakes_the_queue(self):
        self.add(data=SEED)
        self.assertEqual(self.woken, [("default", 1000.0)])

    def test_json_body(self):
        response, body = self.add(json={"url": HOOK, "params": {"foo": "somevalue", "baz": 99}})
        self.assertEqual((response.code, body["id"]), (201, "default.t1"))
        self.assertEqual(self.store.tasks["default.t1"]["body"], "foo=somevalue&baz=99")

    def test_add_task_alias(self):
        response, body = self.add("/add_task", data=SEED)
        self.assertEqual((response.code, body["id"]), (201, "default.t1"))
        self.assertEqual(self.store.tasks["default.t1"]["body"], "foo=somevalue&baz=99")

    def test_queue_route(self):
        response, body = self.add("/queues/q1/tasks", json={"url": HOOK})
        self.assertEqual((response.code, body["queue"]), (201, "q1"))
        self.assertEqual(self.store.due, {"q1": {"q1.t1": 1000.0}})
        self.assertEqual(self.woken, [("q1", 1000.0)])

    def test_delay_counts_from_now(self):
        _, body = self.add(data={"url": HOOK, "delay": "20"})
        self.assertEqual(body["due_at"], 1020.0)
        self.assertEqual(self.woken, [("default", 1020.0)])

    def test_duplicate_name_answers_the_first_task(self):
        self.add(json={"url": HOOK, "name": "nightly"})
        response, body = self.add(json={"url": HOOK + "/other", "name": "nightly"})
        self.assertEqual(response.code, 200)
        self.assertEqual((body["id"], body["duplicate"]), ("default.t1", True))
        self.assertEqual(list(self.store.tasks), ["default.t1"])
        self.assertEqual(self.woken, [("default", 1000.0)])


class BadInputTests(APITestCase):
    def assertRefused(self, field, path="/hooks/add", **kwargs):
        response, body = self.add(path, **kwargs)
        self.assertError(response, body, 400, field)
        self.assertEqual(self.store.tasks, {})
        self.assertEqual(self.woken, [])

    def test_missing_url(self):
        self.assertRefused("url", data={"params": "{}"})

    def test_ftp_url(self):
        self.assertRefused("url", data={"url": "ftp://app.test/x"})

    def test_relative_url_without_base_url(self):
        self.assertRefused("url", data={"url": "/hooks/do/foo"})

    def test_params_not_an_object(self):
        self.assertRefused("params", data={"url": HOOK, "params": "[1, 2]"})

    def test_negative_delay(self):
        self.assertRefused("delay", data={"url": HOOK, "delay": "-1"})

    def test_bad_queue(self):
        self.assertRefused("queue", data={"url": HOOK, "queue": "no spaces"})

    def test_bad_queue_in_route(self):
        self.assertRefused("queue", "/queues/a.b/tasks", json={"url": HOOK})

    def test_bad_name(self):
        self.assertRefused("name", data={"url": HOOK, "name": "a/b"})

    def test_unknown_method(self):
        self.assertRefused("method", data={"url": HOOK, "method": "BREW"})

    def test_malformed_json_body(self):
        self.assertRefused("body", data=b'{"url": ', headers={"Content-Type": "application/json"})

    def test_json_body_that_is_a_list(self):
        self.assertRefused(
            "body", data=json.dumps([{"url": HOOK}]), headers={"Content-Type": "application/json"}
        )


class StoreDownTests(APITestCase):
    def setUp(self):
        super().setUp()
        self.store.available = False

    def test_add_answers_503_with_retry_after(self):
        response, body = self.add(data=SEED)
        self.assertError(response, body, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        self.assertEqual(self.woken, [])

    def test_health_answers_503(self):
        response, _ = self.call("GET", "/health")
        self.assertEqual(response.code, 503)


class NodeTests(APITestCase):
    def test_health_answers_200(self):
        response, body = self.call("GET", "/health")
        self.assertEqual((response.code, body), (200, {"status": "ok"}))

    def test_unknown_path_is_404(self):
        self.assertError(*self.call("GET", "/nowhere"), 404)

    def test_get_on_add_is_405(self):
        self.assertError(*self.call("GET", "/hooks/add"), 405)

    def test_405_names_the_allowed_methods(self):
        response, _ = self.call("GET", "/hooks/add")
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])


class TaskTests(APITestCase):
    def test_get_shows_a_scheduled_task(self):
        self.add(data={"url": HOOK, "delay": "5"})
        response, body = self.call("GET", "/tasks/default.t1")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            {k: body[k] for k in ("id", "queue", "url", "status", "attempts", "due_at")},
            {
                "id": "default.t1",
                "queue": "default",
                "url": HOOK,
                "status": "scheduled",
                "attempts": 0,
                "due_at": 1005.0,
            },
        )
        self.assertEqual(body["created_at"], 1000.0)

    def test_get_unknown_task_is_404(self):
        self.assertError(*self.call("GET", "/tasks/nope"), 404, "id")

    def test_an_id_that_names_no_queue_is_404_on_every_task_route(self):
        """Ids carry their queue (``<queue>.<token>``): one that names none
        (no ``.``, a bad queue part) is simply no task, never a 500."""
        self.add(data=SEED)
        for task_id in ["t1", ".t1", "bad%20q.t1", "q%7Bx%7D.t1", "default.", "nope.t1"]:
            for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/run")]:
                self.assertError(*self.call(method, f"/tasks/{task_id}{path}"), 404, "id")

    def test_delete_cancels_the_task(self):
        self.add(data=SEED)
        response, body = self.call("DELETE", "/tasks/default.t1")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["cancelled"], True)
        self.assertError(*self.call("GET", "/tasks/default.t1"), 404, "id")
        self.assertEqual(self.store.due, {"default": {}})


class HostileInputTests(APITestCase):
    """Bodies and URLs that used to crash a handler (a 500) or were taken
    although no web hook could be sent them: each is a 400 naming the part
    at fault, and nothing is stored."""

    def assertRefused(self, status_field, method, path, **kwargs):
        response, body = self.call(method, path, **kwargs)
        self.assertError(response, body, 400, status_field)
        self.assertEqual(self.store.tasks, {})
        return body["error"]

    def raw_json(self, text: str) -> dict:
        return {"data": text.encode(), "headers": {"Content-Type": "application/json"}}

    def test_json_nested_too_deeply_to_parse(self):
        deep = "[" * 100_000 + "]" * 100_000
        for path in ["/hooks/add", "/queues/default/dead/retry"]:
            error = self.assertRefused("body", "POST", path, **self.raw_json(deep))
            self.assertEqual(error["code"], "invalid_json", path)
        self.assertRefused("body", "DELETE", "/queues/default/dead", **self.raw_json(deep))

    def test_nan_and_infinity_are_not_json(self):
        # json.dumps would pass them on to the web hook as a body that is not JSON.
        for text in [
            f'{{"url": "{HOOK}", "json": NaN}}',
            f'{{"url": "{HOOK}", "json": [Infinity]}}',
            f'{{"url": "{HOOK}", "json": 1e999}}',
        ]:
            error = self.assertRefused("body", "POST", "/hooks/add", **self.raw_json(text))
            self.assertEqual(error["code"], "invalid_json", text)

    def test_lone_surrogates_are_refused_naming_the_field(self):
        for field, text in [
            ("url", f'{{"url": "{HOOK}\\ud800"}}'),
            ("params", f'{{"url": "{HOOK}", "params": {{"\\udfff": 1}}}}'),
            ("headers", f'{{"url": "{HOOK}", "headers": {{"X-A": "\\ud800"}}}}'),
        ]:
            error = self.assertRefused(field, "POST", "/hooks/add", **self.raw_json(text))
            self.assertEqual(error["code"], "invalid_encoding", field)
        for method, path in [("POST", "/dead/retry"), ("DELETE", "/dead")]:
            body = self.raw_json('{"ids": ["\\ud800"]}')
            error = self.assertRefused("ids", method, "/queues/default" + path, **body)
            self.assertEqual(error["code"], "invalid_encoding", path)

    def test_url_treq_can_not_request(self):
        self.assertRefused("url", "POST", "/hooks/add", json={"url": "http://my_app:8000/x"})
        self.assertRefused("url", "POST", "/hooks/add", json={"url": "http://app:/x"})

    def test_path_that_is_not_utf8(self):
        for path in ["/tasks/%ff", "/queues/%ed%a0%80", "/queues/%c3/dead"]:
            error = self.assertRefused("path", "GET", path)
            self.assertEqual(error["code"], "invalid_encoding", path)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_page_numbers_are_ascii_digits(self):
        for query in ["limit=5_0", "limit=%205", "limit=%D9%A5", "limit=%2B5", "offset=1e3"]:
            field = query.partition("=")[0]
            self.assertRefused(field, "GET", f"/queues/default/dead?{query}")

    def test_page_number_with_more_digits_than_int_takes(self):
        # int() refuses a string of over 4,300 digits with a ValueError.
        for digits in ["9" * 5000, "-" + "9" * 5000]:
            error = self.assertRefused("offset", "GET", f"/queues/default/dead?offset={digits}")
            self.assertIn("from 0 to", error["message"])


class SiteTests(unittest.TestCase):
    """Through torque's own ``QuietSite`` over a real socket: the site leaves
    form bodies to the API, which must read them itself."""

    def setUp(self):
        self.store = MemoryStore()
        api = TorqueAPI(self.store, Clock(), new_id=lambda queue: f"{queue}.t1")
        port = reactor.listenTCP(0, QuietSite(api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/hooks/add"

    @defer.inlineCallbacks
    def post(self, **kwargs):
        response = yield treq.post(self.url, persistent=False, **kwargs)
        return response.code, json.loads((yield response.content()))

    @defer.inlineCallbacks
    def test_form_body_and_query_string_fields(self):
        status, body = yield self.post(params={"queue": "emails"}, data=SEED)
        self.assertEqual((status, body["queue"]), (201, "emails"))
        self.assertEqual(self.store.tasks["emails.t1"]["body"], "foo=somevalue&baz=99")

    @defer.inlineCallbacks
    def test_another_media_type_is_refused_naming_the_body(self):
        status, body = yield self.post(
            data=b"url=" + HOOK.encode(), headers={"Content-Type": "text/plain"}
        )
        self.assertEqual(status, 400)
        self.assertEqual(
            (body["error"]["code"], body["error"]["field"]), ("unsupported_media_type", "body")
        )
        self.assertEqual(self.store.tasks, {})
