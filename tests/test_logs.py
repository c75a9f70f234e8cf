"""The JSON log observer: one parseable line per event, fields as values."""

import io
import json

from twisted.logger import Logger
from twisted.trial import unittest

from torque.logs import json_observer


class JSONObserverTests(unittest.TestCase):
    def test_an_attempt_is_one_json_line_with_its_fields(self):
        out = io.StringIO()
        log = Logger(observer=json_observer(out))
        log.info(
            "task {task_id} attempt {attempt} failed: {error}",
            task_id="t1", queue="q", attempt=2, status=503, error="HTTP 503", duration=0.25,
        )  # fmt: skip
        log.debug("not written at the default level")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        event = json.loads(lines[0])
        self.assertEqual(
            {k: event[k] for k in ("task_id", "queue", "attempt", "status", "error", "duration")},
            {"task_id": "t1", "queue": "q", "attempt": 2, "status": 503, "error": "HTTP 503",
             "duration": 0.25},
        )  # fmt: skip
        self.assertEqual(event["text"], "task t1 attempt 2 failed: HTTP 503")
        self.assertEqual(event["log_level"]["name"], "info")
