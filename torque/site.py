"""The HTTP server around the API: a body-size limit and no access log.

twisted.web buffers a request body of any size (to a temporary file past
100 kB) before the handler sees it; :class:`LimitedRequest` refuses an
oversized body as it arrives, whether its length is declared up front or it
comes chunked.
"""

from __future__ import annotations

import json

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
    """A Site without an access log: at thousands of adds a second the log
    line costs more than the add, and twistd's log file rotates without
    bound."""

    requestFactory = LimitedRequest
    displayTracebacks = False

    def log(self, request):
        pass
