"""API tokens: every endpoint but ``/health`` wants ``Authorization: Bearer``
(and the dashboard page ``/``: a browser can't send a header when it opens a
page, and the page holds no data: it asks for the token, and sends it with
every API call it makes).

A task's completion token (:mod:`torque.completion`) opens only
``POST /tasks/<id>/complete`` and ``/fail``, whose handler checks it.

Several tokens may be valid at once, so a token can be rotated without
downtime: start nodes with the old and the new, move the clients, drop the
old.  Tokens are compared in constant time, and never logged.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from twisted.logger import Logger
from twisted.web import resource

from torque.completion import ROUTE_RE, looks_like_token
from torque.logs import quoted

log = Logger()

#: The paths open without a token: health probes, and the dashboard's page.
OPEN_PATHS = frozenset({b"/health", b"/"})


def bearer_token(request) -> bytes | None:
    header = request.getHeader(b"authorization") or b""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


class RequireToken(resource.Resource):
    """Wraps the API's resource; answers 401 unless a valid token is sent.

    :param tokens: the valid tokens; when empty, everything is open.
    """

    isLeaf = True

    def __init__(self, wrapped: resource.IResource, tokens: Iterable[str]):
        super().__init__()
        self.wrapped = wrapped
        self.tokens = [token.encode() for token in tokens]

    def authorized(self, request) -> bool:
        if not self.tokens or request.path in OPEN_PATHS:
            return True
        given = bearer_token(request)
        if given is None:
            return False
        if looks_like_token(given):
            # A completion token opens its two routes only; the handler
            # checks that it is the token of that task.
            return request.method == b"POST" and ROUTE_RE.fullmatch(request.path) is not None
        # Compare against every token, so timing says nothing about which.
        matches = [hmac.compare_digest(given, token) for token in self.tokens]
        return any(matches)

    def render(self, request):
        if self.authorized(request):
            return self.wrapped.render(request)
        log.info(
            "refused {method} {path} from {peer}: missing or wrong API token",
            method=quoted(request.method),
            path=quoted(request.path),
            peer=getattr(request.getClientAddress(), "host", "?"),
        )
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="torque"')
        request.setHeader(b"Content-Type", b"application/json")
        error = {"code": "unauthorized", "message": "send Authorization: Bearer <api token>"}
        return json.dumps({"error": error}).encode()
