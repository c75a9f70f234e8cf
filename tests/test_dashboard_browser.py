"""The dashboard in a real headless Chromium, against a real node.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright``
Python package; the browser always comes from Debian (``executable_path``),
never from Playwright's downloads.  Without either, the test is skipped:

    apt-get update && apt-get install -y chromium
    .venv/bin/pip install playwright

Playwright's synchronous API runs in a thread, so the reactor (and the
receiver on it) keeps running while the browser waits.  Set
``TORQUE_SCREENSHOT=docs/dashboard.png`` to keep the screenshot it takes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.node import start_node, start_receiver

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-test-token"
SECRET = "Bearer do-not-show-this"


def require_playwright():
    if not os.access(CHROMIUM, os.X_OK):
        raise unittest.FailTest(f"no {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        raise unittest.FailTest("no playwright: pip install -e '.[test]'") from None
    return sync_playwright, expect


class Scenario:
    """What a person does on the dashboard; runs in a thread."""

    def __init__(self, node_url: str, hook_url: str, screenshot: str):
        self.node_url = node_url
        self.hook_url = hook_url
        self.screenshot = screenshot

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.node_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def status(self, path: str) -> int:
        """The status of a GET with the token."""
        try:
            self.api("GET", path)
        except urllib.error.HTTPError as e:
            return e.code
        return 200

    def add(self, path: str, queue: str = "default", **fields) -> str:
        return self.api(
            "POST", "/hooks/add", {"url": self.hook_url + path, "queue": queue, **fields}
        )["id"]

    def run(self, sync_playwright, expect) -> None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 1000})
                page.set_default_timeout(20_000)
                expect.set_options(timeout=20_000)
                page.on("dialog", lambda dialog: dialog.accept())
                self.browse(page, expect)
            finally:
                browser.close()

    def browse(self, page, expect) -> None:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(self.node_url + "/")

        # The node has --api-token: the page asks for it, and says so when
        # the token is refused.
        expect(page.locator("#login")).to_be_visible()
        page.fill("#token", "not-the-token")
        page.click("#login button[type=submit]")
        expect(page.locator("#login-error")).to_have_text("That token was refused.")
        expect(page.locator("#app")).to_be_hidden()
        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        expect(page.locator("#app")).to_be_visible()
        expect(page.locator("#no-queues")).to_be_visible()

        # The live node is listed with its queues.
        (node,) = self.api("GET", "/nodes")["nodes"]
        listed = page.locator(f'#nodes tr[data-node="{node["id"]}"]')
        expect(listed.locator('td[data-field="queues"]')).to_have_text("default, mail")

        # A queue that no live node processes is a warning, not "active".
        self.add("/orphan", queue="orphan")
        orphan = page.locator('tr[data-queue="orphan"] .badge')
        expect(orphan).to_have_text("no node: 1 due")
        expect(orphan).to_have_class("badge unprocessed")

        # Counts change as tasks are added.
        later = self.add("/later", queue="mail", delay=600)
        scheduled = page.locator('tr[data-queue="mail"] td[data-field="scheduled"]')
        expect(scheduled).to_have_text("1")
        soon = self.add("/soon", queue="mail", delay=600)
        expect(scheduled).to_have_text("2")

        # Deliveries show in the chart; a refused task becomes a dead letter.
        for _ in range(3):
            self.add("/ok")
        delivered = page.locator('tr[data-queue="default"] td[data-field="delivered"]')
        expect(delivered).to_have_text("3")
        flip = self.add("/flip", headers={"Authorization": SECRET, "X-Request-Id": "r-1"})
        page.select_option("#dead-queue", "default")
        row = page.locator(f'#dead tr[data-task-id="{flip}"]')
        expect(row).to_contain_text("refused by the handler: HTTP 404")
        bars = page.locator('tr[data-queue="default"] svg.chart rect.delivered')
        expect(bars.first).to_be_attached()

        # Looking it up shows its history, with the secret header redacted.
        row.locator("button.link").click()
        expect(page.locator('#task dd[data-field="status"]')).to_have_text("dead")
        expect(page.locator("#history tbody tr")).to_have_count(1)
        expect(page.locator('#task dd[data-field="headers"]')).to_contain_text(
            "Authorization: [redacted]"
        )
        assert SECRET not in page.content(), "the token header leaked into the page"
        page.screenshot(path=self.screenshot, full_page=True)

        # Retry: the dead letter goes, and the task is delivered.
        row.locator("button.retry").click()
        expect(row).to_have_count(0)
        expect(page.locator('#task dd[data-field="status"]')).to_have_text("delivered")
        expect(page.locator("#history tbody tr")).to_have_count(3)

        # Delete: the dead letter and its task are gone.
        refused = self.add("/refuse")
        gone = page.locator(f'#dead tr[data-task-id="{refused}"]')
        expect(gone).to_contain_text("refused by the handler: HTTP 410")
        gone.locator("button.delete").click()
        expect(gone).to_have_count(0)
        expect(page.locator("#flash")).to_have_text("Deleted 1")
        assert self.status(f"/tasks/{refused}") == 404

        # Pause and resume a queue.
        mail = page.locator('tr[data-queue="mail"]')
        mail.get_by_role("button", name="Pause").click()
        expect(mail.locator(".badge")).to_have_text("paused")
        assert self.api("GET", "/queues/mail")["paused"] is True
        mail.get_by_role("button", name="Resume").click()
        expect(mail.locator(".badge")).to_have_text("active")

        # Cancel a task found by id.
        page.fill("#task-id", later)
        page.click("#lookup button[type=submit]")
        expect(page.locator('#task dd[data-field="status"]')).to_have_text("scheduled")
        page.click("#cancel")
        expect(page.locator("#flash")).to_contain_text(f"Cancelled task {later}")
        expect(scheduled).to_have_text("1")
        assert self.status(f"/tasks/{later}") == 404

        # Run now: a task due in ten minutes is delivered at once.
        page.fill("#task-id", soon)
        page.click("#lookup button[type=submit]")
        page.click("#run-now")
        expect(page.locator('#task dd[data-field="status"]')).to_have_text("delivered")
        expect(scheduled).to_have_text("0")
        expect(page.locator('tr[data-queue="mail"] .badge')).to_have_text("active")
        self.task_list(page, expect)

        # Queues come a page (50) at a time.
        for i in range(60):
            self.add("/p", queue=f"p{i:02d}", delay=600)
        expect(page.locator("#queues-next")).to_be_visible()
        expect(page.locator('tr[data-queue="p46"]')).to_be_attached()
        expect(page.locator('tr[data-queue="p47"]')).to_have_count(0)
        page.click("#queues-next")
        expect(page.locator('tr[data-queue="p59"]')).to_be_attached()
        expect(page.locator('tr[data-queue="default"]')).to_have_count(0)
        expect(page.locator("#queues-next")).to_be_hidden()
        page.click("#queues-first")
        expect(page.locator('tr[data-queue="default"]')).to_be_attached()
        assert errors == [], errors

    def task_list(self, page, expect) -> None:
        """A queue's scheduled tasks, oldest due first, with cancel and
        run-now on each."""
        first = self.add("/listed-1", queue="mail", delay=900)
        second = self.add("/listed-2", queue="mail", delay=1200)
        page.locator('tr[data-queue="mail"] button.link').click()
        expect(page.locator("#tasks-queue")).to_have_text("mail")
        expect(page.locator("#queue-settings")).to_have_text("Settings: the nodes' options")
        self.api("PATCH", "/queues/mail", {"concurrency": 3, "max_errors": 4})
        expect(page.locator("#queue-settings")).to_have_text(
            "Settings: concurrency 3, max_errors 4; the rest as the nodes' options"
        )
        rows = page.locator("#tasks tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.first).to_have_attribute("data-task-id", first)
        listed = page.locator(f'#tasks tr[data-task-id="{second}"]')
        expect(listed).to_contain_text("/listed-2")
        listed.locator("button.cancel").click()
        expect(listed).to_have_count(0)
        expect(page.locator("#flash")).to_contain_text(f"Cancelled task {second}")
        assert self.status(f"/tasks/{second}") == 404
        listed = page.locator(f'#tasks tr[data-task-id="{first}"]')
        listed.locator("button.run-now").click()
        expect(listed).to_have_count(0)
        expect(page.locator("#tasks-empty")).to_be_visible()
        expect(page.locator('tr[data-queue="mail"] td[data-field="delivered"]')).to_have_text("2")


class DashboardBrowserTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_dashboard_counts_dead_letters_retry_delete_pause_cancel_run_nodes_pages(self):
        sync_playwright, expect = require_playwright()
        receiver = start_receiver(self)
        receiver.respond("/flip", 404, 200)
        receiver.respond("/refuse", 410)
        node = yield start_node(self, "--api-token", TOKEN, "--queue", "default", "--queue", "mail")
        screenshot = os.path.abspath(self.mktemp() + ".png")
        scenario = Scenario(node.url, receiver.url, screenshot)
        started = time.monotonic()
        yield threads.deferToThread(scenario.run, sync_playwright, expect)
        self.assertLess(time.monotonic() - started, 200)
        self.assertEqual([r.headers["authorization"] for r in receiver.to("/flip")], [SECRET] * 2)
        self.assertEqual(len(receiver.to("/ok")), 3)
        self.assertEqual((len(receiver.to("/refuse")), len(receiver.to("/soon"))), (1, 1))
        self.assertEqual(receiver.to("/later"), [], "the cancelled task never ran")
        self.assertEqual((len(receiver.to("/listed-1")), receiver.to("/listed-2")), (1, []))
        keep = os.environ.get("TORQUE_SCREENSHOT")
        if keep:
            shutil.copyfile(screenshot, keep)
