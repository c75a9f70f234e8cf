"""Completion tokens (SPEC 4 "Later"): every delivery carries
``Torque-Completion-Token``, with which a handler that took its task over
(``202`` and ``Torque-Complete-Within``) reports back on
``POST /tasks/<id>/complete`` or ``/fail``.

A token is an HMAC-SHA256 of the task's id and attempt under a key that every
node shares through Redis (:meth:`torque.storage.Store.completion_key`: the
first node to ask makes it, 256 random bits), so any node can check a token
that another node's delivery carried, and no per-task write is needed at
dispatch.  A token names its attempt, so it authorises that one task's
completion on that attempt and nothing else: not another task, and not any
other route (:class:`torque.auth.RequireToken` lets it through to the two
completion routes only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

from twisted.internet import defer

#: How a completion token starts, so that it is told from an API token.
PREFIX = "tct."
_TOKEN_RE = re.compile(r"tct\.([0-9]{1,9})\.([A-Za-z0-9_-]{43})")
#: The routes a completion token opens, and no other.
ROUTE_RE = re.compile(rb"/tasks/[^/]+/(complete|fail)")


def new_key() -> str:
    """A candidate key: the store keeps the first one any node offers."""
    return secrets.token_hex(32)


def _mac(key: str, task_id: str, attempt: int) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{attempt}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_for(key: str, task_id: str, attempt: int) -> str:
    """The completion token of ``task_id``'s attempt ``attempt``."""
    return f"{PREFIX}{attempt}.{_mac(key, task_id, attempt)}"


def looks_like_token(given: bytes | str) -> bool:
    """Whether ``given`` has a completion token's shape (it may still be
    wrong: :func:`attempt_of` checks it)."""
    text = given.decode("latin-1") if isinstance(given, bytes) else given
    return _TOKEN_RE.fullmatch(text) is not None


def attempt_of(key: str, token: str, task_id: str) -> int | None:
    """The attempt ``token`` authorises for ``task_id``, or ``None`` when it
    is no token of that task (compared in constant time)."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    attempt = int(match.group(1))
    if not hmac.compare_digest(match.group(2), _mac(key, task_id, attempt)):
        return None
    return attempt


class CompletionKey:
    """The shared key, read from the store once and kept.

    :param load: asks the store for the key (offering a new one); a
        Deferred firing with the key in force.
    """

    def __init__(self, load: Callable[[str], defer.Deferred]):
        self.load = load
        self._key: str | None = None

    @property
    def known(self) -> str | None:
        """The key once read (``None`` until then): what :meth:`get` fires
        with at once, without a Deferred."""
        return self._key

    def get(self) -> defer.Deferred:
        """A Deferred firing with the key (at once once read); a failure to
        read it is passed on, and the next call tries again."""
        if self._key is not None:
            return defer.succeed(self._key)

        def keep(key: str) -> str:
            self._key = key
            return key

        return self.load(new_key()).addCallback(keep)
