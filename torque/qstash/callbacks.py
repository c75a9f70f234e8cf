"""QStash callbacks: after an attempt, a new message to the message's
``Upstash-Callback`` URL (after every attempt, until one succeeds or the
retries run out), and to its ``Upstash-Failure-Callback`` URL once it is
dead.  Each is an ordinary QStash message (signed, retried), whose JSON body
describes the attempt as QStash's does.

torque keeps the start of a failing answer (``last_error``), not a
handler's response headers or a successful answer's body: ``header`` is
empty, and ``body`` is the base64 of that start (empty on a success).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from torque.keys import task_id
from torque.qstash import DOOR
from torque.qstash.headers import DEFAULT_RETRIES, new_message_id
from torque.retry import DEAD, Decision, Outcome, Response
from torque.storage import Store
from torque.task import JSON, Task

log = Logger()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def callback_body(task: Task, outcome: Outcome) -> dict:
    """The JSON a callback carries about one attempt of ``task``."""
    status = outcome.status if isinstance(outcome, Response) else 0
    detail = outcome.detail if isinstance(outcome, Response) else outcome.error
    headers = {name: [value] for name, value in task.headers.items()}
    if task.content_type:
        headers["Content-Type"] = [task.content_type]
    return {
        "status": status,
        "header": {},
        "body": _b64(detail) if detail else "",
        "retried": max(task.attempts - 1, 0),
        "maxRetries": int(task.door_data.get("retries", DEFAULT_RETRIES)),
        "sourceMessageId": task.id,
        "url": task.url,
        "method": task.method,
        "sourceHeader": headers,
        "sourceBody": _b64(task.body),
        "notBefore": int(task.due_at * 1000),
        "createdAt": int(task.created_at * 1000),
        "callerIP": task.door_data.get("caller_ip", ""),
    }


def callback_tasks(
    task: Task, outcome: Outcome, decision: Decision, now: float, new_id: Callable[[str], str]
) -> list[Task]:
    """The callback messages one attempt of a QStash message makes."""
    if task.door != DOOR:
        return []
    data = task.door_data
    targets = []
    if data.get("callback"):
        targets.append((data["callback"], data.get("callback_headers")))
    if data.get("failure_callback") and decision.label == DEAD:
        targets.append((data["failure_callback"], data.get("failure_callback_headers")))
    if not targets:
        return []
    body = json.dumps(callback_body(task, outcome))
    return [
        Task(
            id=new_id(task.queue),
            queue=task.queue,
            url=url,
            body=body,
            content_type=JSON,
            headers=json.loads(extra) if extra else {},
            due_at=now,
            created_at=now,
            max_errors=DEFAULT_RETRIES + 1,
            door=DOOR,
            door_data={"retries": str(DEFAULT_RETRIES), "source_message": task.id},
        )
        for url, extra in targets
    ]


class Callbacks:
    """Publishes the callbacks of each finished attempt (a scheduler's
    ``on_attempt``); a callback Redis doesn't take is logged, not retried."""

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        wake: Callable[[str, float], object],
        new_id: Callable[[str], str] = lambda queue: task_id(
            queue, new_message_id(secrets.token_urlsafe)
        ),
    ):
        self.store = store
        self.clock = clock
        self.wake = wake
        self.new_id = new_id

    def attempt_finished(self, task: Task, outcome: Outcome, decision: Decision) -> None:
        now = self.clock.seconds()
        for callback in callback_tasks(task, outcome, decision, now, self.new_id):
            d = self.store.add(callback)
            d.addCallback(lambda _, c=callback: self.wake(c.queue, c.due_at))
            d.addErrback(
                lambda f, c=callback: log.error(
                    "callback of {source} to {url} not added: {error}",
                    source=task.id,
                    url=c.url,
                    error=f.getErrorMessage(),
                )
            )
