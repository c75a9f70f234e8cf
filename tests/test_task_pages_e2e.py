"""``GET /queues/<q>/tasks`` on a real ``twistd`` node: what is waiting and
what is running, page by page, and the two actions taken on what is found
(run it now, cancel it), with a real receiver."""

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for


class TaskPagesEndToEndTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def pages(self, node, query):
        """Every page's ids, following next_cursor."""
        pages, cursor = [], ""
        while True:
            status, body = yield node.get(f"/queues/default/tasks?{query}{cursor}")
            self.assertEqual(status, 200, body)
            pages.append([t["id"] for t in body["tasks"]])
            if body["next_cursor"] is None:
                return pages
            cursor = f"&cursor={body['next_cursor']}"

    @defer.inlineCallbacks
    def test_scheduled_and_running_tasks_are_listed_run_now_and_cancelled(self):
        receiver = start_receiver(self)
        receiver.hold("/slow")
        node = yield start_node(self, "--queue", "default")
        self.addCleanup(receiver.release)  # before the node stops: it waits for them
        later = []
        for delay in [500, 300, 400, 100, 200]:
            _, body, _response = yield node.post(
                json_body={"url": receiver.url + f"/later/{delay}", "delay": delay}
            )
            later.append((delay, body["id"]))
        slow = []
        for _ in range(2):
            _, body, _response = yield node.post(json_body={"url": receiver.url + "/slow"})
            slow.append(body["id"])
        yield wait_for(lambda: len(receiver.to("/slow")) == 2, what="the slow requests")

        by_due = [task_id for _, task_id in sorted(later)]
        pages = yield self.pages(node, "state=scheduled&limit=2")
        self.assertEqual(pages, [by_due[:2], by_due[2:4], by_due[4:]])
        running = yield self.pages(node, "state=running")
        self.assertEqual(sorted(sum(running, [])), sorted(slow))

        status, body = yield node.get("/queues/default/tasks?state=running&limit=1")
        (shown,) = body["tasks"]
        _, task = yield node.get(f"/tasks/{shown['id']}")
        self.assertEqual(shown, task, "a listed task is the task as GET /tasks/<id> shows it")
        self.assertEqual((shown["status"], shown["attempts"]), ("running", 1))

        # Run the last one now: it is delivered, and leaves the list.
        status, _, _response = yield node.post(f"/tasks/{by_due[-1]}/run")
        self.assertEqual(status, 200)
        yield wait_for(lambda: receiver.to("/later/500"), what="the task run now")
        yield wait_for(lambda: node.has_status(by_due[-1], "delivered"))
        # Cancel the first one: it leaves the list, and is never delivered.
        response = yield treq.delete(f"{node.url}/tasks/{by_due[0]}", persistent=False)
        yield response.content()
        self.assertEqual(response.code, 200)
        pages = yield self.pages(node, "state=scheduled&limit=2")
        self.assertEqual(pages, [by_due[1:3], by_due[3:4]])
        self.assertEqual(receiver.to("/later/100"), [])
