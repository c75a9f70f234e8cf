"""The log: client data quoted short in every line that quotes it, and the
JSON observer (one parseable line per event, fields as values)."""

import io
import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.api import TorqueAPI
from torque.auth import RequireToken
from torque.logs import json_observer, quoted
from torque.retry import NoResponse, Retry
from torque.scheduler import _log_attempt
from torque.task import Task


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


class QuotedTests(unittest.TestCase):
    def test_table(self):
        cases = [
            ("short text as it is", "/tasks/abc", "/tasks/abc"),
            ("bytes as Latin-1", b"/caf\xe9", "/caf\xe9"),
            ("nothing", None, None),
            ("a newline escaped", "a\nb", "a\\nb"),
            ("control bytes escaped", b"\x1b[2J", "\\x1b[2J"),
            ("cut, saying how long", "x" * 301, "x" * 300 + "... (301 characters in all)"),
            ("at the limit, whole", "y" * 300, "y" * 300),
            ("escapes count in the limit", "\n" * 200, "\\n" * 150 + "... (200 characters in all)"),
        ]
        for name, data, expected in cases:
            self.assertEqual(quoted(data), expected, name)


class ClientDataInLogLinesTests(unittest.TestCase):
    """Every log line that quotes what a client sent stays short."""

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, word: str) -> list[str]:
        return [formatEvent(e) for e in self.events if word in e.get("log_format", "")]

    def test_a_401_for_a_15_kb_path_logs_a_line_under_1_kb(self):
        api = TorqueAPI(MemoryStore(), Clock())
        http = StubTreq(RequireToken(api.resource(), ["s3cret"]))
        path = "/tasks/" + "A" * 15_000
        response = self.successResultOf(http.get("http://t" + path))
        self.assertEqual(response.code, 401)
        (line,) = self.lines("refused")
        self.assertLess(len(line.encode()), 1024, line)
        self.assertIn("15007 characters in all", line)

    def test_an_unhandled_error_for_a_15_kb_path_logs_a_short_line(self):
        class Broken(MemoryStore):
            def describe(self, task_id):
                raise RuntimeError("a bug")

        api = TorqueAPI(Broken(), Clock())
        response = self.successResultOf(
            StubTreq(api.resource()).get("http://t/tasks/" + "B" * 15_000)
        )
        self.assertEqual(response.code, 500)
        (line,) = self.lines("unhandled")
        self.assertLess(len(line.split("\n")[0].encode()), 1024, line[:2000])
        self.flushLoggedErrors(RuntimeError)

    def test_an_attempts_error_is_quoted_short(self):
        task = Task(id="t1", queue="q", url="http://app/" + "p" * 2000, attempts=1)
        outcome = NoResponse("DNSLookupError: " + "h" * 15_000, 0.1)
        decision = Retry(at=10.0, status=None, error=outcome.error)
        _log_attempt(task, outcome, decision)
        (line,) = self.lines("attempt")
        self.assertLess(len(line.encode()), 1024, line)
