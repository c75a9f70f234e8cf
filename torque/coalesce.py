"""Calls made in one turn of the reactor, made as one.

Under load, requests arrive together: the reactor reads several sockets in
one turn and each asks the store for an add.  :class:`Coalescer` holds them
until the turn ends (``callLater(0)`` runs once the turn's I/O is handled)
and then makes one call for all of them: one Redis script call and one
reply to parse instead of one each.  A lone request waits for nothing but
the end of its own turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Coalescer:
    """Gathers single calls into calls of many.

    :param clock: schedules the flush at the end of the turn.
    :param call_many: takes a list of items and returns a Deferred firing
        with one result per item, in order.
    :param limit: items per call at most; more in one turn make more calls.
    """

    def __init__(
        self,
        clock: IReactorTime,
        call_many: Callable[[Sequence[Any]], defer.Deferred],
        limit: int = 1000,
    ):
        self.clock = clock
        self.call_many = call_many
        self.limit = limit
        self._items: list[Any] = []
        self._waiting: list[defer.Deferred] = []
        self._flush_call: IDelayedCall | None = None

    def submit(self, item: Any) -> defer.Deferred:
        """A Deferred firing with ``item``'s result (or its call's failure)."""
        waiter: defer.Deferred = defer.Deferred()
        self._items.append(item)
        self._waiting.append(waiter)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)
        return waiter

    def holding(self, wanted: Callable[[Any], bool]) -> bool:
        """Whether an item held for this turn's call is ``wanted``."""
        return any(wanted(item) for item in self._items)

    def _flush(self) -> None:
        self._flush_call = None
        items, waiting = self._items, self._waiting
        self._items, self._waiting = [], []
        for start in range(0, len(items), self.limit):
            self._call(items[start : start + self.limit], waiting[start : start + self.limit])

    def _call(self, items: list[Any], waiting: list[defer.Deferred]) -> None:
        def spread(results):
            for waiter, result in zip(waiting, results, strict=True):
                waiter.callback(result)

        def fail(failure):
            for waiter in waiting:
                waiter.errback(failure)

        defer.maybeDeferred(self.call_many, items).addCallbacks(spread, fail)
