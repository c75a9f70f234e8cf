"""Wake-ups on a Redis Cluster: sharded pub/sub (``SSUBSCRIBE``), each
channel on the primary that owns its slot, following the slot when it
moves.  The commands' side is :mod:`torque.cluster`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from torque.cluster import ClusterConnection
from torque.cluster_slots import key_slot
from torque.connection import WakeSubscriber
from torque.redis_url import RedisAddress

log = Logger()


class _ShardedProtocol(txredisapi.SubscriberProtocol):
    """txredisapi's subscriber protocol, which knows only ``message`` and
    ``pmessage``, taught sharded pub/sub: an ``smessage`` is a message, and
    an ``sunsubscribe`` that no command asked for is Redis saying that the
    channel's slot has moved away from this node."""

    _sub_unsub_reponses = txredisapi.SubscriberProtocol._sub_unsub_reponses | {
        "ssubscribe",
        "sunsubscribe",
    }

    def replyReceived(self, reply):
        kind = reply[0] if isinstance(reply, list) and len(reply) == 3 else None
        if kind == "smessage":
            self.factory.on_message(reply[1], reply[2])
        elif kind == "sunsubscribe" and not self.replyQueue.waiting:
            self.factory.moved(reply[1])
        else:
            super().replyReceived(reply)


class _NodeSubscriber(WakeSubscriber):
    """One primary's sharded subscriptions, subscribed again (one channel a
    command: a command's channels must share a slot) on every connection."""

    protocol = _ShardedProtocol

    def __init__(self, address: RedisAddress, on_message: Callable, moved: Callable):
        super().__init__(address, [], on_message)
        self.moved = moved
        self.sharded: list[str] = []

    def add(self, channel: str) -> defer.Deferred:
        self.sharded.append(channel)
        live = [conn for conn in self.pool if conn.connected]
        return self._subscribe(live[0], channel) if live else defer.succeed(None)

    def addConnection(self, conn):
        super().addConnection(conn)
        if conn.connected and not self.disconnectCalled:
            for channel in self.sharded:
                self._subscribe(conn, channel).addErrback(lambda _: None)

    def _subscribe(self, conn, channel: str) -> defer.Deferred:
        d = conn.execute_command("SSUBSCRIBE", channel, apply_timeout=False)
        return d.addCallback(lambda _: self.on_message(channel, None))


class ShardedSubscriber:
    """Listens on wake channels through sharded pub/sub (``SSUBSCRIBE``):
    each channel on the primary that owns its slot, one connection per
    primary; calls ``on_message(channel, message)`` for each message.

    As :class:`torque.connection.WakeSubscriber` does, every subscription
    (a new one, or again after a reconnection or a move) also calls
    ``on_message(channel, None)``: "look now", for what was published
    meanwhile.  A channel whose slot moves is unsubscribed by Redis; it is
    then subscribed again where the reloaded map puts it.

    :param reactor: connects the subscribers.
    """

    def __init__(self, cluster: ClusterConnection, reactor, on_message: Callable):
        self.cluster = cluster
        self.reactor = reactor
        self.on_message = on_message
        self.channels: dict[str, tuple[str, int]] = {}  # channel -> the node it is on
        self._nodes: dict[tuple[str, int], Any] = {}  # node -> its subscriber

    @defer.inlineCallbacks
    def subscribe(self, channel: str):
        """Subscribe to ``channel`` on its slot's primary."""
        if self.cluster.map is None:
            yield self.cluster.reload()
        node = self.cluster.node_for(key_slot(channel))
        self.channels[channel] = node
        yield self._on(node).add(channel)

    def moved(self, channel: str) -> defer.Deferred:
        """Redis unsubscribed ``channel``: subscribe it where it lives now."""
        self.channels.pop(channel, None)
        d = self.cluster.reload()
        d.addCallback(lambda _: self.subscribe(channel))
        return d.addErrback(lambda f: log.warn("wake channel {c}: {e}", c=channel, e=f.value))

    def stop(self) -> defer.Deferred:
        nodes, self._nodes = list(self._nodes.values()), {}
        return defer.gatherResults([node.disconnect() for node in nodes], consumeErrors=True)

    def _on(self, node: tuple[str, int]):
        factory = self._nodes.get(node)
        if factory is None:
            address = attrs.evolve(self.cluster.seeds[0], host=node[0], port=node[1])
            factory = _NodeSubscriber(address, self.on_message, self.moved)
            factory.start(self.reactor)
            self._nodes[node] = factory
        return factory
