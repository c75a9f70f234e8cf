"""Unit tests of :mod:`torque.http_pool`: idle connections are closed on
time by one timer, and the pool is otherwise twisted.web's."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from torque.http_pool import IDLE_TIMEOUT, QuietConnectionPool, delivery_pool

KEY = (b"http", b"app.test", 80)
IDLE = 30.0


class _Transport:
    def __init__(self):
        self.closed = False

    def loseConnection(self):
        self.closed = True


class _Connection:
    """Stands for an ``HTTP11ClientProtocol`` the pool keeps."""

    def __init__(self, state="QUIESCENT"):
        self.state = state
        self.transport = _Transport()
        self.aborted = False

    def abort(self):
        self.aborted = True
        return defer.succeed(None)


class IdleTimeoutTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.pool = QuietConnectionPool(self.clock)
        self.pool.cachedConnectionTimeout = IDLE
        self.pool.maxPersistentPerHost = 100

    def put(self, connection=None):
        connection = connection or _Connection()
        self.pool._putConnection(KEY, connection)
        return connection

    def take(self):
        """The connection ``getConnection`` gives without connecting."""
        taken = self.successResultOf(self.pool.getConnection(KEY, endpoint=None))
        return taken._clientProtocol  # unwrapped from the retrying wrapper

    def test_an_idle_connection_is_closed_after_the_timeout_not_before(self):
        connection = self.put()
        self.clock.advance(IDLE - 0.001)
        self.assertFalse(connection.transport.closed)
        self.clock.advance(0.001)
        self.assertTrue(connection.transport.closed)
        self.assertEqual(self.pool._connections[KEY], [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_connection_used_again_is_idle_from_when_it_came_back(self):
        connection = self.put()
        self.clock.advance(20)
        self.assertIs(self.take(), connection)
        self.clock.advance(5)
        self.put(connection)  # at t=25
        self.clock.advance(IDLE - 25 + 24.9)  # t=54.9
        self.assertFalse(connection.transport.closed)
        self.clock.advance(0.1)  # t=55
        self.assertTrue(connection.transport.closed)

    def test_each_is_closed_at_its_own_time(self):
        first = self.put()
        self.clock.advance(10)
        second = self.put()
        self.clock.advance(IDLE - 10)
        self.assertEqual((first.transport.closed, second.transport.closed), (True, False))
        self.clock.advance(10)
        self.assertTrue(second.transport.closed)

    def test_one_timer_however_many_connections_come_and_go(self):
        connections = [self.put() for _ in range(64)]
        for _ in range(3):
            taken = [self.take() for _ in connections]
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            for connection in taken:
                self.put(connection)
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_no_timer_while_no_connection_is_idle(self):
        connection = self.put()
        self.take()
        self.clock.advance(IDLE)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(connection.transport.closed)
        self.put(connection)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_closing_the_pool_stops_the_timer(self):
        connection = self.put()
        self.successResultOf(self.pool.closeCachedConnections())
        self.assertTrue(connection.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_past_max_persistent_per_host_the_oldest_is_closed(self):
        self.pool.maxPersistentPerHost = 2
        first, second, third = self.put(), self.put(), self.put()
        self.assertEqual([c.transport.closed for c in (first, second, third)], [True, False, False])
        self.assertEqual(self.pool._connections[KEY], [second, third])
        self.assertNotIn(first, self.pool._timeouts)
        self.clock.advance(IDLE)
        self.assertEqual(self.pool._connections[KEY], [])

    def test_a_connection_that_is_not_quiescent_is_not_kept(self):
        self.put(_Connection(state="WAITING"))
        self.assertEqual(self.pool._connections.get(KEY, []), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # twisted.web's "BUG"


class DeliveryPoolTests(unittest.TestCase):
    def test_it_keeps_as_many_connections_per_host_as_may_be_in_flight_to_one(self):
        # Many queues of --concurrency 6 share one host's cap of 64: the
        # pool must keep 64, or most deliveries open a new connection.
        self.assertEqual(delivery_pool(Clock(), 6, 64).maxPersistentPerHost, 64)
        self.assertEqual(delivery_pool(Clock(), 100, 10).maxPersistentPerHost, 100)

    def test_a_connection_beyond_them_is_closed_when_it_comes_back(self):
        pool = delivery_pool(Clock(), 1, 2)
        kept = [_Connection() for _ in range(3)]
        for connection in kept:
            pool._putConnection(KEY, connection)
        self.assertEqual([c.transport.closed for c in kept], [True, False, False])
        self.assertEqual(pool.cachedConnectionTimeout, IDLE_TIMEOUT)
