"""A Cloud Tasks ``Task`` (REST JSON) to a torque :class:`~torque.task.Task`,
and a stored task back to a ``Task``.  Pure.

What torque can't do is refused, naming the field, never dropped: App
Engine targets, OIDC and OAuth tokens on deliveries, ``HEAD`` and
``OPTIONS``, and bodies that are not UTF-8 text (torque keeps a body as text).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from torque.cloudtasks import DOOR
from torque.cloudtasks.errors import invalid, unimplemented
from torque.cloudtasks.names import QueueName, task_id_in
from torque.cloudtasks.wire import (
    format_duration,
    format_timestamp,
    http_method,
    parse_duration,
    parse_timestamp,
)
from torque.submission import InvalidTask, parse_submission
from torque.task import METHODS, Task, stored_content_type
from torque.views import redact

CREATE_FIELDS = frozenset({"task", "responseView"})
TASK_FIELDS = frozenset({"name", "httpRequest", "scheduleTime", "dispatchDeadline"})
# Output only: a client may send a task it read back; Cloud Tasks ignores them.
OUTPUT_FIELDS = frozenset(
    {"createTime", "dispatchCount", "responseCount", "firstAttempt", "lastAttempt", "view"}
)
HTTP_FIELDS = frozenset({"url", "httpMethod", "headers", "body"})
REFUSED = {
    "appEngineHttpRequest": "App Engine targets are not supported by torque: give an httpRequest",
    "pullMessage": "pull queues are not supported by torque: give an httpRequest",
    "oidcToken": "torque can't mint Google OIDC tokens: leave oidcToken out, "
    "and give an Authorization header in httpRequest.headers if the handler wants one",
    "oauthToken": "torque can't mint Google OAuth tokens: leave oauthToken out, "
    "and give an Authorization header in httpRequest.headers if the handler wants one",
}
# Cloud Tasks computes these itself, whatever the task says (its reference
# for HttpRequest.headers); so does torque.
COMPUTED_HEADERS = frozenset({"host", "content-length", "user-agent"})
RESERVED_PREFIXES = ("x-google-", "x-appengine-", "x-cloudtasks-")
# dispatchDeadline: Cloud Tasks' range for HTTP targets.
MIN_DEADLINE = 15.0
MAX_DEADLINE = 1800.0
# Task.name field names of torque's submission rules, as Cloud Tasks names them.
_FIELD_NAMES = {
    "url": "task.httpRequest.url",
    "method": "task.httpRequest.httpMethod",
    "headers": "task.httpRequest.headers",
    "name": "task.name",
    "eta": "task.scheduleTime",
    "timeout": "task.dispatchDeadline",
}


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(field, f"{field} must be a JSON object")
    return value


def _known(value: Mapping[str, Any], known: frozenset, field: str) -> None:
    for key in value:
        if key in REFUSED:
            raise unimplemented(REFUSED[key], f"{field}.{key}".lstrip("."))
        if key not in known:
            raise invalid(f"{field}.{key}".lstrip("."), f"Unknown name \"{key}\" at '{field}'")


def task_from_request(
    body: Mapping[str, Any],
    queue: QueueName,
    *,
    new_id: Callable[[str], str],
    new_name: str,
    now: float,
    base_url: str | None = None,
) -> tuple[Task, bool]:
    """CreateTask's body as a torque task of ``queue.queue``.

    :param new_name: the task id to use when the task names none.
    :returns: the task, and whether the client named it (only then can a
        create be a duplicate).
    """
    _known(body, CREATE_FIELDS, "")
    task = _object(body.get("task"), "task")
    _known(task, TASK_FIELDS | OUTPUT_FIELDS, "task")
    named = task.get("name") not in (None, "")
    task_id = task_id_in(queue, task["name"]) if named else new_name
    request = _object(task.get("httpRequest"), "task.httpRequest")
    _known(request, HTTP_FIELDS, "task.httpRequest")
    method = http_method(request.get("httpMethod", 0))
    if method not in METHODS:
        raise invalid(
            "task.httpRequest.httpMethod",
            f"torque does not send {method} requests: use one of {', '.join(sorted(METHODS))}",
        )
    content_type, headers = _headers(request.get("headers"))
    payload = _body(request.get("body"))
    if payload and method not in ("POST", "PUT", "PATCH"):
        raise invalid("task.httpRequest.body", f"a {method} request has no body")
    fields: dict[str, Any] = {
        "url": request.get("url"),
        "method": method,
        "headers": headers,
        "queue": queue.queue,
        "name": task_id,
    }
    if task.get("scheduleTime") not in (None, ""):
        # A time in the past is now (torque's own API refuses one more than
        # a day ago, as a likely mistake; Cloud Tasks takes any).
        fields["eta"] = max(parse_timestamp(task["scheduleTime"], "task.scheduleTime"), now)
    if task.get("dispatchDeadline") not in (None, ""):
        deadline = parse_duration(task["dispatchDeadline"], "task.dispatchDeadline")
        if not MIN_DEADLINE <= deadline <= MAX_DEADLINE:
            raise invalid(
                "task.dispatchDeadline", "task.dispatchDeadline must be from 15s to 1800s"
            )
        fields["timeout"] = deadline
    try:
        parsed = parse_submission(fields, new_id=new_id, now=now, base_url=base_url)
    except InvalidTask as e:
        field = _FIELD_NAMES.get(e.field or "", f"task.{e.field}")
        raise invalid(field, e.message.replace(e.field or "\0", field, 1)) from None
    door_data = {"project": queue.project, "location": queue.location}
    created = attrs.evolve(
        parsed, body=payload, content_type=content_type, door=DOOR, door_data=door_data
    )
    return created, named


def _headers(value: Any) -> tuple[str, dict[str, str]]:
    """``(content type, other headers)`` of ``httpRequest.headers``."""
    if value is None:
        return "", {}
    headers = _object(value, "task.httpRequest.headers")
    content_type, kept = "", {}
    for name, text in headers.items():
        lower = name.lower()
        if not isinstance(text, str):
            raise invalid("task.httpRequest.headers", f"header {name!r} must have a string value")
        if lower.startswith(RESERVED_PREFIXES):
            raise invalid("task.httpRequest.headers", f"header {name!r} is reserved by Cloud Tasks")
        if lower == "content-type":
            content_type = text
        elif lower not in COMPUTED_HEADERS:
            kept[name] = text
    if any(c in content_type for c in "\r\n\x00"):
        raise invalid("task.httpRequest.headers", "Content-Type must not contain CR, LF or NUL")
    return content_type, kept


def _body(value: Any) -> str:
    """The base64 body (proto3 JSON bytes: standard or URL-safe alphabet,
    padded or not), as the text torque keeps."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise invalid("task.httpRequest.body", "task.httpRequest.body must be base64 text")
    text = value.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("task.httpRequest.body", "task.httpRequest.body is not base64") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(
            "task.httpRequest.body",
            "torque keeps a task's body as text: task.httpRequest.body must be UTF-8 once "
            "decoded (binary payloads: base64-encode them once more in your own format)",
        ) from None


# -- a stored task as a Cloud Tasks Task -----------------------------------


def task_json(
    queue: QueueName, task_id: str, fields: Mapping[str, Any], view: str, default_timeout: float
) -> dict[str, Any]:
    """A torque task (the store's description) as a Cloud Tasks ``Task``.

    :param task_id: its Cloud Tasks id (its torque name, or its torque id).
    :param view: ``BASIC`` leaves the body out, ``FULL`` has it.
    :param default_timeout: the node's ``--task-timeout``, for a task with
        no ``dispatchDeadline`` of its own.
    """
    headers: dict[str, str] = {}
    try:
        stored = json.loads(fields.get("headers") or "{}")
    except ValueError:
        stored = {}
    if isinstance(stored, dict):
        headers.update(redact(stored))
    body = fields.get("body") or ""
    if body and stored_content_type(fields):
        headers["Content-Type"] = stored_content_type(fields)
    request: dict[str, Any] = {
        "url": fields.get("url", ""),
        "httpMethod": (fields.get("method") or "POST").upper(),
    }
    if headers:
        request["headers"] = headers
    if view == "FULL" and body:
        request["body"] = base64.b64encode(body.encode()).decode()
    timeout = float(fields.get("timeout") or default_timeout)
    task: dict[str, Any] = {
        "name": queue.task(task_id),
        "httpRequest": request,
        "scheduleTime": format_timestamp(float(fields.get("due_at") or 0)),
        "createTime": format_timestamp(float(fields.get("created_at") or 0), whole=True),
        "dispatchDeadline": format_duration(timeout),
        "view": view,
    }
    history = list(fields.get("history") or [])  # newest first
    attempts = [entry for entry in history if entry.get("attempt")]
    dispatched = int(fields.get("attempts") or 0)
    if fields.get("status") == "running" and dispatched:
        dispatched -= 1  # the attempt in flight is not over yet
    if dispatched:
        task["dispatchCount"] = dispatched
    responses = sum(1 for entry in attempts if entry.get("status"))
    if responses:
        task["responseCount"] = responses
    if attempts:
        first = attempts[-1]
        if first.get("attempt") == 1:
            task["firstAttempt"] = {"dispatchTime": _dispatch_time(first)}
        task["lastAttempt"] = _attempt(attempts[0])
    return task


def _dispatch_time(entry: Mapping[str, Any]) -> str:
    return format_timestamp(float(entry["at"]) - float(entry.get("duration") or 0))


def _attempt(entry: Mapping[str, Any]) -> dict[str, Any]:
    attempt: dict[str, Any] = {"dispatchTime": _dispatch_time(entry)}
    status = entry.get("status")
    if status:
        attempt["responseTime"] = format_timestamp(float(entry["at"]))
        attempt["responseStatus"] = {"code": grpc_code(int(status)), "message": f"HTTP {status}"}
    elif entry.get("error"):
        attempt["responseStatus"] = {"code": 14, "message": str(entry["error"])}
    return attempt


# HTTP statuses as google.rpc.Code numbers (google/rpc/code.proto's table).
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 499: 1, 501: 12, 503: 14, 504: 4}


def grpc_code(status: int) -> int:
    if 200 <= status < 300:
        return 0
    if status in _GRPC_CODES:
        return _GRPC_CODES[status]
    return 13 if status >= 500 else 9 if 400 <= status < 500 else 2
