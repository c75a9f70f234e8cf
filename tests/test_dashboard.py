"""The dashboard page as served: headers, a self-contained page, and no
token needed for the page itself (the browser test drives it for real:
tests/test_dashboard_browser.py)."""

from __future__ import annotations

import base64
import hashlib
import re

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque import dashboard
from torque.api import TorqueAPI
from torque.auth import RequireToken


class DashboardTests(unittest.TestCase):
    def setUp(self):
        api = TorqueAPI(MemoryStore(), Clock())
        self.http = StubTreq(RequireToken(api.resource(), ["s3cret"]))

    def get(self, path):
        response = self.successResultOf(self.http.get("http://t" + path))
        return response, self.successResultOf(response.content())

    def test_page_is_served_without_a_token(self):
        response, page = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"]
        )
        self.assertIn(b"<title>torque</title>", page)

    def test_the_api_behind_it_still_needs_the_token(self):
        self.assertEqual(self.get("/queues")[0].code, 401)

    def test_the_api_description_needs_the_token_too(self):
        self.assertEqual(self.get("/openapi.json")[0].code, 401)

    def test_policy_allows_only_the_pages_own_script_and_style(self):
        response, page = self.get("/")
        (policy,) = response.headers.getRawHeaders("content-security-policy")
        (script,) = re.findall(rb"<script>(.*?)</script>", page, re.S)
        (style,) = re.findall(rb"<style>(.*?)</style>", page, re.S)
        for source, directive in [(script, "script-src"), (style, "style-src")]:
            digest = base64.b64encode(hashlib.sha256(source).digest()).decode()
            self.assertIn(f"{directive} 'sha256-{digest}'", policy)
        self.assertIn("default-src 'none'", policy)
        self.assertIn("frame-ancestors 'none'", policy)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])

    def test_page_loads_nothing_from_elsewhere(self):
        page = dashboard.PAGE.decode()
        self.assertEqual(re.findall(r"\b(?:src|href)=", page), [])
        urls = set(re.findall(r"https?://[^\s\"')]+", page))
        self.assertEqual(urls, {"http://www.w3.org/2000/svg"}, "only the SVG namespace name")

    def test_page_never_writes_html_from_data(self):
        self.assertNotIn("innerHTML", dashboard.SCRIPT)
        self.assertNotIn("outerHTML", dashboard.SCRIPT)
        self.assertNotIn("insertAdjacentHTML", dashboard.SCRIPT)

    def test_page_uses_relative_urls_so_it_works_under_a_prefix(self):
        calls = re.findall(r'api\("[A-Z]+", "([^"]*)', dashboard.SCRIPT)
        self.assertTrue(calls)
        self.assertFalse([c for c in calls if c.startswith("/")], calls)
