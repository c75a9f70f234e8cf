"""Where tasks may send requests: ``--allow-target`` rules.

A rule is a host name (``app.internal``), a wildcard (``*.example.com``:
any name under it, not the name itself), or an address range
(``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``).  A target is allowed when its
host name matches a name rule, or when its address is in a range: an
address in the URL, or for a host name the addresses DNS gives for it.

Names are checked when a task is added; addresses both then and again when
it is dispatched, against the addresses actually connected to, so a name
that later resolves elsewhere (DNS rebinding) can't reach a forbidden
address.  Without rules every target is allowed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer, threads
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.web.client import BrowserLikePolicyForHTTPS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Exception):
    """A target outside the ``--allow-target`` rules."""


def _address(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@attrs.frozen
class TargetRules:
    names: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, rules: Iterable[str]) -> TargetRules:
        """:raises ValueError: naming the rule that is neither."""
        names, networks = [], []
        for rule in rules:
            try:
                networks.append(ipaddress.ip_network(rule, strict=False))
                continue
            except ValueError:
                pass
            name = rule.lower().rstrip(".")
            bare = name[2:] if name.startswith("*.") else name
            if not bare or not all(part.replace("-", "").isalnum() for part in bare.split(".")):
                raise ValueError(f"--allow-target {rule!r} is neither a host name nor a CIDR range")
            names.append(name)
        return cls(tuple(names), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def __str__(self) -> str:
        return ", ".join([*self.names, *map(str, self.networks)])

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(
            host.endswith(rule[1:]) if rule.startswith("*.") else host == rule
            for rule in self.names
        )

    def allows_address(self, address: str) -> bool:
        ip = _address(address)
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(ip in network for network in self.networks)

    def refusal(self, host: str) -> TargetRefused:
        return TargetRefused(f"{host} is not an allowed target (--allow-target: {self})")


def resolve(host: str, port: int) -> defer.Deferred:
    """The addresses of ``host``, looked up in a thread (getaddrinfo)."""

    def lookup():
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [info[4][0] for info in infos]

    return threads.deferToThread(lookup)


class TargetGuard:
    """Checks targets against the rules, resolving names where it must.

    :param resolver: ``(host, port) -> Deferred[list[str]]``; tests inject
        one that answers what they want.
    """

    def __init__(self, rules: TargetRules, resolver: Callable = resolve):
        self.rules = rules
        self.resolver = resolver

    @defer.inlineCallbacks
    def allowed_addresses(self, host: str, port: int):
        """The addresses to connect to for ``host``: ``None`` when its name
        is allowed (connect as usual), else the resolved addresses that are.

        :raises TargetRefused: when none is.
        """
        if not self.rules or self.rules.allows_name(host):
            return None
        if _address(host) is not None:
            addresses = [host.strip("[]")]
        elif self.rules.networks:
            try:
                addresses = yield self.resolver(host, port)
            except OSError as e:
                raise TargetRefused(f"{host} does not resolve: {e}") from None
        else:
            addresses = []
        allowed = [a for a in addresses if self.rules.allows_address(a)]
        if not allowed:
            raise self.rules.refusal(host)
        return allowed

    def check_url(self, url: str) -> defer.Deferred:
        """Fires when ``url``'s target is allowed; fails with
        :class:`TargetRefused` when not."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return self.allowed_addresses(parts.hostname or "", port)


class GuardedEndpoints:
    """An ``IAgentEndpointFactory`` that connects only to allowed addresses.

    It resolves the host itself, keeps the allowed addresses, and connects
    to the first of them, with TLS verified against the host *name*.
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
        addresses = yield e.guard.allowed_addresses(host, uri.port)
        target = host if addresses is None else addresses[0]
        endpoint = HostnameEndpoint(e.reactor, target, uri.port, timeout=e.connect_timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(e.policy.creatorForNetloc(uri.host, uri.port), endpoint)
        protocol = yield endpoint.connect(factory)
        return protocol
