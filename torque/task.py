"""What a task is, and how it sits in Redis.

Everything here is pure: no I/O, no clock.  How a submission becomes a
:class:`Task` (validation, limits, encoding) is :mod:`torque.submission`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import attrs

from torque.keys import queue_of_id

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "GET"})
QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,500}")


@attrs.frozen
class Task:
    """One web-hook call to make, and the bookkeeping of its attempts.

    :param body: the request body, already encoded (form or JSON).
    :param timeout: per-task override of the node's ``--task-timeout``.
    :param max_errors: per-task override of ``--max-task-errors``.
    :param attempts: how many times it has been handed to a node, this
        attempt included once it is claimed.
    :param door: the front door it came in by (``""``: torque's own API;
        a compatible door names itself, and the dispatcher adds that door's
        delivery headers, :mod:`torque.profiles`).
    :param door_data: what that door keeps with the task for its delivery
        headers (strings only).
    :param last_status: the status its previous attempt got (``None``: no
        answer, or no previous attempt), and ``last_error`` why that attempt
        failed, as the task's hash says when it is claimed: for a door's
        delivery headers (``X-CloudTasks-TaskPreviousResponse``).  Written by
        the store when it settles an attempt, never by :meth:`to_fields`,
        and not part of a task's equality.
    """

    id: str
    queue: str
    url: str
    method: str = "POST"
    body: str = ""
    content_type: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    name: str = ""
    due_at: float = 0.0
    created_at: float = 0.0
    timeout: float | None = None
    max_errors: int | None = None
    attempts: int = 0
    door: str = ""
    door_data: Mapping[str, str] = attrs.field(factory=dict)
    last_status: int | None = attrs.field(default=None, eq=False)
    last_error: str = attrs.field(default="", eq=False)

    def to_fields(self) -> list[str]:
        """Flatten into HSET arguments, leaving out what is unset, the
        default that :meth:`from_fields` reads back (a ``POST``, a form
        body, no attempt yet) and the queue, which the id names: a
        scheduled task costs Redis less memory.

        (Written out field by field: called for every task added, where a
        dict of every field, filtered, was a twentieth of a batch's CPU.)
        """
        flat = []  # no queue: the id names it (torque.keys.queue_of_id)
        if self.url:
            flat += ("url", self.url)
        if self.method and self.method != "POST":
            flat += ("method", self.method)
        if self.body:
            flat += ("body", self.body)
        if self.content_type and not (self.content_type == FORM and self.body):
            flat += ("content_type", self.content_type)
        if self.headers:
            flat += ("headers", json.dumps(dict(self.headers)))
        if self.name:
            flat += ("name", self.name)
        if self.timeout is not None:
            flat += ("timeout", repr(self.timeout))
        if self.max_errors is not None:
            flat += ("max_errors", repr(self.max_errors))
        flat += ("created_at", repr(self.created_at), "due_at", repr(self.due_at))
        if self.attempts:
            flat += ("attempts", str(self.attempts))
        if self.door:
            flat += ("door", self.door)
        if self.door_data:
            flat += ("door_data", json.dumps(dict(self.door_data)))
        return flat

    @classmethod
    def from_fields(cls, task_id: str, fields: Mapping[str, str]) -> Task:
        """Read a task hash back, tolerating the fields a hand-written task
        (README: "adding tasks from another language") may leave out."""
        body = fields.get("body", "")
        headers = fields.get("headers") or "{}"
        return cls(
            id=task_id,
            queue=fields.get("queue") or queue_of_id(task_id) or "default",
            url=fields.get("url", ""),
            method=(fields.get("method") or "POST").upper(),
            body=body,
            content_type=stored_content_type(fields),
            headers=json.loads(headers),
            name=fields.get("name", ""),
            due_at=float(fields.get("due_at") or 0),
            created_at=float(fields.get("created_at") or 0),
            timeout=_float_or_none(fields.get("timeout")),
            max_errors=_int_or_none(fields.get("max_errors")),
            attempts=int(fields.get("attempts") or 0),
            door=fields.get("door", ""),
            door_data=json.loads(fields.get("door_data") or "{}"),
            last_status=_status(fields.get("last_status")),
            last_error=fields.get("last_error") or "",
        )


def stored_content_type(fields: Mapping[str, str]) -> str:
    """A task hash's content type: left out for a form body (see
    :meth:`Task.to_fields`), and by hand-written tasks."""
    return fields.get("content_type") or (FORM if fields.get("body") else "")


def _float_or_none(text: str | None) -> float | None:
    return float(text) if text else None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text else None


def _status(text: str | None) -> int | None:
    """A stored ``last_status``; ``None`` when there is none (or it is not
    a number: a hash written by hand)."""
    return int(text) if text and text.isdigit() else None
