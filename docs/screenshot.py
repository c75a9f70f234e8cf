"""Make docs/dashboard.png: the dashboard after a few minutes of real traffic.

Run by hand from the repository root (needs Debian's chromium and the
playwright package, as tests/test_dashboard_browser.py does)::

    .venv/bin/python docs/screenshot.py             # about 4 minutes
    .venv/bin/python docs/screenshot.py --minutes 1

Everything is real and local: a redis-server on a unix socket, a
``twistd torque`` node with ``--api-token``, a web-hook receiver on
127.0.0.1 whose handlers are fast, slow, flaky or refusing, and tasks added
over ``--minutes`` minutes so that the per-minute charts have a history.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from torque.embedded import find_redis_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "demo-token"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


class Hooks(BaseHTTPRequestHandler):
    """/welcome is fast, /invoice fails now and then, /report is slow,
    /legacy refuses everything, /flaky always fails."""

    def do_POST(self):  # noqa: N802 -- http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        status = 200
        if path == "/hooks/invoice":
            time.sleep(random.uniform(0.02, 0.1))
            status = 503 if random.random() < 0.3 else 200
        elif path == "/hooks/report":
            time.sleep(random.uniform(0.2, 0.6))
        elif path == "/hooks/legacy":
            status = 410
        elif path == "/hooks/flaky":
            status = 500
        else:
            time.sleep(random.uniform(0.002, 0.02))
        body = b"ok" if status < 300 else b"upstream said no"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def traffic(base: str, hooks: str, seconds: float) -> str:
    """Add tasks for ``seconds``; the id of a task that will die retrying."""
    flaky = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(random.randint(3, 12)):
            call(base, "POST", "/hooks/add", {"url": hooks + "/hooks/welcome", "queue": "emails"})
        for _ in range(random.randint(1, 5)):
            call(base, "POST", "/hooks/add", {"url": hooks + "/hooks/invoice"})
        if random.random() < 0.3:
            call(base, "POST", "/hooks/add", {"url": hooks + "/hooks/report", "queue": "reports"})
        if random.random() < 0.1:
            call(base, "POST", "/hooks/add", {"url": hooks + "/hooks/legacy", "queue": "emails"})
        if random.random() < 0.2:
            delay = random.uniform(300, 3000)
            call(base, "POST", "/hooks/add",
                 {"url": hooks + "/hooks/welcome", "queue": "emails", "delay": delay})  # fmt: skip
        if flaky is None or random.random() < 0.01:
            added = call(base, "POST", "/hooks/add", {
                "url": hooks + "/hooks/flaky",
                "headers": {"Authorization": "Bearer sk_live_not_shown", "X-Request-Id": "r-77"},
            })  # fmt: skip
            flaky = flaky or added["id"]
        time.sleep(1)
    return flaky


def main(options) -> None:
    from playwright.sync_api import expect, sync_playwright

    workdir = tempfile.mkdtemp(prefix="torque-screenshot-")
    sock = os.path.join(workdir, "redis.sock")
    processes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hooks = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        processes.append(subprocess.Popen(
            [find_redis_server(), "--port", "0", "--unixsocket", sock, "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        ))  # fmt: skip
        while not os.path.exists(sock):
            time.sleep(0.05)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        processes.append(subprocess.Popen(
            [twistd, "-n", "--pidfile=", "--logfile", os.path.join(workdir, "node.log"),
             "torque", "--port", f"tcp:{port}:interface=127.0.0.1", "--redis", f"unix://{sock}",
             "--queue", "default", "--queue", "emails", "--queue", "reports",
             "--api-token", TOKEN, "--min-task-delay", "2", "--max-task-errors", "4"],
            cwd=workdir,
        ))  # fmt: skip
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        flaky = traffic(base, hooks, options.minutes * 60)
        # A paused queue with a backlog, as an operator would see one.
        call(base, "POST", "/queues/reports/pause")
        for _ in range(6):
            call(base, "POST", "/hooks/add", {"url": hooks + "/hooks/report", "queue": "reports"})
        time.sleep(25)  # the flaky task's last retries, and the backlog ages

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 1100})
            page.goto(base + "/")
            page.fill("#token", TOKEN)
            page.click("#login button[type=submit]")
            expect(page.locator("#app")).to_be_visible()
            page.select_option("#dead-queue", "default")
            page.fill("#task-id", flaky)
            page.click("#lookup button[type=submit]")
            expect(page.locator("#history tbody tr").first).to_be_visible()
            time.sleep(2.5)  # one refresh, so "updated" is current
            page.screenshot(path=options.out, full_page=True)
            browser.close()
        print("wrote", options.out)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        server.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "dashboard.png"))
    main(parser.parse_args())
