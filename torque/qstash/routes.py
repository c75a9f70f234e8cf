"""The QStash v2 routes (SPEC §10): thin Klein handlers over the store.

A handler reads the request, builds with :mod:`torque.qstash.headers`,
makes its store calls and answers JSON in QStash's shapes
(:mod:`torque.qstash.views`).  Errors are QStash's ``{"error": "…"}``,
mapped in one place at the end.  Routes of QStash that torque has no
meaning for (URL groups, schedules, logs, flow control…) answer a 400 that
says so.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from torque.logs import quoted
from torque.metrics import Metrics
from torque.qstash import DOOR, dlq, views
from torque.qstash.headers import (
    DEFAULT_QUEUE,
    Publish,
    QStashError,
    build_task,
    lower_headers,
    new_message_id,
)
from torque.qstash.signing_keys import KeysNotLoaded, SigningKeys
from torque.storage import Store, StoreUnavailable
from torque.submission import strict_json
from torque.targets import TargetGuard, TargetRefused
from torque.task import QUEUE_RE

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
    "topics": "URL groups (topics)",
    "schedules": "schedules",
    "logs": "logs",
    "events": "events",
    "flowControl": "flow control",
    "globalParallelism": "flow control",
    "llm": "LLM destinations",
}
#: Messages in one ``/v2/batch``, and ids in one bulk action, at most.
MAX_BATCH = 1000
#: Dead letters a DLQ page or bulk action holds by default, and at most.
DLQ_PAGE = 100
MAX_DLQ_PAGE = 1000


def json_answer(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


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


def read_json(request) -> Any:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return None
    try:
        return strict_json(raw)
    except ValueError as e:
        raise QStashError(400, f"the body is not valid JSON: {e}") from None


def arg(request, name: str) -> str:
    values = request.args.get(name.encode())
    return values[-1].decode("utf-8", "replace") if values else ""


def count_arg(request) -> int:
    text = arg(request, "count")
    if not text:
        return DLQ_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_DLQ_PAGE:
        raise QStashError(400, f"count must be a whole number from 1 to {MAX_DLQ_PAGE}")
    return int(text)


def ids_of(request, body: Any, name: str) -> list[str] | None:
    """Ids named in the query (``?dlqIds=a&dlqIds=b``, as the JS SDK
    sends) or the JSON body (``{"dlqIds": […]}``, the Python SDK's)."""
    ids = [v.decode("utf-8", "replace") for v in request.args.get(name.encode(), [])]
    if isinstance(body, dict) and name in body:
        listed = body[name]
        if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
            raise QStashError(400, f"{name} must be a list of strings")
        ids += listed
    if not ids:
        return None
    if len(ids) > MAX_BATCH:
        raise QStashError(400, f"at most {MAX_BATCH} {name} at once")
    return list(dict.fromkeys(ids))


def queue_arg(name: str) -> str:
    if not QUEUE_RE.fullmatch(name):
        raise QStashError(400, f"queue name must match {QUEUE_RE.pattern}")
    return name


class QStashAPI:
    """The ``/v2/…`` routes of QStash, on torque's store.

    :param keys: the node's signing keys (``GET /v2/keys``).
    :param wake: called with ``(queue, due_at)`` after each add.
    :param targets: checks each destination as torque's own API does.
    """

    app = Klein()

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        keys: SigningKeys,
        wake: Callable[[str, float], object] = lambda queue, due_at: None,
        new_id: Callable[[], str] = lambda: new_message_id(secrets.token_urlsafe),
        metrics: Metrics | None = None,
        targets: TargetGuard | None = None,
    ):
        self.store = store
        self.clock = clock
        self.keys = keys
        self.wake = wake
        self.new_id = new_id
        self.metrics = metrics if metrics is not None else Metrics(clock)
        self.targets = targets

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
        tasks = [self._task(message) for message in messages]  # all checked before any add
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
        return build_task(message, task_id=self.new_id(), now=self.clock.seconds())

    async def _add(self, message: Publish) -> dict[str, Any]:
        return await self._add_task(self._task(message))

    async def _add_task(self, task) -> dict[str, Any]:
        if self.targets is not None:
            try:
                await self.targets.check_url(task.url)
            except TargetRefused as e:
                raise QStashError(400, f"destination: {e}") from None
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

    # -- the dead-letter queue ---------------------------------------------

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

    # -- queues ------------------------------------------------------------

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
        """Record a QStash queue (an enqueue creates its queue, with
        QStash's parallelism of 1); its parallelism is the queue's
        ``concurrency`` setting, on every node."""
        now = views.millis(self.clock.seconds())
        key = "queue:" + queue
        record = {"createdAt": now, "updatedAt": now}
        created = await self.store.put_door_record(DOOR, key, json.dumps(record), only_new=True)
        if not created and updated:
            old = json.loads(await self.store.door_record(DOOR, key) or "{}")
            record["createdAt"] = old.get("createdAt", now)
            await self.store.put_door_record(DOOR, key, json.dumps(record))
        if created or parallelism is not None:
            await self.store.set_settings(queue, {"concurrency": parallelism or 1})

    async def _queues(self, names: list[str], records: dict[str, str]) -> list[dict]:
        stats = await self.store.queue_stats(names, self.clock.seconds())
        shown = []
        for name, queue_stats in zip(names, stats, strict=True):
            settings = await self.store.get_settings(name)
            record = json.loads(records.get("queue:" + name) or "{}")
            parallelism = int(settings.get("concurrency", 1))
            shown.append(views.queue(name, record, queue_stats, parallelism))
        return shown

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
        log.failure(
            "unhandled error in {method} {path}",
            failure,
            method=quoted(request.method),
            path=quoted(request.path),
        )
        return json_answer(request, 500, {"error": "internal error; see the node's log"})
