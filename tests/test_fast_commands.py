"""Commands encoded by hiredis (:mod:`torque.fast_commands`) are the bytes
txredisapi would send."""

from __future__ import annotations

import txredisapi
from twisted.trial import unittest

from torque import fast_commands


def protocol(charset="utf-8"):
    p = txredisapi.BaseRedisProtocol.__new__(txredisapi.BaseRedisProtocol)
    p.charset, p.errors = charset, "strict"
    return p


class FastCommandTests(unittest.TestCase):
    def setUp(self):
        fast_commands.install()

    CASES = [
        ("PING",),
        ("EVALSHA", "a" * 40, 3, "k:1", "k:2", "k:é", "1800000000.5", "", "x" * 5000),
        ("SET", b"raw\r\n\x00bytes", "ünïcode ✓", 0, -5, 2**40),
    ]

    def test_the_bytes_are_txredisapis(self):
        for args in self.CASES:
            with self.subTest(args=args[:3]):
                self.assertEqual(
                    fast_commands._build_command(protocol(), *args),
                    fast_commands._ORIGINAL(protocol(), *args),
                )

    def test_other_types_and_charsets_go_the_old_way(self):
        calls = []
        original = fast_commands._ORIGINAL
        self.patch(fast_commands, "_ORIGINAL", lambda *a, **k: calls.append(a) or original(*a, **k))
        for args in [("SET", "k", 1.5), ("SET", "k", True), ("SET", "k", bytearray(b"x"))]:
            fast_commands._build_command(protocol(), *args)
        fast_commands._build_command(protocol("latin-1"), "SET", "k", "v")
        self.assertEqual(len(calls), 4)
        fast_commands._build_command(protocol(), "SET", "k", "v")
        self.assertEqual(len(calls), 4, "str, bytes and int: hiredis")

    def test_pools_use_it(self):
        from torque.connection import connect_pool
        from torque.redis_url import RedisAddress

        self.patch(txredisapi.BaseRedisProtocol, "_build_command", fast_commands._ORIGINAL)
        pool = connect_pool(RedisAddress(path=self.mktemp() + ".sock"))
        self.addCleanup(pool.disconnect)
        self.assertIs(txredisapi.BaseRedisProtocol._build_command, fast_commands._build_command)
