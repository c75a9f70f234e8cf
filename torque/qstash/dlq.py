"""QStash's dead-letter queue over torque's dead letters: one list across
every queue, of the messages that came in by the QStash door, paged with a
cursor and filtered as QStash's ``GET /v2/dlq`` is.

A message's ``dlqId`` is its id.  The cursor is ``<queue>:<offset>``: where
the next page starts, in that queue's dead letters (newest first), the
queues taken in name order.  Each page costs the queues it walks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from torque.qstash import DOOR
from torque.qstash.headers import QStashError
from torque.qstash.views import millis
from torque.storage import Store
from torque.task import QUEUE_RE

#: Dead letters read from a queue at once.
BATCH = 100
#: Filters of ``GET /v2/dlq`` torque has nothing to match with.
NO_SUCH = {"topicName": "URL groups", "scheduleId": "schedules"}
FILTERS = frozenset(
    {"messageId", "url", "queueName", "responseStatus", "fromDate", "toDate", "callerIp", "label"}
)


@attrs.frozen
class Selection:
    """Dead letters chosen, ``(queue, id, fields)``, and the cursor of the
    next page (``None``: no more)."""

    letters: list[tuple[str, str, dict[str, Any]]]
    cursor: str | None


def check_filters(args: Mapping[str, str]) -> dict[str, str]:
    """The filters of a DLQ request (query arguments); a 400 for one torque
    can't match, rather than a page that ignores it."""
    for name, what in NO_SUCH.items():
        if args.get(name):
            raise QStashError(400, f"{name} is not supported: torque has no {what}")
    return {name: value for name, value in args.items() if name in FILTERS and value}


def matches(task_id: str, fields: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    if fields.get("door") != DOOR:
        return False
    door = json.loads(fields.get("door_data") or "{}")
    dead_at = millis(fields.get("dead_at"))
    checks = {
        "messageId": task_id,
        "url": fields.get("url"),
        "queueName": fields.get("queue"),
        "responseStatus": str(fields.get("last_status") or ""),
        "callerIp": door.get("caller_ip", ""),
        "label": door.get("label", ""),
    }
    for name, value in filters.items():
        if name == "fromDate":
            if not value.isdigit() or dead_at < int(value):
                return False
        elif name == "toDate":
            if not value.isdigit() or dead_at > int(value):
                return False
        elif checks.get(name) != value:
            return False
    return True


def parse_cursor(cursor: str | None) -> tuple[str | None, int]:
    if not cursor:
        return None, 0
    queue, _, offset = cursor.rpartition(":")
    if not QUEUE_RE.fullmatch(queue) or not offset.isdigit():
        raise QStashError(400, "cursor must be one a previous page gave")
    return queue, int(offset)


async def queue_names(store: Store, now: float, after: str | None) -> list[str]:
    """Every queue from ``after`` on (itself included), by name."""
    names: list[str] = []
    cursor = None
    while True:
        page = await store.queue_page(cursor, 500, now, names_only=True)
        names += [q if isinstance(q, str) else q.name for q in page.queues]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return [n for n in names if after is None or n >= after]


async def select(
    store: Store,
    now: float,
    filters: Mapping[str, str],
    cursor: str | None,
    count: int,
) -> Selection:
    """Up to ``count`` QStash dead letters matching ``filters``, from ``cursor``."""
    start, offset = parse_cursor(cursor)
    if filters.get("queueName"):
        queues = [filters["queueName"]] if start in (None, filters["queueName"]) else []
    else:
        queues = await queue_names(store, now, start)
    chosen: list[tuple[str, str, dict[str, Any]]] = []
    for queue in queues:
        at = offset if queue == start else 0
        while True:
            page = await store.dead_letters(queue, at, BATCH)
            for task_id, fields in page.letters:
                at += 1
                if matches(task_id, fields, filters):
                    chosen.append((queue, task_id, fields))
                    if len(chosen) == count:
                        return Selection(chosen, f"{queue}:{at}")
            if not page.letters or at >= page.total:
                break
    return Selection(chosen, None)


def after_removal(selection: Selection) -> str | None:
    """The cursor of the next page once the selection's letters left the
    dead set (deleted or retried): its queue's offset moves back by them."""
    if selection.cursor is None:
        return None
    queue, offset = parse_cursor(selection.cursor)
    removed = sum(1 for q, _, _ in selection.letters if q == queue)
    return f"{queue}:{max(offset - removed, 0)}"
