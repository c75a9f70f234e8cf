"""The API's HTTP server: oversized request heads and bodies get a JSON
error naming the limit, requests within them get through (over a real
socket); slow, stalled and idle clients are cut off, and the connections
are capped (on a Clock)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.node import wait_for
from torque.channel import BODY_TIMEOUT, HEAD_TIMEOUT, MAX_HEAD_BYTES, MAX_REQUEST_HEADERS
from torque.options import Options
from torque.site import IDLE_TIMEOUT, ApiService, QuietSite


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
        headers = [b"X-H%d: v" % i for i in range(MAX_REQUEST_HEADERS - 1)]  # and Host
        status, body = yield self.exchange(self.request(*headers))
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"ok"))

    @defer.inlineCallbacks
    def test_one_header_too_many_is_a_431_naming_the_limit(self):
        headers = [b"X-H%d: v" % i for i in range(MAX_REQUEST_HEADERS)]
        answer = yield self.exchange(self.request(*headers))
        self.assertRefused(
            answer, b"431 Request Header Fields Too Large", "headers", MAX_REQUEST_HEADERS
        )

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
        headers = [b"X-H%d: v" % i for i in range(MAX_REQUEST_HEADERS - 1)]
        first = self.request(*headers) + b"\r\n"
        received = yield self.exchange(first + self.request(*headers), answers=2)
        self.assertEqual(received.count(b"HTTP/1.1 200 OK"), 2, received)


class Never(Resource):
    """A handler that holds every request (a slow Redis, say)."""

    isLeaf = True

    def render(self, request):
        return NOT_DONE_YET


class Connection:
    """One client connection to a site on a Clock, through a fake transport
    that tells the channel when it is closed."""

    def __init__(self, site: QuietSite, port: int = 50000):
        self.channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.9", port))
        if self.channel is None:  # refused: the listening port closes it at once
            self.transport = None
            return
        self.transport = StringTransportWithDisconnection()
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    @property
    def closed(self) -> bool:
        return self.transport is None or not self.transport.connected or self.transport.disconnected

    @property
    def answer(self) -> bytes:
        return self.transport.value()


class SlowClientTests(unittest.TestCase):
    """Deadlines on a Clock: a slowloris can't keep a connection open, a
    request in hand is never cut."""

    def setUp(self):
        self.clock = Clock()
        self.site = QuietSite(Ok(), reactor=self.clock)

    def connect(self, site=None) -> Connection:
        return Connection(site or self.site)

    def assertTimedOut(self, connection: Connection, field: str):
        status, _, rest = connection.answer.partition(b"\r\n")
        self.assertEqual(status, b"HTTP/1.1 408 Request Timeout")
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        self.assertEqual((error["code"], error["field"]), ("timeout", field))
        self.assertTrue(connection.closed)

    def assertNextHeadCutAtTheHeadTimeout(self, connection: Connection):
        """A head begun now on a kept-alive connection (after an answer)
        is cut at the head timeout, not before."""
        connection.send(b"GET / HTTP/1.1\r\n")
        self.clock.advance(HEAD_TIMEOUT - 0.001)
        self.assertFalse(connection.closed)
        self.clock.advance(0.001)
        self.assertEqual(connection.answer.count(b"HTTP/1.1 408"), 1)
        self.assertTrue(connection.closed)

    def test_a_request_head_must_arrive_within_the_head_timeout(self):
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        self.clock.advance(HEAD_TIMEOUT - 0.001)
        self.assertEqual((connection.answer, connection.closed), (b"", False))
        self.clock.advance(0.001)
        self.assertTimedOut(connection, "headers")
        self.assertIn(b"did not arrive within 10 s", connection.answer)

    def test_a_head_sent_a_byte_at_a_time_is_cut_all_the_same(self):
        # Each byte resets the idle timeout; the head's deadline stands.
        connection = self.connect()
        head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"z" * 100
        for i in range(int(HEAD_TIMEOUT)):
            connection.send(head[i : i + 1])
            self.clock.advance(1)
        self.assertTimedOut(connection, "headers")

    def test_a_connection_that_sends_nothing_is_closed_at_the_head_timeout(self):
        connection = self.connect()
        self.clock.advance(HEAD_TIMEOUT)
        self.assertTimedOut(connection, "headers")

    def test_a_head_in_time_is_served(self):
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\n")
        self.clock.advance(HEAD_TIMEOUT - 1)
        connection.send(b"Host: t\r\n\r\n")
        self.assertTrue(connection.answer.startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(connection.answer.endswith(b"ok"))
        self.clock.advance(HEAD_TIMEOUT)  # no deadline left behind
        self.assertFalse(connection.closed)

    def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(self):
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(connection.answer.endswith(b"ok"))
        self.clock.advance(IDLE_TIMEOUT - 0.001)
        self.assertFalse(connection.closed)
        self.clock.advance(0.001)
        self.assertTrue(connection.closed)
        self.assertNotIn(b"408", connection.answer, "an idle connection is no error")

    def test_the_next_request_on_a_kept_connection_has_its_own_head_deadline(self):
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.clock.advance(IDLE_TIMEOUT / 2)  # idle, longer than a head may take
        self.assertFalse(connection.closed)
        self.assertNextHeadCutAtTheHeadTimeout(connection)

    def test_a_body_must_arrive_within_the_body_timeout(self):
        # A byte every 5 s keeps the idle timeout away; the deadline stands.
        connection = self.connect()
        connection.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        for _ in range(int(BODY_TIMEOUT / 5) - 1):
            self.clock.advance(5)
            connection.send(b"x")
        self.clock.advance(5 - 0.001)
        self.assertFalse(connection.closed)
        self.clock.advance(0.001)
        self.assertTimedOut(connection, "body")

    def test_a_slow_body_does_not_stretch_the_next_heads_deadline(self):
        # The deadline's timer, moved on to the body's deadline while the
        # body came, is brought back for the next head.
        connection = self.connect()
        connection.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n")
        self.clock.advance(BODY_TIMEOUT / 2)
        connection.send(b"ok")
        self.assertTrue(connection.answer.endswith(b"ok"))
        self.assertNextHeadCutAtTheHeadTimeout(connection)

    def test_a_request_in_hand_is_never_cut(self):
        site = QuietSite(Never(), reactor=self.clock)
        connection = self.connect(site)
        connection.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok")
        self.clock.advance(12 * 3600)
        self.assertEqual((connection.answer, connection.closed), (b"", False))


class Held(Resource):
    """A handler that keeps every request for the test to answer."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


class GracefulStopTests(unittest.TestCase):
    """A stop (``QuietSite.drain``) waits for the requests in flight, then
    closes every connection once its answer is out."""

    def setUp(self):
        self.clock = Clock()
        self.held = Held()
        self.site = QuietSite(self.held, reactor=self.clock)

    def test_it_waits_for_the_request_in_flight_whose_answer_goes_out(self):
        busy, idle = Connection(self.site), Connection(self.site, 50001)
        busy.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        stopped = self.site.drain(30)
        self.assertNoResult(stopped)
        self.assertFalse(busy.closed or idle.closed)
        request = self.held.requests[0]
        request.setHeader(b"Content-Length", b"4")
        request.write(b"done")
        request.finish()
        self.successResultOf(stopped)
        self.assertTrue(busy.answer.endswith(b"\r\n\r\ndone"), busy.answer)
        self.assertTrue(busy.closed and idle.closed)

    def test_a_request_whose_client_hung_up_holds_nothing(self):
        gone = Connection(self.site)
        gone.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        stopped = self.site.drain(30)
        self.assertNoResult(stopped)
        gone.transport.loseConnection()
        self.successResultOf(stopped)

    def test_it_waits_no_longer_than_its_timeout(self):
        stuck = Connection(self.site)
        stuck.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        stopped = self.site.drain(30)
        self.clock.advance(29.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertTrue(stuck.closed)


class ConnectionCapTests(unittest.TestCase):
    """``--max-connections``: the stalled make room; when none is, a new
    connection is closed at once."""

    def setUp(self):
        self.clock = Clock()

    def test_past_the_cap_the_longest_waiting_connection_is_closed(self):
        site = QuietSite(Ok(), max_connections=3, reactor=self.clock)
        stalled = []
        for _ in range(3):
            stalled.append(Connection(site))
            stalled[-1].send(b"GET / HTTP/1.1\r\n")
            self.clock.advance(1)
        served = Connection(site)
        self.assertEqual([c.closed for c in stalled], [True, False, False])
        self.assertTrue(stalled[0].transport.disconnected, "aborted, not drained")
        self.assertEqual(len(site.channels), 3)
        served.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertTrue(served.answer.endswith(b"ok"))
        self.assertEqual((site.evicted, site.refused), (1, 0))

    def test_an_idle_connection_makes_room_before_a_newer_stalled_one(self):
        site = QuietSite(Ok(), max_connections=2, reactor=self.clock)
        idle = Connection(site)
        idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # answered, now idle
        self.clock.advance(1)
        stalled = Connection(site)
        stalled.send(b"GET / HTTP/1.1\r\n")
        Connection(site)
        self.assertEqual((idle.closed, stalled.closed), (True, False))

    def test_when_every_connection_holds_a_request_a_new_one_is_refused(self):
        site = QuietSite(Never(), max_connections=2, reactor=self.clock)
        busy = [Connection(site) for _ in range(2)]
        for connection in busy:
            connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        refused = Connection(site)
        self.assertIsNone(refused.channel)
        self.assertEqual([c.closed for c in busy], [False, False])
        self.assertEqual((site.evicted, site.refused), (0, 1))

    def test_a_closed_connection_frees_its_place(self):
        site = QuietSite(Never(), max_connections=1, reactor=self.clock)
        first = Connection(site)
        first.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertIsNone(Connection(site).channel)
        first.transport.loseConnection()
        self.assertIsNotNone(Connection(site).channel)

    def test_being_full_is_logged_once_a_minute_at_most(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        site = QuietSite(Never(), max_connections=1, reactor=self.clock)
        Connection(site).send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(3):
            Connection(site)
        self.clock.advance(59)
        Connection(site)
        self.clock.advance(1)
        Connection(site)
        said = [e for e in events if "max-connections" in e.get("log_format", "")]
        self.assertEqual([e["refused"] for e in said], [1, 5])


class ListeningTests(unittest.TestCase):
    """Where the API listens: a bare port number on loopback only; beyond
    loopback without a token, a warning at start."""

    @defer.inlineCallbacks
    def listen(self, port: str, token_required: bool = False):
        """Start the API on ``--port port``; the listening address, and
        the warnings logged."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        options = Options({})
        options.parseOptions(["--port", port])
        endpoint = endpoints.serverFromString(reactor, options["endpoint"])
        service = ApiService(endpoint, QuietSite(Ok()), token_required=token_required)
        service.startService()
        self.addCleanup(service.stopService)
        listened = defer.Deferred()
        service._waitingForPort.addCallback(lambda port: (listened.callback(port), port)[1])
        listening = yield listened
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        return listening.getHost(), [formatEvent(e) for e in warnings]

    @defer.inlineCallbacks
    def test_a_bare_port_number_listens_on_loopback_only(self):
        address, warnings = yield self.listen("0")
        self.assertEqual((address.host, warnings), ("127.0.0.1", []))

    @defer.inlineCallbacks
    def test_every_interface_without_a_token_is_said_loudly(self):
        address, warnings = yield self.listen("tcp:0")
        self.assertEqual(address.host, "0.0.0.0")
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"the API listens on 0.0.0.0:{address.port}, beyond loopback", warnings[0])
        self.assertIn("--api-token", warnings[0])

    @defer.inlineCallbacks
    def test_every_interface_with_a_token_is_fine(self):
        _, warnings = yield self.listen("tcp:0", token_required=True)
        self.assertEqual(warnings, [])

    @defer.inlineCallbacks
    def test_a_unix_socket_is_not_beyond_loopback(self):
        # Not under _trial_temp: a checkout's path can be longer than a unix
        # socket's path may be (108 bytes).
        directory = tempfile.mkdtemp(prefix="torque-sock-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "api.sock")
        _, warnings = yield self.listen(f"unix:{path}")
        self.assertEqual(warnings, [])


class SlowBodyCapTests(unittest.TestCase):
    def test_with_no_head_waiting_the_longest_slow_body_makes_room(self):
        clock = Clock()
        site = QuietSite(Never(), max_connections=3, reactor=clock)
        uploads = []
        for _ in range(2):
            uploads.append(Connection(site))
            uploads[-1].send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nx")
            clock.advance(1)
        handled = Connection(site)
        handled.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # in hand: never closed
        closed = []
        for _ in range(2):
            newcomer = Connection(site)
            closed.append([c.closed for c in uploads])
            newcomer.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(closed, [[True, False], [True, True]])
        self.assertIsNone(Connection(site).channel, "only requests in hand are left")
        self.assertFalse(handled.closed)
