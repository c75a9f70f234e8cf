"""What a Cloud Tasks request says beyond its route: its JSON body, query
parameters, page tokens, field masks and custom verbs; and the JSON answer.

The official clients send ``Content-Type: application/json`` on bodiless GETs
and DELETEs too, and ``$alt=json;enum-encoding=int`` on every call (nothing
to do: enums are read as numbers or names alike).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from torque.cloudtasks import names
from torque.cloudtasks.errors import invalid, not_found
from torque.submission import strict_json

#: The states a task is listed and found in, in ListTasks' order: Cloud
#: Tasks deletes a task once it is delivered or has failed for good (torque
#: keeps a dead letter).
LIVE = ("scheduled", "running")


def read_json(request) -> dict[str, Any]:
    """The body as a JSON object; none at all is ``{}`` (the clients send
    ``Content-Type: application/json`` on bodiless GETs and DELETEs)."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        body = strict_json(raw)
    except ValueError as e:
        raise invalid("body", f"Invalid JSON payload received: {e}") from None
    if not isinstance(body, dict):
        raise invalid("body", "Invalid JSON payload received: the body must be a JSON object")
    return body


def arg(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(name, f"{name} must be UTF-8") from None


def page_size(request, default: int, most: int) -> int:
    text = arg(request, "pageSize")
    if text in (None, "", "0"):
        return default
    if not text.isdigit() or len(text) > 9:
        raise invalid("pageSize", "pageSize must be a positive whole number")
    return min(int(text), most)


def page_token(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def read_page_token(text: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise invalid("pageToken", "pageToken is not one this server gave out") from None


def json_answer(request, body: Any) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(body).encode()


def camel(path: str) -> str:
    """A field mask path in lowerCamelCase, as proto3 JSON writes it: the
    Python client sends ``rateLimits.maxDispatchesPerSecond``, the Node one
    passes on what its caller wrote (``rate_limits.max_dispatches_per_second``)."""
    return ".".join(
        part.split("_")[0] + "".join(w[:1].upper() + w[1:] for w in part.split("_")[1:])
        for part in path.split(".")
    )


def no_verb(segment: str) -> str:
    resource, verb = names.split_verb(segment)
    if verb is not None:
        raise not_found(f"no method {verb!r} with this HTTP method")
    return resource


def state_filter(text: str | None) -> str | None:
    """ListQueues' ``filter``: empty, or ``state: PAUSED`` / ``state: RUNNING``."""
    if not text or not text.strip():
        return None
    field, colon, value = text.partition(":")
    value = value.strip().strip('"')
    if field.strip() != "state" or not colon or value not in ("PAUSED", "RUNNING"):
        raise invalid("filter", 'filter may only be "state: PAUSED" or "state: RUNNING"')
    return value


def task_position(token: str | None) -> tuple[str, tuple[float, str] | None]:
    if not token:
        return LIVE[0], None
    position = read_page_token(token)
    bad = invalid("pageToken", "pageToken is not one this server gave out")
    if not isinstance(position, list) or not position or position[0] not in LIVE:
        raise bad
    if len(position) == 1:
        return position[0], None
    if len(position) != 3 or not all(isinstance(p, str) for p in position):
        raise bad
    try:
        return position[0], (float(position[1]), position[2])
    except ValueError:
        raise bad from None
