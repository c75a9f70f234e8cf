"""The HTTP API: thin Klein handlers over the store.

Each handler parses, builds, makes one store call and answers JSON.  Errors
become status codes in one place, the ``handle_errors`` methods at the end:
bad input is a 400 naming the field, a Redis that doesn't answer is a 503
(never a false 201), a missing task a 404.
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

from torque.store import RedisStore, StoreUnavailable
from torque.task import InvalidTask, parse_submission

log = Logger()


def new_task_id() -> str:
    """120 random bits, URL-safe: not guessable, never sequential."""
    return secrets.token_urlsafe(15)


def json_body(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


def error_body(request, status: int, code: str, message: str, field: str | None = None):
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_body(request, status, {"error": error})


def read_fields(request) -> tuple[dict[str, Any], bool]:
    """The submitted fields, and whether they came from a form (so their
    values are strings, JSON-valued ones as JSON text)."""
    content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            fields = json.loads(request.content.read())
        except ValueError as e:
            raise InvalidTask("body", f"the body is not valid JSON: {e}", "invalid_json") from None
        if not isinstance(fields, dict):
            raise InvalidTask("body", "the body must be a JSON object", "invalid_json")
        return fields, False
    try:
        return {
            key.decode(): values[0].decode() for key, values in request.args.items() if values
        }, True
    except UnicodeDecodeError:
        raise InvalidTask("body", "form fields must be UTF-8", "invalid_encoding") from None


def _number(value: str | None, kind: type = float):
    return kind(value) if value not in (None, "") else None


def public_task(task_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A task as the API shows it: numbers as numbers, unset as null."""
    headers = fields.get("headers")
    return {
        "id": task_id,
        "queue": fields.get("queue", "default"),
        "name": fields.get("name") or None,
        "url": fields.get("url"),
        "method": fields.get("method") or "POST",
        "status": fields["status"],
        "attempts": int(fields.get("attempts") or 0),
        "due_at": _number(fields.get("due_at")),
        "created_at": _number(fields.get("created_at")),
        "last_attempt_at": _number(fields.get("last_attempt_at")),
        "last_status": _number(fields.get("last_status"), int),
        "last_error": fields.get("last_error") or None,
        "delivered_at": _number(fields.get("delivered_at")),
        "dead_at": _number(fields.get("dead_at")),
        "timeout": _number(fields.get("timeout")),
        "max_errors": _number(fields.get("max_errors"), int),
        "content_type": fields.get("content_type") or None,
        "body": fields.get("body"),
        "headers": json.loads(headers) if headers else {},
    }


class TorqueAPI:
    """The node's HTTP API.

    :param wake: called with ``(queue, due_at)`` after each add, so a
        scheduler on this node claims the task without waiting for Redis
        pub/sub to come round.
    :param base_url: ``--base-task-url``, the prefix for path-only task URLs.
    """

    app = Klein()

    def __init__(
        self,
        store: RedisStore,
        clock: IReactorTime,
        base_url: str | None = None,
        wake: Callable[[str, float], object] = lambda queue, due_at: None,
        new_id: Callable[[], str] = new_task_id,
    ):
        self.store = store
        self.clock = clock
        self.base_url = base_url
        self.wake = wake
        self.new_id = new_id

    def resource(self):
        return self.app.resource()

    # -- adding tasks ------------------------------------------------------

    @app.route("/hooks/add", methods=["POST"])
    @app.route("/add_task", methods=["POST"])
    def add(self, request):
        return self._add(request, None)

    @app.route("/queues/<queue>/tasks", methods=["POST"])
    def add_to_queue(self, request, queue):
        return self._add(request, queue)

    async def _add(self, request, queue: str | None):
        fields, is_form = read_fields(request)
        task = parse_submission(
            fields,
            task_id=self.new_id(),
            now=self.clock.seconds(),
            base_url=self.base_url,
            queue=queue,
            is_form=is_form,
        )
        task_id, created = await self.store.add(task)
        if not created:
            existing = await self.store.describe(task_id)
            shown = public_task(task_id, existing) if existing else {"id": task_id}
            return json_body(request, 200, {**shown, "duplicate": True})
        self.wake(task.queue, task.due_at)
        request.setHeader(b"Location", f"/tasks/{task_id}".encode())
        return json_body(
            request,
            201,
            {
                "id": task_id,
                "queue": task.queue,
                "name": task.name or None,
                "url": task.url,
                "status": "scheduled",
                "due_at": task.due_at,
                "created_at": task.created_at,
            },
        )

    # -- tasks -------------------------------------------------------------

    @app.route("/tasks/<task_id>", methods=["GET"])
    async def get_task(self, request, task_id):
        fields = await self.store.describe(task_id)
        if fields is None:
            return error_body(request, 404, "not_found", f"no task {task_id!r}", "id")
        return json_body(request, 200, public_task(task_id, fields))

    @app.route("/tasks/<task_id>", methods=["DELETE"])
    async def cancel_task(self, request, task_id):
        was = await self.store.cancel(task_id)
        if not was:
            return error_body(request, 404, "not_found", f"no task {task_id!r}", "id")
        body = {"id": task_id, "cancelled": True, "status": was}
        if was == "running":
            body["note"] = "the attempt in flight finishes, but is never retried"
        return json_body(request, 200, body)

    # -- the node ----------------------------------------------------------

    @app.route("/health", methods=["GET"])
    async def health(self, request):
        try:
            await self.store.ping()
        except StoreUnavailable as e:
            return json_body(request, 503, {"status": "unavailable", "error": str(e)})
        return json_body(request, 200, {"status": "ok"})

    # -- errors, in one place (tried in this order) ------------------------

    @app.handle_errors(InvalidTask)
    def invalid(self, request, failure):
        e = failure.value
        return error_body(request, 400, e.code, e.message, e.field)

    @app.handle_errors(StoreUnavailable)
    def unavailable(self, request, failure):
        request.setHeader(b"Retry-After", b"1")
        return error_body(request, 503, "unavailable", failure.getErrorMessage())

    @app.handle_errors(NotFound)
    def not_found(self, request, failure):
        return error_body(request, 404, "not_found", "no such endpoint")

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request, failure):
        allowed = failure.value.valid_methods or []
        request.setHeader(b"Allow", ", ".join(allowed).encode())
        return error_body(request, 405, "method_not_allowed", "method not allowed here")

    @app.handle_errors(Exception)
    def crashed(self, request, failure):
        log.failure(
            "unhandled error in {method} {path}", failure, method=request.method, path=request.path
        )
        return error_body(request, 500, "internal", "internal error; see the node's log")
