"""How QStash's clients see torque's tasks and queues: the JSON shapes the
SDKs parse (``GET /v2/messages/<id>``, the DLQ, ``/v2/queues``).  Pure.

Times are Unix milliseconds, as QStash's.  Headers are shown as QStash does
(``name -> [values]``), with credential-carrying ones redacted as in
torque's own API (:func:`torque.views.redact`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torque.qstash.headers import DEFAULT_RETRIES
from torque.storage import QueueStats
from torque.task import stored_content_type
from torque.views import redact


def millis(seconds: float | str | None) -> int:
    return int(float(seconds or 0) * 1000)


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _listed(headers: Mapping[str, str]) -> dict[str, list[str]]:
    return {name: [value] for name, value in redact(headers).items()}


def message(task_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A task as a QStash message (``parse_message_response`` in the SDK).

    :param fields: the store's description of the task.
    """
    door = _json(fields.get("door_data"))
    headers = dict(_json(fields.get("headers")))
    content_type = stored_content_type(fields) if fields.get("body") else ""
    if content_type:
        headers["Content-Type"] = content_type
    shown: dict[str, Any] = {
        "messageId": task_id,
        "url": fields.get("url", ""),
        "method": fields.get("method") or "POST",
        "header": _listed(headers),
        "body": fields.get("body", ""),
        "maxRetries": int(door.get("retries", DEFAULT_RETRIES)),
        "notBefore": millis(fields.get("due_at")),
        "createdAt": millis(fields.get("created_at")),
        "queueName": fields.get("queue", "default"),
    }
    for key, name in [
        ("caller_ip", "callerIP"),
        ("callback", "callback"),
        ("failure_callback", "failureCallback"),
        ("label", "label"),
    ]:
        if door.get(key):
            shown[name] = door[key]
    for key, name in [
        ("callback_headers", "callbackHeader"),
        ("failure_callback_headers", "failureCallbackHeader"),
    ]:
        if door.get(key):
            shown[name] = _listed(_json(door[key]))
    return shown


def dead_message(task_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter as a QStash DLQ message: its ``dlqId`` is the message
    id, and its response is the last attempt's status and error (torque
    keeps the start of a failing answer, not its headers)."""
    return {
        **message(task_id, fields),
        "dlqId": task_id,
        "responseStatus": int(fields.get("last_status") or 0),
        "responseBody": fields.get("last_error") or "",
    }


def queue(name: str, record: Mapping[str, Any], stats: QueueStats, parallelism: int) -> dict:
    """A QStash queue: ``lag`` is the messages waiting (scheduled)."""
    return {
        "name": name,
        "parallelism": parallelism,
        "createdAt": record.get("createdAt", 0),
        "updatedAt": record.get("updatedAt", 0),
        "lag": stats.scheduled,
        "paused": stats.paused,
    }
