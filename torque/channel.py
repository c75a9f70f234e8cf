"""One API connection: the limits on its requests' heads and bodies, in
size and in time.

twisted.web buffers a request body of any size (to a temporary file past
100 kB) before the handler sees it; :class:`LimitedRequest` refuses an
oversized body as it arrives, whether its length is declared up front or it
comes chunked.  :class:`LimitedChannel` refuses an oversized head.

Slow clients (slowloris): twisted.web closes a connection only after a
minute without a byte, so one that sends a byte now and then stays open for
ever, and a few thousand half-sent requests used to exhaust a node's file
descriptors (``/health``, adds and deliveries all failing with "Too many
open files").  Now a request head must arrive within ``HEAD_TIMEOUT`` of its
first byte (or of the connection), and a body within ``BODY_TIMEOUT`` of its
head; the site (:mod:`torque.site`) closes idle connections and caps how
many are open.
"""

from __future__ import annotations

import json

from twisted.web import http, server

MAX_BODY = 1024 * 1024
MAX_REQUEST_HEADERS = 100
MAX_HEAD_BYTES = 16 * 1024
#: Seconds a request head may take to arrive (16 KiB at most: any real client
#: sends it in one go).
HEAD_TIMEOUT = 10.0
#: Seconds a request body may take to arrive after its head (1 MiB in a
#: minute is 17 kB/s).
BODY_TIMEOUT = 60.0
#: Seconds a refused upload may go on arriving, to be thrown away, after its
#: answer: closing with its bytes unread would make the kernel answer them
#: with a reset, and the client could lose the answer (Apache's lingering
#: close).
LINGER = 2.0


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
        self.site = self.channel.site  # as twisted.web's process sets it, a little sooner
        self.site.started(self)
        super().process()

    # The site learns that a request ended here rather than through
    # notifyFinish: a Deferred less for every request.
    def finish(self):
        try:
            super().finish()
        finally:
            self.site.ended(self)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.site is not None:  # processed, so started
            self.site.ended(self)

    def _reject(self):
        self._too_large = True
        self.channel.lingering = refuse(
            self.channel.transport,
            b"413 Payload Too Large",
            "too_large",
            f"the request body is over {self.max_body} bytes",
            "body",
            linger=self.channel.callLater,
        )


class LimitedChannel(http.HTTPChannel):
    """An HTTP channel that refuses an oversized request head with a JSON
    ``431`` naming the limit, where twisted.web would answer a bare 400 (or
    just hang up, for one over-long line), and a request that is slower to
    arrive than ``head_timeout`` / ``body_timeout`` with a JSON ``408``."""

    maxHeaders = MAX_REQUEST_HEADERS
    totalHeadersSize = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT
    #: Since when this connection waits for a request head (a new or an idle
    #: keep-alive connection, or a head half-sent); ``None`` otherwise.
    waiting_since: float | None = None
    #: Since when this connection receives a request body; ``None`` otherwise.
    receiving_since: float | None = None
    _head_bytes = 0
    _head_lines = 0
    # The current head or body deadline: when (``None``: none), how long it
    # is and for which part; and the DelayedCall that looks at it.  The
    # call is made once and moved on when it fires early, not made and
    # cancelled for each request (two of each, a few percent of an add).
    _due: float | None = None
    _timeout = 0.0
    _part = ""
    _deadline = None
    lingering = None  # the DelayedCall that hangs up after a refused upload
    _host = None  # this end's address, asked once

    def connectionMade(self) -> None:
        super().connectionMade()
        self.waiting_since = self.site.reactor.seconds()
        self._arm(self.head_timeout, "headers")

    def dataReceived(self, data: bytes) -> None:
        # The first byte of the next request on a kept-alive connection
        # starts its head's deadline.
        if self.waiting_since is not None and self._due is None:
            self._arm(self.head_timeout, "headers")
        super().dataReceived(data)

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

    def allHeadersReceived(self) -> None:
        self.waiting_since = None
        self._disarm()
        if self.length != 0:  # a body follows (None: chunked)
            self.receiving_since = self.site.reactor.seconds()
            self._arm(self.body_timeout, "body")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self.receiving_since = None
        self._disarm()
        super().allContentReceived()

    def room_rank(self) -> tuple[int, float] | None:
        """Which connection the site closes first to make room: the one
        waiting longest for a request head, else the one receiving a body
        the longest; ``None`` for one whose request is in hand (never)."""
        if self.waiting_since is not None:
            return (0, self.waiting_since)
        if self.receiving_since is not None:
            return (1, self.receiving_since)
        return None

    def requestDone(self, request) -> None:
        super().requestDone(request)
        if self.transport is not None and self.transport.connected and not self.requests:
            # Idle: the idle timeout runs, and the next head's deadline
            # starts with its first byte.
            self.waiting_since = self.site.reactor.seconds()

    def getHost(self):
        # twisted.web asks for it with every request, a system call each;
        # a connection's own address does not change.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def timeoutConnection(self) -> None:
        # twisted.web's, without its log line: an idle client is no news.
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def connectionLost(self, reason) -> None:
        self._disarm()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if self.lingering is not None and self.lingering.active():
            self.lingering.cancel()
        self.site.connection_lost(self)
        super().connectionLost(reason)

    def _arm(self, timeout: float, part: str) -> None:
        self._due = self.site.reactor.seconds() + timeout
        self._timeout, self._part = timeout, part
        if self._deadline is None:
            self._deadline = self.callLater(timeout, self._look)
        elif self._deadline.getTime() > self._due:
            self._deadline.reset(timeout)

    def _disarm(self) -> None:
        self._due = None

    def _look(self) -> None:
        self._deadline = None
        if self._due is None:
            return
        left = self._due - self.site.reactor.seconds()
        if left > 0.001:  # a later request's deadline
            self._deadline = self.callLater(left, self._look)
            return
        self._due = None
        self._too_slow(self._timeout, self._part)

    def _too_slow(self, timeout: float, part: str) -> None:
        what = "head" if part == "headers" else "body"
        refuse(self.transport, b"408 Request Timeout", "timeout",
               f"the request {what} did not arrive within {timeout:g} s", part)  # fmt: skip
        # A client that reads nothing can't keep it open either.
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse_head(f"a header line is over {self.MAX_LENGTH} bytes")

    def _refuse_head(self, message: str) -> None:
        # Hanging up stops the reading, and LineReceiver parses no more lines.
        refuse(self.transport, b"431 Request Header Fields Too Large", "too_large", message,
               "headers")  # fmt: skip


def refuse(transport, status: bytes, code: str, message: str, field: str, linger=None) -> None:
    """Answer a request torque won't read with a JSON error, and hang up.

    :param linger: a ``callLater``: when given, hang up only our side at
        once, and the rest after :data:`LINGER` seconds (or when the client
        does), reading (and dropping) what the client still sends.
    :returns: the delayed hang-up, when lingering.
    """
    body = json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()
    transport.write(
        b"HTTP/1.1 %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
    )
    if linger is not None and hasattr(transport, "loseWriteConnection"):
        transport.loseWriteConnection()
        return linger(LINGER, transport.loseConnection)
    transport.loseConnection()
    return None
