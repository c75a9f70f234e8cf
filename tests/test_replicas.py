"""The replica gate of ``--redis-wait-replicas`` (torque.replicas), on a
fake clock: after a ``WAIT`` that came back short, adds are refused at once,
one probe a second goes ahead, and a ``WAIT`` that counts enough replicas
opens the gate."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from torque.replicas import ReplicaGate


class ReplicaGateTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.gate = ReplicaGate(self.clock, wanted=1, retry=1.0)

    def test_open_until_a_wait_comes_back_short(self):
        self.assertIsNone(self.gate.refusal())
        self.gate.observed(1)
        self.assertIsNone(self.gate.refusal())

    def test_a_short_wait_refuses_adds_at_once_naming_the_option(self):
        self.gate.observed(0)
        refusal = self.gate.refusal()
        self.assertIn("fewer than 1 replicas in sync", refusal)
        self.assertIn("--redis-wait-replicas", refusal)
        self.assertIn("nothing was written", refusal)

    def test_one_probe_a_second_while_shut(self):
        self.gate.observed(0)
        self.clock.advance(0.999)
        self.assertIsNotNone(self.gate.refusal())
        self.clock.advance(0.001)
        self.assertIsNone(self.gate.refusal(), "the probe")
        self.assertIsNotNone(self.gate.refusal(), "a second add while the probe runs")
        self.clock.advance(0.999)
        self.assertIsNotNone(self.gate.refusal())
        self.clock.advance(0.001)
        self.assertIsNone(self.gate.refusal(), "the next probe (the first got no answer)")

    def test_a_wait_that_counts_enough_replicas_opens_it(self):
        self.gate.observed(0)
        self.clock.advance(1.0)
        self.assertIsNone(self.gate.refusal())  # the probe
        self.gate.observed(1)
        for _ in range(3):
            self.assertIsNone(self.gate.refusal())

    def test_a_failed_add_shuts_it_too_naming_the_failure(self):
        self.gate.shut("Redis is unreachable: connection lost")
        refusal = self.gate.refusal()
        self.assertTrue(refusal.startswith("Redis is unreachable: connection lost"), refusal)
        self.clock.advance(1.0)
        self.assertIsNone(self.gate.refusal(), "the probe")
        self.gate.observed(1)
        self.assertIsNone(self.gate.refusal())

    def test_two_replicas_wanted_one_is_short(self):
        gate = ReplicaGate(self.clock, wanted=2)
        gate.observed(1)
        self.assertIn("1 confirmed the last write", gate.refusal())
