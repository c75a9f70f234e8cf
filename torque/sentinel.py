"""Finding the Redis primary through Redis Sentinel (``redis+sentinel://``).

txredisapi's Sentinel support asks the Sentinels where the primary is before
every connection attempt, checks the server's ``ROLE`` once connected (a
demoted primary is dropped), and closes the pool's connections when the
primary moves.  This module fits it to torque's two connections, the
command pool and the wake-up subscriber (which txredisapi has no Sentinel
version of), and says *why* there is no primary, for ``/health``: no
Sentinel answers (naming the ones tried), or none knows a primary now.

:func:`check_master_name` is the start-up check: a master name that the
Sentinels which answer don't know is a mistake to report at once, not an
outage to wait out.
"""

from __future__ import annotations

import socket

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from torque.redis_url import RedisAddress

log = Logger()

# Seconds to wait for the Sentinels' answers before each connection
# attempt: txredisapi's 10 s would hold every attempt during a failover.
DISCOVERY_TIMEOUT = 1.0


def attach(factory, address: RedisAddress) -> txredisapi._SentinelEndpoint:
    """Make ``factory`` (a txredisapi pool or subscriber factory) connect to
    the primary the Sentinels of ``address`` name: the endpoint to give its
    ``startConnecting``.  Its ``why`` then says why it has no primary."""
    manager = _Sentinel(
        list(address.sentinels), password=address.sentinel_password, convertNumbers=False
    )
    manager.discovery_timeout = DISCOVERY_TIMEOUT
    factory.sentinel_manager = manager
    factory.service_name = address.master_name
    factory.is_master = True
    factory.sentinel_address = address
    return _Endpoint(factory)


def detach(factory):
    """Close the connections to the Sentinels (a Deferred)."""
    return factory.sentinel_manager.disconnect()


class _Sentinel(txredisapi.Sentinel):
    """txredisapi's, whose discoveries end when it is disconnected: its own
    leaves each discovery's timer armed for ``discovery_timeout`` after the
    pool is gone (a stopped node's reactor, or a test's, not yet clean)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._discoveries: dict[defer.Deferred, object] = {}  # result -> its timer

    def discover_master(self, service_name):
        from twisted.internet import reactor  # txredisapi's own, likewise

        result = defer.Deferred()

        def answered(response):
            state = response.get(service_name)
            if not result.called and state and self.check_master_state(state):
                self._discoveries.pop(result).cancel()
                result.callback((state["ip"], int(state["port"])))

        def timed_out():
            del self._discoveries[result]
            result.errback(txredisapi.MasterNotFoundError(f"No master found for {service_name}"))

        for sentinel in self.sentinels:
            sentinel.sentinel_masters().addCallbacks(answered, lambda _: None)
        self._discoveries[result] = reactor.callLater(self.discovery_timeout, timed_out)
        return result

    def disconnect(self):
        discoveries, self._discoveries = self._discoveries, {}
        for result, timer in discoveries.items():
            timer.cancel()
            result.errback(txredisapi.MasterNotFoundError("disconnected"))
        return super().disconnect()


class _Endpoint(txredisapi._SentinelEndpoint):
    """txredisapi's endpoint, which also tells the factory why discovery
    failed, naming the Sentinels."""

    def _discovery_failed(self, failure):
        failure.trap(txredisapi.MasterNotFoundError)
        factory = self.factory
        address = factory.sentinel_address
        answering = [
            f"{host}:{port}"
            for (host, port), sentinel in zip(
                address.sentinels, factory.sentinel_manager.sentinels, strict=True
            )
            if getattr(sentinel, "_factory", None) is not None and sentinel._factory.size
        ]
        if not answering:
            why = f"no Redis Sentinel answers (tried {address.sentinel_list})"
        else:
            why = (
                f"no Redis primary for {address.master_name!r}: the Sentinels at "
                f"{','.join(answering)} know none that is up now (a failover?)"
            )
        if why != getattr(factory, "why", None):
            log.warn("Redis: {why}; trying again", why=why)
        factory.why = why
        return failure


class RoleChecked:
    """For a protocol of a Sentinel-fed factory: drop the connection unless
    the server is the primary (txredisapi's ``SentinelRedisProtocol``, for
    any protocol class, the subscriber's too)."""

    def connectionMade(self):
        def check_role(role):
            if role[0] != "master":
                self.factory.why = (
                    f"the Redis that Sentinel named for {self.factory.service_name!r} "
                    "is not the primary (a failover?)"
                )
                self.transport.loseConnection()
                return None
            return super(RoleChecked, self).connectionMade()

        if self.password is not None:
            self.auth(self.password, self.username)
        return self.role().addCallback(check_role)


class SentinelProtocol(RoleChecked, txredisapi.RedisProtocol):
    """The command pool's protocol."""


def check_master_name(address: RedisAddress, timeout: float = 1.0) -> str | None:
    """At start, before the reactor runs: a message when a Sentinel answers
    and knows no master named ``address.master_name`` (a misspelt name
    waits for nothing), ``None`` when one knows it or none answers (the node
    starts, answers 503, and connects once one does).  Blocking, bounded by
    ``timeout`` per Sentinel."""
    unknown = []
    for host, port in address.sentinels:
        try:
            reply = _ask(host, port, address, timeout)
        except (OSError, ValueError):
            continue
        if reply is not None:
            return None
        unknown.append(f"{host}:{port}")
    if not unknown:
        return None
    return (
        f"the Redis Sentinel at {', '.join(unknown)} knows no master named "
        f"{address.master_name!r}: check the name in --redis (the one in "
        "'sentinel monitor <name> …')"
    )


def _ask(host: str, port: int, address: RedisAddress, timeout: float):
    """``SENTINEL GET-MASTER-ADDR-BY-NAME``: the address, or ``None``."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        reader = conn.makefile("rb")
        if address.sentinel_password:
            conn.sendall(_command("AUTH", address.sentinel_password))
            _reply(reader)
        conn.sendall(_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", address.master_name))
        return _reply(reader)


def _command(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(reader):
    """One RESP reply: enough of the protocol for the two commands above."""
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ValueError("the connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise ValueError(rest.decode())
    if kind == b"+":
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2].decode()
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(reader) for _ in range(count)]
    if kind == b"_":  # RESP3 null
        return None
    raise ValueError(f"unexpected reply {line!r}")
