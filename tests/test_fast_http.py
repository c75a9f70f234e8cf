"""Unit tests of :mod:`torque.fast_http`: the bytes it writes are the
Agent's, what it can't write the same way is left to treq, connections are
pooled, and https goes over TLS."""

from __future__ import annotations

from pathlib import Path

import twisted.test
from treq.client import HTTPClient
from twisted.internet import defer, reactor, ssl
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import InvalidHeaderName
from twisted.web.iweb import IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from tests.memory_http import memory_fast_http
from torque.dispatch import Dispatcher
from torque.fast_http import FastHTTP
from torque.guarded import GuardedEndpoints
from torque.retry import NoResponse
from torque.targets import TargetGuard
from torque.task import Task


class _Transport(StringTransport):
    """A ``StringTransport`` that also counts the writes."""

    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)

    def writeSequence(self, data):
        self.writes += 1
        super().writeSequence(data)


class CapturingEndpoints:
    """An ``IAgentEndpointFactory`` whose connections are ``StringTransport``
    instances: what a client writes, byte for byte, and no answer."""

    def __init__(self):
        self.transports: list[_Transport] = []

    def endpointForURI(self, uri):
        return self

    def connect(self, factory):
        protocol = factory.buildProtocol(None)
        transport = _Transport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return defer.succeed(protocol)


@implementer(IBodyProducer)
class _WritesAtOnce:
    """A body producer that writes its body when started (treq's default
    one writes it a reactor turn later)."""

    def __init__(self, body: bytes):
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return defer.succeed(None)

    def stopProducing(self):
        pass


def agent_writes(method, url, headers, body, persistent=True) -> bytes:
    """The bytes treq (through its Agent) writes for this request."""
    endpoints = CapturingEndpoints()
    pool = HTTPConnectionPool(Clock(), persistent=persistent)
    agent = Agent.usingEndpointFactory(Clock(), endpoints, pool=pool)
    http = HTTPClient(agent, data_to_body_producer=_WritesAtOnce)
    http.request(
        method, url, headers=headers, data=body or None, allow_redirects=False, unbuffered=True
    )
    [transport] = endpoints.transports
    return transport.value()


def fast_writes(method, url, headers, body, persistent=True) -> bytes | None:
    """The bytes :class:`FastHTTP` writes, or ``None`` if it declines."""
    endpoints = CapturingEndpoints()
    fast = FastHTTP(HTTPConnectionPool(Clock(), persistent=persistent), endpoints)
    if fast.request(method, url, headers, body) is None:
        return None
    [transport] = endpoints.transports
    return transport.value()


ORIGINS = [
    "http://app.test",
    "http://app.test:8080",
    "https://app.test",
    "https://app.test:8443",
    "http://127.0.0.1:8000",
    "http://xn--bcher-kva.example",
]
RESTS = [
    "",
    "/",
    "//a",
    "/a/b/c",
    "/a?x=1",
    "/a??b",
    "/a?x=1&&y",
    "/a;b",
    "/a;b/c;d",
    "/%41%zz",
    "/!$&'()*+,;=:@",
    "/a/~b-c_d.e",
    "/a/./../b",
]
HEADERS = [
    {},
    {"User-Agent": "torque/x", "X-Torque-Task-Id": "t1", "X-Torque-ETA": "1000.5"},
    {"content-type": "application/json", "x-lower": "v", "X-UPPER": "V"},
    {"Www-Authenticate": "a", "Etag": "b", "X-Xss-Protection": "c"},
    {"X-Spliced": "a\r\nInjected: yes", "X-Lf": "a\nb", "X-Cr": "a\rb"},
    {"X-Unicode": "é ü"},
    {"X-A": "1", "B": "2"},
]


class SameBytesTests(unittest.TestCase):
    """A request it makes is the one treq's Agent writes, byte for byte, but
    for ``ContentDecoderAgent``'s ``Accept-Encoding``."""

    def assertSameRequest(self, method, url, headers, body, persistent=True):
        agent = agent_writes(method, url, headers, body, persistent)
        self.assertIn(b"\r\nAccept-Encoding: gzip\r\n", agent)
        expected = agent.replace(b"Accept-Encoding: gzip\r\n", b"", 1)
        self.assertEqual(fast_writes(method, url, headers, body, persistent), expected)

    def test_every_origin_and_plain_path(self):
        for origin in ORIGINS:
            for rest in RESTS:
                url = origin + rest
                with self.subTest(url=url):
                    self.assertSameRequest("POST", url, {"X-A": "1"}, b"a=1")

    def test_headers_in_twisteds_letter_case_and_cleaned_as_twisted_does(self):
        for headers in HEADERS:
            with self.subTest(headers=headers):
                self.assertSameRequest("POST", "http://app.test/h", headers, b"a=1")

    def test_methods_with_and_without_a_body(self):
        for method in ["POST", "PUT", "GET", "DELETE", "PATCH", "HEAD", "post"]:
            for body in [b"", b"x", "é".encode() * 1000]:
                with self.subTest(method=method, body=body[:8]):
                    self.assertSameRequest(method, "http://app.test/h?q=1", {"X-A": "1"}, body)

    def test_connection_close_when_the_pool_keeps_no_connection(self):
        self.assertSameRequest("POST", "http://app.test/h", {}, b"a", persistent=False)
        written = fast_writes("POST", "http://app.test/h", {}, b"a", persistent=False)
        self.assertIn(b"\r\nConnection: close\r\n", written)

    def test_one_write_for_the_whole_request(self):
        endpoints = CapturingEndpoints()
        fast = FastHTTP(HTTPConnectionPool(Clock()), endpoints)
        fast.request("POST", "http://app.test/h", {"X-A": "1"}, b"body")
        [transport] = endpoints.transports
        self.assertEqual(transport.writes, 1)
        self.assertTrue(transport.value().endswith(b"\r\n\r\nbody"))


class DeclinesTests(unittest.TestCase):
    """What it can't write as the Agent does, it leaves to treq (``None``)."""

    def test_urls_the_agent_would_rewrite_or_refuse(self):
        for url in [
            "http://app.test/a#frag",
            "http://app.test/a?",
            "http://app.test/a b",
            "http://app.test/ä",
            "http://app.test?x=1",
            "http://user:pw@app.test/a",
            "ftp://app.test/a",
            "http://bücher.example/a",
            "http:///a",
            "app.test/a",
        ]:
            with self.subTest(url=url):
                self.assertIsNone(fast_writes("POST", url, {}, b"x"))

    def test_headers_the_agent_writes_itself(self):
        for name in ["Host", "host", "Content-Length", "transfer-encoding", "CONNECTION"]:
            with self.subTest(name=name):
                self.assertIsNone(fast_writes("POST", "http://app.test/a", {name: "x"}, b"x"))

    def test_a_method_that_is_no_token(self):
        self.assertIsNone(fast_writes("PO ST", "http://app.test/a", {}, b"x"))

    def test_a_header_name_twisted_refuses_fails_as_it_does_with_treq(self):
        with self.assertRaises(InvalidHeaderName):
            agent_writes("POST", "http://app.test/a", {"Bad Name": "x"}, b"x")
        with self.assertRaises(InvalidHeaderName):
            fast_writes("POST", "http://app.test/a", {"Bad Name": "x"}, b"x")


class _Hook(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[bytes, bool]] = []

    def render(self, request):
        self.seen.append((request.uri, request.isSecure()))
        return b"ok"


class PoolTests(unittest.TestCase):
    def test_a_connection_is_reused_once_its_answer_is_read(self):
        clock = Clock()
        hook = _Hook()
        fast, endpoints = memory_fast_http(hook, clock)
        dispatcher = Dispatcher(None, clock, fast=fast)
        urls = ["http://a.test/1", "http://a.test/2", "http://b.test/3", "http://a.test/4"]
        for n, url in enumerate(urls):
            d = dispatcher.dispatch(Task(id=f"t{n}", queue="q", url=url, attempts=1), 10)
            endpoints.flush()
            self.assertEqual(self.successResultOf(d).status, 200)
        self.assertEqual([uri for uri, _ in hook.seen], [b"/1", b"/2", b"/3", b"/4"])
        self.assertEqual(endpoints.connections, 2)  # one for a.test, one for b.test

    def test_requests_in_flight_at_once_each_have_a_connection(self):
        clock = Clock()
        fast, endpoints = memory_fast_http(_Hook(), clock)
        dispatcher = Dispatcher(None, clock, fast=fast)
        tasks = [Task(id=f"t{n}", queue="q", url="http://a.test/", attempts=1) for n in range(3)]
        ds = [dispatcher.dispatch(task, 10) for task in tasks]
        endpoints.flush()
        self.assertEqual([self.successResultOf(d).status for d in ds], [200] * 3)
        self.assertEqual(endpoints.connections, 3)


class _DropsEverySecond(Resource):
    """Answers the first request on a connection and drops the connection
    on the second, unanswered: a kept connection the server had closed."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = 0

    def render(self, request):
        self.seen += 1
        if self.seen % 2 == 0:
            request.channel.transport.loseConnection()
            return NOT_DONE_YET
        return b"ok"


class StaleConnectionTests(unittest.TestCase):
    """The pool tries a request again on a new connection when a kept one
    turns out closed, as for treq's requests: only an idempotent one
    without a body (a body may have been acted on)."""

    def attempt(self, method: str, body: str):
        clock = Clock()
        fast, endpoints = memory_fast_http(_DropsEverySecond(), clock)
        dispatcher = Dispatcher(None, clock, fast=fast)
        outcomes = []
        for n in range(2):
            url = "http://a.test/"
            task = Task(id=f"t{n}", queue="q", url=url, method=method, body=body, attempts=1)
            d = dispatcher.dispatch(task, 10)
            endpoints.flush()
            endpoints.flush()  # the new connection of a retry
            outcomes.append(self.successResultOf(d))
        return outcomes, endpoints.connections

    def test_a_get_without_a_body_is_sent_again_on_a_new_connection(self):
        outcomes, connections = self.attempt("GET", "")
        self.assertEqual([outcome.status for outcome in outcomes], [200, 200])
        self.assertEqual(connections, 2)

    def test_a_get_with_a_body_is_not(self):
        outcomes, connections = self.attempt("GET", "x")
        self.assertEqual(outcomes[0].status, 200)
        self.assertIsInstance(outcomes[1], NoResponse)
        self.assertEqual(connections, 1)

    def test_a_post_is_not(self):
        outcomes, connections = self.attempt("POST", "")
        self.assertIsInstance(outcomes[1], NoResponse)
        self.assertEqual(connections, 1)


class FailureTests(unittest.TestCase):
    """A failed exchange ends as it does through treq: the same errors,
    the same descriptions (the circuit breaker counts them)."""

    @defer.inlineCallbacks
    def test_a_refused_connection(self):
        port = reactor.listenTCP(0, Site(_Hook()), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        pool = HTTPConnectionPool(reactor, persistent=False)
        fast = FastHTTP(pool, GuardedEndpoints(reactor, TargetGuard()))
        task = Task(id="t", queue="q", url=f"http://127.0.0.1:{number}/", attempts=1)
        outcome = yield Dispatcher(None, reactor, fast=fast).dispatch(task, 10)
        self.assertEqual(outcome, NoResponse("connection refused", outcome.duration))

    @defer.inlineCallbacks
    def test_a_connection_closed_before_an_answer(self):
        class Closes(Resource):
            isLeaf = True

            def render(self, request):
                request.channel.transport.abortConnection()
                return NOT_DONE_YET

        port = reactor.listenTCP(0, Site(Closes()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        fast = FastHTTP(pool, GuardedEndpoints(reactor, TargetGuard()))
        url = f"http://127.0.0.1:{port.getHost().port}/"
        task = Task(id="t", queue="q", url=url, attempts=1)
        outcome = yield Dispatcher(None, reactor, fast=fast).dispatch(task, 10)
        self.assertEqual(outcome.error, "connection lost before a complete answer")


PEM = (Path(twisted.test.__file__).parent / "server.pem").read_bytes()


class TLSTests(unittest.TestCase):
    """An https URL goes over TLS, verified against the host name, through
    the same endpoint factory as treq's requests."""

    def deliver(self, host: str):
        """An attempt to ``https://<host>:<port>/hook`` on a TLS server
        whose certificate names ``localhost``, every name resolving to
        127.0.0.1: its outcome (a Deferred), and what the server saw."""
        hook = _Hook()
        server = ssl.PrivateCertificate.loadPEM(PEM).options()
        port = reactor.listenSSL(0, Site(hook), server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        guard = TargetGuard(resolver=lambda host, p: defer.succeed(["127.0.0.1"]))
        endpoints = GuardedEndpoints(reactor, guard)
        endpoints.policy = BrowserLikePolicyForHTTPS(ssl.Certificate.loadPEM(PEM))
        pool = HTTPConnectionPool(reactor, persistent=False)
        dispatcher = Dispatcher(None, reactor, fast=FastHTTP(pool, endpoints))
        url = f"https://{host}:{port.getHost().port}/hook"
        return dispatcher.dispatch(Task(id="t", queue="q", url=url, attempts=1), 10), hook

    @defer.inlineCallbacks
    def test_an_https_delivery_over_a_real_connection(self):
        attempt, hook = self.deliver("localhost")
        outcome = yield attempt
        self.assertEqual(outcome.status, 200)
        self.assertEqual(hook.seen, [(b"/hook", True)])

    @defer.inlineCallbacks
    def test_a_certificate_for_another_name_is_refused(self):
        attempt, hook = self.deliver("other.test")
        outcome = yield attempt
        self.assertIsInstance(outcome, NoResponse)
        self.assertEqual(hook.seen, [])
