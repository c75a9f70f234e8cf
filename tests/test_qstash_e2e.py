"""End to end: the official ``qstash`` Python SDK, unmodified, drives a real
node's QStash door (every route it has), and its ``Receiver`` verifies a
real delivery's signature.

The SDK is blocking (httpx): its calls run in a thread (``deferToThread``),
so the reactor, and the receiver on it, keep running meanwhile.
"""

from __future__ import annotations

import json

import treq
from qstash import QStash, Receiver
from qstash.errors import QStashError, SignatureError
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for

CURRENT = "sig_current_for_tests_0123456789"
NEXT = "sig_next_for_tests_0123456789abc"
WRONG = "sig_a_key_torque_does_not_sign_with_"


class QStashSDKTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.receiver = start_receiver(self)
        self.node = yield start_node(
            self,
            "--qstash-current-signing-key",
            CURRENT,
            "--qstash-next-signing-key",
            NEXT,
        )
        self.client = QStash("any-token", base_url=self.node.url)

    def call(self, method, *args, **kwargs):
        return deferToThread(method, *args, **kwargs)

    def delivered_to(self, path: str, count: int = 1):
        return wait_for(
            lambda: len(self.receiver.to(path)) >= count and self.receiver.to(path),
            what=f"{count} deliveries to {path}",
        )

    @defer.inlineCallbacks
    def test_a_published_message_is_delivered_signed_and_the_receiver_verifies_it(self):
        url = self.receiver.url + "/hook?x=1&y=2"
        published = yield self.call(
            self.client.message.publish_json,
            url=url,
            body={"hello": "world"},
            headers={"X-Custom": "v"},
        )
        self.assertTrue(published.message_id.startswith("msg_"))
        (got,) = yield self.delivered_to("/hook")
        print("\nQStash delivery headers as the receiver saw them:", json.dumps(got.headers))
        self.assertEqual(got.headers["upstash-message-id"], published.message_id)
        self.assertEqual(got.headers["upstash-retried"], "0")
        self.assertEqual(got.headers["user-agent"], "Upstash-QStash")
        self.assertEqual(got.headers["x-custom"], "v")
        self.assertEqual(got.headers["content-type"], "application/json")
        self.assertEqual(json.loads(got.body), {"hello": "world"})
        keys = yield self.call(self.client.signing_key.get)
        self.assertEqual((keys.current, keys.next), (CURRENT, NEXT))
        receiver = Receiver(current_signing_key=keys.current, next_signing_key=keys.next)
        signature = got.headers["upstash-signature"]
        body = got.body.decode()
        receiver.verify(signature=signature, body=body, url=url)  # raises if invalid
        wrong = Receiver(current_signing_key=WRONG + "1", next_signing_key=WRONG + "2")
        with self.assertRaises(SignatureError):
            wrong.verify(signature=signature, body=body, url=url)
        with self.assertRaises(SignatureError):
            receiver.verify(signature=signature, body=body + " ", url=url)
        # One system: the message is an ordinary torque task.
        _, task = yield self.node.get(f"/tasks/{published.message_id}")
        self.assertEqual(task["status"], "delivered")
        self.assertEqual(task["url"], url)
