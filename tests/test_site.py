"""The API's HTTP server over a real socket: oversized request heads and
bodies get a JSON error naming the limit; requests within them get through."""

from __future__ import annotations

import json

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource

from tests.node import wait_for
from torque.site import MAX_HEAD_BYTES, MAX_HEADERS, QuietSite


class Ok(Resource):
    isLeaf = True

    def render(self, request):
        return b"ok"


class RawClient(protocol.Protocol):
    """Sends bytes as they are; keeps everything the server answers."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.received = b""
        self.closed = False

    def connectionMade(self):
        self.transport.write(self.payload)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed = True


class LimitsTests(unittest.TestCase):
    def setUp(self):
        site = QuietSite(Ok(), max_body=100)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def exchange(self, head: bytes, body: bytes = b"", answers: int = 1):
        """Send a request; the status line and the (JSON) body answered.
        With ``answers``, wait for that many answers: the raw bytes."""
        client = RawClient(head + b"\r\n" + body)
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", self.port.getHost().port
        )
        yield wait_for(
            lambda: (
                client.closed
                or (
                    client.received.count(b"HTTP/1.1 ") == answers
                    and client.received.endswith(b"ok")
                )
            ),
            timeout=10,
        )
        client.transport.loseConnection()
        if answers > 1:
            return client.received
        status, _, rest = client.received.partition(b"\r\n")
        content = rest.partition(b"\r\n\r\n")[2]
        return status, json.loads(content) if content.startswith(b"{") else content

    def request(self, *headers: bytes) -> bytes:
        return b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(h + b"\r\n" for h in headers)

    def assertRefused(self, answer, status: bytes, field: str, limit: int):
        line, body = answer
        self.assertEqual(line, b"HTTP/1.1 " + status)
        self.assertEqual((body["error"]["code"], body["error"]["field"]), ("too_large", field))
        self.assertIn(str(limit), body["error"]["message"])

    @defer.inlineCallbacks
    def test_headers_up_to_the_limit_are_served(self):
        headers = [b"X-H%d: v" % i for i in range(MAX_HEADERS - 1)]  # and Host
        status, body = yield self.exchange(self.request(*headers))
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"ok"))

    @defer.inlineCallbacks
    def test_one_header_too_many_is_a_431_naming_the_limit(self):
        headers = [b"X-H%d: v" % i for i in range(MAX_HEADERS)]
        answer = yield self.exchange(self.request(*headers))
        self.assertRefused(answer, b"431 Request Header Fields Too Large", "headers", MAX_HEADERS)

    @defer.inlineCallbacks
    def test_a_head_over_the_size_limit_is_a_431_naming_it(self):
        headers = [b"X-Big%d: " % i + b"v" * 4000 for i in range(5)]
        answer = yield self.exchange(self.request(*headers))
        self.assertRefused(
            answer, b"431 Request Header Fields Too Large", "headers", MAX_HEAD_BYTES
        )

    @defer.inlineCallbacks
    def test_one_endless_line_is_a_431(self):
        answer = yield self.exchange(b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 70_000)
        self.assertRefused(answer, b"431 Request Header Fields Too Large", "headers", 16384)

    @defer.inlineCallbacks
    def test_a_body_over_max_body_is_a_413_naming_it(self):
        head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n"
        answer = yield self.exchange(head, b"x" * 101)
        self.assertRefused(answer, b"413 Payload Too Large", "body", 100)

    @defer.inlineCallbacks
    def test_a_second_request_on_the_connection_is_counted_afresh(self):
        headers = [b"X-H%d: v" % i for i in range(MAX_HEADERS - 1)]
        first = self.request(*headers) + b"\r\n"
        received = yield self.exchange(first + self.request(*headers), answers=2)
        self.assertEqual(received.count(b"HTTP/1.1 200 OK"), 2, received)
