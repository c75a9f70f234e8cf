"""Add tasks to torque from blocking code (a Django or Flask handler).

Standard library only, so an application pays no dependency for it and
Twisted is never imported.  ``torque.txclient`` is the Twisted twin; it
imports the pure parts from here (payload building, answer and error
parsing, URL and token resolution) so both follow one set of rules::

    from torque import client
    client.add(url="http://example.com/hooks/do/foo", params={"a": 1}, delay=20)
    client.Task(url="/hooks/do/foo", params={"a": 1}, delay=2).add()

Errors are exceptions, never a ``None``: :class:`TaskRejected` when torque
refused the task (fix the call), :class:`TorqueUnavailable` when it could not
be reached or answered 5xx (retry later).
"""

from __future__ import annotations

import dataclasses
import http.client
import json as jsonlib
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Self

from torque import __version__

DEFAULT_URL = "http://localhost:8090"
DEFAULT_TIMEOUT = 10.0
ADD_PATH = "/hooks/add"
BATCH_PATH = "/tasks/batch"
#: Tasks one ``POST /tasks/batch`` holds at most (the node's limit), and
#: the bytes of its body (below the node's 1 MiB ``--max-body``).
BATCH_TASKS = 1000
BATCH_BYTES = 900 * 1024
# Statuses that mean "not now" rather than "not this task": the caller may
# retry them, as a node retries its own deliveries (SPEC §4).
RETRYABLE_4XX = frozenset({408, 425, 429})
# What a kept-alive socket that the server closed while idle looks like on
# the next request: only these are worth one retry on a fresh connection.
STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)
# Everything that means "no answer": refused, reset, DNS, timeout, garbage.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class TorqueError(Exception):
    """Base of every error the clients raise.

    :ivar status: the HTTP status of torque's answer, or ``None`` when there
        was no answer.
    :ivar code: a machine-readable reason (torque's error code, or
        ``timeout`` / ``connection_failed`` / ``http_<status>``).
    :ivar message: a human-readable reason.
    :ivar field: the submitted field at fault, when torque named one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ):
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.field}: " if self.field else ""
        details = ", ".join(
            part for part in (self.code, self.status and f"HTTP {self.status}") if part
        )
        return f"{where}{self.message}" + (f" ({details})" if details else "")


class TaskRejected(TorqueError):
    """torque answered 4xx: the task (or the token) is wrong, and sending the
    same request again will fail the same way."""


class BatchRejected(TaskRejected):
    """``add_many`` sent every task, and torque refused some of them: the
    others were added.

    :ivar results: per task, in order, its :class:`Added` or its
        :class:`TaskRejected`.
    """

    def __init__(self, results: list[Added | TaskRejected]):
        self.results = results
        refused = [(i, r) for i, r in enumerate(results) if isinstance(r, TaskRejected)]
        at, first = refused[0]
        super().__init__(
            f"{len(refused)} of {len(results)} tasks refused, the first (task {at}): "
            f"{first.message}",
            status=first.status,
            code=first.code,
            field=first.field,
        )


class TorqueUnavailable(TorqueError):
    """torque could not be reached, timed out, or answered 5xx (503: its
    Redis is down) or 408/425/429: nothing was added, and the same request
    may succeed later, so a caller can retry it."""


@dataclasses.dataclass(frozen=True)
class Added:
    """torque's answer to an add.

    :ivar id: the task id (``GET /tasks/<id>``).
    :ivar queue: the queue the task is in.
    :ivar name: its idempotency key, or ``None``.
    :ivar status: ``scheduled`` for a new task; for a duplicate, the existing
        task's status.
    :ivar due_at: when it becomes due, Unix seconds.
    :ivar duplicate: ``True`` when a task of that ``name`` already existed and
        nothing new was added; ``id`` is then the existing task's.
    """

    id: str
    queue: str
    name: str | None
    status: str
    due_at: float
    duplicate: bool = False


@dataclasses.dataclass(frozen=True)
class Task:
    """A task to add, built before it is sent (the seed's ``Task(...).add()``).

    The fields are SPEC §3's; ``None`` leaves a field to torque's default.
    Building one checks the field names, so a typo fails here, not on the
    server.

    :param url: the web hook, ``http(s)://…`` or a path under the node's
        ``--base-task-url``.
    :param params: a dict, delivered form-encoded as the request body.
    :param json: any JSON value, delivered as an ``application/json`` body.
    :param delay: seconds before the task is due.
    :param eta: alternative to ``delay``: absolute Unix time.
    :param queue: queue name (torque's default: ``default``).
    :param name: idempotency key: adding it again answers the existing task.
    :param method: HTTP method of the delivery (torque's default: ``POST``).
    :param headers: extra request headers of the delivery.
    :param timeout: per-task delivery timeout, seconds.
    :param max_errors: per-task failed attempts before the task is dead.
    """

    url: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    delay: float | None = None
    eta: float | None = None
    queue: str | None = None
    name: str | None = None
    method: str | None = None
    headers: Mapping[str, str] | None = None
    timeout: float | None = None
    max_errors: int | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object to POST: the fields that are set, and only those,
        so that torque's defaults apply to the rest."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not None
        }

    def add(self, client: Client | None = None) -> Added:
        """Add this task.

        :param client: the :class:`Client` to send it with; by default a
            one-off one for ``TORQUE_URL`` and ``TORQUE_API_TOKEN``.
        :raises TaskRejected: torque refused the task.
        :raises TorqueUnavailable: torque could not take it now.
        """
        if client is not None:
            return client.send(self)
        with Client() as one_off:
            return one_off.send(self)


def as_task(task: Task | Mapping[str, Any]) -> Task:
    """Accept a :class:`Task` or a dict of its fields (``add_many``'s items).

    :raises TypeError: for anything else, or a dict with an unknown field.
    """
    if isinstance(task, Task):
        return task
    if isinstance(task, Mapping):
        return Task(**task)
    raise TypeError(f"expected a Task or a dict of task fields, got {task!r}")


def encode_task(task: Task) -> bytes:
    """The request body for ``POST /hooks/add``."""
    return jsonlib.dumps(task.payload(), separators=(",", ":")).encode("utf-8")


def resolve_url(torque_url: str | None = None) -> str:
    """Where torque's API is: the argument, else ``TORQUE_URL``, else the
    default port on this machine."""
    return torque_url or os.environ.get("TORQUE_URL") or DEFAULT_URL


def resolve_token(api_token: str | None = None) -> str | None:
    """The API token (``--api-token`` on the node): the argument, else
    ``TORQUE_API_TOKEN``, else none."""
    return api_token or os.environ.get("TORQUE_API_TOKEN") or None


def add_endpoint(torque_url: str, path: str = ADD_PATH) -> str:
    """The full URL to POST tasks to (``path``, by default the single add's).
    A path in ``torque_url`` is kept as a prefix, for a node behind a
    reverse proxy at ``https://host/torque``.

    :raises ValueError: for a URL that is not ``http(s)://host…``.
    """
    parts = urllib.parse.urlsplit(torque_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"torque URL must be http(s)://host[:port], got {torque_url!r}")
    return urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path.rstrip("/") + path, "", "")
    )


def encode_batches(tasks: list[Task]) -> list[tuple[int, bytes]]:
    """``POST /tasks/batch`` bodies for ``tasks``, in order: ``(how many
    tasks, body)``, each within :data:`BATCH_TASKS` and :data:`BATCH_BYTES`
    (a task larger than that alone goes in a body of its own)."""
    batches: list[tuple[int, bytes]] = []
    chunk: list[bytes] = []
    size = 0
    for task in tasks:
        encoded = encode_task(task)
        if chunk and (len(chunk) == BATCH_TASKS or size + len(encoded) + 1 > BATCH_BYTES):
            batches.append((len(chunk), b"[" + b",".join(chunk) + b"]"))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        batches.append((len(chunk), b"[" + b",".join(chunk) + b"]"))
    return batches


def parse_batch_answer(status: int, body: bytes, count: int) -> list[Added | TaskRejected]:
    """Each task's :class:`Added` or :class:`TaskRejected` from torque's
    answer to a batch of ``count`` tasks.

    :raises TorqueError: as :func:`parse_answer`, when the batch as a whole
        was refused or not taken.
    """
    if status not in (200, 201):
        parse_answer(status, body)  # raises for every other status
    document = _json_or_none(body)
    results = document.get("results") if isinstance(document, dict) else None
    if status != 200 or not isinstance(results, list) or len(results) != count:
        raise TorqueError(f"unexpected answer: {_excerpt(body)}", status=status, code="bad_answer")
    parsed: list[Added | TaskRejected] = []
    for result in results:
        item = result if isinstance(result, dict) else {}
        code = item.get("status")
        if code in (200, 201):
            task = item.get("task")
            parsed.append(parse_answer(code, jsonlib.dumps(task).encode()))
        else:
            try:
                parse_answer(code if isinstance(code, int) else 599, jsonlib.dumps(item).encode())
            except TaskRejected as refused:
                parsed.append(refused)
            except TorqueError as other:
                raise TorqueError(
                    f"unexpected answer: {other.message}", status=status, code="bad_answer"
                ) from None
    return parsed


def all_added(results: list[Added | TaskRejected]) -> list[Added]:
    """``results`` when every task was added.

    :raises BatchRejected: when some were refused (the others were added).
    """
    if any(isinstance(result, TaskRejected) for result in results):
        raise BatchRejected(results)
    return results  # type: ignore[return-value]


def request_headers(api_token: str | None) -> dict[str, str]:
    """The headers of every add."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"torque-client/{__version__}",
    }
    if api_token:
        headers["Authorization"] = f"Bearer {api_token}"
    return headers


def parse_answer(status: int, body: bytes) -> Added:
    """Turn torque's answer into an :class:`Added`, or raise.

    :param status: the HTTP status.
    :param body: the response body.
    :raises TaskRejected: on 4xx (except 408, 425, 429).
    :raises TorqueUnavailable: on 5xx, 408, 425, 429.
    :raises TorqueError: on any other answer, such as a redirect or a body
        that is not torque's: never a silent ``None``.
    """
    document = _json_or_none(body)
    if status in (200, 201):
        try:
            return Added(
                id=str(document["id"]),
                queue=str(document["queue"]),
                name=document.get("name") or None,
                status=str(document["status"]),
                due_at=float(document["due_at"]),
                # 200 is only ever the answer for a duplicate name.
                duplicate=bool(document.get("duplicate", status == 200)),
            )
        except (TypeError, KeyError, ValueError, AttributeError):
            raise TorqueError(
                f"unexpected answer: {_excerpt(body)}", status=status, code="bad_answer"
            ) from None
    raise answer_error(status, body, document)


def answer_error(status: int, body: bytes, document: Any) -> TorqueError:
    """The error for torque's answer that is not a success: see
    :func:`parse_answer`."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        error = {"message": _excerpt(body) or f"HTTP {status}"}
    if status >= 500 or status in RETRYABLE_4XX:
        kind = TorqueUnavailable
    elif status >= 400:
        kind = TaskRejected
    else:
        kind = TorqueError
    return kind(
        str(error.get("message") or f"HTTP {status}"),
        status=status,
        code=str(error.get("code") or f"http_{status}"),
        field=error.get("field"),
    )


def unavailable(error: BaseException, timeout: float) -> TorqueUnavailable:
    """The :class:`TorqueUnavailable` for a transport failure (refused,
    reset, DNS, timeout), naming it for the log."""
    if isinstance(error, TimeoutError):
        return TorqueUnavailable(f"no answer within {timeout:g} s", code="timeout")
    return TorqueUnavailable(
        f"cannot reach torque: {error or type(error).__name__}",
        code="connection_failed",
    )


def _json_or_none(body: bytes) -> Any:
    try:
        return jsonlib.loads(body)
    except ValueError:
        return None


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()


class Client:
    """A connection to one torque node, kept alive across adds.

    Not thread-safe (neither is ``http.client``): give each thread its own.

    :param torque_url: ``http(s)://host:port[/prefix]``; default
        ``TORQUE_URL``, else ``http://localhost:8090``.
    :param api_token: the node's ``--api-token``; default
        ``TORQUE_API_TOKEN``.
    :param timeout: seconds to wait for a connection or an answer, after
        which :class:`TorqueUnavailable` is raised.
    """

    def __init__(
        self,
        torque_url: str | None = None,
        api_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.url = add_endpoint(resolve_url(torque_url))
        self.timeout = timeout
        self._headers = request_headers(resolve_token(api_token))
        parts = urllib.parse.urlsplit(self.url)
        self._path = parts.path
        self._batch_path = urllib.parse.urlsplit(
            add_endpoint(resolve_url(torque_url), BATCH_PATH)
        ).path
        self._connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._host, self._port = parts.hostname, parts.port
        self._connection: http.client.HTTPConnection | None = None

    def add(self, url: str, **fields: Any) -> Added:
        """Add one task; ``fields`` are :class:`Task`'s.

        :raises TaskRejected: torque refused the task.
        :raises TorqueUnavailable: torque could not take it now.
        """
        return self.send(Task(url, **fields))

    def add_many(self, tasks: Iterable[Task | Mapping[str, Any]]) -> list[Added]:
        """Add tasks with ``POST /tasks/batch``, up to 1,000 a request, over
        this one connection.

        Every task is built first, so a misspelled field raises
        ``TypeError`` before anything is sent.  Each task is judged on its
        own: the valid ones are added even when others are refused.

        :param tasks: :class:`Task` objects or dicts of their fields.
        :returns: an :class:`Added` per task, in order.
        :raises BatchRejected: torque refused some tasks; the others were
            added, and its ``results`` say which was which.
        :raises TorqueUnavailable: torque could not take a request: the
            tasks of the requests before it were added (give tasks a
            ``name`` to make sending them again safe).
        """
        built = [as_task(task) for task in tasks]
        results: list[Added | TaskRejected] = []
        for count, body in encode_batches(built):
            status, answer = self._post(body, self._batch_path)
            results += parse_batch_answer(status, answer, count)
        return all_added(results)

    def send(self, task: Task) -> Added:
        """Add a built :class:`Task`."""
        status, body = self._post(encode_task(task), self._path)
        return parse_answer(status, body)

    def close(self) -> None:
        """Close the kept-alive connection; the next add opens another."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post(self, body: bytes, path: str) -> tuple[int, bytes]:
        # A kept-alive socket may have been closed by the server while idle;
        # that shows only when it is used, so retry once on a fresh one.  A
        # fresh connection that fails is torque's failure: no retry.
        reused = self._connection is not None and self._connection.sock is not None
        try:
            return self._exchange(body, path)
        except STALE_CONNECTION_ERRORS as error:
            if not reused:
                raise unavailable(error, self.timeout) from error
        except TRANSPORT_ERRORS as error:
            raise unavailable(error, self.timeout) from error
        try:
            return self._exchange(body, path)
        except TRANSPORT_ERRORS as error:
            raise unavailable(error, self.timeout) from error

    def _exchange(self, body: bytes, path: str) -> tuple[int, bytes]:
        if self._connection is None:
            self._connection = self._connection_class(self._host, self._port, timeout=self.timeout)
        try:
            self._connection.request("POST", path, body, self._headers)
            response = self._connection.getresponse()
            return response.status, response.read()
        except TRANSPORT_ERRORS:
            # Half a request or half an answer: the connection is unusable.
            self.close()
            raise


def add(
    url: str,
    *,
    torque_url: str | None = None,
    api_token: str | None = None,
    **fields: Any,
) -> Added:
    """Add one task (the seed's ``client.add(url=…, params={…}, delay=20)``).

    Opens a connection for this one add and closes it, so it is safe from
    any thread or forked worker; to add many, use :func:`add_many` or keep a
    :class:`Client`.

    :param url: the web hook; ``fields`` are the rest of :class:`Task`'s.
    :param torque_url: default ``TORQUE_URL``, else ``http://localhost:8090``.
    :param api_token: default ``TORQUE_API_TOKEN``.
    :raises TaskRejected: torque refused the task.
    :raises TorqueUnavailable: torque could not take it now.
    """
    with Client(torque_url, api_token) as client:
        return client.add(url, **fields)


#: The seed's older spelling, kept: ``from torque.client import add_task``.
add_task = add


def add_many(
    tasks: Iterable[Task | Mapping[str, Any]],
    *,
    torque_url: str | None = None,
    api_token: str | None = None,
) -> list[Added]:
    """Add tasks with ``POST /tasks/batch`` over one connection; see
    :meth:`Client.add_many`."""
    with Client(torque_url, api_token) as client:
        return client.add_many(tasks)


# -- a handler's word on a task it took over (SPEC 4 "Later") ---------------


@dataclasses.dataclass(frozen=True)
class Reported:
    """torque's answer to :func:`complete` or :func:`fail`: the task's
    status after the word (``delivered``, ``scheduled`` for a retry, or
    ``dead``)."""

    id: str
    status: str


def report_request(
    task_id: str, token: str, error: str | None, retry_after: float | None, torque_url: str | None
) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and headers of ``POST /tasks/<id>/complete`` (``error``
    ``None``) or ``/fail``, authorised by the delivery's completion token."""
    parts = urllib.parse.urlsplit(add_endpoint(resolve_url(torque_url)))
    verb = "complete" if error is None else "fail"
    path = parts.path[: -len(ADD_PATH)] + f"/tasks/{urllib.parse.quote(task_id, safe='')}/{verb}"
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    body = {} if error is None else {"error": error}
    if retry_after is not None:
        body["retry_after"] = retry_after
    return url, jsonlib.dumps(body).encode(), request_headers(token)


def parse_report(status: int, body: bytes) -> Reported:
    """Turn torque's answer to a report into a :class:`Reported`, or raise
    as :func:`parse_answer` does (403: the token is another task's; 409:
    the task no longer waits for this word)."""
    document = _json_or_none(body)
    if status == 200 and isinstance(document, dict) and "status" in document:
        return Reported(str(document.get("id")), str(document["status"]))
    if status == 200:
        raise TorqueError(f"unexpected answer: {_excerpt(body)}", status=status, code="bad_answer")
    raise answer_error(status, body, document)


def _report(
    task_id: str,
    token: str,
    error: str | None,
    retry_after: float | None,
    torque_url: str | None,
    timeout: float,
) -> Reported:
    url, body, headers = report_request(task_id, token, error, retry_after, torque_url)
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path, body, headers)
        response = connection.getresponse()
        status, content = response.status, response.read()
    except TRANSPORT_ERRORS as failure:
        raise unavailable(failure, timeout) from failure
    finally:
        connection.close()
    return parse_report(status, content)


def complete(
    task_id: str, token: str, *, torque_url: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Reported:
    """Report a task that your handler took over (it answered ``202`` with
    ``Torque-Complete-Within``) as done.

    :param token: the ``Torque-Completion-Token`` its delivery carried.
    :raises TaskRejected: 403 (another task's token), 404, 409 (the task is
        not waiting: done already, or its deadline passed).
    :raises TorqueUnavailable: torque could not take it now: try again.
    """
    return _report(task_id, token, None, None, torque_url, timeout)


def fail(
    task_id: str,
    token: str,
    error: str,
    retry_after: float | None = None,
    *,
    torque_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Reported:
    """Report that the attempt on a task your handler took over failed: it
    is retried (after ``retry_after`` seconds, else the backoff), or dead
    on its last attempt.  Raises as :func:`complete` does."""
    return _report(task_id, token, error, retry_after, torque_url, timeout)
