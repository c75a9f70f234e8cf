"""--allow-target: rules, the add-time check, and the dispatch-time check
against the addresses actually connected to (DNS rebinding)."""

import json
import socket

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.error import DNSLookupError
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from tests.memory_store import MemoryStore
from tests.node import Receiver, start_node, start_receiver, wait_for
from torque.api import TorqueAPI
from torque.dispatch import Dispatcher
from torque.guarded import GuardedEndpoints
from torque.retry import Dead, NoResponse, RetryPolicy, next_step
from torque.targets import TargetGuard, TargetRefused, TargetRules, resolver_on
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

    def test_no_rules_means_anywhere_but_the_default_refusals(self):
        guard = TargetGuard(rules())
        for url in ("http://10.1.2.3/", "http://192.168.0.9:81/", "http://127.0.0.1:8000/"):
            self.successResultOf(guard.check_url(url))
        self.assertIsNone(self.successResultOf(guard.check_url("http://app.internal/")))


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
        self.assertIsNone(self.successResultOf(guard.check_url("http://10.1.1.1:81/")))
        self.failureResultOf(guard.check_url("http://127.0.0.1/"), TargetRefused)
        self.assertEqual(self.lookups, [])

    def test_a_verdict_known_without_dns_is_the_same_the_next_time(self):
        guard = self.guard("10.0.0.0/8", "*.internal")
        for _ in range(2):
            self.assertIsNone(self.successResultOf(guard.check_url("http://10.1.1.1:81/")))
            self.assertIsNone(self.successResultOf(guard.check_url("http://app.internal/")))
            failure = self.failureResultOf(guard.check_url("http://127.0.0.1/"), TargetRefused)
            self.assertIn("127.0.0.1", failure.getErrorMessage())

    def test_a_name_that_needs_dns_is_resolved_each_time(self):
        guard = self.guard("10.0.0.0/8", answers=["10.9.9.9"])
        for _ in range(2):
            self.assertIsNone(self.successResultOf(guard.check_url("http://app/")))
        self.assertEqual(self.lookups, ["app", "app"])  # no clock: no DNS cache

    def test_name_is_allowed_by_the_addresses_it_resolves_to(self):
        guard = self.guard("10.0.0.0/8", answers=["127.0.0.1", "10.9.9.9"])
        self.assertIsNone(self.successResultOf(guard.check_url("http://app/")))
        refusing = self.guard("10.0.0.0/8", answers=["127.0.0.1"])
        self.failureResultOf(refusing.check_url("http://app/"), TargetRefused)

    def test_name_resolving_outside_every_range_is_refused_naming_the_rules(self):
        guard = self.guard("10.0.0.0/8", "*.internal", answers=["192.0.2.1"])
        failure = self.failureResultOf(guard.check_url("http://evil.test/"), TargetRefused)
        self.assertIn("evil.test", failure.getErrorMessage())
        self.assertIn("*.internal, 10.0.0.0/8", failure.getErrorMessage())

    def test_without_ranges_an_unlisted_name_is_refused_unresolved(self):
        guard = self.guard("*.internal")
        self.failureResultOf(guard.check_url("http://evil.test/"), TargetRefused)
        self.assertEqual(self.lookups, [])


class DefaultRefusalTests(unittest.TestCase):
    """Without --allow-target: link-local addresses and the node's own API
    are refused; everything else (private ranges included) is allowed."""

    def guard(self, *specs, answers=("10.0.0.5",), api=("127.0.0.1", 8090)):
        self.lookups = []

        def resolver(host, port):
            self.lookups.append(host)
            return defer.succeed(list(answers))

        guard = TargetGuard(rules(*specs), resolver)
        if api:
            guard.api_listening(*api)
        return guard

    def refused(self, guard, url, *words):
        failure = self.failureResultOf(guard.check_url(url), TargetRefused)
        for word in words:
            self.assertIn(word, failure.getErrorMessage(), url)

    def test_link_local_addresses_are_refused_when_added(self):
        guard = self.guard()
        for url in [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://169.254.0.1:8080/",
            "http://169.254.255.255/",
            "http://[fe80::1]/",
            "http://[febf::1]:81/",
            "http://[::ffff:169.254.169.254]/",
        ]:
            self.refused(guard, url, "link-local", "--allow-target")

    def test_private_and_public_addresses_are_allowed(self):
        guard = self.guard()
        for url in [
            "http://10.1.2.3/",
            "http://192.168.0.9:81/",
            "http://172.16.0.1/",
            "http://169.253.255.255/",
            "http://169.255.0.0/",
            "http://127.0.0.1:8000/",
            "http://[fd00::1]/",
            "http://[fec0::1]/",
            "http://203.0.113.7/",
        ]:
            self.successResultOf(guard.check_url(url))

    def test_the_nodes_own_api_is_refused_in_every_spelling(self):
        for api in [("127.0.0.1", 8090), ("0.0.0.0", 8090), ("::", 8090)]:
            guard = self.guard(api=api)
            for url in [
                "http://127.0.0.1:8090/queues/default/pause",
                "http://127.1.2.3:8090/",
                "http://0.0.0.0:8090/",
                "http://localhost:8090/tasks/x",
                "http://LocalHost.:8090/",
                "http://api.localhost:8090/",
                "http://[::1]:8090/",
                "http://[::]:8090/",
                "https://127.0.0.1:8090/",
            ]:
                self.refused(guard, url, "own API", "8090")
            self.assertEqual(self.lookups, [], "localhost is known without DNS")

    def test_other_ports_and_other_machines_are_not_the_api(self):
        guard = self.guard(api=("127.0.0.1", 8090))
        for url in ["http://127.0.0.1:8091/", "http://localhost/", "http://10.0.0.1:8090/"]:
            self.successResultOf(guard.check_url(url))
        bound = self.guard(api=("10.0.0.7", 8090))
        self.refused(bound, "http://10.0.0.7:8090/", "own API")
        self.successResultOf(bound.check_url("http://10.0.0.8:8090/"))

    def test_nothing_is_the_api_before_it_listens(self):
        guard = self.guard(api=None)
        self.successResultOf(guard.check_url("http://127.0.0.1:8090/"))
        guard.api_listening("127.0.0.1", 8090)  # what was allowed before is not kept
        self.refused(guard, "http://127.0.0.1:8090/", "own API")

    def test_names_are_not_resolved_when_added_without_rules(self):
        guard = self.guard(answers=["169.254.169.254"])
        self.assertIsNone(self.successResultOf(guard.check_url("http://metadata.test/")))
        self.assertEqual(self.lookups, [])

    def test_allow_target_naming_them_lets_them_through(self):
        cases = [
            ("the address", "169.254.169.254", "http://169.254.169.254/latest"),
            ("the link-local range", "169.254.0.0/16", "http://169.254.9.9/"),
            ("a range inside it", "169.254.169.0/24", "http://169.254.169.254/"),
            ("IPv6 link-local", "fe80::/10", "http://[fe80::1]/"),
            ("address and port", "169.254.169.254:80", "http://169.254.169.254/"),
            ("the API with its port", "127.0.0.1:8090", "http://127.0.0.1:8090/queues"),
            ("the API by name and port", "localhost:8090", "http://localhost:8090/"),
            ("the API in brackets", "[::1]:8090", "http://[::1]:8090/"),
        ]
        for name, rule, url in cases:
            refused = []
            self.guard(rule).check_url(url).addErrback(refused.append)
            self.assertEqual(refused, [], name)

    def test_allow_target_not_naming_them_does_not(self):
        cases = [
            ("every address", "0.0.0.0/0", "http://169.254.169.254/"),
            ("every IPv6 address", "::/0", "http://[fe80::1]/"),
            ("a range around link-local", "169.0.0.0/8", "http://169.254.169.254/"),
            ("another port", "169.254.169.254:8080", "http://169.254.169.254/"),
            ("loopback, no port", "127.0.0.0/8", "http://127.0.0.1:8090/"),
            ("the address, no port", "127.0.0.1", "http://127.0.0.1:8090/"),
            ("localhost, no port", "localhost", "http://localhost:8090/"),
            ("another port of the API host", "127.0.0.1:8091", "http://127.0.0.1:8090/"),
        ]
        for name, rule, url in cases:
            failure = self.failureResultOf(self.guard(rule).check_url(url), TargetRefused)
            self.assertIn("--allow-target", failure.getErrorMessage(), name)

    def test_a_name_resolving_to_link_local_is_refused_when_dispatched(self):
        guard = self.guard(answers=["169.254.169.254"])
        failure = self.failureResultOf(guard.addresses("metadata.test", 80), TargetRefused)
        self.assertIn("metadata.test is a link-local address", failure.getErrorMessage())
        self.assertIn("169.254.169.254", failure.getErrorMessage())

    def test_a_name_resolving_to_the_api_is_refused_when_dispatched(self):
        guard = self.guard(answers=["127.0.0.1"])
        failure = self.failureResultOf(guard.addresses("self.test", 8090), TargetRefused)
        self.assertIn("self.test:8090 is this node's own API", failure.getErrorMessage())
        self.assertEqual(self.successResultOf(guard.addresses("self.test", 80)), ["127.0.0.1"])

    def test_only_the_refused_addresses_of_a_name_are_dropped(self):
        guard = self.guard(answers=["169.254.169.254", "10.0.0.5", "fe80::2", "fd00::5"])
        self.assertEqual(
            self.successResultOf(guard.addresses("multi.test", 80)), ["10.0.0.5", "fd00::5"]
        )

    def test_a_name_that_does_not_resolve_is_a_dns_failure(self):
        guard = TargetGuard(rules(), lambda host, port: defer.fail(OSError("Name unknown")))
        failure = self.failureResultOf(guard.addresses("nowhere.test", 80), DNSLookupError)
        self.assertIn("nowhere.test", failure.getErrorMessage())


class ResolveCacheTests(unittest.TestCase):
    """Names are resolved once per host and ``ttl`` seconds, however many
    connections are made meanwhile."""

    def setUp(self):
        self.clock = Clock()
        self.pending = []

        def resolver(host, port):
            self.pending.append((host, defer.Deferred()))
            return self.pending[-1][1]

        self.guard = TargetGuard(rules(), resolver, clock=self.clock, ttl=10)

    def test_concurrent_and_later_lookups_share_one_answer(self):
        first = self.guard.addresses("app.test", 80)
        second = self.guard.addresses("app.test", 443)
        other = self.guard.addresses("other.test", 80)
        self.assertEqual([host for host, _ in self.pending], ["app.test", "other.test"])
        self.pending[0][1].callback(["10.0.0.5"])
        self.assertEqual(self.successResultOf(first), ["10.0.0.5"])
        self.assertEqual(self.successResultOf(second), ["10.0.0.5"])
        self.assertNoResult(other)
        self.clock.advance(9.9)
        self.assertEqual(self.successResultOf(self.guard.addresses("app.test", 80)), ["10.0.0.5"])
        self.assertEqual(len(self.pending), 2)
        self.clock.advance(0.1)
        again = self.guard.addresses("app.test", 80)
        self.assertEqual(len(self.pending), 3, "looked up again once the ttl has passed")
        self.pending[2][1].callback(["169.254.169.254"])
        self.failureResultOf(again, TargetRefused)

    def test_a_caller_that_gives_up_does_not_cancel_the_others(self):
        first = self.guard.addresses("app.test", 80)
        second = self.guard.addresses("app.test", 80)
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.pending[0][1].callback(["10.0.0.5"])
        self.assertEqual(self.successResultOf(second), ["10.0.0.5"])

    def test_a_failed_lookup_is_not_kept(self):
        first = self.guard.addresses("app.test", 80)
        waiting = self.guard.addresses("app.test", 80)
        self.pending[0][1].errback(OSError("temporary failure"))
        self.failureResultOf(first, DNSLookupError)
        self.failureResultOf(waiting, DNSLookupError)
        self.guard.addresses("app.test", 80)
        self.assertEqual(len(self.pending), 2)


class _RecordingPool:
    """A thread pool that runs its work at once, counting it."""

    def __init__(self):
        self.ran = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        self.ran.append(f)
        on_result(True, f(*args, **kwargs))


class _ThreadedReactor:
    def __init__(self):
        self.pool = _RecordingPool()
        self.from_thread = 0

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, f, *args, **kwargs):
        self.from_thread += 1
        f(*args, **kwargs)


class ResolverOnTests(unittest.TestCase):
    def test_lookups_run_in_the_given_reactor_s_thread_pool(self):
        threaded = _ThreadedReactor()
        addresses = self.successResultOf(resolver_on(threaded)("127.0.0.1", 80))
        self.assertEqual(addresses, ["127.0.0.1"])
        self.assertEqual(len(threaded.pool.ran), 1)  # in its pool, not the global one
        self.assertEqual(threaded.from_thread, 1)  # and answered on its thread


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

    def test_default_refusals_are_a_400_naming_the_url(self):
        store = MemoryStore()
        guard = TargetGuard(rules())
        guard.api_listening("127.0.0.1", 8090)
        http = StubTreq(TorqueAPI(store, Clock(), targets=guard).resource())
        for url, words in [
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://localhost:8090/queues/default/pause", "own API"),
        ]:
            response = self.successResultOf(http.post("http://torque/hooks/add", json={"url": url}))
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(response.code, 400, url)
            self.assertEqual(
                (body["error"]["field"], body["error"]["code"]), ("url", "target_not_allowed")
            )
            self.assertIn(words, body["error"]["message"])
        self.assertEqual(store.tasks, {})


class RebindingTests(unittest.TestCase):
    """A name that resolves to an allowed address when added, and to a
    forbidden one when dispatched, is refused at dispatch and dies."""

    @defer.inlineCallbacks
    def test_dispatch_checks_the_address_connected_to(self):
        receiver = start_receiver(self)
        port = int(receiver.url.rsplit(":", 1)[1])
        answers = [["127.0.0.1"], ["192.0.2.1"]]
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


def _own_lan_address():
    """One of this machine's non-loopback addresses (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


class DefaultGuardConnectionTests(unittest.TestCase):
    """The guard a node always has, around real connections."""

    def dispatcher(self, guard):
        pool = HTTPConnectionPool(reactor, persistent=False)
        endpoints = GuardedEndpoints(reactor, guard, connect_timeout=5)
        agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
        return Dispatcher(HTTPClient(agent), reactor)

    @defer.inlineCallbacks
    def test_a_name_resolving_to_the_api_is_refused_before_a_request_is_sent(self):
        api = start_receiver(self)  # stands for the node's own API
        port = int(api.url.rsplit(":", 1)[1])
        guard = TargetGuard(rules(), lambda host, p: defer.succeed(["127.0.0.1"]))
        guard.api_listening("127.0.0.1", port)
        task = Task(id="t", queue="q", url=f"http://self.test:{port}/queues/q/pause", attempts=1)
        outcome = yield self.dispatcher(guard).dispatch(task, 10)
        self.assertIn(f"self.test:{port} is this node's own API", outcome.error)
        self.assertEqual(api.requests, [])

    @defer.inlineCallbacks
    def test_the_api_reached_on_a_lan_address_is_refused(self):
        address = _own_lan_address()
        if address is None:
            raise unittest.SkipTest("this machine has no non-loopback IPv4 address")
        api = Receiver()
        site = Site(api)
        listening = reactor.listenTCP(0, site, interface="0.0.0.0")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        guard = TargetGuard(rules())
        guard.api_listening("0.0.0.0", port)
        task = Task(id="t", queue="q", url=f"http://{address}:{port}/queues/q/pause", attempts=1)
        outcome = yield self.dispatcher(guard).dispatch(task, 10)
        self.assertIn("own API", outcome.error)
        self.assertEqual(api.requests, [])
        other = TargetGuard(rules())  # the same request, from a node elsewhere
        delivered = yield self.dispatcher(other).dispatch(task, 10)
        self.assertEqual(delivered.status, 200)

    @defer.inlineCallbacks
    def test_each_allowed_address_is_tried_in_turn(self):
        receiver = start_receiver(self)  # on 127.0.0.1 only
        port = int(receiver.url.rsplit(":", 1)[1])
        answers = ["169.254.169.254", "127.0.0.2", "127.0.0.1"]  # refused, closed, open
        guard = TargetGuard(rules(), lambda host, p: defer.succeed(answers))
        task = Task(id="t", queue="q", url=f"http://app.test:{port}/hook", attempts=1)
        outcome = yield self.dispatcher(guard).dispatch(task, 10)
        self.assertEqual(outcome.status, 200)
        self.assertEqual(receiver.requests[0].headers["host"], f"app.test:{port}")

    @defer.inlineCallbacks
    def test_a_name_resolving_only_to_link_local_fails_the_attempt_saying_why(self):
        guard = TargetGuard(rules(), lambda host, p: defer.succeed(["169.254.169.254"]))
        task = Task(id="t", queue="q", url="http://metadata.test/latest/meta-data/", attempts=1)
        outcome = yield self.dispatcher(guard).dispatch(task, 10)
        self.assertIsInstance(outcome, NoResponse)
        self.assertIn("metadata.test is a link-local address", outcome.error)
        # A refusal, as for a target outside --allow-target: no retry can help.
        self.assertIsInstance(next_step(task, outcome, 0.0, RetryPolicy()), Dead)


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
