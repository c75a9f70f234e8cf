"""How ``Authorization: Bearer`` is read (RFC 6750): the scheme in any case,
and the token exactly, not a token that merely starts or ends like one."""

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.api import TorqueAPI
from torque.auth import RequireToken


class BearerTests(unittest.TestCase):
    def setUp(self):
        api = TorqueAPI(MemoryStore(), Clock())
        self.http = StubTreq(RequireToken(api.resource(), ["old-token", "new-token"]))

    def status(self, authorization: str) -> int:
        """The status of ``GET /tasks/x`` (404 once past the token check)."""
        headers = {"Authorization": authorization}
        response = self.successResultOf(self.http.get("http://t/tasks/x", headers=headers))
        return response.code

    def test_a_token_followed_by_anything_is_refused(self):
        for sent in ("old-tokenX", "new-token-extra", "old-token\tX", "old-token new-token"):
            self.assertEqual(self.status(f"Bearer {sent}"), 401, sent)

    def test_a_token_cut_short_is_refused(self):
        for sent in ("old-toke", "ew-token", "o"):
            self.assertEqual(self.status(f"Bearer {sent}"), 401, sent)

    def test_the_scheme_is_read_in_any_case(self):
        for scheme in ("bearer", "BEARER", "BeArEr"):
            self.assertEqual(self.status(f"{scheme} old-token"), 404, scheme)
