"""A redis-server of a test's own, for the tests that break it: stop it,
freeze it, fill its memory, take its disk away.  The run's shared server
(tests/redis_server.py) must never see that.

Its socket and its data directory are apart, so that the data directory can
go (``MISCONF``) while clients still reach the socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from torque.embedded import _answers, find_redis_server
from torque.redis_url import RedisAddress


class ScratchRedis:
    """``redis-server`` on a unix socket; stopped at the test's cleanup."""

    def __init__(self, testcase, *options: str):
        self.root = tempfile.mkdtemp(prefix="torque-rf-")  # short: a socket path
        testcase.addCleanup(shutil.rmtree, self.root, True)
        self.data_dir = os.path.join(self.root, "data")
        self.socket_path = os.path.join(self.root, "redis.sock")
        self.options = options
        self.process: subprocess.Popen | None = None
        testcase.addCleanup(self.stop)
        self.start()

    @property
    def address(self) -> RedisAddress:
        return RedisAddress(path=self.socket_path)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        args = [find_redis_server(), "--port", "0", "--unixsocket", self.socket_path,
                "--dir", self.data_dir, "--appendonly", "no", "--save", "",
                "--logfile", os.path.join(self.root, "redis.log"), *self.options]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while not _answers(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {args}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # SIGKILL: a frozen server can't exit, and one that can't save
            # (MISCONF) refuses SIGTERM.  The test needs none of its data.
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def command(self, *args: str) -> bytes:
        """Send one command and return the first line of the reply (enough
        for ``OK``, ``+PONG``, errors and ``INFO`` checks)."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = str(arg).encode()
            payload += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(self.socket_path)
            s.sendall(payload)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply

    def info(self, section: str) -> str:
        """``INFO section`` in full."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(self.socket_path)
            s.sendall(b"*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n" % (len(section), section.encode()))
            reply = s.recv(65536)
            size = int(reply.split(b"\r\n", 1)[0][1:])
            while len(reply) < size:
                reply += s.recv(65536)
        return reply.decode()

    def fill_memory(self) -> None:
        """``maxmemory`` below what Redis uses, with nothing to evict: every
        write is refused with ``OOM``."""
        self.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.command("CONFIG", "SET", "maxmemory", "1")

    def free_memory(self) -> None:
        self.command("CONFIG", "SET", "maxmemory", "0")

    def lose_disk(self) -> None:
        """Make a snapshot fail, as on a full disk: with a save point set
        (``stop-writes-on-bgsave-error`` applies only then), every write and
        PING is refused with ``MISCONF`` from then on."""
        self.command("CONFIG", "SET", "save", "3600 1")
        shutil.rmtree(self.data_dir)
        self.command("BGSAVE")
        deadline = time.monotonic() + 10
        while "rdb_last_bgsave_status:err" not in self.info("persistence"):
            if time.monotonic() > deadline:
                raise RuntimeError("BGSAVE did not fail")
            time.sleep(0.01)
