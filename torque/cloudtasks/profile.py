"""The headers Cloud Tasks puts on a request to a handler, on the tasks
that came in by the Cloud Tasks door (:mod:`torque.profiles`)."""

from __future__ import annotations

from collections.abc import Mapping

from torque.task import Task

USER_AGENT = "Google-Cloud-Tasks"


class CloudTasksProfile:
    """``X-CloudTasks-*`` and ``User-Agent: Google-Cloud-Tasks``.

    ``TaskRetryCount`` and ``TaskExecutionCount`` are both the attempts
    before this one: torque does not tell apart, on the task it hands a
    node, an earlier attempt that got an answer from one that did not.
    ``X-CloudTasks-TaskPreviousResponse`` and ``-TaskRetryReason`` are not
    sent (the claimed task does not carry its last answer).
    """

    def headers(self, task: Task, now: float, body: bytes) -> Mapping[str, str]:
        before = str(max(task.attempts - 1, 0))
        return {
            "User-Agent": USER_AGENT,
            "X-CloudTasks-QueueName": task.queue,
            "X-CloudTasks-TaskName": task.name or task.id,
            "X-CloudTasks-TaskRetryCount": before,
            "X-CloudTasks-TaskExecutionCount": before,
            "X-CloudTasks-TaskETA": f"{task.due_at:.6f}",
        }
