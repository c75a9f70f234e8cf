"""Signed deliveries, judged by the Standard Webhooks verifiers themselves
(``standardwebhooks`` and ``svix``), untouched: torque's own code is not the
judge of its signatures."""

import base64
import time

import standardwebhooks
import svix.webhooks
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.resource import Resource

from tests.node import start_node, start_receiver, wait_for
from torque.dispatch import Dispatcher
from torque.signing import Signer, decode_secret
from torque.task import Task

OLD = "whsec_" + base64.b64encode(b"old secret, 24 bytes....").decode()
NEW = "whsec_" + base64.b64encode(b"new secret, 24 bytes....").decode()
OTHER = "whsec_" + base64.b64encode(b"someone else's secret...").decode()


class Recorder(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render(self, request):
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append((headers, request.content.read()))
        return b"ok"


REJECTED = (
    standardwebhooks.webhooks.WebhookVerificationError,
    svix.webhooks.WebhookVerificationError,
)


def verifiers(secret):
    return [standardwebhooks.Webhook(secret), svix.webhooks.Webhook(secret)]


class SignedDispatchTests(unittest.TestCase):
    def deliver(self, *secrets, body='{"order": 42}'):
        recorder = Recorder()
        clock = Clock()
        clock.advance(time.time())  # verifiers reject timestamps far from now
        dispatcher = Dispatcher(StubTreq(recorder), clock, signer=Signer.from_secrets(secrets))
        task = Task(id="t-1", queue="q", url="http://hook.test/", body=body,
                    content_type="application/json", attempts=3)  # fmt: skip
        self.successResultOf(dispatcher.dispatch(task, 10))
        return recorder.seen[0]

    def test_both_verifiers_accept_a_signed_delivery(self):
        headers, body = self.deliver(OLD)
        self.assertEqual(headers["webhook-id"], "t-1")
        self.assertEqual(standardwebhooks.Webhook(OLD).verify(body, headers), {"order": 42})
        svix.webhooks.Webhook(OLD).verify(body, headers)  # raises if it doesn't verify

    def test_form_bodies_are_signed_as_sent(self):
        headers, body = self.deliver(OLD, body="foo=somevalue&baz=99")
        self.assertEqual(body, b"foo=somevalue&baz=99")
        standardwebhooks.Webhook(OLD).verify(body, headers, json_parse=False)
        svix.webhooks.Webhook(OLD).verify(body, headers)

    def test_during_a_rotation_either_secret_verifies(self):
        headers, body = self.deliver(OLD, NEW)
        self.assertEqual(len(headers["webhook-signature"].split(" ")), 2)
        for secret in (OLD, NEW):
            for verifier in verifiers(secret):
                verifier.verify(body, headers)

    def test_another_secret_or_a_changed_body_is_rejected(self):
        headers, body = self.deliver(OLD)
        for verifier in verifiers(OTHER):
            self.assertRaises(REJECTED, verifier.verify, body, headers)
        for verifier in verifiers(OLD):
            self.assertRaises(REJECTED, verifier.verify, body + b" ", headers)

    def test_unsigned_without_a_signer(self):
        recorder = Recorder()
        dispatcher = Dispatcher(StubTreq(recorder), Clock())
        self.successResultOf(dispatcher.dispatch(Task(id="t", queue="q", url="http://h/"), 1))
        self.assertNotIn("webhook-signature", recorder.seen[0][0])

    def test_secrets_must_be_base64_of_16_bytes_or_more(self):
        for bad in ("whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
            self.assertRaises(ValueError, decode_secret, bad)
        self.assertEqual(decode_secret(OLD), b"old secret, 24 bytes....")


class SignedEndToEndTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_node_signs_every_attempt_retries_included(self):
        receiver = start_receiver(self)
        receiver.respond("/signed", 503, 200)
        node = yield start_node(self, "--signing-secret", OLD, "--min-task-delay", "0.1")
        yield node.post(data={"url": receiver.url + "/signed", "params": '{"a": 1}'})
        yield wait_for(lambda: len(receiver.to("/signed")) == 2)
        ids = set()
        for got in receiver.to("/signed"):
            standardwebhooks.Webhook(OLD).verify(got.body, got.headers, json_parse=False)
            svix.webhooks.Webhook(OLD).verify(got.body, got.headers)
            ids.add(got.headers["webhook-id"])
        self.assertEqual(len(ids), 1, "webhook-id is stable across retries")


class SecretTests(unittest.TestCase):
    def test_16_bytes_is_the_shortest_secret_accepted(self):
        sixteen = "whsec_" + base64.b64encode(b"16 bytes exactly").decode()
        self.assertEqual(decode_secret(sixteen), b"16 bytes exactly")
        fifteen = "whsec_" + base64.b64encode(b"15 bytes only!!").decode()
        self.assertRaises(ValueError, decode_secret, fifteen)

    def test_characters_outside_base64_are_refused_not_skipped(self):
        # A lenient decoder would drop the stray characters and sign with
        # a key the operator never wrote down.
        encoded = base64.b64encode(b"old secret, 24 bytes....").decode()
        for bad in (encoded[:8] + "!" + encoded[8:], encoded[:8] + " " + encoded[8:]):
            self.assertRaises(ValueError, decode_secret, "whsec_" + bad)
