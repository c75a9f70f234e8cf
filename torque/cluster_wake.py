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

# Seconds between tries to subscribe while the cluster can't be reached.
RETRY = 1.0


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

    def __init__(
        self, address: RedisAddress, on_message: Callable, moved: Callable, lost: Callable
    ):
        super().__init__(address, [], on_message)
        self.moved = moved
        self.lost = lost
        self.sharded: list[str] = []

    def add(self, channel: str) -> defer.Deferred:
        self.sharded.append(channel)
        live = [conn for conn in self.pool if conn.connected]
        return self._subscribe(live[0], channel) if live else defer.succeed(None)

    def drop(self, channel: str) -> None:
        """Forget ``channel`` (its slot is elsewhere now)."""
        if channel in self.sharded:
            self.sharded.remove(channel)

    def retryDelay(self, attempt):
        # The connection failed or was lost: the node may be gone for good,
        # its slots taken over by a replica.
        self.lost(self)
        return super().retryDelay(attempt)

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
    then subscribed again where the reloaded map puts it.  A primary whose
    connection fails makes it reload the map: when a replica has taken
    over, the channels go there.

    :param reactor: connects the subscribers, and times the tries again
        while the cluster can't be reached.
    """

    def __init__(self, cluster: ClusterConnection, reactor, on_message: Callable):
        self.cluster = cluster
        self.reactor = reactor
        self.on_message = on_message
        # channel -> the node it is on (None: being subscribed)
        self.channels: dict[str, tuple[str, int] | None] = {}
        self._nodes: dict[tuple[str, int], Any] = {}  # node -> its subscriber
        self._checking = False
        self._stopped = False

    @defer.inlineCallbacks
    def subscribe(self, channel: str):
        """Subscribe to ``channel`` on its slot's primary (once)."""
        if channel in self.channels:
            return
        self.channels[channel] = None  # on its way: subscribed once
        if self.cluster.map is None:
            try:
                yield self.cluster.reload()
            except Exception:
                del self.channels[channel]
                raise
        node = self.cluster.node_for(key_slot(channel))
        self.channels[channel] = node
        yield self._on(node).add(channel)

    def listen(self, channel: str) -> None:
        """Subscribe to ``channel``, trying again every :data:`RETRY`
        seconds while the cluster can't be reached (a node started while
        its cluster is down still gets its wake-ups when it is back)."""

        def again(failure):
            if not self._stopped:
                log.warn("wake channel {c}: {e}; trying again", c=channel, e=failure.value)
                self.reactor.callLater(RETRY, self.listen, channel)

        self.subscribe(channel).addErrback(again)

    def moved(self, channel: str) -> defer.Deferred:
        """Redis unsubscribed ``channel``: subscribe it where it lives now."""
        self.channels.pop(channel, None)
        d = self.cluster.reload()
        d.addCallback(lambda _: self.subscribe(channel))
        return d.addErrback(lambda f: log.warn("wake channel {c}: {e}", c=channel, e=f.value))

    def lost(self, subscriber) -> None:
        """A primary's subscription connection failed: reload the map, and
        move the channels whose slot another primary owns now."""
        if self._checking or self._stopped:
            return
        self._checking = True
        d = self.cluster.reload()
        d.addCallback(lambda _: self._rehome())
        d.addErrback(lambda f: log.debug("wake channels: {e}", e=f.value))
        d.addBoth(lambda _: setattr(self, "_checking", False))

    def _rehome(self) -> None:
        for channel, node in list(self.channels.items()):
            owner = self.cluster.node_for(key_slot(channel))
            if node is not None and owner is not None and owner != node:
                self._nodes[node].drop(channel)
                del self.channels[channel]
                self.listen(channel)
        for node, subscriber in list(self._nodes.items()):
            if not subscriber.sharded:  # nothing left there: stop reconnecting
                del self._nodes[node]
                subscriber.disconnect()

    def disconnect(self) -> defer.Deferred:
        self._stopped = True
        nodes, self._nodes = list(self._nodes.values()), {}
        return defer.gatherResults([node.disconnect() for node in nodes], consumeErrors=True)

    def _on(self, node: tuple[str, int]):
        factory = self._nodes.get(node)
        if factory is None:
            address = attrs.evolve(self.cluster.seeds[0], host=node[0], port=node[1])
            factory = _NodeSubscriber(address, self.on_message, self.moved, self.lost)
            factory.start(self.reactor)
            self._nodes[node] = factory
        return factory
