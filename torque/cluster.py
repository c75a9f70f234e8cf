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

import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import txredisapi
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from torque.cluster_slots import KEYED_METHODS, SlotMap, command_keys, command_slot
from torque.cluster_slots import CrossSlot as CrossSlot  # where it was first
from torque.cluster_slots import key_slot as key_slot  # where it was first
from torque.redis_state import known_down
from torque.redis_url import RedisAddress

log = Logger()

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


class ClusterUnavailable(ConnectionError):
    """No node answered for the slot map, or a command ran out of
    redirections: the cluster can't serve this now."""


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

    #: Read on the class (txredisapi's handler answers any attribute):
    #: scripts publish with SPUBLISH here (:func:`torque.scripts.sharded`),
    #: and :meth:`down_reason` says when it is down.
    is_cluster = True

    def eval(self, script: str, keys: Sequence[str] = (), args: Sequence = ()):
        """``EVAL`` on the primary that owns ``keys``' one slot."""
        keys, args = list(keys), list(args)
        return self.execute(command_slot(keys), lambda redis: redis.eval(script, keys, args))

    def execute_command(self, *args, **kwargs) -> defer.Deferred:
        """Any command, sent where its keys are (:func:`command_keys`)."""
        slot = command_slot(command_keys(args))
        return self.execute(slot, lambda redis: redis.execute_command(*args, **kwargs))

    def __getattr__(self, method: str):
        """txredisapi's helpers whose first argument is the key (``get``,
        ``hgetall``, ``hset``, …), sent where that key is."""
        if method not in KEYED_METHODS:
            raise AttributeError(method)

        def call(key, *args, **kwargs):
            slot = command_slot([key] if isinstance(key, str | bytes) else key)
            return self.execute(slot, lambda redis: getattr(redis, method)(key, *args, **kwargs))

        return call

    def pipeline(self) -> defer.Deferred:
        """Commands sent together on one connection of one primary (that of
        their keys' one slot), as txredisapi's ``pipeline()``: ``WAIT`` after
        a script counts that script's writes."""
        return defer.succeed(ClusterPipeline(self))

    @defer.inlineCallbacks
    def ping(self):
        """``PING`` every primary: the cluster answers only if all do, and
        every slot has a primary."""
        yield self._ready()
        if any(known_down(self._pool(node)) for node in self.map.primaries):
            yield self.reload()  # a replica may have taken over
        if not self.map.covered:
            raise ClusterUnavailable("some hash slots have no primary: the cluster is down")
        pings = [self._ping(node) for node in sorted(self.map.primaries)]
        try:
            yield defer.gatherResults(pings, consumeErrors=True)
        except defer.FirstError as e:
            e.subFailure.raiseException()
        return "PONG"

    def _ping(self, node: tuple[str, int]) -> defer.Deferred:
        pool = self._pool(node)
        if known_down(pool):
            return defer.fail(ConnectionError(f"{node[0]}:{node[1]} is unreachable"))
        return pool.ping()

    def down_reason(self) -> str | None:
        """Why no command can succeed now, when that is known without
        asking (:func:`torque.redis_state.down_reason`): every node known is
        unreachable.  With some primaries up, each command learns about its
        own (:meth:`execute`)."""
        # Asked before every store call: cheap while any node is up.
        if self.map is None:
            nodes = [(s.host, s.port) for s in self.seeds]
        else:
            nodes = self.map.primaries
        for node in nodes:
            pool = self._pools.get(node)
            if pool is None or not known_down(pool):
                return None
        if not nodes:
            return None
        names = ", ".join(f"{host}:{port}" for host, port in sorted(nodes))
        return f"Redis Cluster unreachable: no connection to {names}"

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
        reloaded = False
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
                    if reloaded:
                        # Still its slot's primary in a fresh map: fail now,
                        # as one Redis known down does, not after every try.
                        raise ClusterUnavailable(
                            f"{node[0]}:{node[1]}, the primary of hash slot {slot}, is "
                            "unreachable (until its replica takes over)"
                        )
                    raise ConnectionError(f"{node[0]}:{node[1]} is unreachable")
                if asking:
                    asking = None
                    ask = getattr(command, "asking", None)
                    result = yield (ask(pool) if ask else self._asking(pool, command))
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
                    reloaded = True
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


class ClusterPipeline:
    """What :meth:`ClusterConnection.pipeline` gives: commands recorded,
    then sent together on one connection of the primary of their one slot
    by :meth:`execute_pipeline`, again elsewhere when that primary sends
    them on (``MOVED``, ``ASK``: ``ASKING`` first, in the same pipeline)."""

    def __init__(self, cluster: ClusterConnection):
        self.cluster = cluster
        self.commands: list[tuple] = []

    def execute_command(self, *args) -> None:
        self.commands.append(args)

    def execute_pipeline(self) -> defer.Deferred:
        """A Deferred with the replies in order; failing with
        ``defer.FirstError`` as txredisapi's does when a command fails."""
        keys = [key for args in self.commands for key in command_keys(args)]
        return self.cluster.execute(command_slot(keys), self)

    def __call__(self, pool) -> defer.Deferred:
        return self._send(pool, self.commands)

    def asking(self, pool) -> defer.Deferred:
        d = self._send(pool, [("ASKING",), *self.commands])
        return d.addCallback(lambda replies: replies[1:])

    @defer.inlineCallbacks
    def _send(self, pool, commands):
        pipe = yield pool.pipeline()
        for args in commands:
            pipe.execute_command(*args)
        try:
            return (yield pipe.execute_pipeline())
        except defer.FirstError as e:
            error = e.subFailure.value
            message = str(error)
            if (
                _unreachable(error)
                or Redirect.parse(message)
                or message.startswith(("TRYAGAIN", "CLUSTERDOWN"))
            ):
                raise error from None  # for ClusterConnection.execute to follow
            raise


def _unreachable(error: Exception) -> bool:
    """A connection error (txredisapi's or the system's), but not our own
    verdict that the whole cluster is unavailable."""
    return isinstance(error, ConnectionError | txredisapi.ConnectionError) and not isinstance(
        error, ClusterUnavailable
    )
