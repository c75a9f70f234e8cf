"""Unit tests of a QStash message's delivery: the profile's headers, the
signing keys (given, or generated once and shared through the store), and
an attempt made before the keys are known."""

from __future__ import annotations

import jwt
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from tests.test_dispatch import TIMEOUT, Handler
from torque.dispatch import Dispatcher
from torque.qstash.profile import QStashProfile
from torque.qstash.signing_keys import RETRY_EVERY, KeyLoader, KeysNotLoaded, SigningKeys
from torque.retry import NoResponse, Response
from torque.task import Task

URL = "http://app.test/hook?x=1"
CURRENT, NEXT = "sig_given_current_key_0000000000", "sig_given_next_key_00000000000"


def qstash_task(**changes) -> Task:
    fields = {
        "id": "msg_1",
        "queue": "default",
        "url": URL,
        "body": "payload",
        "content_type": "text/plain",
        "attempts": 1,
        "door": "qstash",
        "door_data": {"retries": "3", "caller_ip": "10.0.0.1"},
    }
    return Task(**{**fields, **changes})


def loaded(current=CURRENT, next_=NEXT) -> SigningKeys:
    keys = SigningKeys()
    keys.current, keys.next = current, next_
    return keys


class ProfileTests(unittest.TestCase):
    def test_headers_of_an_attempt(self):
        profile = QStashProfile(loaded(), new_jti=lambda: "jwt_fixed")
        headers = profile.headers(qstash_task(attempts=3), 1000.0, b"payload")
        claims = jwt.decode(
            headers["Upstash-Signature"],
            CURRENT,
            algorithms=["HS256"],
            issuer="Upstash",
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        self.assertEqual((claims["sub"], claims["iat"], claims["jti"]), (URL, 1000, "jwt_fixed"))
        self.assertEqual(headers["Upstash-Message-Id"], "msg_1")
        self.assertEqual(headers["Upstash-Retried"], "2")
        self.assertEqual(headers["User-Agent"], "Upstash-QStash")
        self.assertEqual(headers["Upstash-Caller-Ip"], "10.0.0.1")

    def test_each_attempt_has_its_own_token_id(self):
        profile = QStashProfile(loaded())
        tokens = {profile.headers(qstash_task(), 1000.0, b"")["Upstash-Signature"] for _ in "ab"}
        self.assertEqual(len(tokens), 2)


class DispatchBeforeTheKeysTests(unittest.TestCase):
    def dispatch(self, keys: SigningKeys):
        handler = Handler()
        stub = StubTreq(handler)
        dispatcher = Dispatcher(stub, Clock(), profiles={"qstash": QStashProfile(keys)})
        d = dispatcher.dispatch(qstash_task(), TIMEOUT)
        stub.flush()
        return handler, self.successResultOf(d)

    def test_an_attempt_before_the_keys_are_known_is_an_attempt_without_answer(self):
        handler, outcome = self.dispatch(SigningKeys())
        self.assertIsInstance(outcome, NoResponse)
        self.assertIn("signing keys", outcome.error)
        self.assertFalse(outcome.permanent)
        self.assertEqual(handler.requests, [])

    def test_once_known_the_attempt_is_signed(self):
        handler, outcome = self.dispatch(loaded())
        self.assertEqual(outcome, Response(200))
        self.assertIn("upstash-signature", handler.requests[0][2])


class SigningKeysTests(unittest.TestCase):
    def test_given_keys_are_the_keys(self):
        store = MemoryStore()
        keys = self.successResultOf(SigningKeys({"current": CURRENT, "next": NEXT}).load(store))
        self.assertEqual((keys.current, keys.next), (CURRENT, NEXT))
        self.assertEqual(self.successResultOf(store.door_records("qstash")), {})

    def test_generated_once_and_kept_for_every_node(self):
        store = MemoryStore()
        first = self.successResultOf(SigningKeys().load(store))
        second = self.successResultOf(SigningKeys().load(store))
        self.assertTrue(first.current.startswith("sig_") and first.next.startswith("sig_"))
        self.assertNotEqual(first.current, first.next)
        self.assertEqual((second.current, second.next), (first.current, first.next))
        # A node given only the next key keeps the shared current one.
        mixed = self.successResultOf(SigningKeys({"next": NEXT}).load(store))
        self.assertEqual((mixed.current, mixed.next), (first.current, NEXT))

    def test_require_until_loaded(self):
        with self.assertRaises(KeysNotLoaded):
            SigningKeys({"current": CURRENT, "next": NEXT}).require()

    def test_the_loader_tries_again_while_redis_does_not_answer(self):
        store, clock = MemoryStore(), Clock()
        store.available = False
        keys = SigningKeys()
        loader = KeyLoader(keys, store, clock)
        loader.startService()
        self.assertIsNone(keys.current)
        clock.advance(RETRY_EVERY)
        self.assertIsNone(keys.current)
        store.available = True
        clock.advance(RETRY_EVERY)
        self.assertTrue(keys.current.startswith("sig_"))
        loader.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
