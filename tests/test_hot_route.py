"""The route served without Klein (:class:`torque.hot_route.HotRoute`)
answers as Klein did, and leaves every other request to Klein."""

from __future__ import annotations

import json

import treq
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from tests.test_api import HOOK, SEED, APITestCase
from torque.hot_route import HotRoute


class Elsewhere(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.paths: list[bytes] = []

    def render(self, request):
        self.paths.append(request.path)
        return b"elsewhere"


class HotRouteTests(unittest.TestCase):
    def setUp(self):
        self.elsewhere = Elsewhere()
        self.answer: defer.Deferred = defer.Deferred()
        self.errors: list = []
        self.route = HotRoute(
            self.elsewhere, b"POST", b"/hot", lambda request: self.answer, self.on_error
        )

    def on_error(self, failure, request):
        self.errors.append(failure)
        request.setResponseCode(400)
        return b"error"

    def call(self, method, path):
        stub = StubTreq(self.route)
        d = stub.request(method, "http://x.test" + path)
        stub.flush()
        return d, stub

    def test_the_route_is_the_handlers(self):
        d, stub = self.call("POST", "/hot?q=1")
        self.assertNoResult(d)
        self.answer.callback(b"hot")
        stub.flush()
        self.assertEqual(self.successResultOf(treq.content(self.successResultOf(d))), b"hot")
        self.assertEqual(self.elsewhere.paths, [])

    def test_the_answer_has_a_length_and_no_chunks(self):
        channel = Site(self.route).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        channel.dataReceived(b"POST /hot HTTP/1.1\r\nHost: x.test\r\nContent-Length: 0\r\n\r\n")
        self.answer.callback(b"hot!")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 4\r\n", head + b"\r\n")
        self.assertNotIn(b"chunked", head.lower())
        self.assertEqual(body, b"hot!")

    def test_other_methods_and_paths_go_to_the_wrapped_resource(self):
        for method, path in [("GET", "/hot"), ("POST", "/hot/"), ("POST", "/cold")]:
            d, _ = self.call(method, path)
            self.assertEqual(
                self.successResultOf(treq.content(self.successResultOf(d))), b"elsewhere"
            )
        self.assertEqual(self.elsewhere.paths, [b"/hot", b"/hot/", b"/cold"])

    def test_a_failure_is_answered_by_the_error_handler(self):
        d, stub = self.call("POST", "/hot")
        self.answer.errback(ValueError("no"))
        stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(
            (response.code, self.successResultOf(treq.content(response))), (400, b"error")
        )
        self.assertTrue(self.errors[0].check(ValueError))

    def test_a_client_gone_cancels_the_work_and_nothing_is_written(self):
        cancelled = []
        self.answer = defer.Deferred(canceller=cancelled.append)
        request = DummyRequest([])
        request.method, request.path = b"POST", b"/hot"
        self.route.render(request)
        request.processingFailed(Exception("the client hung up"))
        self.assertEqual(cancelled, [self.answer])
        self.assertEqual((request.written, self.errors), ([], []))


class AddWithoutKleinTests(APITestCase):
    def test_post_hooks_add_is_not_routed_by_klein(self):
        def no_klein(*args, **kwargs):
            raise AssertionError("Klein's router was asked")

        self.patch(self.api.app.url_map, "bind", no_klein)
        response, body = self.add(data=SEED)
        self.assertEqual((response.code, body["id"]), (201, "default.t1"))
        self.assertEqual(response.headers.getRawHeaders("location"), ["/tasks/default.t1"])

    def test_its_errors_are_the_apis(self):
        response, body = self.add(data={"url": "ftp://x"})
        self.assertError(response, body, 400, "url")
        self.store.available = False
        response, body = self.add(data={"url": HOOK})
        self.assertError(response, body, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        self.assertEqual(json.loads(json.dumps(body))["error"]["code"], "unavailable")
