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
_AGENTS_OWN = frozenset({"Host", "Content-Length", "Transfer-Encoding", "Connection"})
# What an origin's text and a method may be (twisted.web's own checks).
_VALID_ORIGIN = re.compile(r"[\x21-\x7e]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Distinct origins (and header names) kept; past this the cache starts afresh.
CACHE = 1024


class _Origin:
    """What every request to one ``scheme://host[:port]`` shares."""

    __slots__ = ("endpoint", "host_line", "key")

    def __init__(self, key: tuple[bytes, bytes, int], endpoint, host_line: str):
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

    def send(self, protocol) -> defer.Deferred:
        """Send this request on ``protocol`` (an ``HTTP11ClientProtocol``)."""
        return protocol.request(self)

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
        self._names: dict[str, str] = {}
        self._methods: dict[str, str | None] = {}

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
        method_ = self._methods.get(method) or self._method(method)
        if method_ is None:
            return None
        names = self._names
        lines = []
        for name, value in headers.items():
            canonical = names.get(name) or self._name(name)
            if canonical in _AGENTS_OWN:
                return None
            lines.append(f"{canonical}: {value}\r\n")
        block = "".join(lines)
        if block.count("\n") != len(lines) or block.count("\r") != len(lines):
            block = _cleaned(headers, names)  # a value has a CR or LF of its own
        if body:
            length = f"Content-Length: {len(body)}\r\n"
        elif method_ in ("POST", "PUT"):
            length = "Content-Length: 0\r\n"
        else:
            length = ""
        persistent = self.pool.persistent
        close = "" if persistent else "Connection: close\r\n"
        head = f"{method_} {target} HTTP/1.1\r\n{close}{length}{block}{origin.host_line}\r\n"
        prepared = _Prepared(method_.encode(), head.encode() + body, bool(body), persistent)
        d = self.pool.getConnection(origin.key, origin.endpoint)
        return d.addCallback(prepared.send)

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
                host = _host_value(uri).decode("ascii")
                origin = _Origin(key, endpoint, f"Host: {host}\r\n")
        self._origins[text] = origin
        return origin

    def _method(self, method: str) -> str | None:
        upper = method.upper() if _TOKEN.fullmatch(method) else None
        if len(self._methods) < CACHE:
            self._methods[method] = upper
        return upper

    def _name(self, name: str) -> str:
        """``name`` as twisted.web writes it (and refuses it)."""
        [(encoded, _)] = Headers({name: [b""]}).getAllRawHeaders()
        canonical = encoded.decode("latin-1")
        if len(self._names) >= CACHE:
            self._names.clear()
        self._names[name] = canonical
        return canonical


def _cleaned(headers: Mapping[str, str], names: Mapping[str, str]) -> str:
    """The header lines, each value's line breaks made spaces as twisted.web's
    ``Headers`` does (on its UTF-8 bytes: ``str.splitlines`` splits on more)."""
    lines = []
    for name, value in headers.items():
        value = b" ".join(value.encode().splitlines()).decode()
        lines.append(f"{names[name]}: {value}\r\n")
    return "".join(lines)


def _host_value(uri: URI) -> bytes:
    """The ``Host`` header the ``Agent`` sends to ``uri``."""
    host = uri.host
    if isIPv6Address(host.decode("ascii")):
        host = b"[" + host + b"]"
    if (uri.scheme, uri.port) in ((b"http", 80), (b"https", 443)):
        return host
    return b"%b:%d" % (host, uri.port)
