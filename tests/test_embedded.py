"""The embedded Redis: its unix socket is the node's alone."""

import os
import stat
import tempfile

from twisted.trial import unittest

from torque.embedded import EmbeddedRedis, find_redis_server


class EmbeddedRedisTests(unittest.TestCase):
    def test_its_socket_is_for_the_owner_only(self):
        if find_redis_server() is None:
            self.fail("no redis-server: install Debian's redis-server or torque[embedded]")
        directory = tempfile.mkdtemp(prefix="torque-emb-")  # short: a socket path
        server = EmbeddedRedis(directory)
        server.startService()
        self.addCleanup(server.stopService)
        mode = stat.S_IMODE(os.stat(server.socket_path).st_mode)
        self.assertEqual(mode & 0o077, 0, f"socket mode {mode:o}: others may connect")
        self.assertEqual(mode & 0o600, 0o600, f"socket mode {mode:o}: the node can't connect")
