"""Where tasks may send requests: the default refusals and ``--allow-target``.

Whatever the rules, two kinds of target are refused unless a rule names
them explicitly (SPEC §5):

- link-local addresses (``169.254.0.0/16``, ``fe80::/10``), where cloud
  metadata services answer with the machine's credentials;
- this node's own API (its listening port on a loopback or unspecified
  address, on the address it is bound to, or on any address that turns
  out to be this machine), so a task can't pause a queue or read tasks.

Private ranges are not refused: torque usually calls its own application on
a private network.

A rule is a host name (``app.internal``), a wildcard (``*.example.com``:
any name under it, not the name itself), an address range (``10.0.0.0/8``,
``127.0.0.1``, ``fd00::/8``), or a host or address with a port
(``127.0.0.1:8090``, ``[::1]:8090``, ``app.internal:8000``): that port only.
Without rules every target but the refused ones is allowed; with rules, a
target is allowed when its host name matches a name rule, or when its
address is in a range: an address in the URL, or for a host name the
addresses DNS gives for it.

Names are checked when a task is added; addresses both then (when the URL
holds one, or the rules need them) and again when it is dispatched, against
the addresses actually connected to (:mod:`torque.guarded`), so a name that
later resolves elsewhere (DNS rebinding) can't reach a forbidden address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import attrs
from twisted.internet import defer, error, threads
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
# Seconds a name's addresses are kept: connections are made far more often
# than DNS changes, and what is checked is what is connected to, so a cached
# answer can't be used to slip past the check.
DNS_TTL = 10.0
DNS_CACHE_SIZE = 10_000
# URLs whose verdict needs no DNS (an address in the URL, a name the rules
# name, no rules) kept with it: most tasks of an application go to a handful
# of URLs, and checking one was a sixth of an add's CPU.
VERDICT_CACHE_SIZE = 1024
_PORT_RULE = re.compile(r"\[?([^\[\]]+?)\]?:([0-9]{1,5})")


class TargetRefused(Exception):
    """A target outside the ``--allow-target`` rules, or refused by default."""


class _NeedsDNS(Exception):
    """A target whose verdict needs its name's addresses."""

    def __init__(self, host: str, port: int):
        super().__init__(host, port)
        self.host = host
        self.port = port


def _address(host: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return ip


def _name(host: str) -> str:
    return host.lower().rstrip(".")


def _is_name(name: str) -> bool:
    return bool(name) and all(part.replace("-", "").isalnum() for part in name.split("."))


@attrs.frozen
class TargetRules:
    names: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    # (host name or address, port): ``host:port`` rules.
    ports: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, rules: Iterable[str]) -> TargetRules:
        """:raises ValueError: naming the rule that is none of them."""
        names, networks, ports = [], [], []
        for rule in rules:
            try:
                networks.append(ipaddress.ip_network(rule, strict=False))
                continue
            except ValueError:
                pass
            with_port = _PORT_RULE.fullmatch(rule)
            if with_port and 0 < int(with_port[2]) < 65536:
                ip = _address(with_port[1])
                host = str(ip) if ip is not None else _name(with_port[1])
                if ip is not None or _is_name(host):
                    ports.append((host, int(with_port[2])))
                    continue
            name = _name(rule)
            if not _is_name(name[2:] if name.startswith("*.") else name):
                raise ValueError(
                    f"--allow-target {rule!r} is neither a host name nor a CIDR range"
                    " (nor either with a :port)"
                )
            names.append(name)
        return cls(tuple(names), tuple(networks), tuple(ports))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks or self.ports)

    def __str__(self) -> str:
        ports = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.ports]
        return ", ".join([*self.names, *map(str, self.networks), *ports])

    def allows_name(self, host: str, port: int | None = None) -> bool:
        host = _name(host)
        return (host, port) in self.ports or any(
            host.endswith(rule[1:]) if rule.startswith("*.") else host == rule
            for rule in self.names
        )

    def allows_address(self, address: str | Address, port: int | None = None) -> bool:
        ip = _address(str(address))
        if ip is None:
            return False
        return (str(ip), port) in self.ports or any(ip in network for network in self.networks)

    def names_port(self, host: str, ip: Address, port: int) -> bool:
        """Whether a ``host:port`` rule names this very target."""
        return (_name(host), port) in self.ports or (str(ip), port) in self.ports

    def names_link_local(self, host: str, ip: Address, port: int) -> bool:
        """Whether a rule names this link-local target explicitly: its exact
        host name, a range inside the link-local one (``169.254.169.254``,
        not ``0.0.0.0/0``), or ``host:port``."""
        return (
            _name(host) in self.names
            or self.names_port(host, ip, port)
            or any(
                ip in network and network.subnet_of(local)
                for network in self.networks
                for local in LINK_LOCAL
                if network.version == local.version
            )
        )

    def refusal(self, host: str) -> TargetRefused:
        return TargetRefused(f"{host} is not an allowed target (--allow-target: {self})")


def _lookup(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def resolver_on(reactor) -> Callable[[str, int], defer.Deferred]:
    """A resolver that looks addresses up (getaddrinfo) in ``reactor``'s
    thread pool, and gives them back on ``reactor``'s thread."""

    def resolve_on(host: str, port: int) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), _lookup, host, port)

    return resolve_on


def resolve(host: str, port: int) -> defer.Deferred:
    """The addresses of ``host``, looked up in the global reactor's thread
    pool: the default of a :class:`TargetGuard` made without a resolver (a
    node passes :func:`resolver_on` its own reactor)."""
    from twisted.internet import reactor

    return resolver_on(reactor)(host, port)


def _is_local_name(host: str) -> bool:
    """``localhost`` and the names under it, loopback by definition
    (RFC 6761): known without asking DNS."""
    host = _name(host)
    return host == "localhost" or host.endswith(".localhost")


class TargetGuard:
    """Checks targets against the default refusals and the rules,
    resolving names where it must.

    :param resolver: ``(host, port) -> Deferred[list[str]]``; tests inject
        one that answers what they want.
    :param clock: times the cache of resolved names; without one, nothing
        is cached.
    """

    def __init__(
        self,
        rules: TargetRules = TargetRules(),  # noqa: B008 -- frozen, so shared safely
        resolver: Callable = resolve,
        clock: IReactorTime | None = None,
        ttl: float = DNS_TTL,
    ):
        self.rules = rules
        self.resolver = resolver
        self.clock = clock
        self.ttl = ttl
        # (bound address, port) of this node's API; set once it listens.
        self.own: list[tuple[Address, int]] = []
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._pending: dict[str, list[defer.Deferred]] = {}
        # url -> its refusal, or None when allowed: the verdicts that need no DNS.
        self._verdicts: dict[str, TargetRefused | None] = {}

    # -- this node's own API -----------------------------------------------

    def api_listening(self, host: str, port: int) -> None:
        """Refuse ``host:port`` from now on: this node's API listens there."""
        ip = _address(host)
        if ip is not None:
            self.own.append((ip, port))
            self._verdicts.clear()

    def _is_own_api(self, ip: Address, port: int) -> bool:
        return any(
            port == own_port and (ip == bound or ip.is_loopback or ip.is_unspecified)
            for bound, own_port in self.own
        )

    def is_own_connection(self, peer_host: str, peer_port: int, local_host: str) -> bool:
        """Whether a connection made reached this node's API on one of the
        machine's own addresses (a LAN address of a node listening on
        every interface): the connection's two ends are the same address."""
        return peer_host == local_host and any(
            peer_port == port and (bound.is_unspecified or str(bound) == peer_host)
            for bound, port in self.own
        )

    # -- checks --------------------------------------------------------------

    def default_refusal(self, host: str, ip: Address, port: int) -> TargetRefused | None:
        """Why ``ip`` (for ``host``) is refused whatever the rules, if it is."""
        if any(ip in network for network in LINK_LOCAL):
            if not self.rules.names_link_local(host, ip, port):
                return TargetRefused(
                    f"{host} is a link-local address ({ip}), where cloud metadata"
                    " services answer; refused unless --allow-target names it"
                )
        elif self._is_own_api(ip, port) and not self.rules.names_port(host, ip, port):
            return TargetRefused(
                f"{host}:{port} is this node's own API; refused unless"
                f" --allow-target names it with its port"
            )
        return None

    def _keep(self, host: str, port: int, addresses: Iterable[str], name_allowed: bool):
        """The addresses that may be connected to; raises the reason when
        none may."""
        kept, reasons = [], []
        for address in addresses:
            ip = _address(address)
            if ip is None:
                continue
            reason = self.default_refusal(host, ip, port)
            if reason is not None:
                reasons.append(reason)
            elif name_allowed or self.rules.allows_address(ip, port):
                kept.append(address)
        if not kept:
            raise reasons[0] if reasons else self.rules.refusal(host)
        return kept

    def check_url(self, url: str) -> defer.Deferred:
        """Fires (with ``None``) when ``url``'s target may be added; fails
        with :class:`TargetRefused` when not.

        Without rules, a host name is not resolved (the target's DNS may
        be known only where tasks are dispatched): its addresses are
        checked when it is dispatched.
        """
        try:
            refusal = self._verdicts[url]
        except KeyError:
            try:
                refusal = self._verdict_without_dns(url)
            except _NeedsDNS as needs:
                return self._check_resolved(needs.host, needs.port)
            if len(self._verdicts) >= VERDICT_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[url] = refusal
        return defer.succeed(None) if refusal is None else defer.fail(refusal)

    def _verdict_without_dns(self, url: str) -> TargetRefused | None:
        """``url``'s refusal, or ``None`` when it is allowed, as far as
        they are known without DNS.

        :raises _NeedsDNS: when the rules need the name's addresses.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            if _address(host) is not None:
                self._keep(host, port, [host.strip("[]")], not self.rules)
                return None
            name_allowed = not self.rules or self.rules.allows_name(host, port)
            if _is_local_name(host):
                self._keep(host, port, ["127.0.0.1", "::1"], True)  # raises for the API
            if name_allowed:
                return None
            if not (self.rules.networks or self.rules.ports):
                return self.rules.refusal(host)
        except TargetRefused as refused:
            return refused.with_traceback(None)  # kept: not with _keep's frames
        raise _NeedsDNS(host, port)

    @defer.inlineCallbacks
    def _check_resolved(self, host: str, port: int):
        try:
            addresses = yield self._resolve(host, port)
        except OSError as e:
            raise TargetRefused(f"{host} does not resolve: {e}") from None
        self._keep(host, port, addresses, False)

    @defer.inlineCallbacks
    def addresses(self, host: str, port: int):
        """The addresses to connect to for ``host``, those allowed of the
        ones it resolves to.

        :raises TargetRefused: when none is.
        :raises twisted.internet.error.DNSLookupError: when it doesn't
            resolve (retried, as any DNS failure).
        """
        if _address(host) is not None:
            return self._keep(host, port, [host.strip("[]")], not self.rules)
        try:
            addresses = yield self._resolve(host, port)
        except OSError as e:
            raise error.DNSLookupError(f"{host}: {e}") from None
        name_allowed = not self.rules or self.rules.allows_name(host, port)
        return self._keep(host, port, addresses, name_allowed)

    def _resolve(self, host: str, port: int) -> defer.Deferred:
        """``host``'s addresses, from the cache while they are fresh; one
        lookup at a time per name."""
        if self.clock is None:
            return self.resolver(host, port)
        now = self.clock.seconds()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return defer.succeed(cached[1])
        # Each caller waits on a Deferred of its own, so one that is
        # cancelled (its task timed out) cancels no one else's lookup.
        mine = defer.Deferred()
        waiting = self._pending.get(host)
        if waiting is not None:
            waiting.append(mine)
            return mine
        self._pending[host] = waiting = [mine]

        def done(result):
            del self._pending[host]
            if not isinstance(result, Failure):
                if len(self._cache) >= DNS_CACHE_SIZE:
                    self._cache.clear()
                self._cache[host] = (self.clock.seconds() + self.ttl, result)
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)

        defer.maybeDeferred(self.resolver, host, port).addBoth(done)
        return mine
