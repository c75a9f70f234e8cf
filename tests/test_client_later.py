"""Both Python clients' ``complete`` and ``fail``: a handler that took its
task over reports back with the delivery's completion token.  Unit tests of
the request they make, then both clients against a real node."""

import json

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from tests.node import start_node, start_receiver, wait_for
from tests.test_later_e2e import answer_with
from torque import client, txclient
from torque.client import Reported, TaskRejected, report_request

TOKEN = "api-s3cret"


class RequestTests(unittest.TestCase):
    def test_complete_posts_an_empty_object_with_the_completion_token(self):
        url, body, headers = report_request("a/b", "tct.1.x", None, None, "http://h:1/torque/")
        self.assertEqual(url, "http://h:1/torque/tasks/a%2Fb/complete")
        self.assertEqual(json.loads(body), {})
        self.assertEqual(headers["Authorization"], "Bearer tct.1.x")

    def test_fail_posts_the_error_and_retry_after(self):
        url, body, _ = report_request("t1", "tct.1.x", "disk full", 30, "http://h:1")
        self.assertEqual(url, "http://h:1/tasks/t1/fail")
        self.assertEqual(json.loads(body), {"error": "disk full", "retry_after": 30})
        _, body, _ = report_request("t1", "tct.1.x", "disk full", None, "http://h:1")
        self.assertEqual(json.loads(body), {"error": "disk full"})

    def test_an_answer_becomes_a_reported_or_an_error(self):
        answer = json.dumps({"id": "t1", "status": "delivered"}).encode()
        self.assertEqual(client.parse_report(200, answer), Reported("t1", "delivered"))
        error = json.dumps({"error": {"code": "forbidden", "message": "no", "field": "x"}})
        with self.assertRaises(TaskRejected) as caught:
            client.parse_report(403, error.encode())
        self.assertEqual((caught.exception.status, caught.exception.code), (403, "forbidden"))


class BothClientsTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_a_handler_reports_back_with_either_client(self):
        receiver = start_receiver(self)
        receiver.respond("/encode", 202, 202, 200)
        answer_with(receiver, "/encode", {"Torque-Complete-Within": "300"})
        node = yield start_node(self, "--api-token", TOKEN, "--min-task-delay", "0.2")
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = HTTPClient(Agent(reactor, pool=pool))
        ids = []
        for _ in range(2):
            added = yield txclient.add(
                receiver.url + "/encode", torque_url=node.url, api_token=TOKEN, http=http
            )
            ids.append(added.id)
        yield wait_for(lambda: len(receiver.to("/encode")) == 2, what="both deliveries")
        tokens = {
            r.headers["x-torque-task-id"]: r.headers["torque-completion-token"]
            for r in receiver.to("/encode")
        }
        done, failed = ids

        reported = yield deferToThread(client.complete, done, tokens[done], torque_url=node.url)
        self.assertEqual(reported, Reported(done, "delivered"))
        with self.assertRaises(TaskRejected) as caught:
            yield deferToThread(client.complete, failed, tokens[done], torque_url=node.url)
        self.assertEqual(caught.exception.status, 403, "another task's token")

        answer_with(receiver, "/encode", {})
        reported = yield txclient.fail(
            failed, tokens[failed], "encoder crashed", 0.5, torque_url=node.url, http=http
        )
        self.assertEqual(reported, Reported(failed, "scheduled"))
        yield wait_for(lambda: len(receiver.to("/encode")) == 3, what="the retry")
        with self.assertRaises(TaskRejected) as caught:
            yield txclient.complete(failed, tokens[failed], torque_url=node.url, http=http)
        self.assertEqual(caught.exception.status, 409, "its attempt is over")
