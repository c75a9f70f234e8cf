"""A delivery's request written straight onto a pooled HTTP/1.1 connection.

treq's ``HTTPClient.request`` and the ``Agent`` layers under it (a cookie
jar, a gzip decoder, a redirect policy, the URL parsed again, a
``Headers`` built from a dict, a body producer run by a cooperator) cost
about a quarter of a delivery's CPU, though torque uses none of what they
add.  :class:`FastHTTP` does what is left of them: it takes a connection
from the same ``HTTPConnectionPool`` under the ``Agent``'s key, with an
endpoint from the same endpoint factory (so the target guard and TLS are
the same), and hands twisted.web's ``HTTP11ClientProtocol`` a request that
is one block of bytes, written in one ``write``.  The answer is
twisted.web's own ``Response``: its parsing, keep-alive and the pool's
bookkeeping are unchanged, and so are the errors a failed exchange ends
in.

The request is the one the ``Agent`` writes, header for header (names in
twisted.web's letter case), but without ``Accept-Encoding: gzip``: that
header was ``ContentDecoderAgent``'s, and torque reads at most the start of
a failing answer.  A request this path doesn't make the same way returns
``None`` from :meth:`FastHTTP.request`, and the dispatcher sends it with
treq as before: a URL whose text is not a known origin followed by a plain
path and query, and a task with a header twisted.web's ``Agent`` would
treat as its own (``Host``, ``Content-Length``, ``Transfer-Encoding``,
``Connection``: refused when tasks are added, but a task written to Redis
by hand may carry one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from twisted.internet import defer
from twisted.internet.abstract import isIPv6Address
from twisted.web.client import URI, HTTPConnectionPool
from twisted.web.http_headers import Headers

# A path and query sent as they are: what ``URI.fromBytes(url).originForm``
# gives back unchanged (no fragment, no bare trailing ``?``: those the
# Agent drops).  Checked against the Agent by tests/test_fast_http.py.
_PLAIN_TARGET = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*")
# Headers the Agent writes itself unless the caller gave them.
_AGENTS_OWN = frozenset({b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection"})
# What an origin's text and a method may be (twisted.web's own checks).
_VALID_ORIGIN = re.compile(r"[\x21-\x7e]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Distinct origins (and header names) kept; past this the cache starts afresh.
CACHE = 1024


class _Origin:
    """What every request to one ``scheme://host[:port]`` shares."""

    __slots__ = ("endpoint", "host_line", "key")

    def __init__(self, key: tuple[bytes, bytes, int], endpoint, host_line: bytes):
        self.key = key
        self.endpoint = endpoint
        self.host_line = host_line


class _Prepared:
    """A request for ``HTTP11ClientProtocol.request``, already in bytes.

    It is what ``twisted.web._newclient.Request`` is to the protocol (and
    to the pool's retry of an idempotent request without a body): a method,
    ``persistent``, ``bodyProducer``, ``writeTo`` and ``stopWriting``.
    """

    __slots__ = ("bodyProducer", "data", "method", "persistent")

    def __init__(self, method: bytes, data: bytes, has_body: bool, persistent: bool):
        self.method = method
        self.data = data
        # Only looked at to tell that there is a body: the pool doesn't
        # retry a request with one, as it doesn't retry treq's.
        self.bodyProducer = True if has_body else None
        self.persistent = persistent

    def writeTo(self, transport) -> defer.Deferred:
        transport.write(self.data)
        return defer.succeed(None)

    def stopWriting(self) -> None:
        """Nothing to stop: the request was written in one go."""


class FastHTTP:
    """Sends requests on ``pool``'s connections, made by ``endpoints``.

    :param pool: the connection pool the ``Agent`` uses (shared with it).
    :param endpoints: the ``Agent``'s ``IAgentEndpointFactory``.
    """

    def __init__(self, pool: HTTPConnectionPool, endpoints):
        self.pool = pool
        self.endpoints = endpoints
        self._origins: dict[str, _Origin | None] = {}
        self._names: dict[str, bytes] = {}
        self._methods: dict[str, bytes | None] = {}

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> defer.Deferred | None:
        """Send the request; a Deferred firing with twisted.web's
        ``Response``, or ``None`` when this path doesn't make this request
        (see the module's docstring).

        :param url: the URL as treq would hand it to the ``Agent``
            (:meth:`torque.dispatch.Dispatcher.url`'s text).
        :param headers: the request's headers, but ``Host`` and
            ``Content-Length``, which are added here.
        """
        start = url.find("://") + 3
        slash = url.find("/", start) if start > 2 else -1
        if slash < 0:
            origin_text, target = url, "/"
        else:
            origin_text, target = url[:slash], url[slash:]
            if target[-1] == "?" or not _PLAIN_TARGET.fullmatch(target):
                return None
        origin = self._origins.get(origin_text, False)
        if origin is False:
            origin = self._origin(origin_text)
        if origin is None:
            return None
        lines = []
        for name, value in headers.items():
            encoded = self._names.get(name) or self._name(name)
            if encoded in _AGENTS_OWN:
                return None
            data = value.encode()
            if b"\n" in data or b"\r" in data:
                data = b" ".join(data.splitlines())  # as twisted.web's Headers does
            lines.append(b"%s: %s\r\n" % (encoded, data))
        method_ = self._methods.get(method) or self._method(method)
        if method_ is None:
            return None
        if body:
            length = b"Content-Length: %d\r\n" % len(body)
        elif method_ in (b"POST", b"PUT"):
            length = b"Content-Length: 0\r\n"
        else:
            length = b""
        persistent = self.pool.persistent
        data = b"".join(
            [
                b"%s %s HTTP/1.1\r\n" % (method_, target.encode("ascii")),
                b"" if persistent else b"Connection: close\r\n",
                length,
                *lines,
                origin.host_line,
                b"\r\n",
                body,
            ]
        )
        prepared = _Prepared(method_, data, bool(body), persistent)
        d = self.pool.getConnection(origin.key, origin.endpoint)
        return d.addCallback(lambda protocol: protocol.request(prepared))

    def _origin(self, text: str) -> _Origin | None:
        """``text``'s shared part, made once (``None``: not for this path)."""
        if len(self._origins) >= CACHE:
            self._origins.clear()
        origin = None
        uri = None
        if _VALID_ORIGIN.fullmatch(text):
            uri = URI.fromBytes(text.encode("ascii"))
        plain = (
            uri is not None
            and uri.scheme in (b"http", b"https")
            and uri.host
            and b"@" not in uri.netloc
            and not (uri.path or uri.params or uri.query or uri.fragment)
        )
        if plain:
            try:
                endpoint = self.endpoints.endpointForURI(uri)
            except Exception:  # the Agent fails the request: treq's path will
                endpoint = None
            if endpoint is not None:
                key = (uri.scheme, uri.host, uri.port)
                origin = _Origin(key, endpoint, b"Host: %s\r\n" % _host_value(uri))
        self._origins[text] = origin
        return origin

    def _method(self, method: str) -> bytes | None:
        encoded = method.upper().encode() if _TOKEN.fullmatch(method) else None
        if len(self._methods) < CACHE:
            self._methods[method] = encoded
        return encoded

    def _name(self, name: str) -> bytes:
        """``name`` as twisted.web writes it (and refuses it)."""
        [(encoded, _)] = Headers({name: [b""]}).getAllRawHeaders()
        if len(self._names) >= CACHE:
            self._names.clear()
        self._names[name] = encoded
        return encoded


def _host_value(uri: URI) -> bytes:
    """The ``Host`` header the ``Agent`` sends to ``uri``."""
    host = uri.host
    if isIPv6Address(host.decode("ascii")):
        host = b"[" + host + b"]"
    if (uri.scheme, uri.port) in ((b"http", 80), (b"https", 443)):
        return host
    return b"%b:%d" % (host, uri.port)
