"""The defaults README.rst promises, held where the node takes them from.

README's options table says: ``--lease`` 10 (seconds), and
``--dead-letter-ttl`` 604800 (7 days), ``--dead-letter-max`` 10000; its
prose repeats "within about 10 s" and "for seven days".  A
change to any of them must be a change to the README too.
"""

import inspect

from twisted.trial import unittest

from torque import storage, store
from torque.options import Options

DOCUMENTED = {
    "lease": 10.0,
    "dead-letter-ttl": 7 * 86400.0,
    "dead-letter-max": 10_000,
}


class DocumentedDefaultTests(unittest.TestCase):
    def test_the_options_defaults_are_the_documented_ones(self):
        options = Options()
        options.parseOptions([])
        self.assertEqual({name: options[name] for name in DOCUMENTED}, DOCUMENTED)

    def test_the_store_without_options_keeps_the_same_windows(self):
        """What tests and embedders get when they build a store directly."""
        defaults = inspect.signature(store.RedisStore).parameters
        self.assertEqual(
            (defaults["lease"].default, storage.DEAD_TTL, storage.DEAD_MAX),
            (DOCUMENTED["lease"], DOCUMENTED["dead-letter-ttl"],
             DOCUMENTED["dead-letter-max"]),
        )  # fmt: skip
