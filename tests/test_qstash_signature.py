"""Unit tests of ``Upstash-Signature`` (:mod:`torque.qstash.signature`),
checked by the official SDK's ``Receiver`` and by PyJWT itself."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
from qstash import Receiver
from qstash.errors import SignatureError
from twisted.trial import unittest

from torque.qstash.signature import LIFETIME, body_hash, sign

CURRENT = "sig_current_key_for_the_unit_tests_0"
NEXT = "sig_next_key_for_the_unit_tests_00001"
URL = "https://example.com/hook?x=1"


class SignatureTests(unittest.TestCase):
    def setUp(self):
        # The Receiver checks exp and nbf against its own clock.
        self.now = time.time()
        self.receiver = Receiver(current_signing_key=CURRENT, next_signing_key=NEXT)

    def test_claims(self):
        token = sign(CURRENT, URL, b'{"a": 1}', 1000.7, "jwt_1")
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, CURRENT, algorithms=["HS256"], options={"verify_exp": False})
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        digest = base64.urlsafe_b64encode(hashlib.sha256(b'{"a": 1}').digest()).decode()
        self.assertEqual(
            claims,
            {
                "iss": "Upstash",
                "sub": URL,
                "exp": 1000 + LIFETIME,
                "nbf": 1000,
                "iat": 1000,
                "jti": "jwt_1",
                "body": digest.rstrip("="),
            },
        )
        self.assertEqual(LIFETIME, 300)
        self.assertNotIn("=", body_hash(b""))

    def test_the_official_receiver_verifies_current_and_next_key(self):
        body = '{"hello": "wörld"}'
        for key in (CURRENT, NEXT):
            token = sign(key, URL, body.encode(), self.now, "jwt_2")
            self.receiver.verify(signature=token, body=body, url=URL)

    def test_the_official_receiver_refuses_what_is_not_ours(self):
        body = "payload"
        token = sign(CURRENT, URL, body.encode(), self.now, "jwt_3")
        cases = [
            (sign("sig_another_key_entirely_000000", URL, b"payload", self.now, "j"), body, URL),
            (token, body + "!", URL),
            (token, body, "https://example.com/hook"),
            (sign(CURRENT, URL, b"payload", self.now - LIFETIME - 10, "j"), body, URL),
        ]
        for signature, sent, url in cases:
            with self.assertRaises(SignatureError):
                self.receiver.verify(signature=signature, body=sent, url=url)

    def test_hash_is_url_safe(self):
        # A body whose SHA-256 has '+' and '/' in standard base64.
        for n in range(200):
            body = str(n).encode()
            standard = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if "+" in standard or "/" in standard:
                break
        self.assertNotIn("+", body_hash(body))
        self.assertNotIn("/", body_hash(body))
        token = sign(CURRENT, URL, body, self.now, "jwt_4")
        self.receiver.verify(signature=token, body=body.decode(), url=URL)
