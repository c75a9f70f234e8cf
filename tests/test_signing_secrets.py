"""Signing secrets shorter than 16 bytes are refused (Standard Webhooks asks
for 24 to 64 base64 bytes; an HMAC key is only as strong as its length),
by the decoder and by ``--signing-secret``."""

import base64

from twisted.python import usage
from twisted.trial import unittest

from torque.options import Options
from torque.signing import Signer, decode_secret


def secret(length: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(1, length + 1))).decode()


class SecretLengthTests(unittest.TestCase):
    def test_sixteen_bytes_is_the_shortest_secret(self):
        self.assertEqual(decode_secret(secret(16)), bytes(range(1, 17)))
        self.assertEqual(len(Signer.from_secrets([secret(16)]).keys[0]), 16)

    def test_shorter_secrets_are_refused(self):
        for length in (1, 8, 15):
            with self.assertRaises(ValueError) as raised:
                decode_secret(secret(length))
            self.assertIn("at least 16 bytes", str(raised.exception))

    def test_the_option_refuses_an_eight_byte_secret(self):
        with self.assertRaises(usage.UsageError) as raised:
            Options().parseOptions(["--signing-secret", secret(8)])
        self.assertIn("at least 16 bytes", str(raised.exception))
        options = Options()
        options.parseOptions(["--signing-secret", secret(16)])
        self.assertEqual(options["signing-secrets"], [secret(16)])
