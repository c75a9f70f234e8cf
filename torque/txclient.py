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
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionLost,
    DNSLookupError,
)
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import RequestTransmissionFailed, ResponseFailed

from torque import client as _rules
from torque.body import BodyReader
from torque.client import (
    DEFAULT_TIMEOUT,
    Added,
    BatchRejected,
    TaskRejected,
    TorqueError,
    TorqueUnavailable,
)

__all__ = [
    "Added",
    "BatchRejected",
    "Client",
    "Task",
    "TaskRejected",
    "TorqueError",
    "TorqueUnavailable",
    "add",
    "add_many",
    "add_task",
    "complete",
    "fail",
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
    :param timeout: seconds for the whole exchange, the answer's body
        included, after which the request is given up, its connection
        closed, and the Deferred fails with :class:`TorqueUnavailable`.
    :param clock: what times ``timeout``; default the global reactor
        (``treq``'s own), imported at the first add.
    """

    def __init__(
        self,
        torque_url: str | None = None,
        api_token: str | None = None,
        http: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: IReactorTime | None = None,
    ):
        self.url = _rules.add_endpoint(_rules.resolve_url(torque_url))
        self.batch_url = _rules.add_endpoint(_rules.resolve_url(torque_url), _rules.BATCH_PATH)
        self.timeout = timeout
        self._http = treq if http is None else http
        self._clock = clock
        self._headers = _rules.request_headers(_rules.resolve_token(api_token))

    def add(self, url: str, **fields: Any) -> Deferred[Added]:
        """Add one task; ``fields`` are :class:`Task`'s.

        :returns: a Deferred firing with an :class:`Added`, or failing with
            :class:`TaskRejected` or :class:`TorqueUnavailable`.
        """
        return maybeDeferred(_rules.Task, url, **fields).addCallback(self.send)

    @inlineCallbacks
    def add_many(self, tasks: Iterable[_rules.Task | Mapping[str, Any]]):
        """Add tasks with ``POST /tasks/batch``, up to 1,000 a request, one
        request after another.

        As the blocking client's: every task is built first (a misspelled
        field fails the Deferred with ``TypeError`` before anything is
        sent), each task is judged on its own, and the answers are in the
        order of the tasks.

        :param tasks: :class:`Task` objects or dicts of their fields.
        :returns: a Deferred firing with a list of :class:`Added`, in order,
            or failing with :class:`BatchRejected` (some tasks refused, the
            others added) or :class:`TorqueUnavailable`.
        """
        built = [_rules.as_task(task) for task in tasks]
        results: list = []
        for count, body in _rules.encode_batches(built):
            status, answer = yield self._deadline(self._exchange(body, self.batch_url))
            results += _rules.parse_batch_answer(status, answer, count)
        return _rules.all_added(results)

    def send(self, task: _rules.Task) -> Deferred[Added]:
        """Add a built :class:`Task`; a Deferred firing with an
        :class:`Added`."""
        d = self._deadline(self._exchange(_rules.encode_task(task), self.url))
        return d.addCallback(lambda answer: _rules.parse_answer(*answer))

    def _deadline(self, d: Deferred) -> Deferred:
        # One deadline for the request and the body: treq's own ``timeout``
        # stops at the answer's headers, and a node that sent them and then
        # stalled would hold the Deferred (and its connection) forever.
        return d.addTimeout(self.timeout, self._clock or _global_reactor())

    @inlineCallbacks
    def _exchange(self, body: bytes, url: str):
        """POST ``body`` to ``url``; ``(status, answer body)``.  Cancelled
        by the deadline, it fails with :class:`TorqueUnavailable`
        (``timeout``)."""
        try:
            response = yield self._http.post(url, data=body, headers=self._headers)
            reader = BodyReader()
            response.deliverBody(reader)
            content = yield reader.done
        except TRANSPORT_ERRORS as error:
            raise _unavailable(error, self.timeout) from error
        return response.code, content


def _global_reactor() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


def _unavailable(error: Exception, timeout: float) -> TorqueUnavailable:
    # The deadline cancels the request: say "timeout", not "cancelled".
    if isinstance(error, CancelledError | ConnectingCancelledError) or (
        isinstance(error, ResponseFailed)
        and any(reason.check(CancelledError) for reason in error.reasons)
    ):
        error = TimeoutError()
    elif isinstance(error, ResponseFailed):
        # Its str() is a list of Failure reprs: name the first reason instead.
        reason = error.reasons[0] if error.reasons else None
        why = f" ({reason.type.__name__}: {reason.getErrorMessage()})" if reason else ""
        error = ConnectionError(f"the connection was lost before a complete answer{why}")
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


@inlineCallbacks
def _report(task_id, token, error, retry_after, torque_url, http, timeout, clock):
    url, body, headers = _rules.report_request(task_id, token, error, retry_after, torque_url)
    sender = treq if http is None else http

    @inlineCallbacks
    def exchange():
        try:
            response = yield sender.post(url, data=body, headers=headers)
            reader = BodyReader()
            response.deliverBody(reader)
            content = yield reader.done
        except TRANSPORT_ERRORS as failure:
            raise _unavailable(failure, timeout) from failure
        return response.code, content

    d = exchange()
    d.addTimeout(timeout, clock or _global_reactor())
    answer = yield d
    return _rules.parse_report(*answer)


def complete(
    task_id: str,
    token: str,
    *,
    torque_url: str | None = None,
    http: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock: IReactorTime | None = None,
) -> Deferred[_rules.Reported]:
    """Report a task your handler took over as done; see
    :func:`torque.client.complete`."""
    return _report(task_id, token, None, None, torque_url, http, timeout, clock)


def fail(
    task_id: str,
    token: str,
    error: str,
    retry_after: float | None = None,
    *,
    torque_url: str | None = None,
    http: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock: IReactorTime | None = None,
) -> Deferred[_rules.Reported]:
    """Report that the attempt on a task your handler took over failed; see
    :func:`torque.client.fail`."""
    return _report(task_id, token, error, retry_after, torque_url, http, timeout, clock)
