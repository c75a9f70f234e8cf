"""Unit tests of how a QStash publish becomes a task
(:mod:`torque.qstash.headers`): every ``Upstash-*`` header honoured or
refused, names in any letter case."""

from __future__ import annotations

import json

from twisted.trial import unittest

from torque.qstash.headers import (
    DEFAULT_RETRIES,
    Publish,
    QStashError,
    build_task,
    duration,
    lower_headers,
)
from torque.task import JSON, Task

NOW = 1_800_000_000.0
URL = "https://example.com/hook?x=1&y=2"


def build(headers=None, body=b"{}", destination=URL, queue="default", **kw):
    message = Publish(destination, lower_headers((headers or {}).items()), body, queue, **kw)
    return build_task(message, new_id=lambda queue: f"{queue}.msg_1", now=NOW)


class DurationTests(unittest.TestCase):
    def test_units_and_sums(self):
        table = {"10s": 10, "5m": 300, "1h": 3600, "2d": 172800, "1h30m": 5400, "90": 90}
        for text, seconds in table.items():
            self.assertEqual(duration("Upstash-Delay", text), seconds, text)

    def test_anything_else_is_a_400_naming_the_header(self):
        for text in ["10x", "", "s", "-1s", "1.5s", "10 s"]:
            with self.assertRaises(QStashError, msg=text) as raised:
                duration("Upstash-Delay", text)
            self.assertEqual(raised.exception.status, 400)
            self.assertIn("Upstash-Delay", raised.exception.message)


class BuildTaskTests(unittest.TestCase):
    def test_a_plain_publish(self):
        task = build({"Content-Type": JSON}, b'{"a": 1}')
        self.assertEqual(
            (task.id, task.queue, task.url, task.method), ("default.msg_1", "default", URL, "POST")
        )
        self.assertEqual((task.body, task.content_type), ('{"a": 1}', JSON))
        self.assertEqual(
            (task.due_at, task.max_errors, task.timeout), (NOW, DEFAULT_RETRIES + 1, None)
        )
        self.assertEqual((task.door, task.headers, task.name), ("qstash", {}, ""))

    def test_every_option_in_the_python_sdks_title_case(self):
        task = build(
            {
                "Content-Type": "text/plain",
                "Upstash-Method": "PUT",
                "Upstash-Forward-X-Custom": "v",
                "Upstash-Forward-Authorization": "Bearer downstream",
                "Upstash-Retries": "0",
                "Upstash-Delay": "10s",
                "Upstash-Timeout": "30s",
                "Upstash-Callback": "https://example.com/cb",
                "Upstash-Callback-X-Cb": "1",
                "Upstash-Failure-Callback": "https://example.com/fail",
                "Upstash-Failure-Callback-X-Fcb": "2",
                "Upstash-Label": "lbl",
            },
            "raw body é".encode(),
            caller_ip="10.0.0.1",
        )
        self.assertEqual(task.method, "PUT")
        self.assertEqual(task.headers, {"X-Custom": "v", "Authorization": "Bearer downstream"})
        self.assertEqual((task.max_errors, task.due_at, task.timeout), (1, NOW + 10, 30.0))
        self.assertEqual((task.body, task.content_type), ("raw body é", "text/plain"))
        self.assertEqual(
            dict(task.door_data),
            {
                "retries": "0",
                "caller_ip": "10.0.0.1",
                "label": "lbl",
                "callback": "https://example.com/cb",
                "callback_headers": json.dumps({"X-Cb": "1"}),
                "failure_callback": "https://example.com/fail",
                "failure_callback_headers": json.dumps({"X-Fcb": "2"}),
            },
        )

    def test_a_body_without_a_media_type_is_not_taken_for_a_form(self):
        task = build({}, b"a=1")
        self.assertEqual(task.content_type, "application/octet-stream")
        flat = task.to_fields()
        stored = Task.from_fields(task.id, dict(zip(flat[::2], flat[1::2], strict=True)))
        self.assertEqual(stored.content_type, "application/octet-stream")
        self.assertEqual(build({}, b"").content_type, "")

    def test_the_js_sdks_lower_case_is_the_same(self):
        title = build({"Upstash-Delay": "5m", "Upstash-Method": "PATCH", "Upstash-Retries": "2"})
        lower = build({"upstash-delay": "5m", "upstash-method": "patch", "upstash-retries": "2"})
        self.assertEqual(title, lower)
        self.assertEqual((lower.due_at, lower.method, lower.max_errors), (NOW + 300, "PATCH", 3))

    def test_not_before_wins_over_the_delay_and_a_past_one_means_now(self):
        task = build({"Upstash-Delay": "90s", "Upstash-Not-Before": str(int(NOW) + 3600)})
        self.assertEqual(task.due_at, NOW + 3600)
        self.assertEqual(build({"Upstash-Not-Before": "1000"}).due_at, NOW)

    def test_the_js_sdks_telemetry_headers_are_not_the_message(self):
        task = build({"upstash-telemetry-sdk": "upstash-qstash-js@2.12.0"})
        self.assertEqual(task.headers, {})

    def test_deduplication_id_names_the_task(self):
        first = build({"Upstash-Deduplication-Id": "d-1"})
        again = build({"upstash-deduplication-id": "d-1"}, body=b"another body")
        other = build({"Upstash-Deduplication-Id": "d-2"})
        self.assertTrue(first.name.startswith("qstash-"))
        self.assertEqual(first.name, again.name)
        self.assertNotEqual(first.name, other.name)

    def test_content_based_deduplication_names_by_destination_options_and_body(self):
        on = {"Upstash-Content-Based-Deduplication": "True"}
        first = build(on)
        self.assertEqual(build({"upstash-content-based-deduplication": "true"}).name, first.name)
        self.assertEqual(build({**on, "upstash-telemetry-sdk": "x"}).name, first.name)
        self.assertNotEqual(build(on, body=b"[]").name, first.name)
        self.assertNotEqual(build({**on, "Upstash-Delay": "1s"}).name, first.name)
        self.assertNotEqual(build(on, destination=URL + "&z=3").name, first.name)
        self.assertEqual(build({"Upstash-Content-Based-Deduplication": "false"}).name, "")

    def test_refused_with_a_400_naming_the_header(self):
        cases = [
            ({"Upstash-Retry-Delay": "1000"}, "Upstash-Retry-Delay"),
            ({"Upstash-Flow-Control-Key": "k"}, "Upstash-Flow-Control-Key"),
            ({"Upstash-Redact-Fields": "body"}, "Upstash-Redact-Fields"),
            ({"Upstash-Something-New": "1"}, "Upstash-Something-New"),
            ({"Upstash-Callback-X-Cb": "1"}, "Upstash-Callback"),
            ({"Upstash-Method": "CONNECT"}, "Upstash-Method"),
            ({"Upstash-Retries": "-1"}, "Upstash-Retries"),
            ({"Upstash-Retries": "many"}, "Upstash-Retries"),
            ({"Upstash-Delay": "31d"}, "Upstash-Delay"),
            ({"Upstash-Timeout": "soon"}, "Upstash-Timeout"),
            ({"Upstash-Forward-Host": "evil"}, "Upstash-Forward-*"),
            ({"Upstash-Callback": "ftp://x"}, "Upstash-Callback: url must"),
            (
                {"Upstash-Callback": "https://example.com/cb", "Upstash-Callback-Host": "x"},
                "Upstash-Callback-*: header 'Host'",
            ),
            ({"Upstash-Content-Based-Deduplication": "yes"}, "Content-Based"),
        ]
        for headers, named in cases:
            with self.assertRaises(QStashError, msg=str(headers)) as raised:
                build(headers)
            self.assertEqual(raised.exception.status, 400)
            self.assertIn(named, raised.exception.message, headers)

    def test_a_body_that_is_not_utf8_is_refused(self):
        with self.assertRaises(QStashError) as raised:
            build(body=b"\x00\x01\xff")
        self.assertIn("UTF-8", raised.exception.message)
