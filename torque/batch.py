"""``POST /tasks/batch``: many tasks in one request and one Redis round trip.

The body is a JSON array of task objects (each as ``POST /hooks/add``'s
JSON body, with its own ``queue``).  Each is judged on its own: the valid
ones are stored (in one :meth:`~torque.storage.Store.add_many` call) even
when others are refused, and the answer holds one result per task, in
order.  Only a body that is no such array is refused as a whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from torque.submission import InvalidTask, parse_submission, strict_json
from torque.task import Task
from torque.views import added_task

#: Tasks one request may hold.
MAX_TASKS = 1000


def read_batch(raw: bytes) -> list[Any]:
    """The items of a batch body.

    :raises InvalidTask: for a body that is not a JSON array of 1 to
        :data:`MAX_TASKS` items (field ``body``).
    """
    try:
        items = strict_json(raw)
    except ValueError as e:  # UnicodeDecodeError too
        raise InvalidTask("body", f"the body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(items, list):
        raise InvalidTask("body", "the body must be a JSON array of task objects", "invalid_json")
    if not 1 <= len(items) <= MAX_TASKS:
        raise InvalidTask("body", f"a batch holds 1 to {MAX_TASKS} tasks, not {len(items)}")
    return items


def parse_items(
    items: list[Any],
    new_id: Callable[[str], str],
    now: float,
    base_url: str | None,
) -> list[Task | InvalidTask]:
    """Each item's :class:`Task`, or why it can't be one."""
    parsed: list[Task | InvalidTask] = []
    for item in items:
        if not isinstance(item, dict):
            parsed.append(InvalidTask("body", "each task must be a JSON object", "invalid_json"))
            continue
        try:
            parsed.append(parse_submission(item, new_id=new_id, now=now, base_url=base_url))
        except InvalidTask as e:
            parsed.append(e)
    return parsed


def error_result(e: InvalidTask) -> dict[str, Any]:
    error = {"code": e.code, "message": e.message, "field": e.field}
    return {"status": 400, "error": error}


def added_result(task: Task) -> dict[str, Any]:
    """A new task's result: what ``POST /hooks/add`` answers, and 201."""
    return {"status": 201, "task": added_task(task)}


# added_result's JSON, as json.dumps writes it with SEPARATORS, but filled
# in by hand: encoding a hundred such dicts was the largest part of a
# batch's answer, and most of their strings (the URL, the queue, the name)
# are the same from one task to the next, so each is encoded once a batch.
# ResultTests holds it to json.dumps(added_result(task)).
SEPARATORS = (",", ":")
_ADDED = (
    '{{"status":201,"task":{{"id":{id},"queue":{queue},"name":{name},"url":{url},'
    '"status":"scheduled","due_at":{due_at},"created_at":{created_at}}}}}'
)


class _Encoded(dict):
    """JSON text of the strings met so far, each encoded once."""

    def __missing__(self, text: str) -> str:
        encoded = self[text] = json.dumps(text)
        return encoded


def _number(value: float) -> str:
    """A number as json.dumps writes it (a time: a finite float, mostly)."""
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)


def results(
    parsed: list[Task | InvalidTask], added: list[tuple[str, bool]]
) -> tuple[list[str], dict[int, str]]:
    """Each item's result as JSON text, in order, and the duplicates: their
    index and the id of the task that holds their name (whose result, until
    the caller describes that task with :func:`duplicate_result`, is just
    its id).

    :param added: what the store answered for the tasks of ``parsed``.
    """
    answers = iter(added)
    shown: list[str] = []
    duplicates: dict[int, str] = {}
    encoded = _Encoded()
    for item in parsed:
        if isinstance(item, InvalidTask):
            shown.append(json.dumps(error_result(item), separators=SEPARATORS))
            continue
        task_id, created = next(answers)
        if created:
            shown.append(
                _ADDED.format(
                    id=json.dumps(item.id),
                    queue=encoded[item.queue],
                    name=encoded[item.name] if item.name else "null",
                    url=encoded[item.url],
                    due_at=_number(item.due_at),
                    created_at=_number(item.created_at),
                )
            )
        else:
            duplicates[len(shown)] = task_id
            shown.append(duplicate_result({"id": task_id}))
    return shown, duplicates


def answer(results: list[str]) -> bytes:
    """The body of the answer to a batch: its results (JSON texts)."""
    return ('{"results":[' + ",".join(results) + "]}").encode()


def new_per_queue(tasks: list[Task], added: list[tuple[str, bool]]) -> dict[str, tuple[float, int]]:
    """Each queue that got a new task: its earliest new due time (what to
    wake) and how many new tasks it got (what to count)."""
    per_queue: dict[str, tuple[float, int]] = {}
    for task, (_, created) in zip(tasks, added, strict=True):
        if created:
            due_at, count = per_queue.get(task.queue, (task.due_at, 0))
            per_queue[task.queue] = (min(due_at, task.due_at), count + 1)
    return per_queue


def duplicate_result(shown: dict[str, Any]) -> str:
    """A duplicate name's result as JSON text: the existing task, and 200."""
    return json.dumps({"status": 200, "task": {**shown, "duplicate": True}}, separators=SEPARATORS)
