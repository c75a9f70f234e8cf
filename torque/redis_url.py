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

    def __str__(self) -> str:
        """The address without its password, for logs."""
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """Read ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…``
    (``?ssl_ca_certs=/path/ca.pem`` to trust a private CA) or
    ``unix:///path/redis.sock[?db=N][&password=…]``.

    :raises ValueError: with a message fit for a usage error.
    """
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
