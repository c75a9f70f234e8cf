"""Redis Cluster, over txredisapi (which has none).

The one place torque talks cluster.  A :class:`ClusterConnection` looks like
the txredisapi pool the store already uses (``eval``, ``ping``,
``disconnect``) but sends each script to the primary that owns the slot of
its keys, and follows the cluster when that changes:

- the slot map comes from ``CLUSTER SLOTS``, asked of any node it knows;
- ``MOVED``: the slot has a new owner for good: patch the map, send it
  there (and reload the whole map every :data:`RELOAD_EVERY` moves);
- ``ASK``: the slot is migrating and this key is already on the target:
  ``ASKING`` then the command, once, on one connection to the target; the
  map is left as it is;
- ``TRYAGAIN`` (a multi-key script during a migration) and ``CLUSTERDOWN``
  (a failover under way): wait a little and try again;
- a primary that can't be reached: reload the map (a replica may have
  taken over) and try again;
- at most :data:`MAX_REDIRECTS` of these per command, then the error.

Wake-ups go through sharded pub/sub: :mod:`torque.cluster_wake`.

Every key a script touches is in its ``KEYS``, and they must share a slot
(torque's keys for one queue carry its hash tag ``{queue}``):
:func:`command_slot` refuses keys in two slots before anything is sent.
It opens no connection itself: ``connect(address)`` opens one txredisapi
pool per primary (:func:`torque.connection.connect_pool`), so the unit
tests hand it fakes that answer on a ``Clock``.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import txredisapi
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from torque.connection import known_down
from torque.redis_url import RedisAddress

log = Logger()

SLOTS = 16384
# Redirections and retries one command may go through (redis-py and
# go-redis stop at 16 too).
MAX_REDIRECTS = 16
# Moves after which the whole map is reloaded rather than patched.
RELOAD_EVERY = 16
# Seconds to wait before trying again after TRYAGAIN, and after CLUSTERDOWN
# or an unreachable primary.
TRYAGAIN_DELAY = 0.05
DOWN_DELAY = 0.25
# Seconds one node has to answer for the slot map before the next is asked
# (a node just killed may not be known to be down yet).
MAP_TIMEOUT = 2.0

_REDIRECT = re.compile(r"^(MOVED|ASK) (\d+) (\S+):(\d+)")


class CrossSlot(ValueError):
    """A command's keys are in more than one hash slot."""


class ClusterUnavailable(ConnectionError):
    """No node answered for the slot map, or a command ran out of
    redirections: the cluster can't serve this now."""


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


@attrs.frozen
class Redirect:
    """What a ``MOVED`` or ``ASK`` error says: where ``slot`` is now."""

    kind: str
    slot: int
    host: str
    port: int

    @classmethod
    def parse(cls, message: str) -> Redirect | None:
        match = _REDIRECT.match(message)
        if match is None:
            return None
        kind, slot, host, port = match.groups()
        return cls(kind, int(slot), host, int(port))


class SlotMap:
    """Which primary owns each of the 16384 slots (``None``: no one)."""

    def __init__(self, ranges: Sequence[tuple[int, int, tuple[str, int]]] = ()):
        self._owners: list[tuple[str, int] | None] = [None] * SLOTS
        for first, last, node in ranges:
            self._owners[first : last + 1] = [node] * (last + 1 - first)

    @classmethod
    def from_cluster_slots(cls, reply: Sequence[Sequence[Any]]) -> SlotMap:
        """Read ``CLUSTER SLOTS``: ``[first, last, [host, port, id], replicas…]``."""
        return cls([(int(r[0]), int(r[1]), (_text(r[2][0]), int(r[2][1]))) for r in reply])

    def owner(self, slot: int) -> tuple[str, int] | None:
        return self._owners[slot]

    def move(self, slot: int, node: tuple[str, int]) -> None:
        self._owners[slot] = node

    @property
    def primaries(self) -> set[tuple[str, int]]:
        return {node for node in self._owners if node is not None}

    @property
    def covered(self) -> bool:
        return None not in self._owners


class ClusterConnection:
    """A Redis Cluster seen as one connection: see the module's docstring.

    :param seeds: nodes to ask for the slot map at first (any of the
        cluster's; the map then names the rest).  Their password, user name
        and TLS settings are used for every node.
    :param connect: opens a pool to one node: ``connect(address)``.
    :param clock: for the waits between tries.
    """

    def __init__(
        self,
        seeds: Sequence[RedisAddress],
        connect: Callable[[RedisAddress], Any],
        clock: IReactorTime,
        max_redirects: int = MAX_REDIRECTS,
    ):
        if not seeds:
            raise ValueError("a cluster needs at least one node to start from")
        self.seeds = list(seeds)
        self.connect = connect
        self.clock = clock
        self.max_redirects = max_redirects
        self.map: SlotMap | None = None
        self._pools: dict[tuple[str, int], Any] = {}
        self._waiting: list[defer.Deferred] = []  # for the reload under way
        self._moves = 0

    # -- what the store calls ------------------------------------------------

    def eval(self, script: str, keys: Sequence[str] = (), args: Sequence = ()):
        """``EVAL`` on the primary that owns ``keys``' one slot."""
        keys, args = list(keys), list(args)
        return self.execute(command_slot(keys), lambda redis: redis.eval(script, keys, args))

    def ping(self) -> defer.Deferred:
        """``PING`` every primary: the cluster answers only if all do."""
        d = self._ready()
        d.addCallback(
            lambda _: defer.gatherResults(
                [self._ping(node) for node in sorted(self.map.primaries)], consumeErrors=True
            )
        )
        d.addErrback(_first_error)
        return d.addCallback(lambda _: "PONG")

    def _ping(self, node: tuple[str, int]) -> defer.Deferred:
        pool = self._pool(node)
        if known_down(pool):
            return defer.fail(ConnectionError(f"{node[0]}:{node[1]} is unreachable"))
        return pool.ping()

    def disconnect(self) -> defer.Deferred:
        pools, self._pools = list(self._pools.values()), {}
        return defer.gatherResults([pool.disconnect() for pool in pools], consumeErrors=True)

    # -- routing ---------------------------------------------------------------

    def node_for(self, slot: int | None) -> tuple[str, int] | None:
        """The primary that owns ``slot`` in the current map (any primary
        for ``None``)."""
        if slot is None:
            return min(self.map.primaries, default=None)
        return self.map.owner(slot)

    @defer.inlineCallbacks
    def execute(self, slot: int | None, command: Callable[[Any], defer.Deferred]):
        """Run ``command(pool)`` against the owner of ``slot``, following
        redirections; a Deferred with its result."""
        asking = None
        last = None
        for _ in range(self.max_redirects + 1):
            yield self._ready()
            node = asking or self.node_for(slot)
            if node is None:
                last = ClusterUnavailable(f"no primary serves slot {slot}")
                yield self._pause(DOWN_DELAY)
                yield self.reload()
                continue
            pool = self._pool(node)
            try:
                if known_down(pool):
                    raise ConnectionError(f"{node[0]}:{node[1]} is unreachable")
                if asking:
                    asking = None
                    result = yield self._asking(pool, command)
                else:
                    result = yield command(pool)
                return result
            except Exception as e:
                last = e
                if _unreachable(e):
                    # Its pool keeps reconnecting; the new map may name
                    # another primary (a replica that took over).
                    yield self._pause(DOWN_DELAY)
                    yield self.reload()
                    continue
                message = str(e)
                redirect = Redirect.parse(message)
                if redirect is None and not message.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                    raise
                if redirect and redirect.kind == "MOVED":
                    self._moved(redirect)
                elif redirect:
                    asking = (redirect.host, redirect.port)
                elif message.startswith("TRYAGAIN"):
                    yield self._pause(TRYAGAIN_DELAY)
                else:
                    yield self._pause(DOWN_DELAY)
                    yield self.reload()
        raise ClusterUnavailable(f"gave up after {self.max_redirects} redirections: {last}")

    def reload(self) -> defer.Deferred:
        """Ask the nodes for the slot map again; a Deferred with the map.
        One request at a time: callers during a reload share its answer."""
        waiting = defer.Deferred()
        self._waiting.append(waiting)
        if len(self._waiting) == 1:
            self._load().addBoth(self._loaded)
        return waiting

    # -- inside ------------------------------------------------------------------

    def _ready(self) -> defer.Deferred:
        return defer.succeed(None) if self.map is not None else self.reload()

    @defer.inlineCallbacks
    def _load(self):
        candidates = [(s.host, s.port) for s in self.seeds]
        if self.map is not None:
            candidates = sorted(self.map.primaries) + candidates
        tried = []
        for node in dict.fromkeys(candidates):
            if known_down(self._pool(node)):
                tried.append(f"{node[0]}:{node[1]} (unreachable)")
                continue
            try:
                asked = self._pool(node).execute_command("CLUSTER", "SLOTS")
                reply = yield asked.addTimeout(MAP_TIMEOUT, self.clock)
            except Exception as e:
                tried.append(f"{node[0]}:{node[1]} ({e})")
                continue
            self.map = SlotMap.from_cluster_slots(reply)
            self._moves = 0
            return self.map
        raise ClusterUnavailable("no cluster node answered: " + ", ".join(tried))

    def _loaded(self, result) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(result) if isinstance(result, Failure) else d.callback(result)

    def _moved(self, redirect: Redirect) -> None:
        self.map.move(redirect.slot, (redirect.host, redirect.port))
        self._moves += 1
        if self._moves >= RELOAD_EVERY:
            self.reload().addErrback(lambda f: log.warn("cluster map: {e}", e=f.value))

    @defer.inlineCallbacks
    def _asking(self, pool, command):
        """``ASKING`` and ``command`` back to back on one connection of
        ``pool``, taken from it meanwhile (txredisapi's pool would spread
        them over two)."""
        factory = pool._factory
        connection = yield factory.getConnection()
        try:
            asking = connection.execute_command("ASKING")
            result = command(connection)
            yield asking
            return (yield result)
        finally:
            factory.connectionQueue.put(connection)

    def _pool(self, node: tuple[str, int]):
        pool = self._pools.get(node)
        if pool is None:
            host, port = node
            pool = self._pools[node] = self.connect(
                attrs.evolve(self.seeds[0], host=host, port=port)
            )
        return pool

    def _pause(self, seconds: float) -> defer.Deferred:
        return task.deferLater(self.clock, seconds, lambda: None)


def _unreachable(error: Exception) -> bool:
    """A connection error (txredisapi's or the system's), but not our own
    verdict that the whole cluster is unavailable."""
    return isinstance(error, ConnectionError | txredisapi.ConnectionError) and not isinstance(
        error, ClusterUnavailable
    )


def _first_error(failure):
    if failure.check(defer.FirstError):
        return failure.value.subFailure
    return failure


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
