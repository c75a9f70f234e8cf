"""Unit tests of the blocking client, against a stdlib HTTP server playing
torque in a thread (the real node is in ``test_client_e2e``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import FrozenInstanceError
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, NamedTuple

from twisted.trial import unittest

import torque
from torque import client
from torque.client import (
    Added,
    Client,
    TaskRejected,
    TorqueError,
    TorqueUnavailable,
    add_task,
    parse_answer,
)

HOOK = "http://example.com/hooks/do/foo"
HANG_UP = object()


class Request(NamedTuple):
    path: str
    headers: dict[str, str]
    payload: Any
    client_port: int


class FakeTorque:
    """Answers ``POST /hooks/add`` like torque: 201 and the task by default,
    or the scripted answers, in order.

    :ivar requests: every request read, in order.
    :ivar hang_up_after_answer: close each connection after answering, without
        saying so, as a server does to an idle kept-alive connection.
    """

    def __init__(self, testcase: unittest.TestCase):
        self.requests: list[Request] = []
        self.answers: list[Any] = []
        self.tasks = 0
        self.hang_up_after_answer = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll keeps shutdown() from waiting half a second per test.
        thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        testcase.addCleanup(self.server.server_close)
        testcase.addCleanup(self.server.shutdown)

    def answer(self, status: Any, body: Any = b"") -> None:
        """Script the next answer: a status and a JSON-able or bytes body, or
        ``HANG_UP`` to close the connection without answering."""
        self.answers.append((status, body))

    @property
    def connections(self) -> set[int]:
        """The client ports seen: one per TCP connection."""
        return {request.client_port for request in self.requests}

    def next_answer(self, payload: Any) -> tuple[Any, Any]:
        if self.answers:
            return self.answers.pop(0)
        if isinstance(payload, list):  # POST /tasks/batch
            return 200, {"results": [{"status": 201, "task": self.task(p)} for p in payload]}
        return 201, self.task(payload, len(self.requests))

    def task(self, payload: dict, number: int | None = None) -> dict:
        """The task's answer: numbered by request for a single add, by task
        in a batch."""
        self.tasks += 1
        return {
            "id": f"t-{number or self.tasks}",
            "queue": payload.get("queue", "default"),
            "name": payload.get("name"),
            "status": "scheduled",
            "due_at": 1000.0 + payload.get("delay", 0),
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as torque does
    timeout = 5  # a stray connection does not outlive the test

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers["Content-Length"]))
        payload = json.loads(body)
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake.requests.append(Request(self.path, headers, payload, self.client_address[1]))
        status, answer = fake.next_answer(payload)
        if status is HANG_UP:
            self.close_connection = True
            return
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if fake.hang_up_after_answer:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


def set_env(testcase: unittest.TestCase, name: str, value: str | None) -> None:
    """Set (or, with ``None``, unset) an environment variable for one test."""
    old = os.environ.get(name)
    testcase.addCleanup(_restore_env, name, old)
    _restore_env(name, value)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class IsolatedTestCase(unittest.TestCase):
    """The caller's environment must not leak into these tests."""

    def setUp(self) -> None:
        set_env(self, "TORQUE_URL", None)
        set_env(self, "TORQUE_API_TOKEN", None)
        self.torque = FakeTorque(self)


class SeedSpellingTests(IsolatedTestCase):
    """The three spellings of SPEC §7 send the same request."""

    def test_module_add(self) -> None:
        added = client.add(url=HOOK, params={"a": 1}, delay=20, torque_url=self.torque.url)
        [request] = self.torque.requests
        self.assertEqual(request.path, "/hooks/add")
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertEqual(request.payload, {"url": HOOK, "params": {"a": 1}, "delay": 20})
        self.assertEqual(
            added,
            Added(
                id="t-1",
                queue="default",
                name=None,
                status="scheduled",
                due_at=1020.0,
                duplicate=False,
            ),
        )

    def test_task_add_reads_torque_url(self) -> None:
        set_env(self, "TORQUE_URL", self.torque.url)
        t = client.Task(url="/hooks/do/foo", params={"a": 1}, delay=2)
        added = t.add()
        [request] = self.torque.requests
        self.assertEqual(request.payload, {"url": "/hooks/do/foo", "params": {"a": 1}, "delay": 2})
        self.assertEqual(added.due_at, 1002.0)

    def test_add_task_is_the_older_spelling(self) -> None:
        set_env(self, "TORQUE_URL", self.torque.url)
        added = add_task(url=HOOK, params={"a": 1}, delay=20)
        self.assertEqual(added.id, "t-1")
        self.assertEqual(self.torque.requests[0].payload["params"], {"a": 1})

    def test_every_field_passes_through(self) -> None:
        fields = {
            "json": [1, "two"],
            "eta": 1234.5,
            "queue": "mail",
            "name": "welcome-42",
            "method": "PUT",
            "headers": {"X-Trace": "abc"},
            "timeout": 5.0,
            "max_errors": 3,
        }
        client.add(HOOK, torque_url=self.torque.url, **fields)
        self.assertEqual(self.torque.requests[0].payload, {"url": HOOK, **fields})

    def test_unknown_field_fails_before_sending(self) -> None:
        with self.assertRaises(TypeError):
            client.add(HOOK, param={"a": 1}, torque_url=self.torque.url)
        self.assertEqual(self.torque.requests, [])

    def test_task_is_frozen(self) -> None:
        t = client.Task(url=HOOK)
        with self.assertRaises(FrozenInstanceError):
            t.url = "http://elsewhere/"  # type: ignore[misc]


class ServerAndTokenTests(IsolatedTestCase):
    """Where the client sends, and with which credentials."""

    def test_default_url(self) -> None:
        self.assertEqual(client.resolve_url(), "http://localhost:8090")
        self.assertEqual(Client().url, "http://localhost:8090/hooks/add")

    def test_argument_beats_environment(self) -> None:
        set_env(self, "TORQUE_URL", "http://from-env:1")
        self.assertEqual(client.resolve_url(), "http://from-env:1")
        self.assertEqual(client.resolve_url("http://arg:2"), "http://arg:2")

    def test_path_prefix_is_kept(self) -> None:
        Client(self.torque.url + "/torque/").add(HOOK)
        self.assertEqual(self.torque.requests[0].path, "/torque/hooks/add")

    def test_not_an_http_url(self) -> None:
        for url in ("ftp://host", "localhost:8090", "http://"):
            with self.subTest(url=url), self.assertRaises(ValueError):
                Client(url)

    def test_token_argument(self) -> None:
        client.add(HOOK, torque_url=self.torque.url, api_token="s3cret")
        headers = self.torque.requests[0].headers
        self.assertEqual(headers["authorization"], "Bearer s3cret")

    def test_token_from_environment(self) -> None:
        set_env(self, "TORQUE_API_TOKEN", "from-env")
        client.add(HOOK, torque_url=self.torque.url)
        headers = self.torque.requests[0].headers
        self.assertEqual(headers["authorization"], "Bearer from-env")

    def test_no_token(self) -> None:
        client.add(HOOK, torque_url=self.torque.url)
        self.assertNotIn("authorization", self.torque.requests[0].headers)


class ConnectionTests(IsolatedTestCase):
    """One kept-alive connection, one reconnect, bounded waits."""

    def make_client(self, **kwargs: Any) -> Client:
        c = Client(self.torque.url, **kwargs)
        self.addCleanup(c.close)
        return c

    def test_add_many_over_one_connection_in_order(self) -> None:
        tasks = [
            {"url": HOOK, "params": {"n": 1}},
            client.Task(url=HOOK, params={"n": 2}),
            {"url": HOOK, "queue": "other"},
        ]
        results = client.add_many(tasks, torque_url=self.torque.url)
        self.assertEqual([r.id for r in results], ["t-1", "t-2", "t-3"])
        self.assertEqual(results[2].queue, "other")
        [request] = self.torque.requests
        self.assertEqual(request.path, "/tasks/batch")
        self.assertEqual([p.get("params") for p in request.payload], [{"n": 1}, {"n": 2}, None])

    def test_add_many_sends_1000_tasks_a_request_over_one_connection(self) -> None:
        results = client.add_many([{"url": HOOK}] * 2500, torque_url=self.torque.url)
        self.assertEqual([r.id for r in results], [f"t-{i}" for i in range(1, 2501)])
        self.assertEqual([len(r.payload) for r in self.torque.requests], [1000, 1000, 500])
        self.assertEqual(len(self.torque.connections), 1)

    def test_add_many_keeps_each_request_under_the_nodes_body_limit(self) -> None:
        big = {"url": HOOK, "params": {"x": "y" * 100_000}}  # about 100 KB each
        client.add_many([big] * 20, torque_url=self.torque.url)
        sizes = [len(json.dumps(r.payload)) for r in self.torque.requests]
        self.assertEqual([len(r.payload) for r in self.torque.requests], [9, 9, 2])
        self.assertLess(max(sizes), client.BATCH_BYTES)

    def test_add_many_with_refused_tasks_raises_with_each_result(self) -> None:
        error = {"code": "invalid_field", "message": "url must be http(s)", "field": "url"}
        task = {"id": "t-9", "queue": "q", "name": "n", "status": "scheduled", "due_at": 1.0}
        self.torque.answer(200, {"results": [
            {"status": 201, "task": task},
            {"status": 400, "error": error},
            {"status": 200, "task": {**task, "duplicate": True}},
        ]})  # fmt: skip
        with self.assertRaises(client.BatchRejected) as caught:
            client.add_many(
                [{"url": HOOK}, {"url": "ftp://x"}, {"url": HOOK}], torque_url=self.torque.url
            )
        added, refused, duplicate = caught.exception.results
        self.assertEqual((added.id, added.duplicate), ("t-9", False))
        self.assertIsInstance(refused, TaskRejected)
        self.assertEqual((refused.status, refused.field), (400, "url"))
        self.assertEqual((duplicate.id, duplicate.duplicate), ("t-9", True))
        self.assertIsInstance(caught.exception, TaskRejected)
        self.assertEqual(caught.exception.field, "url")
        self.assertIn("1 of 3 tasks refused", str(caught.exception))

    def test_add_many_when_torque_is_down_raises_unavailable(self) -> None:
        self.torque.answer(503, {"error": {"code": "unavailable", "message": "Redis"}})
        with self.assertRaises(TorqueUnavailable):
            client.add_many([{"url": HOOK}], torque_url=self.torque.url)

    def test_add_many_refuses_an_answer_that_is_not_one_result_per_task(self) -> None:
        self.torque.answer(200, {"results": []})
        with self.assertRaises(client.TorqueError) as caught:
            client.add_many([{"url": HOOK}], torque_url=self.torque.url)
        self.assertEqual(caught.exception.code, "bad_answer")

    def test_add_many_of_nothing(self) -> None:
        self.assertEqual(client.add_many([], torque_url=self.torque.url), [])

    def test_add_many_rejects_other_things(self) -> None:
        with self.assertRaises(TypeError):
            client.add_many([HOOK], torque_url=self.torque.url)

    def test_add_many_sends_nothing_when_a_task_is_misspelled(self) -> None:
        tasks = [{"url": HOOK}, {"url": HOOK, "param": {"a": 1}}]
        with self.assertRaises(TypeError):
            client.add_many(tasks, torque_url=self.torque.url)
        self.assertEqual(self.torque.requests, [])

    def test_add_many_takes_any_iterable(self) -> None:
        results = client.add_many(({"url": HOOK} for _ in range(2)), torque_url=self.torque.url)
        self.assertEqual([r.id for r in results], ["t-1", "t-2"])

    def test_client_keeps_its_connection(self) -> None:
        c = self.make_client()
        c.add(HOOK)
        c.add(HOOK)
        self.assertEqual(len(self.torque.requests), 2)
        self.assertEqual(len(self.torque.connections), 1)

    def test_reconnects_once_when_kept_alive_socket_was_closed(self) -> None:
        self.torque.hang_up_after_answer = True
        c = self.make_client()
        first, second = c.add(HOOK), c.add(HOOK)
        self.assertEqual((first.id, second.id), ("t-1", "t-2"))
        self.assertEqual(len(self.torque.connections), 2)

    def test_reconnects_only_once(self) -> None:
        c = self.make_client()
        c.add(HOOK)
        self.torque.answer(HANG_UP)
        self.torque.answer(HANG_UP)
        with self.assertRaises(TorqueUnavailable) as caught:
            c.add(HOOK)
        self.assertEqual(caught.exception.code, "connection_failed")
        self.assertEqual(len(self.torque.requests), 3)

    def test_fresh_connection_is_not_retried(self) -> None:
        self.torque.answer(HANG_UP)
        with self.assertRaises(TorqueUnavailable):
            self.make_client().add(HOOK)
        self.assertEqual(len(self.torque.requests), 1)

    def test_usable_after_a_failure(self) -> None:
        c = self.make_client()
        self.torque.answer(HANG_UP)
        with self.assertRaises(TorqueUnavailable):
            c.add(HOOK)
        self.assertEqual(c.add(HOOK).id, "t-2")

    def test_refused(self) -> None:
        c = Client(f"http://127.0.0.1:{closed_port()}")
        with self.assertRaises(TorqueUnavailable) as caught:
            c.add(HOOK)
        self.assertEqual(caught.exception.code, "connection_failed")
        self.assertIsNone(caught.exception.status)

    def test_timeout(self) -> None:
        # The kernel completes the connection; nobody ever answers.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        c = Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.05)
        with self.assertRaises(TorqueUnavailable) as caught:
            c.add(HOOK)
        self.assertEqual(caught.exception.code, "timeout")
        self.assertIn("0.05 s", caught.exception.message)


class AnswerTests(IsolatedTestCase):
    """torque's answers become values or the right exception."""

    def test_duplicate(self) -> None:
        existing = {
            "id": "t-9",
            "queue": "default",
            "name": "once",
            "status": "scheduled",
            "due_at": 5.0,
            "duplicate": True,
        }
        self.torque.answer(200, existing)
        added = client.add(HOOK, name="once", torque_url=self.torque.url)
        self.assertEqual(added, Added("t-9", "default", "once", "scheduled", 5.0, True))

    def test_rejected(self) -> None:
        error = {"code": "invalid_url", "message": "must be http(s)", "field": "url"}
        self.torque.answer(400, {"error": error})
        with self.assertRaises(TaskRejected) as caught:
            client.add("ftp://x", torque_url=self.torque.url)
        rejected = caught.exception
        self.assertIsInstance(rejected, TorqueError)
        self.assertEqual(
            (rejected.status, rejected.code, rejected.message, rejected.field),
            (400, "invalid_url", "must be http(s)", "url"),
        )
        self.assertEqual(str(rejected), "url: must be http(s) (invalid_url, HTTP 400)")

    def test_unavailable(self) -> None:
        error = {"code": "redis_unavailable", "message": "Redis is down"}
        self.torque.answer(503, {"error": error})
        with self.assertRaises(TorqueUnavailable) as caught:
            client.add(HOOK, torque_url=self.torque.url)
        self.assertEqual(caught.exception.status, 503)
        self.assertEqual(caught.exception.code, "redis_unavailable")
        self.assertIsNone(caught.exception.field)


class ParseAnswerTests(unittest.TestCase):
    """:func:`parse_answer` as a table: status and body in, value or error
    out."""

    task: ClassVar = {
        "id": "t",
        "queue": "q",
        "name": "",
        "status": "scheduled",
        "due_at": 1,
    }

    def test_success(self) -> None:
        cases = [
            (201, self.task, Added("t", "q", None, "scheduled", 1.0, False)),
            (
                200,
                {**self.task, "duplicate": True},
                Added("t", "q", None, "scheduled", 1.0, True),
            ),
            (200, self.task, Added("t", "q", None, "scheduled", 1.0, True)),
        ]
        for status, body, expected in cases:
            with self.subTest(status=status, body=body):
                self.assertEqual(parse_answer(status, json.dumps(body).encode()), expected)

    def test_errors(self) -> None:
        cases = [
            (
                400,
                b'{"error": {"code": "c", "message": "m", "field": "f"}}',
                TaskRejected,
                "c",
                "m",
                "f",
            ),
            (
                401,
                b'{"error": {"code": "unauthorized", "message": "no"}}',
                TaskRejected,
                "unauthorized",
                "no",
                None,
            ),
            (413, b"too big", TaskRejected, "http_413", "too big", None),
            (404, b"", TaskRejected, "http_404", "HTTP 404", None),
            (408, b"", TorqueUnavailable, "http_408", "HTTP 408", None),
            (429, b"", TorqueUnavailable, "http_429", "HTTP 429", None),
            (
                500,
                b"<html>oops</html>",
                TorqueUnavailable,
                "http_500",
                "<html>oops</html>",
                None,
            ),
            (
                502,
                b'{"error": "not an object"}',
                TorqueUnavailable,
                "http_502",
                '{"error": "not an object"}',
                None,
            ),
            (
                503,
                b'{"error": {"code": "redis", "message": "down"}}',
                TorqueUnavailable,
                "redis",
                "down",
                None,
            ),
            (302, b"", TorqueError, "http_302", "HTTP 302", None),
            (201, b"ok", TorqueError, "bad_answer", "unexpected answer: ok", None),
            (
                201,
                b'{"id": "t"}',
                TorqueError,
                "bad_answer",
                'unexpected answer: {"id": "t"}',
                None,
            ),
            (200, b"[]", TorqueError, "bad_answer", "unexpected answer: []", None),
        ]
        for status, body, kind, code, message, field in cases:
            with self.subTest(status=status, body=body):
                with self.assertRaises(TorqueError) as caught:
                    parse_answer(status, body)
                error = caught.exception
                self.assertIs(type(error), kind)
                self.assertEqual(
                    (error.status, error.code, error.message, error.field),
                    (status, code, message, field),
                )


class ImportTests(unittest.TestCase):
    """Django and Flask users must not pay for Twisted, nor for anything
    else outside the standard library."""

    def imported_by_the_client(self) -> list[str]:
        """The top-level packages that importing ``torque.client`` brings
        in, in a fresh interpreter."""
        check = (
            "import sys; before = set(sys.modules); import torque.client; "
            "print(' '.join(sorted({m.partition('.')[0] for m in set(sys.modules) - before})))"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(torque.__file__)))
        result = subprocess.run(
            [sys.executable, "-c", check], cwd=root, check=True, capture_output=True, text=True
        )
        return result.stdout.split()

    def test_no_twisted(self) -> None:
        packages = self.imported_by_the_client()
        self.assertIn("torque", packages)
        self.assertNotIn("twisted", packages)

    def test_standard_library_only(self) -> None:
        outside = set(self.imported_by_the_client()) - set(sys.stdlib_module_names)
        self.assertEqual(outside, {"torque"})
