"""Add tasks to torque from code already on a Twisted reactor.

The twin of :mod:`torque.client` with the same surface, returning Deferreds
and sending with treq (blocking on the reactor thread would stall it).  The
rules (payload, answer and errors, URL and token) are imported from
:mod:`torque.client`, so the two clients cannot drift apart::

    from torque import txclient
    d = txclient.add(url="http://example.com/hooks/do/foo", params={"a": 1})
    d.addCallback(lambda added: print(added.id))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import treq
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionLost,
    DNSLookupError,
)
from twisted.web.client import RequestTransmissionFailed, ResponseFailed

from torque import client as _rules
from torque.client import (
    DEFAULT_TIMEOUT,
    Added,
    TaskRejected,
    TorqueError,
    TorqueUnavailable,
)

__all__ = [
    "Added",
    "Client",
    "Task",
    "TaskRejected",
    "TorqueError",
    "TorqueUnavailable",
    "add",
    "add_many",
    "add_task",
]

# How treq reports that the node could not be reached or did not answer:
# refused, DNS, reset, lost mid-answer, or cancelled by treq's timeout.
TRANSPORT_ERRORS = (
    ConnectError,
    ConnectingCancelledError,
    ConnectionLost,
    DNSLookupError,
    CancelledError,
    ResponseFailed,
    RequestTransmissionFailed,
)


class Task(_rules.Task):
    """:class:`torque.client.Task` whose :meth:`add` returns a Deferred."""

    def add(self, client: Client | None = None) -> Deferred[Added]:  # type: ignore[override]
        """Add this task.

        :param client: the :class:`Client` to send it with; by default one
            for ``TORQUE_URL`` and ``TORQUE_API_TOKEN`` over treq.
        :returns: a Deferred firing with an :class:`Added`, or failing with
            :class:`TaskRejected` or :class:`TorqueUnavailable`.
        """
        return (client or Client()).send(self)


class Client:
    """Adds tasks to one torque node with treq.

    :param torque_url: ``http(s)://host:port[/prefix]``; default
        ``TORQUE_URL``, else ``http://localhost:8090``.
    :param api_token: the node's ``--api-token``; default
        ``TORQUE_API_TOKEN``.
    :param http: what sends the requests: anything with treq's ``post``
        (the ``treq`` module, a ``treq.client.HTTPClient`` with its own
        pool, ``treq.testing.StubTreq`` in tests); default ``treq``, whose
        shared pool keeps connections alive.
    :param timeout: seconds to wait for torque's answer, after which the
        Deferred fails with :class:`TorqueUnavailable`.
    """

    def __init__(
        self,
        torque_url: str | None = None,
        api_token: str | None = None,
        http: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.url = _rules.add_endpoint(_rules.resolve_url(torque_url))
        self.timeout = timeout
        self._http = treq if http is None else http
        self._headers = _rules.request_headers(_rules.resolve_token(api_token))

    def add(self, url: str, **fields: Any) -> Deferred[Added]:
        """Add one task; ``fields`` are :class:`Task`'s.

        :returns: a Deferred firing with an :class:`Added`, or failing with
            :class:`TaskRejected` or :class:`TorqueUnavailable`.
        """
        d = self.add_many([{"url": url, **fields}])
        return d.addCallback(lambda added: added[0])

    @inlineCallbacks
    def add_many(self, tasks: Iterable[_rules.Task | Mapping[str, Any]]):
        """Add tasks one after another, each once the previous one is in.

        Sequential, like the blocking client: the order of the answers is
        the order of the adds, and the first error stops the rest.

        :param tasks: :class:`Task` objects or dicts of their fields.
        :returns: a Deferred firing with a list of :class:`Added`, in order.
        """
        results = []
        for task in map(_rules.as_task, list(tasks)):
            results.append((yield self.send(task)))
        return results

    @inlineCallbacks
    def send(self, task: _rules.Task):
        """Add a built :class:`Task`; a Deferred firing with an
        :class:`Added`."""
        try:
            response = yield self._http.post(
                self.url,
                data=_rules.encode_task(task),
                headers=self._headers,
                timeout=self.timeout,
            )
            body = yield response.content()
        except TRANSPORT_ERRORS as error:
            raise _unavailable(error, self.timeout) from error
        return _rules.parse_answer(response.code, body)


def _unavailable(error: Exception, timeout: float) -> TorqueUnavailable:
    # treq's timeout cancels the request: say "timeout", not "cancelled".
    if isinstance(error, CancelledError | ConnectingCancelledError) or (
        isinstance(error, ResponseFailed)
        and any(reason.check(CancelledError) for reason in error.reasons)
    ):
        error = TimeoutError()
    return _rules.unavailable(error, timeout)


def add(
    url: str,
    *,
    torque_url: str | None = None,
    api_token: str | None = None,
    http: Any = None,
    **fields: Any,
) -> Deferred[Added]:
    """Add one task; see :func:`torque.client.add`.

    :param http: as :class:`Client`'s.
    :returns: a Deferred firing with an :class:`Added`.
    """
    return Client(torque_url, api_token, http).add(url, **fields)


#: The older spelling, as in :mod:`torque.client`.
add_task = add


def add_many(
    tasks: Iterable[_rules.Task | Mapping[str, Any]],
    *,
    torque_url: str | None = None,
    api_token: str | None = None,
    http: Any = None,
) -> Deferred[list[Added]]:
    """Add tasks in order; see :meth:`Client.add_many`."""
    return Client(torque_url, api_token, http).add_many(tasks)
