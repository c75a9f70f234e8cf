"""Connections for deliveries that go only where the guard allows.

:class:`GuardedEndpoints` is the HTTP agent's endpoint factory: it connects
to the addresses :meth:`~torque.targets.TargetGuard.addresses` keeps, never
to a name resolved again behind the guard's back.
:class:`ReportingEndpoint` tells the guard where this node's API listens.
"""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.client import BrowserLikePolicyForHTTPS
from zope.interface import implementer

from torque.targets import TargetGuard, TargetRefused


@implementer(IStreamServerEndpoint)
class ReportingEndpoint:
    """The API's server endpoint, telling the guard where it listens once
    it does (the port may be chosen then), so tasks can't call it."""

    def __init__(self, endpoint, guard: TargetGuard):
        self.endpoint = endpoint
        self.guard = guard

    def listen(self, factory):
        def listening(port):
            address = port.getHost()
            if hasattr(address, "port"):  # TCP, not a Unix socket
                self.guard.api_listening(address.host, address.port)
            return port

        return self.endpoint.listen(factory).addCallback(listening)


class GuardedEndpoints:
    """An ``IAgentEndpointFactory`` that connects only to allowed addresses.

    It resolves the host itself, keeps the allowed addresses, and connects
    to the first of them that answers, with TLS verified against the host
    *name*.
    """

    def __init__(self, reactor, guard: TargetGuard, connect_timeout: float = 10):
        self.reactor = reactor
        self.guard = guard
        self.connect_timeout = connect_timeout
        self.policy = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri):
        return _GuardedEndpoint(self, uri)


class _GuardedEndpoint:
    def __init__(self, endpoints: GuardedEndpoints, uri):
        self.endpoints = endpoints
        self.uri = uri

    @defer.inlineCallbacks
    def connect(self, factory):
        e, uri = self.endpoints, self.uri
        host = uri.host.decode("ascii")
        addresses = yield e.guard.addresses(host, uri.port)
        for i, address in enumerate(addresses):
            endpoint = HostnameEndpoint(e.reactor, address, uri.port, timeout=e.connect_timeout)
            if uri.scheme == b"https":
                creator = e.policy.creatorForNetloc(uri.host, uri.port)
                endpoint = wrapClientTLS(creator, endpoint)
            try:
                protocol = yield endpoint.connect(factory)
            except error.ConnectError:
                if i == len(addresses) - 1:
                    raise
                continue
            transport = protocol.transport
            peer, local = transport.getPeer(), transport.getHost()
            if e.guard.is_own_connection(peer.host, peer.port, local.host):
                transport.abortConnection()  # before a byte of the request is sent
                raise TargetRefused(f"{host}:{uri.port} is this node's own API")
            return protocol
