"""Where Redis is: a Redis URL read into a :class:`RedisAddress`.

Pure, so the options can check ``--redis`` without importing txredisapi
(which installs the global reactor when it is imported).
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import attrs


@attrs.frozen
class RedisAddress:
    """Where Redis is: a host and port (``tls`` for ``rediss://``) or a unix
    socket ``path``."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    password: str | None = attrs.field(default=None, repr=False)
    username: str | None = None
    tls: bool = False
    ca_certs: str | None = None  # a PEM file to trust instead of the system's roots
    #: ``redis+sentinel://``: the Sentinels to ask where the primary is, and
    #: the name they know it by (then ``host`` and ``port`` are unused).
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_password: str | None = attrs.field(default=None, repr=False)
    #: ``redis+cluster://``: nodes of a Redis Cluster to ask for its slot
    #: map at first (then ``host`` and ``port`` are unused).
    cluster_nodes: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        """The address without its password, for logs."""
        if self.cluster_nodes:
            nodes = ",".join(f"{host}:{port}" for host, port in self.cluster_nodes)
            return f"redis+cluster://{nodes}/0"
        if self.sentinels:
            return f"redis+sentinel://{self.sentinel_list}/{self.master_name}/{self.db}"
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"

    def cluster_seeds(self) -> list[RedisAddress]:
        """One address per ``redis+cluster://`` node, with the password,
        user name and TLS settings every node of the cluster shares."""
        return [
            attrs.evolve(self, host=host, port=port, cluster_nodes=())
            for host, port in self.cluster_nodes
        ]

    @property
    def sentinel_list(self) -> str:
        """The Sentinels, ``host:port,host:port``, for messages."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)


SENTINEL_PORT = 26379
PORT = 6379


def parse_redis_url(url: str) -> RedisAddress:
    """Read ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…``
    (``?ssl_ca_certs=/path/ca.pem`` to trust a private CA) or
    ``unix:///path/redis.sock[?db=N][&password=…]``, or
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/<master-name>[/db]``
    (Sentinels on port 26379 unless given; the password is the primary's,
    ``?sentinel_password=`` the Sentinels' own if they require one), or
    ``redis+cluster://[[user]:password@]host[:port][,host[:port]…][/0]``
    (some nodes of a Redis Cluster, on port 6379 unless given; a cluster
    has database 0 only).

    :raises ValueError: with a message fit for a usage error.
    """
    for scheme, parse in (
        ("redis+sentinel", _parse_sentinel_url),
        ("redis+cluster", _parse_cluster_url),
    ):
        if url.startswith(scheme + "://"):
            try:
                return parse(url)
            except ValueError as e:
                raise ValueError(f"bad Redis URL {_without_password(url)!r}: {e}") from None
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    password = unquote(parts.password) if parts.password else query.get("password")
    username = unquote(parts.username) if parts.username else None
    try:
        if parts.scheme == "unix":
            if parts.hostname or not parts.path:
                raise ValueError("a unix:// Redis URL is unix:///absolute/path.sock")
            return RedisAddress(
                path=parts.path, db=int(query.get("db", 0)), password=password, username=username
            )
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(
                "a Redis URL starts with redis://, rediss://, unix://, redis+sentinel:// "
                "or redis+cluster://"
            )
        db = parts.path.strip("/") or query.get("db", "0")
        return RedisAddress(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(db),
            password=password,
            username=username,
            tls=parts.scheme == "rediss",
            ca_certs=query.get("ssl_ca_certs"),
        )
    except ValueError as e:
        raise ValueError(f"bad Redis URL {url!r}: {e}") from None


def _parse_sentinel_url(url: str) -> RedisAddress:
    query, username, password, hosts, path = _split_many(url, "redis+sentinel://")
    sentinels = _host_list(hosts, SENTINEL_PORT, "Sentinel")
    name, _, db = path.strip("/").partition("/")
    if not name:
        raise ValueError("a redis+sentinel:// URL ends with /<master-name>[/db]")
    return RedisAddress(
        db=int(db or query.get("db", "0")),
        password=password,
        username=username,
        sentinels=sentinels,
        master_name=unquote(name),
        sentinel_password=query.get("sentinel_password"),
    )


def _parse_cluster_url(url: str) -> RedisAddress:
    query, username, password, hosts, path = _split_many(url, "redis+cluster://")
    nodes = _host_list(hosts, PORT, "cluster node")
    db = path.strip("/") or query.get("db", "0")
    if db != "0":
        raise ValueError(
            f"a Redis Cluster has database 0 only, not {db!r}: end the URL with /0 or nothing"
        )
    return RedisAddress(
        host=nodes[0][0],
        port=nodes[0][1],
        password=password,
        username=username,
        cluster_nodes=nodes,
    )


def _split_many(url: str, scheme: str):
    """A URL naming several hosts (urlsplit reads one only): its query,
    user name, password, hosts text and path."""
    rest = url[len(scheme) :]
    rest, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    return query, username, password, hosts, path


def _host_list(hosts: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    """``host[:port],host[:port]…`` (``[::1]:port`` for IPv6)."""
    found = []
    for item in hosts.split(","):
        if not item:
            raise ValueError(f"name at least one {what}, host:port")
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, str(default_port)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a {what} is host:port, not {item!r}")
        found.append((host, int(port)))
    return tuple(found)


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    head, at, tail = rest.rpartition("@")
    return f"{scheme}://***@{tail}" if at else url
