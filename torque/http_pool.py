"""The pool of kept-alive connections that deliveries go out on.

twisted.web's ``HTTPConnectionPool``, with two things changed that a busy
node paid for on every delivery:

* its connections' factories are quiet (no two log lines per connection);
* a connection put back in the pool is timed out by one timer for the whole
  pool, not by a ``DelayedCall`` of its own: twisted.web arms one each time
  a connection comes back and cancels it each time it is taken again, two
  operations on the reactor's heap of timed calls per request.  Here a
  connection put back notes when; one timer, armed for when the oldest idle
  connection is due to go, closes those idle for ``cachedConnectionTimeout``
  and is armed again for the next.
"""

from __future__ import annotations

from twisted.web.client import HTTPConnectionPool

# Idle connections closed up to this much before their time: the timer's
# float arithmetic must not leave one open until the next timer.
_SLACK = 1e-6
# Seconds a connection stays idle in the pool: below the idle timeout of most
# servers, so a reused connection is rarely one the server is closing (a
# POST on it would fail).
IDLE_TIMEOUT = 30


class _QuietClientFactory(HTTPConnectionPool._factory):
    noisy = False


class _Idle:
    """Stands for the ``DelayedCall`` twisted.web's pool keeps per idle
    connection: when the connection went idle.  The pool cancels it when it
    takes the connection again; the sweep then no longer sees it."""

    __slots__ = ("since",)

    def __init__(self, since: float):
        self.since = since

    def cancel(self) -> None:
        """Nothing to cancel: the connection leaves ``_timeouts`` with it."""


class QuietConnectionPool(HTTPConnectionPool):
    """Twisted's connection pool, quiet, with one idle timer.

    The pool gives every new connection a factory of its own, and a Twisted
    factory logs ``Starting factory …`` and ``Stopping factory …`` unless it
    is quiet: two lines per delivery to a handler that closes its
    connections, where a delivery should log nothing (and a failed attempt
    one event).
    """

    _factory = _QuietClientFactory

    def __init__(self, reactor, persistent: bool = True):
        super().__init__(reactor, persistent)
        self._sweep = None  # the one idle timer, while a connection is idle

    def _putConnection(self, key, connection) -> None:
        if connection.state != "QUIESCENT":
            super()._putConnection(key, connection)  # logs the bug, keeps nothing
            return
        connections = self._connections.setdefault(key, [])
        if len(connections) == self.maxPersistentPerHost:
            dropped = connections.pop(0)
            dropped.transport.loseConnection()
            del self._timeouts[dropped]
        connections.append(connection)
        self._timeouts[connection] = _Idle(self._reactor.seconds())
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self.cachedConnectionTimeout, self._close_idle)

    def _close_idle(self) -> None:
        """Close the connections idle for ``cachedConnectionTimeout``, and
        arm the timer for the next to be."""
        self._sweep = None
        now = self._reactor.seconds()
        timeout = self.cachedConnectionTimeout
        next_at = None
        for key, connections in list(self._connections.items()):
            for connection in list(connections):
                due_at = self._timeouts[connection].since + timeout
                if due_at <= now + _SLACK:
                    self._removeConnection(key, connection)
                elif next_at is None or due_at < next_at:
                    next_at = due_at
        if next_at is not None:
            self._sweep = self._reactor.callLater(next_at - now, self._close_idle)

    def closeCachedConnections(self):
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        return super().closeCachedConnections()


def delivery_pool(reactor, concurrency: int, host_concurrency: int) -> QuietConnectionPool:
    """The node's pool for deliveries.

    It keeps as many idle connections per host as may be in flight to one
    host: ``--host-concurrency`` bounds that across every queue of the node,
    ``--concurrency`` within one queue.  (Kept to ``--concurrency`` alone, a
    node delivering many queues to one host closed and opened a connection
    for most deliveries.)  The pool never holds more than were in use at
    once, and closes them after :data:`IDLE_TIMEOUT` idle seconds.
    """
    pool = QuietConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max(concurrency, host_concurrency)
    pool.cachedConnectionTimeout = IDLE_TIMEOUT
    return pool
