"""How the store reads the scripts' answers: Redis replies (lists of
strings, as :mod:`torque.scripts` returns them) made into the records of
:mod:`torque.storage`.  Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from torque.storage import (
    Claim,
    DeadPage,
    Minute,
    QueueStats,
    TaskPage,
    history_entry,
)
from torque.task import Task


def pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def task_fields(queue: str, flat: Sequence[str]) -> dict[str, str]:
    """A task hash's fields, with the queue its id names (the hash leaves
    it out: :meth:`Task.to_fields`)."""
    return {**pairs(flat), "queue": queue}


def added(reply) -> list[tuple[str, bool]]:
    return [(reply[i], bool(reply[i + 1])) for i in range(0, len(reply), 2)]


def claimed(reply, queue: str) -> Claim:
    heads = [float(score) for score in reply[:2] if score != ""]
    tasks = [Task.from_fields(item[0], task_fields(queue, item[1:])) for item in reply[3:]]
    skipped, past, *waiting = reply[2]
    return Claim(tasks, min(heads) if heads else None, int(skipped), int(past), tuple(waiting))


def described(reply, queue: str) -> dict | None:
    if not reply:
        return None
    entries = [history_of(text) for text in reply[1]]
    return {"status": reply[0], "history": entries, **task_fields(queue, reply[2:])}


def history_of(text: str) -> dict[str, Any]:
    """An entry as the scripts wrote it (Lua's cjson leaves out what is
    nil), with every key of :func:`history_entry`."""
    entry = json.loads(text)
    return history_entry(
        entry.get("at"),
        entry.get("outcome"),
        entry.get("attempt"),
        entry.get("duration"),
        entry.get("status"),
        entry.get("error"),
    )


def queue_stats(row, now: float) -> QueueStats:
    name, scheduled, due, running, dead, delivered, failed, paused, head, known, recent = row
    oldest = now - float(head) if head != "" and float(head) <= now else 0.0
    minutes = tuple(
        Minute(int(recent[i]), int(recent[i + 1]), int(recent[i + 2]), int(recent[i + 3]))
        for i in range(0, len(recent), 4)
    )
    return QueueStats(
        name=name,
        scheduled=int(scheduled),
        due=int(due),
        running=int(running),
        dead=int(dead),
        delivered=int(delivered),
        failed=int(failed),
        oldest_due_age=oldest,
        paused=bool(int(paused)),
        known=bool(int(known)) or bool(int(scheduled) or int(running) or int(dead)),
        recent=minutes,
    )


def dead_page(reply, queue: str) -> DeadPage:
    letters = []
    for item in reply[1:]:
        fields = task_fields(queue, item[2:])
        fields["dead_at"] = fields.get("dead_at") or item[1]
        letters.append((item[0], fields))
    return DeadPage(int(reply[0]), letters)


def task_page(reply, state: str, queue: str) -> TaskPage:
    tasks = []
    for item in reply[2:]:
        history = [history_of(text) for text in item[1]]
        fields = task_fields(queue, item[2:])
        # A waiting task keeps its lease in the running set (SPEC 4 "Later").
        status = "waiting" if "waiting_until" in fields else state
        tasks.append((item[0], {"status": status, "history": history, **fields}))
    after = (float(reply[0]), reply[1]) if reply[0] != "" else None
    return TaskPage(tasks, after)
