"""The txredisapi connections torque opens to Redis.

Two connections per node: a small lazy pool for commands and scripts, and a
subscriber that listens for wake-ups.  txredisapi reconnects both by itself
after an outage; the subscriber subscribes again on every new connection
(txredisapi doesn't), so wake-ups resume with Redis.  With a
``redis+sentinel://`` address both ask the Sentinels where the primary is
before every connection (:mod:`torque.sentinel`), so both follow a failover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import txredisapi
from twisted.internet import defer, endpoints, ssl
from twisted.logger import Logger

from torque import fast_commands, sentinel
from torque.redis_url import RedisAddress

log = Logger()

# Seconds to wait for a TCP or TLS connection to Redis.
CONNECT_TIMEOUT = 5
# Reconnection backoff after an outage: txredisapi's default grows to 10 s,
# which would leave a node idle that long after Redis is back.
RECONNECT_INITIAL_DELAY = 0.5
RECONNECT_MAX_DELAY = 2.0


def connect_pool(address: RedisAddress, poolsize: int = 2, reactor=None):
    """A lazy connection pool: usable at once, commands wait for a
    connection.  Callers must bound every command with a timeout, because
    a command issued during an outage waits for Redis to come back; and
    they can ask :func:`torque.redis_state.known_down` first, so as not to wait at all when
    the pool knows there is no connection to wait for."""
    if reactor is None:
        from twisted.internet import reactor
    fast_commands.install()
    pool = _Pool(address, poolsize)
    pool.startConnecting(_endpoint(reactor, address, pool))
    return pool.handler


def connect(address: RedisAddress, poolsize: int = 2, reactor=None):
    """The store's connection to ``address``: a pool (:func:`connect_pool`),
    or for a ``redis+cluster://`` address a
    :class:`torque.cluster.ClusterConnection`, one such pool per primary."""
    if address.cluster_nodes:
        from torque.cluster import ClusterConnection

        if reactor is None:
            from twisted.internet import reactor
        return ClusterConnection(
            address.cluster_seeds(), lambda node: connect_pool(node, poolsize, reactor), reactor
        )
    return connect_pool(address, poolsize, reactor)


class _KeepTrying:
    """For txredisapi's factories (the pool, the subscriber): reconnect
    after a failed handshake too."""

    def stopTrying(self):
        """Keep trying.  txredisapi calls this when a new connection's AUTH
        or SELECT fails, and that includes a connection merely lost during
        its handshake (Redis restarting at that moment): the whole pool
        would then stay without Redis for good.  Only :meth:`disconnect`
        stops a node's pool; until then it reconnects with its backoff."""
        return defer.succeed(None)

    def connectionError(self, why):
        # txredisapi fails the lazy pool's "connected" Deferred with this,
        # which nobody waits on: say it once in the log instead of leaving
        # an unhandled error in a Deferred.
        self.deferred = None
        log.warn("Redis: {why}; trying again", why=why)


class _Pool(_KeepTrying, txredisapi.RedisFactory):
    """txredisapi's pool of connections, which also knows when it is down.

    Each slot of the pool is a ``ClientService``, which asks
    :meth:`retryDelay` for a delay after every failed attempt to connect and
    every lost connection: that is when the pool learns it may be down.
    """

    # Reconnection backoff after an outage: txredisapi's default grows to
    # 10 s, which would leave a node idle that long after Redis is back.
    initialDelay = RECONNECT_INITIAL_DELAY
    maxDelay = RECONNECT_MAX_DELAY

    def __init__(self, address: RedisAddress, poolsize: int):
        handler = txredisapi.UnixConnectionHandler if address.path else txredisapi.ConnectionHandler
        if address.sentinels:
            self.protocol = sentinel.SentinelProtocol
        super().__init__(
            str(address),
            address.db,
            poolsize,
            isLazy=True,
            handler=handler,
            password=address.password,
            username=address.username,
            convertNumbers=False,
        )
        self.failing = False  # an attempt failed, or a connection was lost
        self.why: str | None = None  # with Sentinel: why there is no primary
        self.address = address

    @property
    def down(self) -> bool:
        return self.failing and self.size == 0

    def retryDelay(self, attempt):
        self.failing = True
        return super().retryDelay(attempt)

    def addConnection(self, conn):
        super().addConnection(conn)
        if conn in self.pool:
            self.failing = False
            self.why = None

    def disconnect(self):
        d = super().disconnect()
        if self.address.sentinels:
            d.addCallback(lambda _: sentinel.detach(self))
        return d


def _endpoint(reactor, address: RedisAddress, factory):
    if address.sentinels:
        return sentinel.attach(factory, address)
    if address.path:
        return endpoints.UNIXClientEndpoint(reactor, address.path, timeout=CONNECT_TIMEOUT)
    endpoint = endpoints.HostnameEndpoint(
        reactor, address.host, address.port, timeout=CONNECT_TIMEOUT
    )
    if address.tls:
        endpoint = endpoints.wrapClientTLS(_tls(address), endpoint)
    return endpoint


def _tls(address: RedisAddress):
    # txredisapi's own ``True`` verifies nothing; this checks the certificate
    # against the trust roots (the system's, or ``ssl_ca_certs``) and the host.
    if not address.tls:
        return False
    roots = None
    if address.ca_certs:
        with open(address.ca_certs, "rb") as pem:
            roots = ssl.Certificate.loadPEM(pem.read())
    return ssl.optionsForClientTLS(address.host, trustRoot=roots)


class _WakeProtocol(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.on_message(channel, message)


class _SentinelWakeProtocol(sentinel.RoleChecked, _WakeProtocol):
    """Subscribes on the primary only: after a failover, the one that
    takes the adds (and their wake-ups)."""


class WakeSubscriber(_KeepTrying, txredisapi.RedisFactory):
    """Subscribes to ``channels`` and calls ``on_message(channel, message)``
    for each message, subscribing again after every reconnection.

    Messages published while the connection was down are lost, so every
    (re)connection also calls ``on_message(channel, None)`` for each channel:
    "look now", in case something was added meanwhile.

    :param patterns: glob patterns to subscribe to as well (``PSUBSCRIBE``):
        their messages come with the channel they were published on, and a
        (re)connection calls ``on_message(None, None)``: "look at all".
    """

    protocol = _WakeProtocol
    initialDelay = RECONNECT_INITIAL_DELAY
    maxDelay = RECONNECT_MAX_DELAY

    def __init__(
        self,
        address: RedisAddress,
        channels: Sequence[str],
        on_message: Callable[[str | None, str | None], object],
        patterns: Sequence[str] = (),
    ):
        super().__init__(
            None,
            address.db,
            1,
            isLazy=True,
            password=address.password,
            username=address.username,
            convertNumbers=False,
        )
        self.address = address
        if address.sentinels:
            self.protocol = _SentinelWakeProtocol
        self.channels = list(channels)
        self.patterns = list(patterns)
        self.on_message = on_message

    def start(self, reactor) -> None:
        self.startConnecting(_endpoint(reactor, self.address, self))

    def disconnect(self):
        d = super().disconnect()
        if self.address.sentinels:
            d.addCallback(lambda _: sentinel.detach(self))
        return d

    def addConnection(self, conn):
        super().addConnection(conn)
        if conn.connected and not self.disconnectCalled and self.channels:
            d = conn.subscribe(self.channels)
            d.addCallback(lambda _: [self.on_message(channel, None) for channel in self.channels])
            d.addErrback(lambda _: None)
        if conn.connected and not self.disconnectCalled and self.patterns:
            d = conn.psubscribe(self.patterns)
            d.addCallback(lambda _: self.on_message(None, None))
            d.addErrback(lambda _: None)


def glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
