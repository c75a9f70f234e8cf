"""The store's declared interface (:class:`torque.storage.Store`) is the
one both stores keep and the only one their callers use."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque import storage
from torque.storage import Store
from torque.store import RedisStore

TORQUE = Path(storage.__file__).parent
# Modules that call a store without building one: they must not need Redis.
CALLERS = ("scheduler", "api", "heartbeat", "watcher", "views", "metrics", "storage")


def protocol_methods() -> list[str]:
    return [n for n, value in vars(Store).items() if inspect.isfunction(value) and n[0] != "_"]


def public_methods(cls) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and name[0] != "_"}


def parameters(function) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


class ProtocolTests(unittest.TestCase):
    def test_both_stores_are_stores(self):
        self.assertIsInstance(RedisStore(None, Clock()), Store)
        self.assertIsInstance(MemoryStore(), Store)
        self.assertNotIsInstance(object(), Store)

    def test_every_method_has_the_protocols_parameters_in_both_stores(self):
        for name in protocol_methods():
            expected = parameters(getattr(Store, name))
            for cls in (RedisStore, MemoryStore):
                with self.subTest(store=cls.__name__, method=name):
                    self.assertEqual(parameters(getattr(cls, name)), expected)

    def test_every_method_of_the_redis_store_is_declared(self):
        """Nothing the Redis store offers is left out of the interface."""
        self.assertEqual(public_methods(RedisStore), set(protocol_methods()))

    def test_every_method_says_what_it_does(self):
        for name in protocol_methods():
            with self.subTest(method=name):
                self.assertTrue(inspect.getdoc(getattr(Store, name)))

    def test_callers_ask_only_what_the_protocol_declares(self):
        """``store.<name>`` in torque's modules (but the stores' own) names
        a member of :class:`Store`."""
        members = set(protocol_methods()) | set(Store.__annotations__)
        for path in sorted(TORQUE.rglob("*.py")):
            if path.stem in ("store", "storage"):
                continue
            # (store.py, the file, is named in docstrings: not a member.)
            for name in re.findall(r"\bstore\.(?!py\b)([a-z_]+)\b", path.read_text()):
                with self.subTest(module=path.stem, member=name):
                    self.assertIn(name, members)

    def test_callers_of_a_store_load_no_redis_client(self):
        """Depending on the protocol, they import neither ``torque.store``
        nor txredisapi."""
        for module in CALLERS:
            with self.subTest(module=module):
                code = (
                    f"import sys, torque.{module}; "
                    "print(sorted({'txredisapi', 'torque.store'} & set(sys.modules)))"
                )
                out = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                )
                self.assertEqual(out.stdout.strip(), "[]")
