"""Signed deliveries, the Standard Webhooks way (https://www.standardwebhooks.com).

Each attempt carries ``webhook-id`` (the task id: stable across retries, so a
receiver can deduplicate), ``webhook-timestamp`` (this attempt, Unix seconds)
and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
one per secret, space-separated, so secrets can be rotated.  Any Standard
Webhooks verifier (``standardwebhooks``, ``svix``, and their ports to other
languages) checks them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

import attrs

PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The key in a ``whsec_<base64>`` secret (the prefix is optional).

    :raises ValueError: if it isn't base64 of at least 16 bytes.
    """
    text = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("a signing secret needs at least 16 bytes (24 base64 characters)")
    return key


@attrs.frozen
class Signer:
    keys: tuple[bytes, ...]

    @classmethod
    def from_secrets(cls, secrets: Iterable[str]) -> Signer:
        return cls(tuple(decode_secret(secret) for secret in secrets))

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
        signatures = [
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            for key in self.keys
        ]
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }
