"""The HTTP server around the API: no access log, a cap on open
connections and on idle ones, and a graceful stop.

Each connection's own limits (request head and body, in size and time) are
:mod:`torque.channel`'s.  Here: an idle keep-alive connection is closed after
``IDLE_TIMEOUT`` (set here, whatever twisted.web's default), and the open
connections are capped (``--max-connections``): a connection past the cap
closes the one that has waited longest for a request head (a stalled or
idle client), else the one that has been receiving a body the longest (a
slow upload), never one whose request is being handled; when every
connection holds a request in hand, it is itself closed at once.  So a slowloris of any size holds
at most the cap's file descriptors, and a real client's request still gets
in at once.

On shutdown, the reactor drops every connection, answers still in their
buffers included; :class:`ApiService` instead stops listening, waits for the
requests in flight, and closes each connection after its answer is flushed.
"""

from __future__ import annotations

import ipaddress

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

from torque.channel import BODY_TIMEOUT, HEAD_TIMEOUT, MAX_BODY, LimitedChannel, LimitedRequest

log = Logger()

#: Seconds an idle keep-alive connection is kept.  A pooling client opens a
#: new connection when its kept one was closed.
IDLE_TIMEOUT = 60.0
#: Open API connections at most.  Below the usual ``ulimit -n`` of 1024 with
#: room to spare for what else a node holds open: its Redis connections and
#: subscription, its log, and its deliveries (``--concurrency``, 100 by
#: default, per queue being delivered, plus the connections kept alive).
MAX_CONNECTIONS = 500


class QuietSite(server.Site):
    """A Site without an access log (at thousands of adds a second the log
    line costs more than the add, and twistd's log file rotates without
    bound) that knows its connections and requests in flight, and caps its
    connections (see the module's doc).  It leaves form bodies to the API
    (:func:`torque.api.read_fields`).

    :param max_connections: open connections at most.
    :param head_timeout: seconds a request head may take.
    :param body_timeout: seconds a request body may take after its head.
    :param idle_timeout: seconds an idle connection is kept.
    :param reactor: the clock of every timeout (the global reactor by default).
    """

    requestFactory = LimitedRequest
    protocol = LimitedChannel  # HTTP/1.1 only: the API serves no TLS, so no HTTP/2
    displayTracebacks = False
    noisy = False  # "Starting factory <QuietSite …>" says again what "starting on" said

    def __init__(
        self,
        resource,
        max_body: int = MAX_BODY,
        max_connections: int = MAX_CONNECTIONS,
        head_timeout: float = HEAD_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        **kwargs,
    ):
        super().__init__(resource, parsePOSTFormSubmission=False, timeout=idle_timeout, **kwargs)
        self.requestFactory = type("Request", (LimitedRequest,), {"max_body": max_body})
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        #: the open connections
        self.channels: set[LimitedChannel] = set()
        #: connections closed to make room, and connections refused, so far
        self.evicted = self.refused = 0
        self._said_full_at: float | None = None
        self.active: set = set()
        self._idle: list[defer.Deferred] = []

    def log(self, request):
        pass

    def buildProtocol(self, addr):
        if len(self.channels) >= self.max_connections and not self._make_room():
            self.refused += 1
            self._say_full()
            return None  # the listening port closes the connection at once
        channel = super().buildProtocol(addr)
        channel.head_timeout = self.head_timeout
        channel.body_timeout = self.body_timeout
        self.channels.add(channel)
        return channel

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head
        (else the one receiving a body the longest); whether there was one."""
        ranked = [(c.room_rank(), c) for c in self.channels if c.room_rank() is not None]
        if not ranked:
            return False
        _, oldest = min(ranked, key=lambda pair: pair[0])
        self.channels.discard(oldest)
        oldest.transport.abortConnection()
        self.evicted += 1
        self._say_full()
        return True

    def _say_full(self) -> None:
        now = self.reactor.seconds()
        if self._said_full_at is not None and now - self._said_full_at < 60:
            return
        self._said_full_at = now
        log.warn(
            "the API is at --max-connections ({max}): closing the connections that wait "
            "longest for a request head ({evicted} so far), refusing new ones when every "
            "connection holds a request ({refused} so far)",
            max=self.max_connections,
            evicted=self.evicted,
            refused=self.refused,
        )

    def connection_lost(self, channel: LimitedChannel) -> None:
        self.channels.discard(channel)

    def started(self, request) -> None:
        """``request`` is being handled (:class:`LimitedRequest` says)."""
        self.active.add(request)

    def ended(self, request) -> None:
        """``request`` is answered, or its connection lost."""
        self.active.discard(request)
        if not self.active and self._idle:
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
    :param token_required: whether the API wants a token; when it doesn't
        and the endpoint reaches beyond loopback, a warning says so at start.
    """

    def __init__(
        self,
        endpoint,
        site: QuietSite,
        drain_timeout: float = 10.0,
        token_required: bool = False,
    ):
        super().__init__(endpoint, site)
        self.site = site
        self.drain_timeout = drain_timeout
        self.token_required = token_required

    def privilegedStartService(self):
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        if port is None:  # listening failed, and was logged
            return port
        address = port.getHost()
        log.info("API listening on {address}", address=describe_address(address))
        if not self.token_required and beyond_loopback(address):
            log.warn(
                "the API listens on {address}, beyond loopback, and needs no token: anyone "
                "who can reach it can add tasks, and so make this node send requests "
                "anywhere. Set --api-token (or TORQUE_API_TOKEN), or listen on loopback "
                "(--port 8090, a bare port number) or a private interface "
                "(--port tcp:8090:interface=10.0.0.5)",
                address=describe_address(address),
            )
        return port

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        yield self.site.drain(self.drain_timeout)


def describe_address(address) -> str:
    """``127.0.0.1:8090``, ``[::]:8090`` or the socket's path."""
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", address))
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"


def beyond_loopback(address) -> bool:
    """Whether a listening address is reachable from other machines: an IP
    address other than loopback (``0.0.0.0`` and ``::`` are every interface).
    A unix socket is not."""
    host = getattr(address, "host", None)
    if host is None:
        return False
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return True
