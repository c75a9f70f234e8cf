"""``POST /tasks/batch``: many tasks in one request and one Redis round trip.

The body is a JSON array of task objects (each as ``POST /hooks/add``'s
JSON body, with its own ``queue``).  Each is judged on its own: the valid
ones are stored (in one :meth:`~torque.storage.Store.add_many` call) even
when others are refused, and the answer holds one result per task, in
order.  Only a body that is no such array is refused as a whole.
"""

from __future__ import annotations

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


def results(
    parsed: list[Task | InvalidTask], added: list[tuple[str, bool]]
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Each item's result, in order, and the duplicates: their index and
    the id of the task that holds their name (whose result, until the
    caller describes that task, is just its id).

    :param added: what the store answered for the tasks of ``parsed``.
    """
    answers = iter(added)
    shown: list[dict[str, Any]] = []
    duplicates: dict[int, str] = {}
    for item in parsed:
        if isinstance(item, InvalidTask):
            shown.append(error_result(item))
            continue
        task_id, created = next(answers)
        if created:
            shown.append(added_result(item))
        else:
            duplicates[len(shown)] = task_id
            shown.append(duplicate_result({"id": task_id}))
    return shown, duplicates


def earliest_due(tasks: list[Task], added: list[tuple[str, bool]]) -> dict[str, float]:
    """Each queue that got a new task, and its earliest new due time: what
    to wake."""
    due: dict[str, float] = {}
    for task, (_, created) in zip(tasks, added, strict=True):
        if created:
            due[task.queue] = min(task.due_at, due.get(task.queue, task.due_at))
    return due


def duplicate_result(shown: dict[str, Any]) -> dict[str, Any]:
    """A duplicate name's result: the existing task, and 200."""
    return {"status": 200, "task": {**shown, "duplicate": True}}
