"""The QStash v2 routes (SPEC §10): thin Klein handlers over the store.

A handler reads the request, builds with :mod:`torque.qstash.headers`,
makes its store calls and answers JSON in QStash's shapes
(:mod:`torque.qstash.views`).  Errors are QStash's ``{"error": "…"}``,
mapped in one place at the end.  Routes of QStash that torque has no
meaning for (URL groups, schedules, logs, flow control…) answer a 400 that
says so.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from torque.keys import task_id
from torque.logs import log_crash
from torque.metrics import Metrics
from torque.qstash import DOOR, dlq, views
from torque.qstash.dlq_routes import DeadLetterRoutes
from torque.qstash.headers import (
    DEFAULT_QUEUE,
    Publish,
    QStashError,
    build_task,
    lower_headers,
    new_message_id,
)
from torque.qstash.http import MAX_BATCH, app, ids_of, json_answer, queue_arg, read_json
from torque.qstash.queue_routes import QueueRoutes
from torque.qstash.signing_keys import KeysNotLoaded, SigningKeys
from torque.storage import Store, StoreUnavailable
from torque.targets import TargetGuard, TargetRefused

log = Logger()

#: Path prefixes this door answers (the rest of ``/v2/`` is another door's).
PREFIXES = (
    b"/v2/publish/",
    b"/v2/enqueue/",
    b"/v2/batch",
    b"/v2/messages",
    b"/v2/dlq",
    b"/v2/queues",
    b"/v2/keys",
    *(b"/v2/" + name for name in (b"topics", b"schedules", b"logs", b"events", b"flowControl")),
    *(b"/v2/" + name for name in (b"llm", b"globalParallelism")),
)
#: QStash routes torque does not have, and what they are.
UNSUPPORTED = {
    "topics": "URL groups and topics",
    "schedules": "schedules",
    "logs": "logs",
    "events": "events",
    "flowControl": "flow control",
    "globalParallelism": "flow control",
    "llm": "LLM destinations",
}


def destination_of(uri: bytes, prefix: bytes) -> str:
    """The destination of a publish, from the raw request target: Klein
    would hand the path without its query, which is the destination's."""
    start = uri.find(prefix)
    raw = uri[start + len(prefix) :] if start >= 0 else b""
    destination = raw.decode("utf-8", "replace")
    if not destination.startswith(("http://", "https://")):
        raise QStashError(
            400,
            f"destination {destination!r} is not supported: torque delivers to http:// or "
            "https:// URLs only (no URL groups, topics or API destinations)",
        )
    return destination


class QStashAPI(QueueRoutes, DeadLetterRoutes):
    """The ``/v2/…`` routes of QStash, on torque's store.

    :param keys: the node's signing keys (``GET /v2/keys``).
    :param wake: called with ``(queue, due_at)`` after each add.
    :param targets: checks each destination as torque's own API does.
    :param default_parallelism: the node's ``--concurrency``: the
        parallelism of a queue without a ``concurrency`` setting of its own.
    """

    app = app

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        keys: SigningKeys,
        wake: Callable[[str, float], object] = lambda queue, due_at: None,
        new_id: Callable[[str], str] = lambda queue: task_id(
            queue, new_message_id(secrets.token_urlsafe)
        ),
        metrics: Metrics | None = None,
        targets: TargetGuard | None = None,
        default_parallelism: int = 100,
    ):
        self.store = store
        self.clock = clock
        self.keys = keys
        self.wake = wake
        self.new_id = new_id
        self.metrics = metrics if metrics is not None else Metrics(clock)
        self.targets = targets
        self.default_parallelism = default_parallelism

    def resource(self):
        return self.app.resource()

    # -- publishing --------------------------------------------------------

    @app.route("/v2/publish/<path:_destination>", methods=["POST"])
    async def publish(self, request, _destination):
        destination = destination_of(request.uri, b"/v2/publish/")
        answer = await self._add(self._publish(request, destination, DEFAULT_QUEUE))
        return json_answer(request, 202 if answer.get("deduplicated") else 201, answer)

    @app.route("/v2/enqueue/<queue>/<path:_destination>", methods=["POST"])
    async def enqueue(self, request, queue, _destination):
        queue_arg(queue)
        destination = destination_of(request.uri, f"/v2/enqueue/{queue}/".encode())
        answer = await self._add(self._publish(request, destination, queue))
        return json_answer(request, 202 if answer.get("deduplicated") else 201, answer)

    @app.route("/v2/batch", methods=["POST"])
    async def batch(self, request):
        items = read_json(request)
        if not isinstance(items, list) or not items:
            raise QStashError(400, "the body must be a JSON array of messages")
        if len(items) > MAX_BATCH:
            raise QStashError(400, f"at most {MAX_BATCH} messages in a batch")
        messages = [self._batch_item(request, i, item) for i, item in enumerate(items)]
        tasks = [self._task(message) for message in messages]
        for task in tasks:  # every one checked before any is added
            await self._check_target(task)
        return json_answer(request, 201, [await self._add_task(task) for task in tasks])

    def _publish(self, request, destination: str, queue: str) -> Publish:
        headers = lower_headers(
            (name.decode("latin-1"), values[-1].decode("latin-1"))
            for name, values in request.requestHeaders.getAllRawHeaders()
        )
        return Publish(
            destination,
            headers,
            request.content.read(),
            queue,
            caller_ip=getattr(request.getClientAddress(), "host", ""),
        )

    def _batch_item(self, request, index: int, item: Any) -> Publish:
        where = f"batch item {index}"
        if not isinstance(item, dict):
            raise QStashError(400, f"{where} must be an object")
        destination = item.get("destination")
        if not isinstance(destination, str):
            raise QStashError(400, f"{where}: destination must be a string")
        destination_of(destination.encode(), b"")
        queue = item.get("queue") or DEFAULT_QUEUE
        headers = item.get("headers") or {}
        body = item.get("body")
        if not isinstance(queue, str) or not isinstance(headers, dict):
            raise QStashError(400, f"{where}: queue must be a string, headers an object")
        if body is not None and not isinstance(body, str):
            raise QStashError(400, f"{where}: body must be a string")
        return Publish(
            destination,
            lower_headers(headers.items()),
            (body or "").encode("utf-8", "surrogatepass"),
            queue_arg(queue),
            caller_ip=getattr(request.getClientAddress(), "host", ""),
        )

    def _task(self, message: Publish):
        return build_task(message, new_id=self.new_id, now=self.clock.seconds())

    async def _add(self, message: Publish) -> dict[str, Any]:
        task = self._task(message)
        await self._check_target(task)
        return await self._add_task(task)

    async def _check_target(self, task) -> None:
        if self.targets is not None:
            try:
                await self.targets.check_url(task.url)
            except TargetRefused as e:
                raise QStashError(400, f"destination: {e}") from None

    async def _add_task(self, task) -> dict[str, Any]:
        """Add a checked task (its queue recorded first, if not the default)."""
        if task.queue != DEFAULT_QUEUE:
            await self._ensure_queue(task.queue)
        task_id, created = await self.store.add(task)
        if not created:
            return {"messageId": task_id, "deduplicated": True}
        self.metrics.task_added(task.queue)
        self.wake(task.queue, task.due_at)
        return {"messageId": task_id}

    # -- messages ----------------------------------------------------------

    @app.route("/v2/messages/<message_id>", methods=["GET"])
    async def get_message(self, request, message_id):
        fields = await self.store.describe(message_id)
        if fields is None:
            raise QStashError(404, f"message {message_id} not found")
        return json_answer(request, 200, views.message(message_id, fields))

    @app.route("/v2/messages/<message_id>", methods=["DELETE"])
    async def cancel_message(self, request, message_id):
        was = await self.store.cancel(message_id)
        if not was or was == "delivered":
            raise QStashError(404, f"message {message_id} not found (or delivered already)")
        return json_answer(request, 202, {"cancelled": 1})

    @app.route("/v2/messages", methods=["DELETE"])
    async def cancel_messages(self, request):
        ids = ids_of(request, read_json(request), "messageIds")
        if ids is None:
            ids = await self._scheduled_messages()
        cancelled = 0
        for message_id in ids:
            if await self.store.cancel(message_id) not in ("", "delivered"):
                cancelled += 1
        return json_answer(request, 200, {"cancelled": cancelled})

    async def _scheduled_messages(self) -> list[str]:
        """Every scheduled message of this door, in every queue."""
        found = []
        for queue in await dlq.queue_names(self.store, self.clock.seconds(), None):
            after = None
            while True:
                page = await self.store.task_page(queue, "scheduled", after, 1000)
                found += [i for i, fields in page.tasks if fields.get("door") == DOOR]
                if page.after is None:
                    break
                after = page.after
        return found

    # -- keys, and what is not supported -----------------------------------

    @app.route("/v2/keys", methods=["GET"])
    def signing_keys(self, request):
        current, next_ = self.keys.require()
        return json_answer(request, 200, {"current": current, "next": next_})

    @app.route("/v2/<kind>", branch=True)
    def unsupported(self, request, kind):
        if kind in UNSUPPORTED:
            raise QStashError(400, f"{UNSUPPORTED[kind]} are not supported by torque")
        raise QStashError(404, "no such endpoint")

    # -- errors, in one place ----------------------------------------------

    @app.handle_errors(QStashError)
    def refused(self, request, failure):
        return json_answer(request, failure.value.status, {"error": failure.value.message})

    @app.handle_errors(StoreUnavailable, KeysNotLoaded)
    def unavailable(self, request, failure):
        request.setHeader(b"Retry-After", b"1")
        return json_answer(request, 503, {"error": failure.getErrorMessage()})

    @app.handle_errors(NotFound)
    def not_found(self, request, failure):
        return json_answer(request, 404, {"error": "no such endpoint"})

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request, failure):
        allowed = failure.value.valid_methods or []
        request.setHeader(b"Allow", ", ".join(allowed).encode())
        return json_answer(request, 405, {"error": "method not allowed here"})

    @app.handle_errors(Exception)
    def crashed(self, request, failure):
        log_crash(log, request, failure)
        return json_answer(request, 500, {"error": "internal error; see the node's log"})
