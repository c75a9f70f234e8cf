"""--allow-target: rules, the add-time check, and the dispatch-time check
against the addresses actually connected to (DNS rebinding)."""

import json

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from tests.memory_store import MemoryStore
from tests.node import start_node, start_receiver, wait_for
from torque.api import TorqueAPI
from torque.dispatch import Dispatcher
from torque.retry import Dead, RetryPolicy, next_step
from torque.targets import GuardedEndpoints, TargetGuard, TargetRefused, TargetRules
from torque.task import Task


def rules(*specs):
    return TargetRules.parse(specs)


class RuleTests(unittest.TestCase):
    def test_names_wildcards_and_ranges(self):
        r = rules("app.internal", "*.example.com", "10.0.0.0/8", "::1", "192.168.1.7")
        cases = [
            ("exact name", r.allows_name("app.internal"), True),
            ("name is case-insensitive", r.allows_name("App.Internal."), True),
            ("wildcard covers a subdomain", r.allows_name("a.b.example.com"), True),
            ("wildcard does not cover its apex", r.allows_name("example.com"), False),
            ("lookalike suffix", r.allows_name("badexample.com"), False),
            ("address in range", r.allows_address("10.2.3.4"), True),
            ("address out of range", r.allows_address("11.0.0.1"), False),
            ("single address", r.allows_address("192.168.1.7"), True),
            ("IPv6", r.allows_address("::1"), True),
            ("v4-mapped IPv6", r.allows_address("::ffff:10.0.0.1"), True),
            ("metadata address", r.allows_address("169.254.169.254"), False),
        ]
        for name, got, expected in cases:
            self.assertEqual(got, expected, name)

    def test_a_rule_that_is_neither_is_refused(self):
        for bad in ("http://x", "a b", "*.", "10.0.0.0/33x"):
            self.assertRaises(ValueError, TargetRules.parse, [bad])

    def test_no_rules_means_anywhere(self):
        guard = TargetGuard(rules())
        self.assertIsNone(self.successResultOf(guard.check_url("http://169.254.169.254/")))


class GuardTests(unittest.TestCase):
    def guard(self, *specs, answers=("10.0.0.5",)):
        self.lookups = []

        def resolver(host, port):
            self.lookups.append(host)
            return defer.succeed(list(answers))

        return TargetGuard(rules(*specs), resolver)

    def test_allowed_name_is_not_resolved(self):
        guard = self.guard("*.internal", "10.0.0.0/8")
        self.assertIsNone(self.successResultOf(guard.check_url("https://app.internal/x")))
        self.assertEqual(self.lookups, [])

    def test_address_in_the_url_is_checked_as_is(self):
        guard = self.guard("10.0.0.0/8")
        self.assertEqual(self.successResultOf(guard.check_url("http://10.1.1.1:81/")), ["10.1.1.1"])
        self.failureResultOf(guard.check_url("http://127.0.0.1/"), TargetRefused)

    def test_name_is_allowed_by_the_addresses_it_resolves_to(self):
        guard = self.guard("10.0.0.0/8", answers=["127.0.0.1", "10.9.9.9"])
        self.assertEqual(self.successResultOf(guard.check_url("http://app/")), ["10.9.9.9"])

    def test_name_resolving_outside_every_range_is_refused_naming_the_rules(self):
        guard = self.guard("10.0.0.0/8", "*.internal", answers=["169.254.169.254"])
        failure = self.failureResultOf(guard.check_url("http://evil.test/"), TargetRefused)
        self.assertIn("evil.test", failure.getErrorMessage())
        self.assertIn("*.internal, 10.0.0.0/8", failure.getErrorMessage())

    def test_without_ranges_an_unlisted_name_is_refused_unresolved(self):
        guard = self.guard("*.internal")
        self.failureResultOf(guard.check_url("http://evil.test/"), TargetRefused)
        self.assertEqual(self.lookups, [])


class AddTimeTests(unittest.TestCase):
    def test_refused_target_is_a_400_naming_the_rule(self):
        store = MemoryStore()
        api = TorqueAPI(store, Clock(), targets=TargetGuard(rules("*.internal")))
        http = StubTreq(api.resource())
        response = self.successResultOf(
            http.post("http://torque/hooks/add", data={"url": "http://127.0.0.1/x"})
        )
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(response.code, 400)
        self.assertEqual(
            (body["error"]["field"], body["error"]["code"]), ("url", "target_not_allowed")
        )
        self.assertIn("*.internal", body["error"]["message"])
        self.assertEqual(store.tasks, {})


class RebindingTests(unittest.TestCase):
    """A name that resolves to an allowed address when added, and to a
    forbidden one when dispatched, is refused at dispatch and dies."""

    @defer.inlineCallbacks
    def test_dispatch_checks_the_address_connected_to(self):
        receiver = start_receiver(self)
        port = int(receiver.url.rsplit(":", 1)[1])
        answers = [["127.0.0.1"], ["169.254.169.254"]]
        guard = TargetGuard(rules("127.0.0.0/8"), lambda host, p: defer.succeed(answers.pop(0)))
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, GuardedEndpoints(reactor, guard), pool=pool)
        dispatcher = Dispatcher(HTTPClient(agent), reactor)
        task = Task(id="t", queue="q", url=f"http://rebinder.test:{port}/hook", attempts=1)
        first = yield dispatcher.dispatch(task, 10)
        self.assertEqual(first.status, 200)
        self.assertEqual(receiver.requests[0].headers["host"], f"rebinder.test:{port}")
        second = yield dispatcher.dispatch(task, 10)
        self.assertTrue(second.permanent)
        self.assertIn("not an allowed target", second.error)
        self.assertIsInstance(next_step(task, second, 0.0, RetryPolicy()), Dead)
        self.assertEqual(len(receiver.requests), 1)


class EndToEndTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_node_enforces_allow_target(self):
        receiver = start_receiver(self)
        node = yield start_node(
            self, "--allow-target", "127.0.0.0/8", "--allow-target", "*.internal"
        )
        status, _, _ = yield node.post(data={"url": receiver.url + "/ok"})
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/ok"))
        status, body, _ = yield node.post(data={"url": "http://10.1.2.3/"})
        self.assertEqual((status, body["error"]["code"]), (400, "target_not_allowed"))


class TargetEdgeTests(unittest.TestCase):
    """Edges that mutation testing found unguarded (tests/mutation/run
    targets)."""

    def test_an_exact_name_rule_allows_that_name_only(self):
        r = rules("app.internal")
        for other in ("aaa.internal", "app", "a", "app.internal.evil"):
            self.assertFalse(r.allows_name(other), other)

    def test_a_range_with_host_bits_set_is_its_network(self):
        r = rules("10.1.2.3/8")
        self.assertEqual((r.allows_address("10.200.0.1"), r.allows_address("11.0.0.1")),
                         (True, False))  # fmt: skip

    def test_a_wildcard_under_a_one_letter_label_is_a_rule(self):
        self.assertTrue(rules("*.q.example").allows_name("x.q.example"))

    def test_a_name_is_not_an_allowed_address(self):
        self.assertFalse(rules("10.0.0.0/8").allows_address("app.internal"))

    def test_the_resolver_is_asked_for_the_urls_port(self):
        asked = []

        def resolver(host, port):
            asked.append(port)
            return defer.succeed(["10.0.0.5"])

        guard = TargetGuard(rules("10.0.0.0/8"), resolver)
        for url in ("http://app/", "https://app/", "http://app:8080/", "https://app:8443/"):
            self.successResultOf(guard.check_url(url))
        self.assertEqual(asked, [80, 443, 8080, 8443])

    def test_a_name_that_does_not_resolve_is_refused(self):
        def resolver(host, port):
            return defer.fail(OSError("Name or service not known"))

        guard = TargetGuard(rules("10.0.0.0/8"), resolver)
        failure = self.failureResultOf(guard.check_url("http://nowhere.test/"), TargetRefused)
        self.assertIn("nowhere.test does not resolve", failure.getErrorMessage())

    @defer.inlineCallbacks
    def test_the_default_resolver_answers_addresses(self):
        from torque.targets import resolve

        self.assertEqual((yield resolve("127.0.0.1", 80)), ["127.0.0.1"])


class _Names:
    """A name resolver that answers every name as its own address, and
    records what it was asked."""

    def __init__(self):
        self.asked = []

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):  # fmt: skip
        from twisted.internet.address import IPv4Address

        self.asked.append(hostName)
        receiver.resolutionBegan(None)
        receiver.addressResolved(IPv4Address("TCP", hostName, portNumber))
        receiver.resolutionComplete()
        return receiver


class GuardedConnectionTests(unittest.TestCase):
    def connect(self, url):
        # Imported here, to keep this file's imports as other branches left them.
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import MemoryReactorClock
        from twisted.protocols.tls import TLSMemoryBIOFactory
        from twisted.web.client import URI

        reactor = MemoryReactorClock()
        reactor.installNameResolver(_Names())
        answers = ["127.0.0.1", "10.0.0.7", "10.0.0.8"]
        guard = TargetGuard(rules("10.0.0.0/8"), lambda host, port: defer.succeed(answers))
        endpoint = GuardedEndpoints(reactor, guard).endpointForURI(URI.fromBytes(url))
        endpoint.connect(Factory.forProtocol(Protocol))
        reactor.advance(1)
        ((host, port, factory, _, _),) = reactor.tcpClients
        return host, port, isinstance(factory._wrappedFactory, TLSMemoryBIOFactory)

    def test_connects_to_the_first_allowed_address_with_tls_for_https_only(self):
        self.assertEqual(self.connect(b"https://app.test/x"), ("10.0.0.7", 443, True))
        self.assertEqual(self.connect(b"http://app.test/x"), ("10.0.0.7", 80, False))
