"""Unit tests of the Twisted client, with ``StubTreq`` over a resource that
plays torque (the real node is in ``test_client_e2e``)."""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, fail
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from torque import client, txclient
from torque.client import Added, TaskRejected, TorqueUnavailable

HOOK = "http://example.com/hooks/do/foo"
TORQUE = "http://torque.test:8090"


class FakeTorque(Resource):
    """Answers ``POST /hooks/add`` like torque: 201 and the task by default,
    or the scripted answers, in order.

    :ivar requests: ``(path, headers, payload)`` of every request, in order.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, dict[str, str], Any]] = []
        self.answers: list[tuple[int, Any]] = []
        self.tasks = 0

    def render_POST(self, request: Any) -> bytes:
        payload = json.loads(request.content.read())
        headers = {
            name.decode().lower(): values[0].decode()
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        self.requests.append((request.path, headers, payload))
        if self.answers:
            status, body = self.answers.pop(0)
        elif isinstance(payload, list):  # POST /tasks/batch
            results = [{"status": 201, "task": self.created(p)[1]} for p in payload]
            status, body = 200, {"results": results}
        else:
            status, body = self.created(payload)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    def created(self, payload: dict) -> tuple[int, dict]:
        self.tasks += 1
        return 201, {
            "id": f"t-{self.tasks}",
            "queue": payload.get("queue", "default"),
            "name": payload.get("name"),
            "status": "scheduled",
            "due_at": 1000.0 + payload.get("delay", 0),
        }


class FailingHTTP:
    """A treq-like client whose every request fails with ``error``, as treq
    does when the node is down or silent."""

    def __init__(self, error: Exception):
        self.error = error
        self.calls: list[tuple[str, dict]] = []

    def post(self, url: str, **kwargs: Any):
        self.calls.append((url, kwargs))
        return fail(self.error)


class TxClientTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.torque = FakeTorque()
        self.http = StubTreq(self.torque)
        self.client = txclient.Client(TORQUE, http=self.http)

    def payloads(self) -> list[Any]:
        return [payload for _, _, payload in self.torque.requests]


class SpellingTests(TxClientTestCase):
    """The blocking client's surface, returning Deferreds."""

    def test_add(self) -> None:
        d = txclient.add(url=HOOK, params={"a": 1}, delay=20, torque_url=TORQUE, http=self.http)
        self.assertEqual(
            self.successResultOf(d),
            Added("t-1", "default", None, "scheduled", 1020.0, False),
        )
        [(path, headers, payload)] = self.torque.requests
        self.assertEqual(path, b"/hooks/add")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(payload, {"url": HOOK, "params": {"a": 1}, "delay": 20})

    def test_task_add(self) -> None:
        t = txclient.Task(url="/hooks/do/foo", params={"a": 1}, delay=2)
        added = self.successResultOf(t.add(self.client))
        self.assertEqual(added.due_at, 1002.0)
        self.assertEqual(
            self.payloads(), [{"url": "/hooks/do/foo", "params": {"a": 1}, "delay": 2}]
        )

    def test_add_task_is_the_older_spelling(self) -> None:
        d = txclient.add_task(HOOK, torque_url=TORQUE, http=self.http, name="n")
        self.assertEqual(self.successResultOf(d).name, "n")

    def test_client_add_passes_every_field(self) -> None:
        fields = {
            "json": {"k": [1]},
            "eta": 99.5,
            "queue": "mail",
            "name": "n-1",
            "method": "PATCH",
            "headers": {"X-A": "b"},
            "timeout": 2.5,
            "max_errors": 4,
        }
        self.successResultOf(self.client.add(HOOK, **fields))
        self.assertEqual(self.payloads(), [{"url": HOOK, **fields}])

    def test_add_many_in_order(self) -> None:
        tasks = [
            {"url": HOOK, "params": {"n": 1}},
            txclient.Task(url=HOOK, params={"n": 2}),
            client.Task(url=HOOK, queue="other"),
        ]
        d = txclient.add_many(tasks, torque_url=TORQUE, http=self.http)
        results = self.successResultOf(d)
        self.assertEqual([r.id for r in results], ["t-1", "t-2", "t-3"])
        self.assertEqual(results[2].queue, "other")
        [(path, _, payload)] = self.torque.requests
        self.assertEqual(path, b"/tasks/batch")
        self.assertEqual([p.get("params") for p in payload], [{"n": 1}, {"n": 2}, None])

    def test_add_many_sends_1000_tasks_a_request(self) -> None:
        results = self.successResultOf(self.client.add_many([{"url": HOOK}] * 1500))
        self.assertEqual(len(results), 1500)
        self.assertEqual([len(p) for p in self.payloads()], [1000, 500])

    def test_add_many_with_refused_tasks_fails_with_each_result(self) -> None:
        error = {"code": "invalid_field", "message": "bad", "field": "url"}
        task = {"id": "t-9", "queue": "q", "name": None, "status": "scheduled", "due_at": 1.0}
        results = [{"status": 400, "error": error}, {"status": 201, "task": task}]
        self.torque.answers = [(200, {"results": results})]
        d = self.client.add_many([{"url": "ftp://x"}, {"url": HOOK}])
        failure = self.failureResultOf(d, client.BatchRejected)
        refused, added = failure.value.results
        self.assertEqual((refused.field, added.id), ("url", "t-9"))

    def test_add_many_stops_when_a_request_is_not_taken(self) -> None:
        first = {"results": [{"status": 201, "task": self.torque.created({})[1]}] * 1000}
        self.torque.answers = [(200, first), (503, b"no")]
        d = self.client.add_many([{"url": HOOK}] * 2500)
        self.failureResultOf(d, TorqueUnavailable)
        self.assertEqual(len(self.torque.requests), 2)

    def test_unknown_field_fails_the_deferred(self) -> None:
        self.failureResultOf(self.client.add(HOOK, param={}), TypeError)
        self.assertEqual(self.torque.requests, [])

    def test_add_many_sends_nothing_when_a_task_is_misspelled(self) -> None:
        d = self.client.add_many([{"url": HOOK}, {"url": HOOK, "param": {"a": 1}}])
        self.failureResultOf(d, TypeError)
        self.assertEqual(self.torque.requests, [])

    def test_one_set_of_rules(self) -> None:
        """The twin reuses the blocking client's types, so one ``except``
        serves both."""
        self.assertIs(txclient.TaskRejected, client.TaskRejected)
        self.assertIs(txclient.TorqueUnavailable, client.TorqueUnavailable)
        self.assertTrue(issubclass(txclient.Task, client.Task))


class ServerAndTokenTests(unittest.TestCase):
    def setUp(self) -> None:
        # The caller's environment must not leak into these tests.
        self.patch(os, "environ", {})

    def test_defaults(self) -> None:
        c = txclient.Client()
        self.assertEqual(c.url, "http://localhost:8090/hooks/add")
        self.assertIs(c._http, treq)
        self.assertEqual(c.timeout, 10)

    def test_environment(self) -> None:
        self.patch(
            os,
            "environ",
            {"TORQUE_URL": "http://env:1/p", "TORQUE_API_TOKEN": "tok"},
        )
        torque = FakeTorque()
        c = txclient.Client(http=StubTreq(torque))
        self.assertEqual(c.url, "http://env:1/p/hooks/add")
        self.successResultOf(c.add(HOOK))
        [(path, headers, _)] = torque.requests
        self.assertEqual(path, b"/p/hooks/add")
        self.assertEqual(headers["authorization"], "Bearer tok")

    def test_token_argument(self) -> None:
        torque = FakeTorque()
        c = txclient.Client(TORQUE, api_token="s3cret", http=StubTreq(torque))
        self.successResultOf(c.add(HOOK))
        self.assertEqual(torque.requests[0][1]["authorization"], "Bearer s3cret")

    def test_no_token(self) -> None:
        torque = FakeTorque()
        self.successResultOf(txclient.Client(TORQUE, http=StubTreq(torque)).add(HOOK))
        self.assertNotIn("authorization", torque.requests[0][1])


class AnswerTests(TxClientTestCase):
    def test_duplicate(self) -> None:
        existing = {
            "id": "t-9",
            "queue": "default",
            "name": "once",
            "status": "scheduled",
            "due_at": 5.0,
            "duplicate": True,
        }
        self.torque.answers = [(200, existing)]
        added = self.successResultOf(self.client.add(HOOK, name="once"))
        self.assertEqual(added, Added("t-9", "default", "once", "scheduled", 5.0, True))

    def test_rejected(self) -> None:
        error = {"code": "invalid_url", "message": "must be http(s)", "field": "url"}
        self.torque.answers = [(400, {"error": error})]
        failure = self.failureResultOf(self.client.add("ftp://x"), TaskRejected)
        rejected = failure.value
        self.assertEqual(
            (rejected.status, rejected.code, rejected.message, rejected.field),
            (400, "invalid_url", "must be http(s)", "url"),
        )

    def test_unavailable(self) -> None:
        error = {"code": "redis_unavailable", "message": "Redis is down"}
        self.torque.answers = [(503, {"error": error})]
        failure = self.failureResultOf(self.client.add(HOOK), TorqueUnavailable)
        self.assertEqual((failure.value.status, failure.value.code), (503, error["code"]))


class TransportTests(unittest.TestCase):
    """What treq raises when the node is down or silent becomes
    :class:`TorqueUnavailable`."""

    def test_errors(self) -> None:
        cases = [
            (ConnectionRefusedError(), "connection_failed"),
            (DNSLookupError("torque.test"), "connection_failed"),
            (CancelledError(), "timeout"),
            (ResponseNeverReceived([Failure(CancelledError())]), "timeout"),
            (ResponseFailed([Failure(ConnectionDone())]), "connection_failed"),
        ]
        for error, code in cases:
            with self.subTest(error=error):
                http = FailingHTTP(error)
                c = txclient.Client(TORQUE, http=http, timeout=3)
                failure = self.failureResultOf(c.add(HOOK), TorqueUnavailable)
                self.assertEqual(failure.value.code, code)
                self.assertIsNone(failure.value.status)
                self.assertIs(failure.value.__cause__, error)
                self.assertNotIn("Failure", failure.value.message)

    def test_lost_answer_names_its_reason(self) -> None:
        error = ResponseFailed([Failure(ConnectionDone()), Failure(RuntimeError())])
        c = txclient.Client(TORQUE, http=FailingHTTP(error))
        failure = self.failureResultOf(c.add(HOOK), TorqueUnavailable)
        self.assertEqual(
            failure.value.message,
            "cannot reach torque: the connection was lost before a complete answer "
            "(ConnectionDone: Connection was closed cleanly.)",
        )

    def test_posts_to_the_add_endpoint(self) -> None:
        http = FailingHTTP(ConnectionRefusedError())
        txclient.Client(TORQUE, http=http, timeout=3).add(HOOK).addErrback(lambda _: None)
        [(url, kwargs)] = http.calls
        self.assertEqual(url, TORQUE + "/hooks/add")
        self.assertEqual(json.loads(kwargs["data"]), {"url": HOOK})

    def test_other_errors_are_not_hidden(self) -> None:
        """A bug is not an outage: it is not dressed up as one."""
        c = txclient.Client(TORQUE, http=FailingHTTP(ZeroDivisionError()))
        self.failureResultOf(c.add(HOOK), ZeroDivisionError)


class SilentTorque(Resource):
    """A node that takes the request and never finishes its answer: nothing
    at all, or the headers and ``partial`` of the body.

    :ivar lost: the requests whose connection was closed, in order.
    """

    isLeaf = True

    def __init__(self, partial: bytes = b"") -> None:
        super().__init__()
        self.partial = partial
        self.lost: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        if self.partial:
            request.setResponseCode(201)
            request.write(self.partial)
        return NOT_DONE_YET


class DeadlineTests(unittest.TestCase):
    """``timeout`` bounds the whole exchange on the injected clock: the
    request, and the answer's body too (treq's own ``timeout`` stops at the
    headers), and gives the connection up."""

    TIMEOUT = 3.0

    def add(self, torque: SilentTorque):
        self.clock = Clock()
        self.stub = StubTreq(torque)
        c = txclient.Client(TORQUE, http=self.stub, timeout=self.TIMEOUT, clock=self.clock)
        d = c.add(HOOK)
        self.stub.flush()
        return d

    def assert_times_out(self, torque: SilentTorque, d) -> None:
        self.clock.advance(self.TIMEOUT - 0.001)
        self.stub.flush()
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.stub.flush()
        failure = self.failureResultOf(d, TorqueUnavailable)
        self.assertEqual((failure.value.code, failure.value.status), ("timeout", None))
        self.assertIn("3 s", failure.value.message)
        self.assertEqual(len(torque.lost), 1)

    def test_no_answer(self) -> None:
        torque = SilentTorque()
        self.assert_times_out(torque, self.add(torque))

    def test_answer_stalls_after_its_headers(self) -> None:
        torque = SilentTorque(partial=b'{"id": "t-1", ')
        self.assert_times_out(torque, self.add(torque))

    def test_a_prompt_answer_leaves_no_timer(self) -> None:
        self.clock = Clock()
        c = txclient.Client(TORQUE, http=StubTreq(FakeTorque()), clock=self.clock)
        self.assertEqual(self.successResultOf(c.add(HOOK)).id, "t-1")
        self.assertEqual(self.clock.getDelayedCalls(), [])
