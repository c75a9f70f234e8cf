"""In-memory connections for :class:`torque.fast_http.FastHTTP` in unit tests.

``StubTreq`` wires treq's ``Agent`` to a resource in memory; the fast path
asks an endpoint factory for its connections instead, so this one connects
each to a twisted.web ``Site`` over ``iosim`` transports: the real client
and server protocols, no socket, and nothing moves until :meth:`flush`.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.test import iosim
from twisted.web.server import Site

from torque.fast_http import FastHTTP
from torque.http_pool import QuietConnectionPool


class MemoryEndpoints:
    """An ``IAgentEndpointFactory`` whose connections reach ``resource``.

    :ivar connections: connections made so far (the pool reuses them).
    """

    def __init__(self, resource, clock):
        self.site = Site(resource, reactor=clock)
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.connections = 0

    def endpointForURI(self, uri):
        return _MemoryEndpoint(self)

    def flush(self) -> None:
        """Move every byte written so far, both ways, until none is left."""
        for pump in list(self.pumps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self.pumps.remove(pump)


class _MemoryEndpoint:
    def __init__(self, endpoints: MemoryEndpoints):
        self.endpoints = endpoints

    def connect(self, factory):
        e = self.endpoints
        e.connections += 1
        client_address = IPv4Address("TCP", "127.0.0.1", 40000 + e.connections)
        server_address = IPv4Address("TCP", "127.0.0.1", 80)
        server = e.site.buildProtocol(client_address)
        client = factory.buildProtocol(server_address)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, server_address, client_address),
            client,
            iosim.FakeTransport(client, False, client_address, server_address),
            greet=False,
            clock=e.clock,
        )
        e.pumps.append(pump)
        return defer.succeed(client)


def memory_fast_http(resource, clock, persistent: bool = True) -> tuple[FastHTTP, MemoryEndpoints]:
    """A :class:`FastHTTP` whose requests reach ``resource`` in memory, and
    its endpoints (to :meth:`~MemoryEndpoints.flush`)."""
    endpoints = MemoryEndpoints(resource, clock)
    return FastHTTP(QuietConnectionPool(clock, persistent=persistent), endpoints), endpoints
