"""The dead-letter routes of the QStash door (``/v2/dlq…``), over the
selection of :mod:`torque.qstash.dlq`."""

from __future__ import annotations

from typing import Any

from torque.qstash import DOOR, dlq, views
from torque.qstash.headers import QStashError
from torque.qstash.http import app, arg, count_arg, ids_of, json_answer, queue_arg, read_json


class DeadLetterRoutes:
    """``GET``/``DELETE /v2/dlq``, ``/v2/dlq/<id>``, ``POST /v2/dlq/retry``:
    part of :class:`~torque.qstash.routes.QStashAPI` (its store, clock, wake)."""

    @app.route("/v2/dlq", methods=["GET"])
    async def list_dlq(self, request):
        selection = await self._select(request)
        body: dict[str, Any] = {
            "messages": [views.dead_message(i, fields) for _, i, fields in selection.letters]
        }
        if selection.cursor:
            body["cursor"] = selection.cursor
        return json_answer(request, 200, body)

    @app.route("/v2/dlq/<dlq_id>", methods=["GET"])
    async def get_dlq(self, request, dlq_id):
        fields = await self._dead(dlq_id)
        return json_answer(request, 200, views.dead_message(dlq_id, fields))

    @app.route("/v2/dlq/<dlq_id>", methods=["DELETE"])
    async def delete_dlq(self, request, dlq_id):
        fields = await self._dead(dlq_id)
        deleted = await self.store.delete_dead(fields["queue"], [dlq_id])
        if not deleted:
            raise QStashError(404, f"dlq message {dlq_id} not found")
        return json_answer(request, 200, {"deleted": 1})

    @app.route("/v2/dlq", methods=["DELETE"])
    async def delete_dlqs(self, request):
        deleted, cursor = await self._bulk(request, self.store.delete_dead)
        return json_answer(request, 200, {"deleted": len(deleted), **cursor})

    @app.route("/v2/dlq/retry", methods=["POST"])
    async def retry_dlqs(self, request):
        now = self.clock.seconds()
        retried, cursor = await self._bulk(
            request, lambda queue, ids: self.store.retry_dead(queue, ids, now)
        )
        for queue in {q for q, _ in retried}:
            self.wake(queue, now)
        responses = [{"messageId": i} for _, i in retried]
        return json_answer(request, 200, {"responses": responses, **cursor})

    @app.route("/v2/dlq/retry/<dlq_id>", methods=["POST"])
    async def retry_dlq(self, request, dlq_id):
        fields = await self._dead(dlq_id)
        now = self.clock.seconds()
        if not await self.store.retry_dead(fields["queue"], [dlq_id], now):
            raise QStashError(404, f"dlq message {dlq_id} not found")
        self.wake(fields["queue"], now)
        return json_answer(request, 200, {"messageId": dlq_id})

    async def _select(self, request, count: int | None = None) -> dlq.Selection:
        filters = dlq.check_filters({k.decode(): arg(request, k.decode()) for k in request.args})
        if "queueName" in filters:
            queue_arg(filters["queueName"])
        count = count or count_arg(request)
        return await dlq.select(
            self.store, self.clock.seconds(), filters, arg(request, "cursor") or None, count
        )

    async def _bulk(self, request, act) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """Act on dead letters named by id, or on a page of those the
        filters select (``?count=…&cursor=…``, as the JS SDK pages)."""
        ids = ids_of(request, read_json(request), "dlqIds")
        if ids is not None:
            chosen = []
            for dlq_id in ids:
                fields = await self.store.describe(dlq_id)
                if fields and fields.get("status") == "dead" and fields.get("door") == DOOR:
                    chosen.append((fields["queue"], dlq_id))
            cursor = None
        else:
            selection = await self._select(request)
            chosen = [(q, i) for q, i, _ in selection.letters]
            cursor = dlq.after_removal(selection)
        done = []
        for queue in dict.fromkeys(q for q, _ in chosen):
            named = [i for q, i in chosen if q == queue]
            if await act(queue, named):
                done += [(queue, i) for i in named]
        return done, ({"cursor": cursor} if cursor else {})

    async def _dead(self, dlq_id: str) -> dict[str, Any]:
        fields = await self.store.describe(dlq_id)
        if not fields or fields.get("status") != "dead" or fields.get("door") != DOOR:
            raise QStashError(404, f"dlq message {dlq_id} not found")
        return fields
