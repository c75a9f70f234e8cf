"""The queue routes of the QStash door (``/v2/queues…``).

A QStash queue is a torque queue the door keeps a record of (its creation
and update times, in the door's records); its ``parallelism`` is the
queue's ``concurrency`` setting, so every node keeps to it, and pausing it
pauses the torque queue.
"""

from __future__ import annotations

import json

from torque.qstash import DOOR, views
from torque.qstash.headers import QStashError
from torque.qstash.http import app, json_answer, queue_arg, read_json


class QueueRoutes:
    """``/v2/queues`` (upsert, list), ``/v2/queues/<q>`` (get, delete),
    ``…/pause`` and ``…/resume``: part of
    :class:`~torque.qstash.routes.QStashAPI` (its store and clock)."""

    @app.route("/v2/queues", methods=["POST"])
    async def upsert_queue(self, request):
        body = read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("queueName"), str):
            raise QStashError(400, 'the body must be {"queueName": …, "parallelism": …}')
        name = queue_arg(body["queueName"])
        parallelism = body.get("parallelism", 1)
        if isinstance(parallelism, bool) or not isinstance(parallelism, int):
            raise QStashError(400, "parallelism must be a whole number")
        if not 1 <= parallelism <= 10_000:
            raise QStashError(400, "parallelism must be from 1 to 10000")
        paused = body.get("paused", False)
        if not isinstance(paused, bool):
            raise QStashError(400, "paused must be true or false")
        await self._ensure_queue(name, parallelism, updated=True)
        if paused:
            await self.store.pause(name, create=True)
        else:
            await self.store.resume(name)
        return json_answer(request, 200, {})

    @app.route("/v2/queues", methods=["GET"])
    async def list_queues(self, request):
        records = await self.store.door_records(DOOR)
        names = sorted(key[len("queue:") :] for key in records if key.startswith("queue:"))
        shown = await self._queues(names, records)
        return json_answer(request, 200, shown)

    @app.route("/v2/queues/<queue>", methods=["GET"])
    async def get_queue(self, request, queue):
        record = await self.store.door_record(DOOR, "queue:" + queue_arg(queue))
        if record is None:
            raise QStashError(404, f"queue {queue} not found")
        shown = await self._queues([queue], {"queue:" + queue: record})
        return json_answer(request, 200, shown[0])

    @app.route("/v2/queues/<queue>", methods=["DELETE"])
    async def delete_queue(self, request, queue):
        await self._known_queue(queue)
        await self.store.purge(queue)
        state, _, running, dead = await self.store.delete_queue(queue)
        if state == "busy":
            raise QStashError(
                400,
                f"queue {queue} still holds {running} running and {dead} dead messages: "
                "let them finish, delete its dead letters, and delete it again",
            )
        await self.store.delete_door_record(DOOR, "queue:" + queue)
        return json_answer(request, 200, {})

    @app.route("/v2/queues/<queue>/pause", methods=["POST"])
    async def pause_queue(self, request, queue):
        await self._known_queue(queue)
        await self.store.pause(queue, create=True)
        return json_answer(request, 200, {})

    @app.route("/v2/queues/<queue>/resume", methods=["POST"])
    async def resume_queue(self, request, queue):
        await self._known_queue(queue)
        await self.store.resume(queue)
        return json_answer(request, 200, {})

    async def _known_queue(self, queue: str) -> None:
        if await self.store.door_record(DOOR, "queue:" + queue_arg(queue)) is None:
            raise QStashError(404, f"queue {queue} not found")

    async def _ensure_queue(
        self, queue: str, parallelism: int | None = None, updated: bool = False
    ) -> None:
        """Record a QStash queue; its parallelism is the queue's
        ``concurrency`` setting, on every node.  An enqueue creates its
        queue with QStash's parallelism of 1, unless torque knows the queue
        already (its concurrency is left as it is)."""
        now = views.millis(self.clock.seconds())
        key = "queue:" + queue
        record = {"createdAt": now, "updatedAt": now}
        created = await self.store.put_door_record(DOOR, key, json.dumps(record), only_new=True)
        if not created and updated:
            old = json.loads(await self.store.door_record(DOOR, key) or "{}")
            record["createdAt"] = old.get("createdAt", now)
            await self.store.put_door_record(DOOR, key, json.dumps(record))
        if parallelism is None and created:
            (stats,) = await self.store.queue_stats([queue], self.clock.seconds())
            parallelism = None if stats.known else 1
        if parallelism is not None:
            await self.store.set_settings(queue, {"concurrency": parallelism})

    async def _queues(self, names: list[str], records: dict[str, str]) -> list[dict]:
        stats = await self.store.queue_stats(names, self.clock.seconds())
        shown = []
        for name, queue_stats in zip(names, stats, strict=True):
            settings = await self.store.get_settings(name)
            record = json.loads(records.get("queue:" + name) or "{}")
            parallelism = int(settings.get("concurrency", self.default_parallelism))
            shown.append(views.queue(name, record, queue_stats, parallelism))
        return shown
