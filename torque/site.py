"""The HTTP server around the API: limits on the request head and body, no
access log, and a graceful stop.

twisted.web buffers a request body of any size (to a temporary file past
100 kB) before the handler sees it; :class:`LimitedRequest` refuses an
oversized body as it arrives, whether its length is declared up front or it
comes chunked.

On shutdown, the reactor drops every connection, answers still in their
buffers included; :class:`ApiService` instead stops listening, waits for the
requests in flight, and closes each connection after its answer is flushed.
"""

from __future__ import annotations

import json
import weakref

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.web import http, server

MAX_BODY = 1024 * 1024
MAX_HEADERS = 100
MAX_HEAD_BYTES = 16 * 1024


class LimitedRequest(server.Request):
    """A request whose body may not exceed ``max_body`` bytes (413)."""

    max_body = MAX_BODY
    _too_large = False
    _received = 0

    def gotLength(self, length):
        if length is not None and length > self.max_body:
            self._reject()
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self._too_large:
            super().requestReceived(command, path, version)

    def process(self):
        self.channel.site.track(self)
        super().process()

    def _reject(self):
        self._too_large = True
        refuse(
            self.channel.transport,
            b"413 Payload Too Large",
            "too_large",
            f"the request body is over {self.max_body} bytes",
            "body",
        )


class LimitedChannel(http.HTTPChannel):
    """An HTTP channel that refuses an oversized request head with a JSON
    ``431`` naming the limit, where twisted.web would answer a bare 400 (or
    just hang up, for one over-long line)."""

    maxHeaders = MAX_HEADERS
    totalHeadersSize = MAX_HEAD_BYTES
    _head_bytes = 0
    _head_lines = 0

    def lineReceived(self, line: bytes) -> None:
        if not line:  # the end of this request's head
            self._head_bytes = self._head_lines = 0
            return super().lineReceived(line)
        self._head_bytes += len(line)
        self._head_lines += 1
        if self._head_bytes > self.totalHeadersSize:
            return self._refuse_head(
                f"the request line and headers are over {self.totalHeadersSize} bytes"
            )
        if self._head_lines > self.maxHeaders + 1:  # the request line, then headers
            return self._refuse_head(f"more than {self.maxHeaders} headers")
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse_head(f"a header line is over {self.MAX_LENGTH} bytes")

    def _refuse_head(self, message: str) -> None:
        # Hanging up stops the reading, and LineReceiver parses no more lines.
        refuse(self.transport, b"431 Request Header Fields Too Large", "too_large", message,
               "headers")  # fmt: skip


def refuse(transport, status: bytes, code: str, message: str, field: str) -> None:
    """Answer a request torque won't read with a JSON error, and hang up."""
    body = json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()
    transport.write(
        b"HTTP/1.1 %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
    )
    transport.loseConnection()


class QuietSite(server.Site):
    """A Site without an access log (at thousands of adds a second the log
    line costs more than the add, and twistd's log file rotates without
    bound) that knows its connections and requests in flight.  It leaves
    form bodies to the API (:func:`torque.api.read_fields`)."""

    requestFactory = LimitedRequest
    protocol = LimitedChannel  # HTTP/1.1 only: the API serves no TLS, so no HTTP/2
    displayTracebacks = False
    noisy = False  # "Starting factory <QuietSite …>" says again what "starting on" said

    def __init__(self, resource, max_body: int = MAX_BODY, **kwargs):
        super().__init__(resource, parsePOSTFormSubmission=False, **kwargs)
        self.requestFactory = type("Request", (LimitedRequest,), {"max_body": max_body})
        self.channels: weakref.WeakSet = weakref.WeakSet()
        self.active: set = set()
        self._idle: list[defer.Deferred] = []

    def log(self, request):
        pass

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def track(self, request) -> None:
        self.active.add(request)
        request.notifyFinish().addBoth(lambda _: self._finished(request))

    def _finished(self, request) -> None:
        self.active.discard(request)
        if not self.active:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drain(self, timeout: float) -> defer.Deferred:
        """Wait (at most ``timeout`` s) for the requests in flight, then
        close every connection once its output is flushed."""
        d = defer.Deferred()
        if self.active:
            self._idle.append(d)
            d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda *_: None)
        else:
            d.callback(None)

        def close(_):
            for channel in list(self.channels):
                transport = getattr(channel, "transport", None)
                if transport is not None and transport.connected:
                    transport.loseConnection()

        return d.addCallback(close)


class ApiService(StreamServerEndpointService):
    """Serves the API on an endpoint; stops gracefully (see module doc).

    :param drain_timeout: seconds to wait for requests in flight.
    """

    def __init__(self, endpoint, site: QuietSite, drain_timeout: float = 10.0):
        super().__init__(endpoint, site)
        self.site = site
        self.drain_timeout = drain_timeout

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.site.drain(self.drain_timeout)
