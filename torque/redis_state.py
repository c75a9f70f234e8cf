"""What a connection to Redis knows of Redis's state, asked without I/O
(and without txredisapi, so without the global reactor: the replica gate and
the store's callers may ask)."""

from __future__ import annotations


def is_cluster(redis) -> bool:
    """Whether ``redis`` is a :class:`torque.cluster.ClusterConnection`
    (asked of its class: a txredisapi handler answers every attribute)."""
    return getattr(type(redis), "is_cluster", False)


def known_down(redis) -> bool:
    """Whether ``redis`` (a handler from :func:`connect_pool`) knows that it
    has no connection: none is alive and the last attempt to make one failed
    (or the last one was lost).  Before its first attempt ends, and while
    Redis is connected but silent, a pool doesn't know: only a timeout
    tells."""
    return down_reason(redis) is not None


def down_reason(redis) -> str | None:
    """Why ``redis`` has no connection, when it knows it has none
    (:func:`known_down`); ``None`` otherwise.  A Redis Cluster
    (:class:`torque.cluster.ClusterConnection`) says for itself."""
    if is_cluster(redis):
        return redis.down_reason()
    factory = getattr(redis, "_factory", None)
    if not getattr(factory, "down", False):
        return None
    return getattr(factory, "why", None) or "Redis is unreachable: no connection"
