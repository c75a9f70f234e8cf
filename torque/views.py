"""How the API shows tasks and queues: JSON shapes, and secrets redacted.

A task's headers are stored as given (the web hook needs them), but headers
that carry credentials are never shown: not in ``GET /tasks/<id>``, not in
the dead letters, not on the dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torque.storage import NodeInfo, QueueStats
from torque.task import Task, stored_content_type

REDACTED = "[redacted]"
# Authorization, Cookie, *-Token, *-Key, *Secret*, and their usual cousins.
SECRET_HEADER = re.compile(
    r"authorization|cookie|token|(^|[-_])key$|api-?key|secret|password|passwd|signature",
    re.IGNORECASE,
)


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the values of credential-carrying ones replaced."""
    return {
        name: REDACTED if SECRET_HEADER.search(name) else value for name, value in headers.items()
    }


def added_task(task: Task) -> dict[str, Any]:
    """The answer to an add that stored ``task``."""
    return {
        "id": task.id,
        "queue": task.queue,
        "name": task.name or None,
        "url": task.url,
        "status": "scheduled",
        "due_at": task.due_at,
        "created_at": task.created_at,
    }


def _number(value: str | None, kind: type = float):
    return kind(value) if value not in (None, "") else None


def _headers(text: str | None) -> dict[str, str]:
    try:
        headers = json.loads(text) if text else {}
    except ValueError:
        return {}
    return redact(headers) if isinstance(headers, dict) else {}


def public_task(task_id: str, fields: Mapping[str, Any], full: bool = True) -> dict[str, Any]:
    """A task as the API shows it: numbers as numbers, unset as null.

    :param fields: the store's description (hash fields, ``status``, and
        ``history`` when ``full``).
    :param full: include the body and the attempt history (``False`` for
        lists such as the dead letters).
    """
    task = {
        "id": task_id,
        "queue": fields.get("queue", "default"),
        "name": fields.get("name") or None,
        "url": fields.get("url"),
        "method": fields.get("method") or "POST",
        "status": fields["status"],
        "attempts": int(fields.get("attempts") or 0),
        "due_at": _number(fields.get("due_at")),
        "created_at": _number(fields.get("created_at")),
        "last_attempt_at": _number(fields.get("last_attempt_at")),
        "last_status": _number(fields.get("last_status"), int),
        "last_error": fields.get("last_error") or None,
        "delivered_at": _number(fields.get("delivered_at")),
        "dead_at": _number(fields.get("dead_at")),
        "waiting_until": _number(fields.get("waiting_until")),
        "timeout": _number(fields.get("timeout")),
        "max_errors": _number(fields.get("max_errors"), int),
        # The body's media type: none without a body (a delivered task's is gone).
        "content_type": (stored_content_type(fields) if fields.get("body") else "") or None,
        "headers": _headers(fields.get("headers")),
    }
    if full:
        task["body"] = fields.get("body")
        task["history"] = list(fields.get("history", []))
    return task


def processed_by(queue: str, nodes: Sequence[NodeInfo]) -> int:
    """How many of the live ``nodes`` process ``queue``."""
    return sum(1 for node in nodes if node.processes(queue))


def public_node(node: NodeInfo) -> dict[str, Any]:
    """A live node as ``GET /nodes`` shows it; ``queues`` is ``"*"`` for a
    node that processes every queue."""
    return {
        "id": node.id,
        "host": node.host,
        "pid": node.pid,
        "version": node.version,
        "queues": "*" if node.queues is None else list(node.queues),
        "in_flight": node.in_flight,
        "started_at": node.started_at,
        "seen_at": node.seen_at,
        "worker": node.worker or None,
        "supervisor_pid": node.supervisor_pid or None,
    }


def public_queue(
    stats: QueueStats, processed_by: int | None = None, open_circuits: list[str] | None = None
) -> dict[str, Any]:
    """A queue as ``GET /queues`` shows it.

    :param processed_by: live nodes that process it (0 with due tasks: they
        wait for a node that will never come; the dashboard warns).
    :param open_circuits: its target hosts whose circuit is open on the
        node that answers (their tasks wait for a probe to succeed).
    """
    shown = {
        "name": stats.name,
        "scheduled": stats.scheduled,
        "due": stats.due,
        "running": stats.running,
        "dead": stats.dead,
        "delivered": stats.delivered,
        "failed": stats.failed,
        "oldest_due_age": stats.oldest_due_age,
        "paused": stats.paused,
        "recent": [
            {"at": m.at, "delivered": m.delivered, "retried": m.retried, "dead": m.dead}
            for m in stats.recent
        ],
    }
    if processed_by is not None:
        shown["processed_by"] = processed_by
    if open_circuits is not None:
        shown["open_circuits"] = open_circuits
    return shown
