"""Torque's own headers through the API: a task naming one of them, in any
letter case, is refused when added with a 400 that names it (the
delivery side is in tests/test_dispatch.py, OwnHeadersTests)."""

import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.api import TorqueAPI


class AddTimeTests(unittest.TestCase):
    def test_a_spoofed_header_is_a_400_naming_it(self):
        store = MemoryStore()
        http = StubTreq(TorqueAPI(store, Clock()).resource())
        for header in ["x-torque-task-id", "User-agent", "X-TORQUE-RETRY-COUNT", "webhook-ID"]:
            task = {"url": "http://app/hook", "headers": {"X-Fine": "1", header: "SPOOF"}}
            response = self.successResultOf(http.post("http://torque/hooks/add", json=task))
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(response.code, 400, header)
            self.assertEqual(body["error"]["field"], "headers", header)
            self.assertIn(header, body["error"]["message"])
        self.assertEqual(store.tasks, {})
