"""The node's QStash signing keys: ``--qstash-current-signing-key`` and
``--qstash-next-signing-key``, or keys generated once and kept in Redis
(the door's records), so every node signs with the same ones and
``GET /v2/keys`` tells receivers what to verify with.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from torque.qstash import DOOR
from torque.storage import Store

log = Logger()

#: Seconds between two tries to read the keys while Redis can't answer.
RETRY_EVERY = 1.0
NAMES = ("current", "next")


def generate_key(token: Callable[[int], str] = secrets.token_urlsafe) -> str:
    """``sig_`` and 168 random bits, as QStash's keys look."""
    return "sig_" + token(21)


class KeysNotLoaded(Exception):
    """The keys are not read from Redis yet: a delivery must wait (it is
    retried, as any attempt that got no answer)."""


class SigningKeys:
    """The current and next key, once known (``None`` until then).

    :param given: keys from the options, by name (``current``, ``next``);
        the others are generated, or read back from Redis.
    """

    def __init__(self, given: dict[str, str | None] | None = None):
        given = given or {}
        self.given = {name: given.get(name) for name in NAMES}
        self.current: str | None = None
        self.next: str | None = None

    def require(self) -> tuple[str, str]:
        if self.current is None or self.next is None:
            raise KeysNotLoaded("the QStash signing keys are not read from Redis yet")
        return self.current, self.next

    @defer.inlineCallbacks
    def load(self, store: Store, generate: Callable[[], str] = generate_key):
        """Take the given keys; for the others, store a generated key
        unless a node did first, and read back the one kept."""
        found = {}
        for name in NAMES:
            if self.given[name]:
                found[name] = self.given[name]
                continue
            key = f"{name}_signing_key"
            yield store.put_door_record(DOOR, key, generate(), only_new=True)
            found[name] = yield store.door_record(DOOR, key)
        self.current, self.next = found["current"], found["next"]
        return self


class KeyLoader(Service):
    """Reads the keys at start, trying again every :data:`RETRY_EVERY`
    seconds while Redis can't answer."""

    def __init__(self, keys: SigningKeys, store: Store, clock: IReactorTime):
        self.keys = keys
        self.store = store
        self.clock = clock
        self._call = None

    def startService(self) -> None:
        super().startService()
        self._try()

    def _try(self) -> None:
        self._call = None
        d = self.keys.load(self.store)

        def failed(failure):
            log.warn(
                "QStash signing keys not read yet ({error}); trying again",
                error=failure.getErrorMessage(),
            )
            if self.running:
                self._call = self.clock.callLater(RETRY_EVERY, self._try)

        d.addErrback(failed)

    def stopService(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        return super().stopService()
