"""The headers Cloud Tasks puts on a request to a handler, on the tasks
that came in by the Cloud Tasks door (:mod:`torque.profiles`)."""

from __future__ import annotations

from collections.abc import Mapping

from torque.task import Task

USER_AGENT = "Google-Cloud-Tasks"
# Characters of the previous attempt's error a retry carries at most.
MAX_REASON = 300


class CloudTasksProfile:
    """``X-CloudTasks-*`` and ``User-Agent: Google-Cloud-Tasks``.

    ``TaskRetryCount`` and ``TaskExecutionCount`` are both the attempts
    before this one: torque does not tell apart, on the task it hands a
    node, an earlier attempt that got an answer from one that did not.  On
    a retry, ``X-CloudTasks-TaskPreviousResponse`` is the status the
    previous attempt got (when it got one) and ``-TaskRetryReason`` why it
    failed (torque's ``last_error``: ``HTTP 503: <start of the answer>``,
    ``timed out after 60 s``, …).
    """

    def headers(self, task: Task, now: float, body: bytes) -> Mapping[str, str]:
        before = str(max(task.attempts - 1, 0))
        headers = {
            "User-Agent": USER_AGENT,
            "X-CloudTasks-QueueName": task.queue,
            "X-CloudTasks-TaskName": task.name or task.id,
            "X-CloudTasks-TaskRetryCount": before,
            "X-CloudTasks-TaskExecutionCount": before,
            "X-CloudTasks-TaskETA": f"{task.due_at:.6f}",
        }
        if task.attempts > 1 and task.last_status is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(task.last_status)
        if task.attempts > 1 and task.last_error:
            reason = "".join(c if c.isprintable() else " " for c in task.last_error)
            headers["X-CloudTasks-TaskRetryReason"] = reason[:MAX_REASON]
        return headers
