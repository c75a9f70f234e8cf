"""The Cloud Tasks door's pure parts: resource names, the wire forms
(timestamps, durations, enums), a Task and a Queue to torque and back, and
the delivery headers."""

from __future__ import annotations

import base64

from twisted.trial import unittest

from torque.cloudtasks import DOOR
from torque.cloudtasks.errors import GoogleError
from torque.cloudtasks.names import QueueName, parse_queue_name, split_verb, task_id_in
from torque.cloudtasks.profile import CloudTasksProfile
from torque.cloudtasks.queues import (
    UNLIMITED_ATTEMPTS,
    QueueRecord,
    new_queue,
    queue_json,
    updated_queue,
)
from torque.cloudtasks.tasks import task_from_request, task_json
from torque.cloudtasks.wire import (
    format_duration,
    format_timestamp,
    http_method,
    parse_duration,
    parse_timestamp,
    view,
)
from torque.queue_settings import QueueConfig
from torque.retry import RetryPolicy
from torque.task import Task

Q = QueueName("my-proj", "us-central1", "my-queue")
NOW = 1_893_553_000.0  # a few minutes before 2030-01-02T03:04:05Z


def create(task: dict, **kw) -> tuple[Task, bool]:
    return task_from_request(
        {"task": task, **kw},
        Q,
        new_id=lambda queue: f"{queue}.t1",
        new_name="00000000000000000042",
        now=NOW,
    )


class NameTests(unittest.TestCase):
    def test_a_queue_name_maps_to_its_queue_id(self):
        name = parse_queue_name("projects/example.com:p/locations/us-central1/queues/my-queue")
        self.assertEqual(name.queue, "my-queue")
        self.assertEqual(name.parent, "projects/example.com:p/locations/us-central1")
        self.assertEqual(str(name), "projects/example.com:p/locations/us-central1/queues/my-queue")

    def test_bad_queue_names_are_invalid_arguments(self):
        for bad in (
            "projects/p/locations/l/queues/under_score",  # legal in torque, not in Cloud Tasks
            "projects/p/locations/l/queues/",
            "projects/p/locations/l/topics/q",
            "projects/p/queues/q",
            "projects/p/locations/l/queues/" + "q" * 101,
            None,
        ):
            with self.assertRaises(GoogleError) as raised:
                parse_queue_name(bad, "queue.name")
            self.assertEqual(raised.exception.status, "INVALID_ARGUMENT", bad)
            self.assertEqual(raised.exception.field, "queue.name")

    def test_a_task_name_must_lie_in_the_queue_of_the_call(self):
        self.assertEqual(task_id_in(Q, f"{Q}/tasks/task_1-a"), "task_1-a")
        for bad in (f"{Q}/tasks/", f"{Q}/tasks/a.b", "projects/p/locations/l/queues/o/tasks/t"):
            with self.assertRaises(GoogleError):
                task_id_in(Q, bad)

    def test_custom_verbs_split_on_the_last_colon(self):
        self.assertEqual(split_verb("my-queue:pause"), ("my-queue", "pause"))
        self.assertEqual(split_verb("task-1"), ("task-1", None))
        self.assertEqual(split_verb("a:b:run"), ("a:b", "run"))


class WireTests(unittest.TestCase):
    def test_timestamps_take_up_to_nine_fraction_digits_and_offsets(self):
        self.assertEqual(parse_timestamp("2030-01-02T03:04:05Z", "t"), 1893553445.0)
        self.assertAlmostEqual(
            parse_timestamp("2030-01-02T03:04:05.678901234Z", "t"), 1893553445.678901234
        )
        self.assertAlmostEqual(parse_timestamp("2030-01-02T03:04:05.5z", "t"), 1893553445.5)
        self.assertEqual(parse_timestamp("2030-01-02T04:04:05+01:00", "t"), 1893553445.0)
        self.assertEqual(parse_timestamp("2030-01-02T02:34:05-00:30", "t"), 1893553445.0)

    def test_bad_timestamps_are_refused_naming_the_field(self):
        for bad in (
            "2030-02-31T00:00:00Z",
            "2030-01-02 03:04:05Z",
            "2030-01-02T03:04:05",
            "2030-01-02T03:04:05.1234567890Z",
            "2030-01-02T24:00:00Z",
            1893553445,
        ):
            with self.assertRaises(GoogleError) as raised:
                parse_timestamp(bad, "task.scheduleTime")
            self.assertEqual(raised.exception.field, "task.scheduleTime", bad)

    def test_timestamps_are_written_to_the_microsecond(self):
        self.assertEqual(format_timestamp(1893553445.678901), "2030-01-02T03:04:05.678901Z")
        self.assertEqual(format_timestamp(1893553445.9999995), "2030-01-02T03:04:05.999999Z")
        self.assertEqual(format_timestamp(1893553445.7, whole=True), "2030-01-02T03:04:05Z")

    def test_durations(self):
        self.assertEqual(parse_duration("30s", "d"), 30.0)
        self.assertEqual(parse_duration("0.100s", "d"), 0.1)
        self.assertEqual(parse_duration("1.000000001s", "d"), 1.000000001)
        for bad in ("30", "1m", "s", "1.5 s", 30):
            with self.assertRaises(GoogleError):
                parse_duration(bad, "d")
        self.assertEqual(
            [format_duration(s) for s in (60, 0.1, 1.5, 0.000001, 2.0000001)],
            ["60s", "0.100s", "1.500s", "0.000001s", "2.000000100s"],
        )

    def test_enums_come_as_numbers_or_names(self):
        self.assertEqual(
            [http_method(n) for n in range(8)],
            ["POST", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"],
        )
        self.assertEqual(http_method("PUT"), "PUT")
        self.assertEqual(http_method("HTTP_METHOD_UNSPECIFIED"), "POST")
        self.assertEqual(
            [view(v) for v in (0, 1, 2, "2", "FULL", "VIEW_UNSPECIFIED")],
            ["BASIC", "BASIC", "FULL", "FULL", "FULL", "BASIC"],
        )
        for bad in (8, -1, True, "put", "FAST", None):
            with self.assertRaises(GoogleError):
                http_method(bad)


class TaskMappingTests(unittest.TestCase):
    def test_a_full_task_becomes_a_torque_task_of_the_door(self):
        task, named = create(
            {
                "name": f"{Q}/tasks/task-123",
                "httpRequest": {
                    "url": "https://example.com/handler?x=1",
                    "httpMethod": 4,
                    "headers": {"Content-Type": "application/json", "X-Custom": "v"},
                    "body": "eyJoZWxsbyI6ICJ3b3JsZCJ9",
                },
                "scheduleTime": "2030-01-02T03:04:05.678901Z",
                "dispatchDeadline": "30s",
            },
            responseView=2,
        )
        self.assertTrue(named)
        self.assertEqual(
            (task.id, task.queue, task.name, task.url, task.method),
            ("my-queue.t1", "my-queue", "task-123", "https://example.com/handler?x=1", "PUT"),
        )
        self.assertEqual((task.body, task.content_type), ('{"hello": "world"}', "application/json"))
        self.assertEqual(task.headers, {"X-Custom": "v"})
        self.assertAlmostEqual(task.due_at, 1893553445.678901)
        self.assertEqual((task.timeout, task.created_at), (30.0, NOW))
        self.assertEqual(task.door, DOOR)
        self.assertEqual(task.door_data, {"project": "my-proj", "location": "us-central1"})

    def test_a_task_without_name_gets_one_and_is_due_now(self):
        task, named = create({"httpRequest": {"url": "https://example.com/h"}})
        self.assertFalse(named)
        self.assertEqual(
            (task.name, task.due_at, task.method), ("00000000000000000042", NOW, "POST")
        )
        self.assertEqual((task.body, task.content_type, task.timeout), ("", "", None))

    def test_a_schedule_time_in_the_past_is_now(self):
        task, _ = create(
            {"httpRequest": {"url": "https://e.com/"}, "scheduleTime": "2001-01-01T00:00:00Z"}
        )
        self.assertEqual(task.due_at, NOW)

    def test_a_body_in_either_base64_alphabet_padded_or_not(self):
        for text, body in [
            ("Pz8_", "???"),
            ("Pz8/", "???"),
            ("Pz8_Pg", "???>"),
            ("Pz8/Pg==", "???>"),
        ]:
            task, _ = create({"httpRequest": {"url": "https://e.com/", "body": text}})
            self.assertEqual(task.body, body, text)

    def test_headers_cloud_tasks_computes_are_dropped_and_its_reserved_ones_refused(self):
        headers = {"Host": "x", "Content-Length": "3", "User-Agent": "me", "X-Ok": "1"}
        task, _ = create({"httpRequest": {"url": "https://e.com/", "headers": headers}})
        self.assertEqual(task.headers, {"X-Ok": "1"})
        for name in ("X-CloudTasks-TaskName", "X-Google-Foo", "X-AppEngine-Foo", "X-Torque-Queue"):
            with self.assertRaises(GoogleError) as raised:
                create({"httpRequest": {"url": "https://e.com/", "headers": {name: "x"}}})
            self.assertEqual(raised.exception.field, "task.httpRequest.headers", name)

    def test_what_torque_cannot_do_is_refused_not_ignored(self):
        refused = {
            "task.httpRequest.oidcToken": {
                "httpRequest": {"url": "https://e.com/", "oidcToken": {"audience": "a"}}
            },
            "task.httpRequest.oauthToken": {
                "httpRequest": {"url": "https://e.com/", "oauthToken": {"scope": "a"}}
            },
            "task.appEngineHttpRequest": {"appEngineHttpRequest": {"relativeUri": "/x"}},
        }
        for field, task in refused.items():
            with self.assertRaises(GoogleError) as raised:
                create(task)
            error = raised.exception
            self.assertEqual((error.code, error.status, error.field), (501, "UNIMPLEMENTED", field))

    def test_bad_tasks_are_invalid_arguments_naming_the_field(self):
        url = "https://e.com/"
        cases = {
            "task.httpRequest": {},
            "task.httpRequest.url": {"httpRequest": {"url": "ftp://e.com/"}},
            "task.httpRequest.httpMethod": {"httpRequest": {"url": url, "httpMethod": 3}},
            "task.httpRequest.body": {"httpRequest": {"url": url, "httpMethod": 2, "body": "eA=="}},
            "task.scheduleTime": {
                "httpRequest": {"url": url},
                "scheduleTime": "2999-01-01T00:00:00Z",
            },
            "task.dispatchDeadline": {"httpRequest": {"url": url}, "dispatchDeadline": "5s"},
            "task.name": {
                "name": "projects/p/locations/l/queues/other/tasks/t",
                "httpRequest": {"url": url},
            },
            "task.httpRequest.foo": {"httpRequest": {"url": url, "foo": 1}},
            "task.color": {"httpRequest": {"url": url}, "color": "red"},
        }
        for field, task in cases.items():
            with self.assertRaises(GoogleError) as raised:
                create(task)
            error = raised.exception
            self.assertEqual((error.status, error.field), ("INVALID_ARGUMENT", field), field)

    def test_a_body_that_is_not_utf8_is_refused_saying_why(self):
        raw = base64.b64encode(b"\xff\xfe").decode()
        with self.assertRaises(GoogleError) as raised:
            create({"httpRequest": {"url": "https://e.com/", "body": raw}})
        self.assertIn("UTF-8", raised.exception.message)

    def test_a_stored_task_as_a_cloud_tasks_task(self):
        fields = {
            "queue": "my-queue",
            "url": "https://e.com/h",
            "method": "PUT",
            "body": "hi",
            "content_type": "text/plain",
            "headers": '{"X-A": "1", "Authorization": "Bearer s3cret"}',
            "name": "task-1",
            "due_at": "1893553445.5",
            "created_at": "1893553400.25",
            "attempts": "2",
            "status": "scheduled",
            "history": [
                {"attempt": 2, "at": 1893553440.0, "duration": 0.5, "status": 503, "error": "x"},
                {"attempt": 1, "at": 1893553420.0, "duration": 1.0, "status": None, "error": "r"},
            ],
        }
        shown = task_json(Q, "task-1", fields, "FULL", 60.0)
        self.assertEqual(
            shown,
            {
                "name": f"{Q}/tasks/task-1",
                "httpRequest": {
                    "url": "https://e.com/h",
                    "httpMethod": "PUT",
                    "headers": {
                        "X-A": "1",
                        "Authorization": "[redacted]",
                        "Content-Type": "text/plain",
                    },
                    "body": "aGk=",
                },
                "scheduleTime": "2030-01-02T03:04:05.500000Z",
                "createTime": "2030-01-02T03:03:20Z",
                "dispatchDeadline": "60s",
                "view": "FULL",
                "dispatchCount": 2,
                "responseCount": 1,
                "firstAttempt": {"dispatchTime": "2030-01-02T03:03:39.000000Z"},
                "lastAttempt": {
                    "dispatchTime": "2030-01-02T03:03:59.500000Z",
                    "responseTime": "2030-01-02T03:04:00.000000Z",
                    "responseStatus": {"code": 14, "message": "HTTP 503"},
                },
            },
        )
        basic = task_json(Q, "task-1", fields, "BASIC", 60.0)
        self.assertNotIn("body", basic["httpRequest"])
        self.assertEqual(basic["view"], "BASIC")


class QueueMappingTests(unittest.TestCase):
    body = {
        "name": str(Q),
        "rateLimits": {
            "maxDispatchesPerSecond": 10.0,
            "maxConcurrentDispatches": 2,
            "maxBurstSize": 9,
        },
        "retryConfig": {
            "maxAttempts": 5,
            "minBackoff": "1s",
            "maxBackoff": "60s",
            "maxDoublings": 3,
            "maxRetryDuration": "3600s",
        },
        "state": "PAUSED",
    }

    def test_rate_limits_and_retry_config_map_onto_queue_settings(self):
        record = new_queue(self.body, Q)
        self.assertEqual(
            record.settings(),
            {"rate": 10.0, "concurrency": 2, "max_errors": 5, "min_delay": 1.0, "max_delay": 60.0},
        )
        self.assertFalse(record.paused)  # state is output only
        self.assertEqual(QueueRecord.from_text(record.to_text()), record)

    def test_unset_fields_leave_the_node_options_in_force_and_say_so(self):
        record = new_queue({"name": str(Q)}, Q)
        self.assertEqual(set(record.settings().values()), {None})
        defaults = QueueConfig(concurrency=100, policy=RetryPolicy(20, 1.0, 3600.0))
        self.assertEqual(
            queue_json(record, False, {}, defaults),
            {
                "name": str(Q),
                "rateLimits": {"maxConcurrentDispatches": 100},
                "retryConfig": {"maxAttempts": 20, "minBackoff": "1s", "maxBackoff": "3600s"},
                "state": "RUNNING",
            },
        )

    def test_the_queue_shows_the_settings_in_force(self):
        record = new_queue(self.body, Q)
        settings = {
            "rate": 4.0,
            "concurrency": 2,
            "max_errors": 5,
            "min_delay": 0.5,
            "max_delay": 60.0,
        }
        shown = queue_json(record, True, settings, QueueConfig())
        self.assertEqual(
            shown["rateLimits"], {"maxConcurrentDispatches": 2, "maxDispatchesPerSecond": 4.0}
        )
        self.assertEqual(
            shown["retryConfig"],
            {
                "maxAttempts": 5,
                "minBackoff": "0.500s",
                "maxBackoff": "60s",
                "maxDoublings": 3,
                "maxRetryDuration": "3600s",
            },
        )
        self.assertEqual(shown["state"], "PAUSED")

    def test_unlimited_attempts(self):
        record = new_queue({"retryConfig": {"maxAttempts": -1}}, Q)
        self.assertEqual(record.settings()["max_errors"], UNLIMITED_ATTEMPTS)
        shown = queue_json(record, False, record.settings(), QueueConfig())
        self.assertEqual(shown["retryConfig"]["maxAttempts"], -1)

    def test_an_update_mask_changes_only_what_it_names(self):
        record = new_queue(self.body, Q)
        body = {"rateLimits": {"maxDispatchesPerSecond": 5.0}, "retryConfig": {"maxAttempts": 9}}
        new = updated_queue(record, body, ["rateLimits.maxDispatchesPerSecond"])
        self.assertEqual(
            new.rate_limits, {"maxDispatchesPerSecond": 5.0, "maxConcurrentDispatches": 2}
        )
        self.assertEqual(new.retry_config, record.retry_config)
        cleared = updated_queue(record, {}, ["retryConfig"])
        self.assertEqual((cleared.retry_config, cleared.rate_limits), ({}, record.rate_limits))
        everything = updated_queue(record, body, None)
        self.assertEqual(everything.retry_config, {"maxAttempts": 9})

    def test_bad_queues_and_masks_are_refused_naming_the_field(self):
        record = new_queue({"name": str(Q)}, Q)
        cases = [
            (
                "rateLimits.maxDispatchesPerSecond",
                {"rateLimits": {"maxDispatchesPerSecond": 501}},
                None,
            ),
            (
                "retryConfig.minBackoff",
                {"retryConfig": {"minBackoff": "9s", "maxBackoff": "1s"}},
                None,
            ),
            ("retryConfig.maxAttempts", {"retryConfig": {"maxAttempts": 1.5}}, None),
            ("rateLimits.speed", {"rateLimits": {"speed": 1}}, None),
            ("updateMask", {}, ["state"]),
            ("httpTarget", {"httpTarget": {"uriOverride": {}}}, None),
            ("appEngineRoutingOverride", {}, ["appEngineRoutingOverride"]),
        ]
        for field, body, mask in cases:
            with self.assertRaises(GoogleError) as raised:
                updated_queue(record, body, mask)
            self.assertEqual(raised.exception.field, field)


class ProfileTests(unittest.TestCase):
    def test_a_retry_says_what_the_previous_attempt_got(self):
        fields = {
            "queue": "q",
            "url": "https://e.com/",
            "name": "task-1",
            "attempts": "2",
            "last_status": "503",
            "last_error": "HTTP 503: busy\r\nnow",
            "door": DOOR,
        }
        headers = CloudTasksProfile().headers(Task.from_fields("t1", fields), NOW, b"")
        self.assertEqual(headers["X-CloudTasks-TaskPreviousResponse"], "503")
        self.assertEqual(headers["X-CloudTasks-TaskRetryReason"], "HTTP 503: busy  now")
        no_answer = {**fields, "last_status": "", "last_error": "timed out after 60 s"}
        headers = CloudTasksProfile().headers(Task.from_fields("t1", no_answer), NOW, b"")
        self.assertNotIn("X-CloudTasks-TaskPreviousResponse", headers)
        self.assertEqual(headers["X-CloudTasks-TaskRetryReason"], "timed out after 60 s")
        first = {**fields, "attempts": "1", "last_status": "", "last_error": ""}
        headers = CloudTasksProfile().headers(Task.from_fields("t1", first), NOW, b"")
        self.assertNotIn("X-CloudTasks-TaskRetryReason", headers)

    def test_delivery_headers(self):
        task = Task(
            id="t1",
            queue="my-queue",
            url="https://e.com/",
            name="task-1",
            due_at=1893553445.678901,
            attempts=3,
            door=DOOR,
        )
        self.assertEqual(
            CloudTasksProfile().headers(task, NOW, b""),
            {
                "User-Agent": "Google-Cloud-Tasks",
                "X-CloudTasks-QueueName": "my-queue",
                "X-CloudTasks-TaskName": "task-1",
                "X-CloudTasks-TaskRetryCount": "2",
                "X-CloudTasks-TaskExecutionCount": "2",
                "X-CloudTasks-TaskETA": "1893553445.678901",
            },
        )
