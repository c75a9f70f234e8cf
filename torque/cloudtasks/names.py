"""Cloud Tasks resource names, and how they map onto torque.

``projects/P/locations/L/queues/Q`` is torque's queue ``Q``: a Cloud Tasks
queue id (``[A-Za-z0-9-]{1,100}``) is always a torque queue name, so the
queue shows under the same name in ``GET /queues``, the dashboard and
``X-CloudTasks-QueueName``.  The door remembers which project and location
a queue was created under; the same queue id under another project or
location is another queue to Cloud Tasks, and here it is refused (a node
holds one queue of each id).

``…/queues/Q/tasks/T`` is the torque task of queue ``Q`` named ``T`` (a
task id is ``[A-Za-z0-9_-]{1,500}``, torque's name rule): the name gives
Cloud Tasks' duplicate rules for free.  A task torque's own API added
without a name is ``T`` = its torque id.
"""

from __future__ import annotations

import re
import secrets

import attrs

from torque.cloudtasks.errors import invalid

PROJECT_RE = re.compile(r"[A-Za-z0-9.:-]{1,100}")
LOCATION_RE = re.compile(r"[A-Za-z0-9-]{1,63}")
QUEUE_ID_RE = re.compile(r"[A-Za-z0-9-]{1,100}")
TASK_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,500}")


@attrs.frozen
class QueueName:
    """``projects/<project>/locations/<location>/queues/<queue>``."""

    project: str
    location: str
    queue: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/queues/{self.queue}"

    def task(self, task_id: str) -> str:
        return f"{self}/tasks/{task_id}"


def parent_of(project: str, location: str) -> str:
    """The ``projects/P/locations/L`` a route names, checked."""
    if not PROJECT_RE.fullmatch(project):
        raise invalid("parent", f"project id {project!r} is not a valid project id")
    if not LOCATION_RE.fullmatch(location):
        raise invalid("parent", f"location id {location!r} is not a valid location id")
    return f"projects/{project}/locations/{location}"


def queue_name(project: str, location: str, queue: str, field: str = "name") -> QueueName:
    """The queue a route names, checked."""
    parent_of(project, location)
    if not QUEUE_ID_RE.fullmatch(queue):
        raise invalid(field, f"queue id {queue!r} must match {QUEUE_ID_RE.pattern}")
    return QueueName(project, location, queue)


def parse_queue_name(text: object, field: str = "name") -> QueueName:
    """A full queue name given in a body (CreateQueue's ``queue.name``)."""
    if not isinstance(text, str):
        raise invalid(field, f"{field} must be a queue name: projects/P/locations/L/queues/Q")
    parts = text.split("/")
    if len(parts) != 6 or parts[0::2] != ["projects", "locations", "queues"]:
        raise invalid(field, f"{field} must be a queue name: projects/P/locations/L/queues/Q")
    return queue_name(parts[1], parts[3], parts[5], field)


def task_id_in(queue: QueueName, text: object, field: str = "task.name") -> str:
    """The task id of a full task name given in a body, which must lie in
    ``queue`` (CreateTask's ``task.name``)."""
    prefix = f"{queue}/tasks/"
    if not isinstance(text, str) or not text.startswith(prefix):
        raise invalid(field, f"{field} must be {prefix}TASK_ID, in the queue the request names")
    return check_task_id(text[len(prefix) :], field)


def check_task_id(task_id: str, field: str = "name") -> str:
    if not TASK_ID_RE.fullmatch(task_id):
        raise invalid(field, f"task id {task_id!r} must match {TASK_ID_RE.pattern}")
    return task_id


def split_verb(segment: str) -> tuple[str, str | None]:
    """A path segment with a custom verb (``my-queue:pause``) split on its
    last ``:``; ``(segment, None)`` when there is none."""
    resource, colon, verb = segment.rpartition(":")
    if not colon:
        return segment, None
    return resource, verb


def new_task_id() -> str:
    """A task id as Cloud Tasks makes them: 20 decimal digits."""
    return f"{secrets.randbelow(10**20):020d}"
