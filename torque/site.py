"""The HTTP server around the API: a body-size limit, no access log, and a
graceful stop.

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
from twisted.web import server

MAX_BODY = 1024 * 1024


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
        body = json.dumps(
            {
                "error": {
                    "code": "too_large",
                    "message": f"the request body is over {self.max_body} bytes",
                    "field": "body",
                }
            }
        ).encode()
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()


class QuietSite(server.Site):
    """A Site without an access log (at thousands of adds a second the log
    line costs more than the add, and twistd's log file rotates without
    bound) that knows its connections and requests in flight.  It leaves
    form bodies to the API (:func:`torque.api.read_fields`)."""

    requestFactory = LimitedRequest
    displayTracebacks = False

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
