"""A tiny blocking Redis client for the benchmark's own set-up work.

The bench loads up to a million tasks and reads ``INFO``; it does that from
plain blocking code, outside any reactor, so it speaks RESP over the unix
socket itself and parses replies with ``hiredis`` (already a torque
dependency).  Commands are pipelined in chunks: a million writes take
seconds, not minutes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence

import hiredis

CHUNK = 5000  # commands written before their replies are read


def encode(args: Sequence) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RedisError(Exception):
    pass


class Redis:
    """One connection to a unix socket; every call is bounded by ``timeout``."""

    def __init__(self, path: str, timeout: float = 60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")

    def close(self) -> None:
        self.sock.close()

    def _replies(self, count: int) -> list:
        replies = []
        while len(replies) < count:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise RedisError("the connection closed")
                self.reader.feed(data)
                continue
            replies.append(reply)
        return replies

    def call(self, *args):
        self.sock.sendall(encode(args))
        (reply,) = self._replies(1)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisError(str(reply))
        return reply

    def pipeline(self, commands: Iterable[bytes | Sequence]) -> int:
        """Send commands (encoded bytes or argument lists) in chunks; return
        how many were sent.  Raises on the first error reply."""
        sent = 0
        chunk: list[bytes] = []
        for command in commands:
            chunk.append(command if isinstance(command, bytes) else encode(command))
            if len(chunk) >= CHUNK:
                sent += self._flush(chunk)
                chunk = []
        if chunk:
            sent += self._flush(chunk)
        return sent

    def _flush(self, chunk: list[bytes]) -> int:
        self.sock.sendall(b"".join(chunk))
        for reply in self._replies(len(chunk)):
            if isinstance(reply, hiredis.ReplyError):
                raise RedisError(str(reply))
        return len(chunk)

    def info(self, section: str = "") -> dict[str, str]:
        text = self.call("INFO", section) if section else self.call("INFO")
        fields = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                fields[key] = value
        return fields
