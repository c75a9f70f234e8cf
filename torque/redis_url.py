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

    def __str__(self) -> str:
        """The address without its password, for logs."""
        if self.sentinels:
            return f"redis+sentinel://{self.sentinel_list}/{self.master_name}/{self.db}"
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"

    @property
    def sentinel_list(self) -> str:
        """The Sentinels, ``host:port,host:port``, for messages."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)


SENTINEL_PORT = 26379


def parse_redis_url(url: str) -> RedisAddress:
    """Read ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…``
    (``?ssl_ca_certs=/path/ca.pem`` to trust a private CA) or
    ``unix:///path/redis.sock[?db=N][&password=…]``, or
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/<master-name>[/db]``
    (Sentinels on port 26379 unless given; the password is the primary's,
    ``?sentinel_password=`` the Sentinels' own if they require one).

    :raises ValueError: with a message fit for a usage error.
    """
    if url.startswith("redis+sentinel://"):
        try:
            return _parse_sentinel_url(url)
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
            raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
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
    # urlsplit reads one host only: the Sentinels' list is split here.
    rest = url[len("redis+sentinel://") :]
    rest, _, query_text = rest.partition("?")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = []
    for item in hosts.split(","):
        if not item:
            raise ValueError("name at least one Sentinel, host:port")
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, str(SENTINEL_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Sentinel is host:port, not {item!r}")
        sentinels.append((host, int(port)))
    name, _, db = path.strip("/").partition("/")
    if not name:
        raise ValueError("a redis+sentinel:// URL ends with /<master-name>[/db]")
    return RedisAddress(
        db=int(db or query.get("db", "0")),
        password=password,
        username=username,
        sentinels=tuple(sentinels),
        master_name=unquote(name),
        sentinel_password=query.get("sentinel_password"),
    )


def _without_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"redis+sentinel://***@{tail}" if at else url
