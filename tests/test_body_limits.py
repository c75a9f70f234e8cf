"""``--max-body`` over a real socket: a body of exactly the limit is read,
one byte more is a 413, whether its length is declared or it comes
chunked (where no length warns the server)."""

from __future__ import annotations

import json

from twisted.internet import defer, error, protocol, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource

from tests.node import wait_for
from tests.test_site import RawClient
from torque.site import QuietSite

LIMIT = 100


class Echo(Resource):
    """Answers how many body bytes it was given."""

    isLeaf = True

    def render(self, request):
        return b"read %d" % len(request.content.read())


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


class BodyLimitTests(unittest.TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, QuietSite(Echo(), max_body=LIMIT), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def post(self, header: bytes, body: bytes):
        """The status line and the body answered (JSON decoded)."""
        head = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n\r\n" % header
        client = RawClient(head + body)
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", self.port.getHost().port
        )
        yield wait_for(lambda: client.closed, timeout=10, what="the answer")
        status, _, rest = client.received.partition(b"\r\n")
        content = rest.partition(b"\r\n\r\n")[2]
        return status, json.loads(content) if content.startswith(b"{") else content

    def assertTooLarge(self, answer):
        status, body = answer
        self.assertEqual(status, b"HTTP/1.1 413 Payload Too Large")
        self.assertEqual((body["error"]["code"], body["error"]["field"]), ("too_large", "body"))
        self.assertIn(str(LIMIT), body["error"]["message"])

    @defer.inlineCallbacks
    def test_a_body_of_exactly_max_body_bytes_is_read(self):
        answer = yield self.post(b"Content-Length: %d" % LIMIT, b"x" * LIMIT)
        self.assertEqual(answer, (b"HTTP/1.1 200 OK", b"read %d" % LIMIT))

    @defer.inlineCallbacks
    def test_a_chunked_body_of_exactly_max_body_bytes_is_read(self):
        body = chunked(b"x" * 60, b"x" * (LIMIT - 60))
        answer = yield self.post(b"Transfer-Encoding: chunked", body)
        self.assertEqual(answer, (b"HTTP/1.1 200 OK", b"read %d" % LIMIT))

    @defer.inlineCallbacks
    def test_a_chunked_body_over_max_body_is_a_413_naming_it(self):
        body = chunked(b"x" * 60, b"x" * (LIMIT - 59))
        self.assertTooLarge((yield self.post(b"Transfer-Encoding: chunked", body)))

    @defer.inlineCallbacks
    def test_a_long_chunked_stream_is_cut_off_at_the_limit(self):
        body = chunked(*[b"x" * 50] * 1000)  # 50 kB, in chunks each under the limit
        self.assertTooLarge((yield self.post(b"Transfer-Encoding: chunked", body)))


class Uploader(protocol.Protocol):
    """Sends a whole request, body and all, then reads the answer: what an
    HTTP client does that doesn't expect an early answer."""

    def __init__(self, request: bytes):
        self.request = request
        self.received = b""
        self.reason = None

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.reason = reason


class EarlyRefusalTests(unittest.TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, QuietSite(Echo(), max_body=LIMIT), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def test_a_client_still_sending_its_body_gets_the_413_and_a_clean_close(self):
        # Closing with the body unread would make the kernel answer the rest
        # of the upload with a reset, and the client could lose the 413.
        body = b"x" * 2**20
        head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        client = Uploader(head + body)
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", self.port.getHost().port
        )
        yield wait_for(lambda: client.reason is not None, timeout=10, what="the close")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 413 "), client.received[:80])
        client.reason.trap(error.ConnectionDone)
