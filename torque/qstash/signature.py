"""``Upstash-Signature``: the HS256 JWT QStash puts on every delivery, which
the SDKs' ``Receiver`` verifies (docs/coming-from-qstash.rst).

Pure: the caller gives the time and the token id.  The HMAC key is the
signing key's text itself (``sig_…`` as UTF-8), as QStash does.  The
``body`` claim is the unpadded base64url SHA-256 of the raw body: both
Receivers strip ``=`` before comparing, and refuse the standard ``+/``
alphabet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

#: Seconds a signature stays valid, as QStash's (5 minutes): the Python
#: Receiver has no working leeway, so it must outlast the handler's work.
LIFETIME = 300
ISSUER = "Upstash"
_HEADER = {"alg": "HS256", "typ": "JWT"}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def body_hash(body: bytes) -> str:
    """The ``body`` claim: base64url of the body's SHA-256, unpadded."""
    return b64url(hashlib.sha256(body).digest())


def sign(key: str, url: str, body: bytes, now: float, jti: str) -> str:
    """The JWT for one delivery of ``body`` to ``url`` at ``now``.

    :param url: the destination exactly as published (query included): the
        Receiver compares it with the URL the handler was called at.
    :param jti: a token id, unique per delivery.
    """
    issued = int(now)
    claims = {
        "iss": ISSUER,
        "sub": url,
        "exp": issued + LIFETIME,
        "nbf": issued,
        "iat": issued,
        "jti": jti,
        "body": body_hash(body),
    }
    signing_input = _part(_HEADER) + "." + _part(claims)
    mac = hmac.new(key.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
    return signing_input + "." + b64url(mac.digest())


def _part(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))
