"""API tokens, through StubTreq over the real API resource."""

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.api import TorqueAPI
from torque.auth import RequireToken


class TokenTests(unittest.TestCase):
    def setUp(self):
        api = TorqueAPI(MemoryStore(), Clock())
        self.http = StubTreq(RequireToken(api.resource(), ["old-token", "new-token"]))

    def status(self, path="/tasks/x", method="GET", token=None, scheme="Bearer"):
        headers = {"Authorization": f"{scheme} {token}"} if token else {}
        response = self.successResultOf(
            self.http.request(method, "http://t" + path, headers=headers)
        )
        body = self.successResultOf(response.json())
        return response.code, body

    def test_missing_token_is_a_401_json_error(self):
        code, body = self.status()
        self.assertEqual((code, body["error"]["code"]), (401, "unauthorized"))

    def test_wrong_token_or_scheme_is_refused(self):
        self.assertEqual(self.status(token="nope")[0], 401)
        self.assertEqual(self.status(token="old-token", scheme="Basic")[0], 401)

    def test_every_configured_token_is_accepted(self):
        self.assertEqual(self.status(token="old-token")[0], 404)
        self.assertEqual(self.status(token="new-token")[0], 404)

    def test_health_needs_no_token(self):
        self.assertEqual(self.status("/health")[0], 200)

    def test_adds_need_the_token(self):
        self.assertEqual(self.status("/hooks/add", "POST")[0], 401)

    def test_refusal_is_logged_without_the_token(self):
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.status(token="leaked-secret")
        refusals = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refusals), 1)
        self.assertNotIn("leaked-secret", repr(refusals[0]))

    def test_no_tokens_means_open(self):
        api = TorqueAPI(MemoryStore(), Clock())
        http = StubTreq(RequireToken(api.resource(), []))
        response = self.successResultOf(http.get("http://t/tasks/x"))
        self.assertEqual(response.code, 404)


class SchemeTests(unittest.TestCase):
    def test_a_valid_token_under_any_other_scheme_is_refused(self):
        api = TorqueAPI(MemoryStore(), Clock())
        http = StubTreq(RequireToken(api.resource(), ["old-token"]))
        for scheme in ("Basic", "Digest", "Token", "Bearer2", "Bearer:"):
            headers = {"Authorization": f"{scheme} old-token"}
            response = self.successResultOf(http.get("http://t/tasks/x", headers=headers))
            self.assertEqual(response.code, 401, scheme)
