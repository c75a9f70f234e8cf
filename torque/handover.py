"""A handler's word on a task it took over (SPEC 4 "Later"): what ``POST
/tasks/<id>/complete`` and ``/fail`` check, in order, and the decision they
record.  The API's handlers call these and answer; a check that fails
raises :class:`Refused` with the status to answer."""

from __future__ import annotations

from torque.completion import CompletionKey, attempt_of, looks_like_token
from torque.queue_settings import QueueConfig
from torque.retry import Decision, Delivered, RetryPolicy, reported_failure
from torque.storage import Store
from torque.submission import MAX_AHEAD, InvalidTask, require_text, strict_json
from torque.task import Task


class Refused(Exception):
    """The word can't be taken: ``status`` (403, 404 or 409) and the JSON
    error's ``code``, ``message`` and ``field``."""

    def __init__(self, status: int, code: str, message: str, field: str):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


async def token_attempt(key: CompletionKey | None, given: bytes | None, task_id: str):
    """The attempt a completion token authorises for ``task_id``, or
    ``None`` when the caller sent no completion token (an API token, or none
    on an open node: :class:`torque.auth.RequireToken` let it in).

    :raises Refused: 403 for a completion token that is not this task's.
    """
    if given is None or not looks_like_token(given):
        return None
    secret = await key.get() if key is not None else None
    attempt = attempt_of(secret, given.decode(), task_id) if secret else None
    if attempt is None:
        message = "this completion token is not the token of this task"
        raise Refused(403, "forbidden", message, "authorization")
    return attempt


def read_failure(raw: bytes) -> tuple[str, float | None]:
    """The ``{"error": "…", "retry_after": s}`` body of ``POST
    /tasks/<id>/fail``: the error (its first 200 characters) and the
    seconds to wait before the next attempt, if given."""
    try:
        body = strict_json(raw)
    except ValueError as e:  # UnicodeDecodeError too: the body isn't UTF-8
        raise InvalidTask("body", f"the body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidTask("body", 'the body must be a JSON object: {"error": "…"}', "invalid_json")
    unknown = sorted(set(body) - {"error", "retry_after"})
    if unknown:
        message = f"unknown field {unknown[0]!r}; known: error, retry_after"
        raise InvalidTask(unknown[0], message, "unknown_field")
    error = body.get("error")
    if not isinstance(error, str) or not error.strip():
        raise InvalidTask("error", "error must be a non-empty string", "missing_field")
    retry_after = body.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, int | float)
        or not 0 <= retry_after <= MAX_AHEAD
    ):
        raise InvalidTask("retry_after", f"retry_after must be seconds from 0 to {MAX_AHEAD}")
    return require_text("error", error)[:200], retry_after


async def decide(
    store: Store,
    policy: RetryPolicy,
    task_id: str,
    attempt: int | None,
    failure: tuple[str, float | None] | None,
    now: float,
) -> tuple[Task, Decision]:
    """The waiting task and what the word makes of it: delivered, or (a
    failure) retried or dead by the queue's settings over ``policy``.

    :param attempt: the attempt the token names (``None``: any).
    :raises Refused: 404 without such a task, 409 when it is not waiting
        on that attempt.
    """
    fields = await store.describe(task_id)
    if fields is None:
        raise Refused(404, "not_found", f"no task {task_id!r}", "id")
    task = Task.from_fields(task_id, fields)
    if fields["status"] != "waiting" or attempt not in (None, task.attempts):
        message = (
            f"task {task_id!r} is not waiting for its handler's word"
            f" (it is {fields['status']}, attempt {task.attempts})"
        )
        raise Refused(409, "conflict", message, "id")
    if failure is None:
        return task, Delivered(int(fields.get("last_status") or 202))
    settings = await store.get_settings(task.queue)
    limits = QueueConfig(policy=policy).with_settings(settings).policy
    return task, reported_failure(task, *failure, now, limits)
