"""A slowloris against a real node: more stalled, half-sent requests than
``--max-connections`` allows, held open, while ``/health`` and an add are
answered at once; then the request-head deadline cuts the stalled ones.

Why ``/health`` gets in while the cap is full: a connection past the cap
closes the connection that has waited longest for its request head (a
stalled one), instead of waiting for the head deadline to free one.
"""

from __future__ import annotations

import time

import treq
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for
from torque.channel import HEAD_TIMEOUT

CAP = 50
STALLED = 65


class Stalled(protocol.Protocol):
    """Sends the first lines of a request head, and then nothing."""

    def __init__(self):
        self.received = b""
        self.closed_at = None

    def connectionMade(self):
        self.transport.write(b"POST /hooks/add HTTP/1.1\r\nHost: torque\r\nContent-Type: app")

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed_at = time.monotonic()


class SlowlorisTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_health_and_adds_are_answered_while_stalled_connections_fill_the_cap(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--max-connections", str(CAP))
        stalled = []
        for _ in range(STALLED):
            client = Stalled()
            yield protocol.ClientCreator(reactor, lambda c=client: c).connectTCP(
                "127.0.0.1", node.port
            )
            stalled.append(client)
        # Each connection past the cap closed the longest waiting one.
        yield wait_for(
            lambda: sum(c.closed_at is not None for c in stalled) >= STALLED - CAP,
            what="the cap to close the stalled connections beyond it",
        )
        held = [c for c in stalled if c.closed_at is None]
        self.assertEqual(len(held), CAP, "the node holds at most --max-connections")

        latencies = []
        for _ in range(5):
            started = time.monotonic()
            response = yield treq.get(node.url + "/health", persistent=False)
            yield response.content()
            latencies.append(time.monotonic() - started)
            self.assertEqual(response.code, 200)
        status, body, _ = yield node.post(data={"url": receiver.url + "/ok"})
        self.assertEqual(status, 201, body)
        yield wait_for(lambda: receiver.to("/ok"), what="the delivery")
        # Answered at once, not by waiting for the head deadline to free room.
        self.assertEqual([c.received for c in stalled if b"408" in c.received], [])
        still_held = sum(c.closed_at is None for c in stalled)
        self.assertGreaterEqual(still_held, CAP - 7, "each request closed one stalled at most")
        print(
            f"\nslowloris: {STALLED} stalled connections opened against --max-connections "
            f"{CAP}; {len(held)} held by the node; /health answered in "
            f"{', '.join(f'{1000 * t:.1f}' for t in latencies)} ms while "
            f"{still_held} were still held"
        )

        # Then the head deadline closes every stalled connection left, with a 408.
        yield wait_for(
            lambda: all(c.closed_at is not None for c in stalled),
            timeout=HEAD_TIMEOUT + 30,
            what="the head deadline to close the stalled connections",
        )
        cut = [c for c in stalled if c.received.startswith(b"HTTP/1.1 408 Request Timeout")]
        self.assertEqual(len(cut), still_held)
