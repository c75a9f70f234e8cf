"""Reading an HTTP answer's body, bounded and cancellable: both the
dispatcher (a web hook's answer) and the Twisted client (torque's answer)
read with :class:`BodyReader`.

Its :attr:`~BodyReader.done` Deferred can be cancelled, and cancelling it
drops the connection; treq's ``content()`` and ``collect()`` can't be
cancelled that way, so an answer that stalls would keep its connection.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss


class BodyReader(Protocol):
    """``response.deliverBody(reader)``, then wait for :attr:`done`: the
    bytes kept.

    :param keep: bytes kept at most, from the start (``None``: all).
    :param limit: bytes read at most (``None``: all); past it the
        connection is dropped and :attr:`done` fires with what was kept, so
        a body that never ends can't hold a connection or memory.
    """

    def __init__(self, keep: int | None = None, limit: int | None = None) -> None:
        self.keep = keep
        self.limit = limit
        self.kept = bytearray()
        self.received = 0
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        room = len(data) if self.keep is None else self.keep - len(self.kept)
        self.kept += data[:room]
        self.received += len(data)
        if self.limit is not None and self.received > self.limit:
            self.transport.stopProducing()
            self.done.callback(bytes(self.kept))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:  # cut at the limit, or cancelled
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(bytes(self.kept))
        else:
            self.done.errback(reason)

    def _cancel(self, _: Deferred) -> None:
        if self.transport is not None:
            self.transport.stopProducing()
