"""Unit tests of one attempt: ``Dispatcher`` over ``StubTreq`` and a
scripted handler, timed by a ``Clock``."""

from __future__ import annotations

import base64
from email.utils import formatdate

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, DNSLookupError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.memory_http import memory_fast_http
from tests.node import wait_for
from torque import __version__
from torque.dispatch import Dispatcher, describe_failure
from torque.fast_http import FastHTTP
from torque.guarded import GuardedEndpoints
from torque.retry import NoResponse, Response
from torque.signing import Signer
from torque.targets import TargetGuard
from torque.task import FORM, JSON, Task

TIMEOUT = 10.0


def make_task(**changes) -> Task:
    fields = {
        "id": "t1",
        "queue": "q1",
        "url": "http://app.test/hooks/do/foo?x=1",
        "body": "foo=somevalue&baz=99",
        "content_type": FORM,
        "due_at": 1000.5,
        "attempts": 1,
    }
    return Task(**{**fields, **changes})


class Handler(Resource):
    """A web hook that records each request and answers as scripted.

    :ivar requests: ``(method, uri, headers, body)`` per request; headers
        are lower-cased names mapped to their last value.
    :ivar hang: answer nothing, ever (after writing ``partial``, if set).
    """

    isLeaf = True

    def __init__(self, status=200, headers=None, body=b"ok", hang=False, partial=b""):
        super().__init__()
        self.status, self.answer_headers, self.body = status, headers or {}, body
        self.hang, self.partial = hang, partial
        self.requests: list[tuple[bytes, bytes, dict[str, str], bytes]] = []
        self.held = []

    def render(self, request):
        headers = {
            name.decode().lower(): values[-1].decode()
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        self.requests.append((request.method, request.uri, headers, request.content.read()))
        request.setResponseCode(self.status)
        for name, value in self.answer_headers.items():
            request.setHeader(name, value)
        if self.hang:
            self.held.append(request)
            if self.partial:
                request.write(self.partial)
            return NOT_DONE_YET
        return self.body


class DispatchTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)

    def dispatch(self, handler, task=None, **kwargs):
        self.stub = StubTreq(handler)
        dispatcher = Dispatcher(self.stub, self.clock, **kwargs)
        d = dispatcher.dispatch(task or make_task(), TIMEOUT)
        self.stub.flush()
        return d

    def test_request_carries_the_task(self):
        handler = Handler()
        self.dispatch(handler, make_task(headers={"Authorization": "Bearer x"}))
        [(method, uri, headers, body)] = handler.requests
        self.assertEqual(method, b"POST")
        self.assertEqual(uri, b"/hooks/do/foo?x=1")
        self.assertEqual(headers["host"], "app.test")
        self.assertEqual(body, b"foo=somevalue&baz=99")
        self.assertEqual(headers["content-type"], FORM)
        self.assertEqual(headers["authorization"], "Bearer x")

    def test_request_carries_torque_headers(self):
        handler = Handler()
        self.dispatch(handler)
        headers = handler.requests[0][2]
        self.assertEqual(headers["user-agent"], f"torque/{__version__}")
        self.assertEqual(headers["x-torque-task-id"], "t1")
        self.assertEqual(headers["x-torque-queue"], "q1")
        self.assertEqual(headers["x-torque-retry-count"], "0")
        self.assertEqual(headers["x-torque-eta"], "1000.5")
        self.assertNotIn("x-torque-task-name", headers)

    def test_named_task_carries_its_name(self):
        handler = Handler()
        self.dispatch(handler, make_task(name="nightly-report"))
        self.assertEqual(handler.requests[0][2]["x-torque-task-name"], "nightly-report")

    def test_a_doors_profile_adds_its_headers_to_that_doors_tasks(self):
        class Door:
            def headers(self, task, now, body):
                door = f"{task.door_data['n']} {now:g} {len(body)}"
                return {"User-Agent": "Door", "X-Door": door}

        handler = Handler()
        task = make_task(door="door", door_data={"n": "7"})
        self.dispatch(handler, task, profiles={"door": Door()})
        self.dispatch(handler, make_task(), profiles={"door": Door()})
        [door, plain] = [request[2] for request in handler.requests]
        self.assertEqual((door["user-agent"], door["x-door"]), ("Door", "7 1000 20"))
        self.assertEqual(door["x-torque-task-id"], "t1")
        self.assertEqual(plain["user-agent"], f"torque/{__version__}")
        self.assertNotIn("x-door", plain)

    def test_a_profile_that_cannot_sign_yet_fails_the_attempt(self):
        class Unready:
            def headers(self, task, now, body):
                raise RuntimeError("signing keys not read yet")

        handler = Handler()
        d = self.dispatch(handler, make_task(door="door"), profiles={"door": Unready()})
        self.assertEqual(
            self.successResultOf(d), NoResponse("RuntimeError: signing keys not read yet")
        )
        self.assertEqual(handler.requests, [])

    def test_the_completion_token_waits_for_the_key_then_comes_at_once(self):
        from torque.completion import CompletionKey, token_for

        reading = defer.Deferred()
        key = CompletionKey(lambda offered: reading)
        handler = Handler()
        first = self.dispatch(handler, make_task(id="t1"), completion_key=key)
        self.assertEqual(handler.requests, [])  # waits for the key
        reading.callback("k" * 64)
        self.stub.flush()
        second = self.dispatch(handler, make_task(id="t2", attempts=3), completion_key=key)
        self.assertEqual([self.successResultOf(d).status for d in (first, second)], [200, 200])
        tokens = [headers["torque-completion-token"] for _, _, headers, _ in handler.requests]
        self.assertEqual(tokens, [token_for("k" * 64, "t1", 1), token_for("k" * 64, "t2", 3)])

    def test_retry_count_is_attempts_before_this_one(self):
        handler = Handler()
        self.dispatch(handler, make_task(attempts=3))
        self.assertEqual(handler.requests[0][2]["x-torque-retry-count"], "2")

    def test_method_and_json_body(self):
        handler = Handler()
        self.dispatch(handler, make_task(method="PUT", body='{"a":1}', content_type=JSON))
        [(method, _, headers, body)] = handler.requests
        self.assertEqual((method, body), (b"PUT", b'{"a":1}'))
        self.assertEqual(headers["content-type"], JSON)

    def test_task_headers_cannot_override_torques(self):
        handler = Handler()
        spoof = {"x-torque-task-id": "other", "User-Agent": "evil"}
        self.dispatch(handler, make_task(headers=spoof))
        headers = handler.requests[0][2]
        self.assertEqual(headers["x-torque-task-id"], "t1")
        self.assertEqual(headers["user-agent"], f"torque/{__version__}")

    def test_200_is_a_response(self):
        d = self.dispatch(Handler(status=200))
        self.assertEqual(self.successResultOf(d), Response(200))

    def test_503_keeps_retry_after_and_start_of_body(self):
        handler = Handler(status=503, headers={b"Retry-After": b"30"}, body=b"down  for\nmaint")
        d = self.dispatch(handler)
        self.assertEqual(
            self.successResultOf(d), Response(503, retry_after=30.0, detail="down for maint")
        )

    def test_retry_after_date_counts_from_the_answer(self):
        retry_at = formatdate(1010, usegmt=True)
        handler = Handler(status=429, headers={b"Retry-After": retry_at}, hang=True)
        d = self.dispatch(handler)
        self.clock.advance(4)
        handler.held[0].finish()
        self.stub.flush()
        self.assertEqual(self.successResultOf(d).retry_after, 6.0)

    def test_detail_is_cut_at_detail_bytes(self):
        d = self.dispatch(Handler(status=500, body=b"x" * 500), detail_bytes=200)
        self.assertEqual(self.successResultOf(d).detail, "x" * 200)

    def test_redirect_is_not_followed(self):
        elsewhere = {b"Location": b"http://app.test/elsewhere"}
        handler = Handler(status=302, headers=elsewhere, body=b"")
        d = self.dispatch(handler)
        self.assertEqual(self.successResultOf(d), Response(302))
        self.assertEqual(len(handler.requests), 1)

    def test_body_over_max_body_does_not_fail_the_attempt(self):
        d = self.dispatch(Handler(status=201, body=b"x" * 100_000), max_body=1024)
        self.assertEqual(self.successResultOf(d), Response(201))

    def test_duration_is_measured_on_the_clock(self):
        handler = Handler(hang=True)
        d = self.dispatch(handler)
        self.clock.advance(2.5)
        handler.held[0].finish()
        self.stub.flush()
        self.assertEqual(self.successResultOf(d), Response(200, duration=2.5))

    def test_nothing_fires_before_the_timeout(self):
        d = self.dispatch(Handler(hang=True))
        self.clock.advance(TIMEOUT - 0.001)
        self.stub.flush()
        self.assertNoResult(d)

    def test_timeout_is_no_response(self):
        d = self.dispatch(Handler(hang=True))
        self.clock.advance(TIMEOUT)
        self.assertEqual(
            self.successResultOf(d), NoResponse("timed out after 10 s", duration=TIMEOUT)
        )

    def test_timeout_covers_the_body(self):
        d = self.dispatch(Handler(hang=True, partial=b"half an answ"))
        self.assertNoResult(d)
        self.clock.advance(TIMEOUT)
        self.assertEqual(self.successResultOf(d).error, "timed out after 10 s")


class NoTreq:
    """Stands for treq where every request must take the fast path."""

    def request(self, *args, **kwargs):
        raise AssertionError("sent with treq, not by torque.fast_http")


class FastDispatchTests(DispatchTests):
    """The same attempts, sent by :mod:`torque.fast_http`."""

    def dispatch(self, handler, task=None, **kwargs):
        fast, self.stub = memory_fast_http(handler, self.clock)
        dispatcher = Dispatcher(NoTreq(), self.clock, fast=fast, **kwargs)
        d = dispatcher.dispatch(task or make_task(), TIMEOUT)
        self.stub.flush()
        return d

    def test_a_request_the_fast_path_declines_goes_with_treq(self):
        handler = Handler()
        fast, endpoints = memory_fast_http(handler, self.clock)
        stub = StubTreq(handler)
        dispatcher = Dispatcher(stub, self.clock, fast=fast)
        tasks = [  # a URL treq rewrites, a header twisted.web's Agent would add
            make_task(url="http://app.test/a#fragment"),
            make_task(url="http://app.test/b", headers={"Host": "other.test"}),
        ]
        for task in tasks:
            d = dispatcher.dispatch(task, TIMEOUT)
            stub.flush()
            self.assertEqual(self.successResultOf(d), Response(200))
        seen = [(uri, headers["host"]) for _, uri, headers, _ in handler.requests]
        self.assertEqual(seen, [(b"/a", "app.test"), (b"/b", "other.test")])
        self.assertEqual(endpoints.connections, 0)


class DescribeFailureTests(unittest.TestCase):
    def test_connection_refused(self):
        failure = Failure(ConnectionRefusedError())
        self.assertEqual(describe_failure(failure), "connection refused")

    # What HostnameEndpoint raises when a name doesn't resolve.
    dns_failure = Failure(DNSLookupError("no results for hostname lookup: app.test"))

    def test_dns_lookup_names_the_host(self):
        description = describe_failure(self.dns_failure)
        self.assertTrue(description.startswith("DNS lookup failed: "), description)
        self.assertIn("app.test", description)

    def test_dns_lookup_says_so_once(self):
        self.assertEqual(
            describe_failure(self.dns_failure),
            "DNS lookup failed: no results for hostname lookup: app.test.",
        )

    def test_connection_lost_inside_response_never_received(self):
        failure = Failure(ResponseNeverReceived([Failure(ConnectionLost())]))
        self.assertEqual(describe_failure(failure), "connection lost before a complete answer")


class _Stalls(Protocol):
    """Sends the head of a 200 and part of its body, then nothing."""

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")

    def connectionLost(self, reason):
        self.factory.closed.append(reason)


class _Streams(_Stalls):
    """Answers 200 with a body that never ends."""

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.send()

    def send(self):
        self.transport.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        self.sending = reactor.callLater(0.001, self.send)

    def connectionLost(self, reason):
        self.sending.cancel()
        super().connectionLost(reason)


class RealConnectionTests(unittest.TestCase):
    """Over a real socket: an attempt that ends early drops its connection
    (a handler that stalls or streams can't hold one)."""

    def serve(self, kind) -> str:
        factory = Factory.forProtocol(kind)
        factory.closed = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.factory = factory
        return f"http://127.0.0.1:{port.getHost().port}/"

    def dispatcher(self) -> Dispatcher:
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        return Dispatcher(HTTPClient(Agent(reactor, pool=pool)), reactor, max_body=1024)

    @defer.inlineCallbacks
    def test_a_timed_out_answer_closes_its_connection(self):
        url = self.serve(_Stalls)
        outcome = yield self.dispatcher().dispatch(make_task(url=url), 0.2)
        self.assertEqual(outcome.error, "timed out after 0.2 s")
        yield wait_for(lambda: self.factory.closed, timeout=10, what="the connection to close")

    @defer.inlineCallbacks
    def test_an_endless_answer_is_cut_at_max_body_and_its_status_stands(self):
        url = self.serve(_Streams)
        outcome = yield self.dispatcher().dispatch(make_task(url=url), 10)
        self.assertEqual(outcome.status, 200)
        yield wait_for(lambda: self.factory.closed, timeout=10, what="the connection to close")


class FastRealConnectionTests(RealConnectionTests):
    """The same, sent by :mod:`torque.fast_http`."""

    def dispatcher(self) -> Dispatcher:
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        fast = FastHTTP(pool, GuardedEndpoints(reactor, TargetGuard()))
        return Dispatcher(NoTreq(), reactor, max_body=1024, fast=fast)


class _RawHeaders(Resource):
    """A handler that keeps every copy of every header, as sent."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.received = []

    def render(self, request):
        self.received.append(
            {
                name.decode().lower(): [v.decode() for v in values]
                for name, values in request.requestHeaders.getAllRawHeaders()
            }
        )
        return b"ok"


class OwnHeadersTests(unittest.TestCase):
    """A task stored before its headers were checked in any letter case
    (or written to Redis by hand) still can't send a second copy of
    torque's own headers: a real server sees one, torque's."""

    @defer.inlineCallbacks
    def test_a_delivery_carries_one_copy_of_each_of_torques_headers(self):
        handler = _RawHeaders()
        port = reactor.listenTCP(0, Site(handler), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
        dispatcher = self.dispatcher(pool, signer=Signer.from_secrets([secret]))
        spoof = {
            "x-torque-task-id": "SPOOF",
            "X-TORQUE-RETRY-COUNT": "99",
            "x-Torque-Task-Name": "spoof",
            "user-agent": "spoof",
            "webhook-id": "SPOOF",
            "Webhook-Signature": "v1,SPOOF",
            "content-type": "text/spoof",
            "Authorization": "Bearer kept",
        }
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        outcome = yield dispatcher.dispatch(make_task(url=url, headers=spoof), TIMEOUT)
        self.assertEqual(outcome.status, 200)
        [headers] = handler.received
        self.assertEqual(headers["x-torque-task-id"], ["t1"])
        self.assertEqual(headers["x-torque-retry-count"], ["0"])
        self.assertNotIn("x-torque-task-name", headers)  # the task has no name
        self.assertEqual(headers["user-agent"], [f"torque/{__version__}"])
        self.assertEqual(headers["webhook-id"], ["t1"])
        self.assertEqual(len(headers["webhook-signature"]), 1)
        self.assertNotIn("SPOOF", headers["webhook-signature"][0])
        self.assertEqual(headers["content-type"], [FORM])
        self.assertEqual(headers["authorization"], ["Bearer kept"])

    def dispatcher(self, pool, **kwargs) -> Dispatcher:
        return Dispatcher(HTTPClient(Agent(reactor, pool=pool)), reactor, **kwargs)


class FastOwnHeadersTests(OwnHeadersTests):
    """The same, sent by :mod:`torque.fast_http`."""

    def dispatcher(self, pool, **kwargs) -> Dispatcher:
        fast = FastHTTP(pool, GuardedEndpoints(reactor, TargetGuard()))
        return Dispatcher(NoTreq(), reactor, fast=fast, **kwargs)


class RecordingAgent:
    """An ``IAgent`` that records the URI of each request and never answers."""

    def __init__(self):
        self.uris: list[bytes] = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.uris.append(uri)
        return defer.Deferred()


class ParsedOnceTests(unittest.TestCase):
    """Each distinct URL is parsed once and handed to treq parsed, and the
    request treq makes of it is the one it makes of the URL's text."""

    URLS = [
        "http://app.test/hooks/do/foo?x=1",
        "https://app.test:8443/a%20b/c?q=%C3%A9&r#frag",
        "http://bücher.example/ä/ö?ü=1",
        "http://127.0.0.1:8000/",
        "http://app.test",
    ]

    def requested(self, url, parsed: bool) -> bytes:
        agent = RecordingAgent()
        if parsed:
            Dispatcher(HTTPClient(agent), Clock()).dispatch(make_task(url=url), TIMEOUT)
        else:
            HTTPClient(agent).request("POST", url, data=b"x", allow_redirects=False)
        [uri] = agent.uris
        return uri

    def test_the_request_is_the_one_treq_makes_of_the_text(self):
        for url in self.URLS:
            with self.subTest(url=url):
                self.assertEqual(self.requested(url, parsed=True), self.requested(url, False))

    def test_urls_of_a_known_origin_are_requested_as_treq_would(self):
        """Through one dispatcher, so that all but the first of each origin
        take the unparsed path: every character class, %-escapes, empty
        and odd queries, fragments, and origins hyperlink rewrites."""
        rests = [
            "",
            "/",
            "//a",
            "/a?",
            "/a?x=1",
            "/a??b",
            "/a?x=1&&y",
            "/a;b",
            "/%41",
            "/%zz",
            "/a?x=%41",
            "/a#f",
            "/a?#f",
            "/a b",
            "/ä",
            "/a?ü=1",
            "/a/~b-c_d.e",
            "/!$&'()*+,;=:@",
            *(f"/a{c}b" for c in '"<>[\\]^`{|}'),
            "?x=1",
            "/a?x=1#",
        ]
        origins = [
            "http://app.test",
            "http://App.Test",
            "http://app.test:80",
            "https://app.test:8443",
            "http://127.0.0.1:8000",
            "http://bücher.example",
        ]
        agent = RecordingAgent()
        dispatcher = Dispatcher(HTTPClient(agent), Clock())
        urls = [origin + rest for _ in range(2) for origin in origins for rest in rests]
        for url in urls:
            dispatcher.dispatch(make_task(url=url), TIMEOUT)
        for url, uri in zip(urls, agent.uris, strict=True):
            with self.subTest(url=url):
                self.assertEqual(uri, self.requested(url, parsed=False))

    def test_each_distinct_url_is_parsed_once(self):
        from torque import dispatch

        parsed = []
        parse = dispatch.ReadyURL.parse
        self.patch(dispatch.ReadyURL, "parse", lambda url: parsed.append(url) or parse(url))
        agent = RecordingAgent()
        dispatcher = Dispatcher(HTTPClient(agent), Clock())
        for i, url in enumerate([self.URLS[0], self.URLS[1], self.URLS[0], self.URLS[0]]):
            dispatcher.dispatch(make_task(id=f"t{i}", url=url), TIMEOUT)
        origins = ["http://app.test", "https://app.test:8443"]
        self.assertEqual(parsed, [self.URLS[0], origins[0], self.URLS[1], origins[1]])
        self.assertEqual(len(agent.uris), 4)
        self.assertEqual(agent.uris[2], agent.uris[0])

    def test_plain_urls_of_a_known_origin_are_not_parsed(self):
        from torque import dispatch

        parsed = []
        parse = dispatch.ReadyURL.parse
        self.patch(dispatch.ReadyURL, "parse", lambda url: parsed.append(url) or parse(url))
        dispatcher = Dispatcher(HTTPClient(RecordingAgent()), Clock())
        for i in range(5):
            dispatcher.dispatch(make_task(url=f"http://app.test/hook/{i}?n={i}"), TIMEOUT)
        self.assertEqual(parsed, ["http://app.test/hook/0?n=0", "http://app.test"])

    def test_the_cache_is_bounded(self):
        from torque import dispatch

        self.patch(dispatch, "URL_CACHE", 2)
        dispatcher = Dispatcher(HTTPClient(RecordingAgent()), Clock())
        for i in range(5):
            dispatcher.dispatch(make_task(url=f"http://app.test/{i}"), TIMEOUT)
            self.assertLessEqual(len(dispatcher._urls), 2)

    def test_a_url_hyperlink_refuses_fails_the_attempt_as_before(self):
        dispatcher = Dispatcher(HTTPClient(RecordingAgent()), Clock())
        outcome = self.successResultOf(dispatcher.dispatch(make_task(url="http://a:b/"), TIMEOUT))
        self.assertIsInstance(outcome, NoResponse)
