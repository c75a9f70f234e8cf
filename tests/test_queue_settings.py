"""Checking a ``PATCH /queues/<q>`` body, and reading the settings hash."""

from twisted.trial import unittest

from torque.queue_settings import SETTINGS, check_changes, decode, encode
from torque.submission import InvalidTask


class CheckTests(unittest.TestCase):
    def refused(self, body) -> InvalidTask:
        with self.assertRaises(InvalidTask) as caught:
            check_changes(body)
        return caught.exception

    def test_good_values_pass_typed(self):
        got = check_changes({"rate": 2, "concurrency": 5.0, "timeout": 0.5, "max_age": None})
        self.assertEqual(got, {"rate": 2.0, "concurrency": 5, "timeout": 0.5, "max_age": None})
        self.assertIs(type(got["concurrency"]), int)

    def test_each_bad_value_names_its_field(self):
        cases = [
            ({"rate": -1}, "rate"),
            ({"rate": "fast"}, "rate"),
            ({"concurrency": 0}, "concurrency"),
            ({"concurrency": 2.5}, "concurrency"),
            ({"host_concurrency": True}, "host_concurrency"),
            ({"max_errors": 0}, "max_errors"),
            ({"min_delay": -0.1}, "min_delay"),
            ({"max_delay": [1]}, "max_delay"),
            ({"timeout": 0}, "timeout"),
            ({"max_age": 0}, "max_age"),
            ({"max_age": 1e13}, "max_age"),
            ({"rate": 1, "colour": 2}, "colour"),
        ]
        for body, field in cases:
            with self.subTest(body=body):
                self.assertEqual(self.refused(body).field, field)

    def test_the_least_values_that_are_allowed(self):
        least = {"rate": 0, "concurrency": 1, "max_errors": 1, "min_delay": 0, "max_delay": 0}
        self.assertEqual(check_changes(least), least)

    def test_an_empty_or_non_object_body_is_refused(self):
        for body in ({}, [], "rate=1", None):
            with self.subTest(body=body):
                self.assertEqual(self.refused(body).field, "body")

    def test_encode_and_decode_round_trip(self):
        values = {"rate": 0.1, "concurrency": 12, "max_age": 2592000.0}
        stored = {name: encode(value) for name, value in values.items()}
        self.assertEqual(stored, {"rate": "0.1", "concurrency": "12", "max_age": "2592000.0"})
        self.assertEqual(decode(stored), values)

    def test_every_setting_overrides_a_documented_node_option(self):
        self.assertEqual(
            list(SETTINGS),
            ["rate", "concurrency", "host_concurrency", "max_errors", "min_delay",
             "max_delay", "timeout", "max_age"],
        )  # fmt: skip
