"""The door's view of its queues and tasks over the store: a queue's
record (and who owns its id), how a queue is shown, the queue a new task
goes to, and a task found by its Cloud Tasks id."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from torque import keys
from torque.cloudtasks import DOOR
from torque.cloudtasks.errors import GoogleError, not_found
from torque.cloudtasks.names import QueueName
from torque.cloudtasks.query import LIVE
from torque.cloudtasks.queues import QueueRecord, queue_json
from torque.queue_settings import QueueConfig
from torque.storage import Store

log = Logger()


class QueueBook:
    """The Cloud Tasks queues and tasks of one node.

    :param defaults: the node's options a queue without settings follows.
    """

    def __init__(self, store: Store, clock: IReactorTime, defaults: QueueConfig):
        self.store = store
        self.clock = clock
        self.defaults = defaults

    async def record(self, name: QueueName) -> QueueRecord:
        """The door's record of queue ``name``: NOT_FOUND if there is none,
        or if its id belongs to a queue of another project or location."""
        text = await self.store.door_record(DOOR, name.queue)
        if text is None:
            raise not_found(f"Queue {name} does not exist.")
        record = QueueRecord.from_text(text)
        if record.name != name:
            raise not_found(
                f"Queue {name} does not exist: on this torque node, queue id "
                f"{name.queue!r} is {record.name} (a node holds one queue of each id)"
            )
        return record

    async def shown(self, records: list[QueueRecord]) -> list[dict[str, Any]]:
        if not records:
            return []
        queues = [record.name.queue for record in records]
        stats = await self.store.queue_stats(queues, self.clock.seconds())
        settings = await defer.gatherResults([self.store.get_settings(q) for q in queues])
        return [
            queue_json(record, s.paused if s.known else record.paused, got, self.defaults)
            for record, s, got in zip(records, stats, settings, strict=True)
        ]

    async def queue_for_task(self, name: QueueName) -> QueueRecord:
        """The queue a task goes to; created (following the node's options)
        if it does not exist yet, as torque's own API creates queues."""
        try:
            return await self.record(name)
        except GoogleError as e:
            if e.status != "NOT_FOUND" or await self.store.door_record(DOOR, name.queue):
                raise
        record = QueueRecord(name)
        if await self.store.put_door_record(DOOR, name.queue, record.to_text(), True):
            log.info("Cloud Tasks queue {name} created by its first task", name=str(name))
            return record
        return await self.record(name)

    async def find(self, name: QueueName, task_id: str) -> tuple[str, dict[str, Any]]:
        """``(torque id, description)`` of the live task ``task_id`` of
        queue ``name``: by its name, else (a task torque's own API added
        without one) by its torque id."""
        await self.record(name)
        torque_id = await self.store.named(name.queue, task_id)
        fields = await self.store.describe(torque_id) if torque_id else None
        if fields is None:
            # A torque id is <queue>.<token>: Cloud Tasks shows the token.
            torque_id = keys.task_id(name.queue, task_id)
            fields = await self.store.describe(torque_id)
            if fields is not None and fields.get("name"):
                fields = None  # a named task is found by its name only
        if fields is None or fields.get("queue") != name.queue or fields["status"] not in LIVE:
            raise not_found(f"Task {name.task(task_id)} does not exist.")
        return torque_id, fields
