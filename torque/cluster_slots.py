"""Where a command goes on a Redis Cluster: the hash slot of its keys
(:func:`key_slot`, :func:`command_slot`, :func:`command_keys`) and the
primary that owns each slot (:class:`SlotMap`).  Pure: the connection that
uses them is :mod:`torque.cluster`.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import Any

SLOTS = 16384

# Commands with no key: any primary answers them.
KEYLESS = frozenset(
    {"PING", "ECHO", "INFO", "TIME", "WAIT", "SCRIPT", "CLUSTER", "CLIENT", "CONFIG", "COMMAND"}
    | {"PUBLISH", "ASKING", "READONLY", "HELLO", "AUTH", "ROLE", "LASTSAVE", "MEMORY"}
)
# Commands whose every argument is a key.
ALL_KEYS = frozenset({"DEL", "UNLINK", "EXISTS", "TOUCH", "MGET", "WATCH"})
# Commands that name their keys' count first (after the script or function).
COUNTED_KEYS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
# Commands about one node's whole keyspace: on a cluster each node has only
# its slots' share, so no one node's answer is the answer.
NODE_WIDE = frozenset({"KEYS", "SCAN", "RANDOMKEY", "DBSIZE", "FLUSHDB", "FLUSHALL"})
# txredisapi's helpers whose first argument is their key (or keys), which
# ClusterConnection sends where it is.
KEYED_METHODS = frozenset(
    {"get", "set", "delete", "exists", "ttl", "pttl", "expire", "type"}
    | {"hget", "hgetall", "hset", "hsetnx", "hdel", "hincrby", "hmset"}
    | {"lrange", "llen", "smembers", "sadd", "srem"}
    | {"zadd", "zrem", "zcard", "zscore", "zrange", "zrangebyscore"}
)


class CrossSlot(ValueError):
    """A command's keys are in more than one hash slot."""


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key``: CRC16 (XMODEM) of its hash tag, the part
    between the first ``{`` and the next ``}`` when that isn't empty, or of
    the whole key, modulo 16384 (the Redis Cluster specification)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


def command_slot(keys: Sequence[str]) -> int | None:
    """The one slot of ``keys`` (``None`` without keys: any node will do).

    :raises CrossSlot: when they name two slots, as Redis would (after a
        round trip) with ``CROSSSLOT``.
    """
    slots = {key_slot(key) for key in keys}
    if len(slots) > 1:
        raise CrossSlot(f"keys in {len(slots)} hash slots: {', '.join(keys)}")
    return slots.pop() if slots else None


class SlotMap:
    """Which primary owns each of the 16384 slots (``None``: no one)."""

    def __init__(self, ranges: Sequence[tuple[int, int, tuple[str, int]]] = ()):
        self._owners: list[tuple[str, int] | None] = [None] * SLOTS
        for first, last, node in ranges:
            self._owners[first : last + 1] = [node] * (last + 1 - first)
        self._primaries: frozenset | None = None  # asked on every store call: kept

    @classmethod
    def from_cluster_slots(cls, reply: Sequence[Sequence[Any]]) -> SlotMap:
        """Read ``CLUSTER SLOTS``: ``[first, last, [host, port, id], replicas…]``."""
        return cls([(int(r[0]), int(r[1]), (_text(r[2][0]), int(r[2][1]))) for r in reply])

    def owner(self, slot: int) -> tuple[str, int] | None:
        return self._owners[slot]

    def move(self, slot: int, node: tuple[str, int]) -> None:
        self._owners[slot] = node
        self._primaries = None

    @property
    def primaries(self) -> frozenset[tuple[str, int]]:
        if self._primaries is None:
            self._primaries = frozenset(node for node in self._owners if node is not None)
        return self._primaries

    @property
    def covered(self) -> bool:
        return None not in self._owners


def command_keys(args: Sequence[Any]) -> list:
    """The keys of the command ``args`` (its name first), which route it:
    none for a keyless command, ``KEYS`` of a script, every argument of
    ``DEL`` and its kind, else the first argument (``GET k``, ``HSET k …``,
    ``SPUBLISH channel …``).

    :raises ValueError: for a command about one node's whole keyspace.
    """
    name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
    if name in NODE_WIDE:
        raise ValueError(f"{name} can't be sent to a Redis Cluster as to one Redis")
    if name in KEYLESS or len(args) < 2:
        return []
    if name in COUNTED_KEYS:
        return list(args[3 : 3 + int(args[2])])
    if name in ALL_KEYS:
        return list(args[1:])
    return [args[1]]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
