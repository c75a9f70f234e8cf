"""The Python clients against a real node: ``twistd -n torque`` in a
subprocess, real Redis, a real receiver.

The blocking client runs in a thread (``deferToThread``) so that the reactor,
which serves the receiver, keeps running while it waits.
"""

from __future__ import annotations

import http.client
import os
import time
import uuid

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from tests.node import start_node, start_receiver, wait_for
from torque import client, txclient
from torque.client import Client, TaskRejected, TorqueUnavailable, add_task


def set_env(testcase: unittest.TestCase, name: str, value: str | None) -> None:
    """Set (or, with ``None``, unset) an environment variable for one test."""
    old = os.environ.get(name)
    testcase.addCleanup(_restore_env, name, old)
    _restore_env(name, value)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class NodeTestCase(unittest.TestCase):
    """A receiver, and a node whose relative task URLs point at it."""

    node_args: tuple[str, ...] = ()

    @inlineCallbacks
    def setUp(self):
        set_env(self, "TORQUE_API_TOKEN", None)
        self.receiver = start_receiver(self)
        self.node = yield start_node(self, "--base-task-url", self.receiver.url, *self.node_args)
        # The seed spellings take the node from the environment.
        set_env(self, "TORQUE_URL", self.node.url)

    def delivered(self, path: str) -> list:
        return [r for r in self.receiver.requests if r.path == path]

    @inlineCallbacks
    def assert_delivered(self, path: str, added: client.Added, form: dict[str, str]):
        """Wait for the one delivery of ``added`` to ``path`` and check it."""
        yield wait_for(lambda: self.delivered(path))
        [request] = self.delivered(path)
        self.assertEqual(request.form, form)
        self.assertEqual(request.headers["x-torque-task-id"], added.id)


class SeedSpellingTests(NodeTestCase):
    """Each spelling of SPEC §7 adds a task that is delivered."""

    @inlineCallbacks
    def test_module_add(self):
        before = time.time()
        added = yield deferToThread(
            lambda: client.add(url=self.receiver.url + "/hooks/do/add", params={"a": 1}, delay=1)
        )
        self.assertEqual(
            (added.status, added.queue, added.duplicate), ("scheduled", "default", False)
        )
        self.assertGreaterEqual(added.due_at, before + 1)
        yield self.assert_delivered("/hooks/do/add", added, {"a": "1"})

    @inlineCallbacks
    def test_task_add(self):
        t = client.Task(url="/hooks/do/task", params={"a": 1}, delay=0)
        added = yield deferToThread(t.add)
        yield self.assert_delivered("/hooks/do/task", added, {"a": "1"})

    @inlineCallbacks
    def test_add_task(self):
        added = yield deferToThread(
            lambda: add_task(url=self.receiver.url + "/hooks/do/add_task", params={"a": 1})
        )
        yield self.assert_delivered("/hooks/do/add_task", added, {"a": "1"})

    @inlineCallbacks
    def test_add_many(self):
        """Over one connection: the node keeps it alive between adds."""
        connects = []
        connect = http.client.HTTPConnection.connect

        def counting_connect(connection):
            connects.append(connection)
            return connect(connection)

        self.patch(http.client.HTTPConnection, "connect", counting_connect)
        tasks = [{"url": f"/hooks/do/many/{n}", "params": {"n": n}} for n in range(3)]
        results = yield deferToThread(client.add_many, tasks)
        self.assertEqual(len({added.id for added in results}), 3)
        self.assertEqual(len(connects), 1)
        for n, added in enumerate(results):
            yield self.assert_delivered(f"/hooks/do/many/{n}", added, {"n": str(n)})

    @inlineCallbacks
    def test_add_many_with_a_refused_task_adds_the_others(self):
        """``POST /tasks/batch``: each task judged on its own, in one request."""
        tasks = [
            {"url": "/hooks/do/batch/0", "params": {"n": 0}},
            {"url": "/hooks/do/batch/1", "queue": "not a queue"},
            {"url": "/hooks/do/batch/2", "params": {"n": 2}, "queue": "second"},
        ]
        with self.assertRaises(client.BatchRejected) as caught:
            yield deferToThread(client.add_many, tasks)
        first, refused, third = caught.exception.results
        self.assertEqual((refused.status, refused.field), (400, "queue"))
        self.assertEqual(third.queue, "second")
        yield self.assert_delivered("/hooks/do/batch/0", first, {"n": "0"})
        yield self.assert_delivered("/hooks/do/batch/2", third, {"n": "2"})
        self.assertEqual(self.delivered("/hooks/do/batch/1"), [])

    @inlineCallbacks
    def test_txclient_add_many(self):
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        tx = txclient.Client(self.node.url, http=HTTPClient(Agent(reactor, pool=pool)))
        tasks = [{"url": f"/hooks/do/txmany/{n}", "params": {"n": n}} for n in range(1200)]
        results = yield tx.add_many(tasks)
        self.assertEqual(len({added.id for added in results}), 1200)
        yield wait_for(lambda: len(self.receiver.requests) >= 1200, timeout=120)
        paths = sorted(r.path for r in self.receiver.requests)
        self.assertEqual(paths, sorted(f"/hooks/do/txmany/{n}" for n in range(1200)))

    @inlineCallbacks
    def test_txclient(self):
        # Its own pool, closed at the end: treq's shared pool would leave
        # connections open after the test.
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        tx = txclient.Client(self.node.url, http=HTTPClient(Agent(reactor, pool=pool)))
        added = yield tx.add("/hooks/do/tx", params={"a": 1})
        yield self.assert_delivered("/hooks/do/tx", added, {"a": "1"})


class AnswerTests(NodeTestCase):
    """What the node answers reaches the caller as a value or an error."""

    @inlineCallbacks
    def test_duplicate_name(self):
        name = f"once-{uuid.uuid4().hex}"
        c = Client()
        self.addCleanup(c.close)
        first = yield deferToThread(c.add, "/hooks/do/dup", name=name, delay=60)
        second = yield deferToThread(c.add, "/hooks/do/dup", name=name, delay=60)
        self.assertFalse(first.duplicate)
        self.assertTrue(second.duplicate)
        self.assertEqual((second.id, second.name), (first.id, name))

    @inlineCallbacks
    def test_validation_error(self):
        d = deferToThread(client.add, "ftp://x")
        rejected = yield self.assertFailure(d, TaskRejected)
        self.assertEqual((rejected.status, rejected.field), (400, "url"))
        self.assertTrue(rejected.code)
        self.assertTrue(rejected.message)

    @inlineCallbacks
    def test_stopped_node(self):
        yield self.node.stop()
        timeout = 5.0
        started = time.monotonic()
        d = deferToThread(Client(self.node.url, timeout=timeout).add, "/hooks/do/never")
        unavailable = yield self.assertFailure(d, TorqueUnavailable)
        self.assertLess(time.monotonic() - started, timeout)
        self.assertIsNone(unavailable.status)

    @inlineCallbacks
    def test_stopped_node_txclient(self):
        yield self.node.stop()
        pool = HTTPConnectionPool(reactor, persistent=False)
        tx = txclient.Client(self.node.url, http=HTTPClient(Agent(reactor, pool=pool)))
        unavailable = yield self.assertFailure(tx.add("/hooks/do/never"), TorqueUnavailable)
        self.assertEqual((unavailable.code, unavailable.status), ("connection_failed", None))


class TokenTests(NodeTestCase):
    """A node with ``--api-token`` takes the token from the argument or
    ``TORQUE_API_TOKEN``, and refuses a call without it."""

    node_args = ("--api-token", "s3cret")

    @inlineCallbacks
    def test_token(self):
        added = yield deferToThread(client.add, "/hooks/do/arg", api_token="s3cret")
        set_env(self, "TORQUE_API_TOKEN", "s3cret")
        from_env = yield deferToThread(client.add, "/hooks/do/env")
        self.assertEqual((from_env.status, from_env.duplicate), ("scheduled", False))
        yield self.assert_delivered("/hooks/do/arg", added, {})
        yield self.assert_delivered("/hooks/do/env", from_env, {})

    @inlineCallbacks
    def test_no_token(self):
        rejected = yield self.assertFailure(deferToThread(client.add, "/hooks/do/x"), TaskRejected)
        self.assertEqual(rejected.status, 401)
