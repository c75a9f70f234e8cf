"""Tests of torque.task: how a task is stored as a Redis hash, and read back
(hand-written hashes included)."""

from __future__ import annotations

import attrs
from twisted.trial import unittest

from tests.test_submission import HOOK, NOW, fields_to_hash, parse, parse_form
from torque.task import FORM, JSON, Task


class TaskFieldsTests(unittest.TestCase):
    def test_round_trip_of_a_full_task(self):
        task = parse(
            {
                "url": HOOK,
                "json": {"a": [1, 2]},
                "delay": 2.5,
                "queue": "emails",
                "name": "welcome-42",
                "method": "put",
                "headers": {"X-Trace": "abc"},
                "timeout": 12.5,
                "max_errors": 3,
            },
            new_id=lambda queue: f"{queue}.abc123",
        )
        task = attrs.evolve(task, attempts=2, door="cloudtasks", door_data={"name": "t-1"})
        flat = task.to_fields()
        self.assertTrue(all(isinstance(item, str) for item in flat), flat)
        self.assertEqual(Task.from_fields("emails.abc123", fields_to_hash(flat)), task)

    def test_every_set_field_is_written_once_in_order(self):
        task = Task(id="t1", queue="q", url=HOOK, method="PUT", body="[1]", content_type=JSON,
                    headers={"X-A": "1"}, name="n", due_at=2.5, created_at=1.5, timeout=3.0,
                    max_errors=4, attempts=5, door="d", door_data={"k": "v"})  # fmt: skip
        self.assertEqual(
            task.to_fields(),
            ["url", HOOK, "method", "PUT", "body", "[1]", "content_type", JSON,
             "headers", '{"X-A": "1"}', "name", "n", "timeout", "3.0", "max_errors", "4",
             "created_at", "1.5", "due_at", "2.5", "attempts", "5", "door", "d",
             "door_data", '{"k": "v"}'],
        )  # fmt: skip

    def test_round_trip_of_a_plain_task(self):
        for name, task in [
            ("form POST", parse_form({"url": HOOK, "params": '{"a": 1}'})),
            ("GET with a query", parse({"url": HOOK, "method": "GET", "params": {"a": 1}})),
            ("bare", Task(id="default.t1", queue="default", url=HOOK)),
        ]:
            fields = fields_to_hash(task.to_fields())
            self.assertEqual(Task.from_fields("default.t1", fields), task, name)

    def test_unset_and_default_fields_are_left_out(self):
        task = Task(id="t1", queue="default", url=HOOK, due_at=NOW, created_at=NOW)
        self.assertEqual(
            fields_to_hash(task.to_fields()),
            {"url": HOOK, "created_at": repr(NOW), "due_at": repr(NOW)},
        )
        form = attrs.evolve(task, body="a=1", content_type=FORM)
        self.assertEqual(fields_to_hash(form.to_fields())["body"], "a=1")
        self.assertNotIn("content_type", fields_to_hash(form.to_fields()))

    def test_what_is_left_out_reads_back_the_same(self):
        for task in [
            Task(id="q.t1", queue="q", url=HOOK, due_at=NOW, created_at=NOW),
            Task(id="q.t1", queue="q", url=HOOK, body="a=1", content_type=FORM, due_at=NOW),
            Task(id="q.t1", queue="q", url=HOOK, body="[1]", content_type=JSON, method="PUT"),
            Task(id="q.t1", queue="q", url=HOOK, method="GET", attempts=3),
        ]:
            fields = fields_to_hash(task.to_fields())
            self.assertEqual(Task.from_fields("q.t1", fields), task, fields)

    def test_the_queue_is_the_one_the_id_names(self):
        task = Task(id="emails.t1", queue="emails", url=HOOK)
        fields = fields_to_hash(task.to_fields())
        self.assertNotIn("queue", fields)
        self.assertEqual(Task.from_fields("emails.t1", fields).queue, "emails")

    def test_minimal_hand_written_hash(self):
        task = Task.from_fields("x1", {"url": HOOK, "queue": "emails"})
        self.assertEqual(task, Task(id="x1", queue="emails", url=HOOK))
        self.assertEqual(
            (task.method, task.body, task.content_type, task.headers, task.due_at, task.attempts),
            ("POST", "", "", {}, 0.0, 0),
        )

    def test_hand_written_hash_with_a_body_and_a_lower_case_method(self):
        task = Task.from_fields("x1", {"url": HOOK, "queue": "q", "method": "put", "body": "a=1"})
        self.assertEqual((task.method, task.body, task.content_type), ("PUT", "a=1", FORM))

    # -- edges that mutation testing found unguarded (tests/mutation/run task)

    def test_a_post_given_in_any_letter_case_leaves_the_method_out(self):
        # "post".upper() is a new str, equal to "POST" but not the same object
        for method in ("post", "POST", "Post"):
            fields = fields_to_hash(parse({"url": HOOK, "method": method}).to_fields())
            self.assertNotIn("method", fields, method)

    def test_a_form_content_type_read_back_from_redis_is_left_out_again(self):
        # A hash's text comes back from Redis as a new str, not torque's FORM.
        task = Task.from_fields(
            "t1", {"url": HOOK, "body": "a=1", "content_type": FORM.encode().decode()}
        )
        self.assertNotIn("content_type", fields_to_hash(task.to_fields()))

    def test_any_other_content_type_with_a_body_is_kept(self):
        # Left out, it would read back as a form body.
        for content_type in ("text/plain", "application/xml", JSON):
            task = Task(id="q.t1", queue="q", url=HOOK, body="x", content_type=content_type)
            fields = fields_to_hash(task.to_fields())
            self.assertEqual(fields["content_type"], content_type)
            self.assertEqual(Task.from_fields("q.t1", fields), task)
