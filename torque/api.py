"""The HTTP API: thin Klein handlers over the store.

Each handler parses, builds, makes one store call and answers JSON.  Errors
become status codes in one place, the ``handle_errors`` methods at the end:
bad input is a 400 naming the field, a Redis that doesn't answer is a 503
(never a false 201), a missing task a 404.  How tasks and queues look in
JSON is :mod:`torque.views`; ``/openapi.json`` (:mod:`torque.openapi`)
describes every route here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.http import parse_qs
from werkzeug.exceptions import MethodNotAllowed, NotFound

from torque import batch, dashboard, keys, openapi, tokens
from torque.auth import bearer_token
from torque.completion import CompletionKey
from torque.cursor import decode_position, encode_position
from torque.handover import Refused, decide, read_failure, token_attempt
from torque.hot_route import HotRoute
from torque.logs import log_crash
from torque.metrics import CONTENT_TYPE, METRICS_QUEUES, Metrics, metric_queues
from torque.queue_settings import check_changes
from torque.retry import DELIVERED, RETRIED, Retry, RetryPolicy
from torque.storage import LISTED_STATES, Store, StoreUnavailable
from torque.submission import InvalidTask, parse_submission, require_text, strict_json
from torque.targets import TargetGuard, TargetRefused
from torque.task import QUEUE_RE, Task
from torque.views import added_task, processed_by, public_node, public_queue, public_task

log = Logger()
DEFAULT_POLICY = RetryPolicy()


def new_task_id(queue: str) -> str:
    """A new id of a task of ``queue``: the queue, so that the id finds its
    queue's keys alone (:func:`torque.keys.queue_of_id`), and 120 random
    bits, URL-safe: not guessable, never sequential."""
    return keys.task_id(queue, tokens.token())


def json_body(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


def error_body(request, status: int, code: str, message: str, field: str | None = None):
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_body(request, status, {"error": error})


def json_object(raw: bytes, what: str = "a JSON object") -> dict[str, Any]:
    """A request body that must be a JSON object (RFC 8259 JSON: no NaN)."""
    try:
        body = strict_json(raw)
    except ValueError as e:  # UnicodeDecodeError too: the body isn't UTF-8
        raise InvalidTask("body", f"the body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidTask("body", f"the body must be {what}", "invalid_json")
    return body


def read_fields(request) -> tuple[dict[str, Any], bool]:
    """The submitted fields, and whether they came from a form (so their
    values are strings, JSON-valued ones as JSON text).

    A form body is parsed here, not by twisted.web (the site is built with
    ``parsePOSTFormSubmission=False``): twisted.web parses every POST's
    ``Content-Type`` with the ``email`` package, a fifth of an add's CPU.
    """
    content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        return json_object(request.content.read()), False
    args = dict(request.args)  # the query string's
    if media_type == "application/x-www-form-urlencoded":
        args.update(parse_qs(request.content.read(), 1))
    elif media_type and request.content.read(1):
        raise InvalidTask(
            "body",
            "send the fields as application/x-www-form-urlencoded or application/json",
            "unsupported_media_type",
        )
    try:
        return {key.decode(): values[0].decode() for key, values in args.items() if values}, True
    except UnicodeDecodeError:
        raise InvalidTask("body", "form fields must be UTF-8", "invalid_encoding") from None


# Ids one retry or delete of dead letters may name.
MAX_IDS = 10_000
MAX_PAGE = 500
# Queues in a page of GET /queues: by default, and at most (each queue is
# about 20 Redis commands and 70 values in the reply).
QUEUE_PAGE = 50
MAX_QUEUE_PAGE = 200
# Seconds between two warnings of adds to the same unprocessed queue.
UNPROCESSED_WARNING_EVERY = 60.0
# Seconds a client should wait after a 503: Redis is down or refuses for now.
RETRY_AFTER = b"1"


def queue_name(queue: str) -> str:
    """A queue named in a path, held to the same rule as a submission's."""
    if not QUEUE_RE.fullmatch(queue):
        raise InvalidTask("queue", f"queue must match {QUEUE_RE.pattern}")
    return queue


def int_arg(request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within ``[low, high]``."""
    values = request.args.get(name.encode())
    if not values:
        return default
    # Only ASCII digits: int() would also take " 5", "5_0" and "٥", and
    # raise a ValueError past 4,300 digits (out of range well before that).
    if not re.fullmatch(rb"-?[0-9]+", values[0]):
        raise InvalidTask(name, f"{name} must be a whole number")
    number = int(values[0]) if len(values[0]) <= 20 else high + 1
    if not low <= number <= high:
        raise InvalidTask(name, f"{name} must be from {low} to {high}")
    return number


# Tasks one page of GET /queues/<q>/tasks holds by default, and at most.
TASK_PAGE = 50
MAX_TASK_PAGE = 1000


def task_page_args(request) -> tuple[str, tuple[float, str] | None, int]:
    """``state``, the position of ``cursor`` and ``limit`` of a request for
    a page of a queue's tasks."""
    args = {}
    for name in ("state", "cursor"):
        values = request.args.get(name.encode())
        try:
            args[name] = values[0].decode("ascii") if values else ""
        except UnicodeDecodeError:
            args[name] = "\ufffd"  # matches no state, and no cursor
    state = args["state"] or "scheduled"
    if state not in LISTED_STATES:
        raise InvalidTask("state", f"state must be one of {', '.join(LISTED_STATES)}")
    after = decode_position(args["cursor"]) if args["cursor"] else None
    return state, after, int_arg(request, "limit", TASK_PAGE, 1, MAX_TASK_PAGE)


def cursor_arg(request) -> str | None:
    """The ``cursor`` of a page of queues: the name the previous page ended
    with (opaque to clients), so it must be a queue name."""
    values = request.args.get(b"cursor")
    if not values or not values[0]:
        return None
    try:
        cursor = values[0].decode()
    except UnicodeDecodeError:
        cursor = ""
    if not QUEUE_RE.fullmatch(cursor):
        raise InvalidTask("cursor", "cursor must be a next_cursor that GET /queues gave")
    return cursor


def read_ids(request) -> list[str] | None:
    """The ``{"ids": [...]}`` body of a dead-letter action; ``None`` for
    no body at all, which means every dead letter of the queue."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return None
    body = json_object(raw, 'a JSON object: {"ids": [...]}')
    unknown = sorted(set(body) - {"ids"})
    if unknown:
        raise InvalidTask(unknown[0], f"unknown field {unknown[0]!r}; known: ids", "unknown_field")
    ids = body.get("ids")
    if ids is None:
        raise InvalidTask("ids", "give ids, or send no body to act on every one", "missing_field")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise InvalidTask("ids", "ids must be a list of task ids (non-empty strings)")
    if len(ids) > MAX_IDS:
        raise InvalidTask("ids", f"at most {MAX_IDS} ids at once")
    return list(dict.fromkeys(require_text("ids", ids)))


class Utf8Only(resource.Resource):
    """Answers a URL that isn't UTF-8 once %-decoded (``/tasks/%ff``) as
    any other bad input: Klein would answer it before routing, so out of
    reach of ``handle_errors``, with an HTML 400 and a traceback in the log.
    """

    isLeaf = True

    def __init__(self, wrapped: resource.IResource):
        super().__init__()
        self.wrapped = wrapped

    def render(self, request):
        for field, raw in [
            ("path", b"/".join(request.prepath + request.postpath)),
            ("host", request.getRequestHostname()),
        ]:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                message = f"the {field} is not UTF-8 (once %-decoded)"
                return error_body(request, 400, "invalid_encoding", message, field)
        return self.wrapped.render(request)


class TorqueAPI:
    """The node's HTTP API.

    :param wake: called with ``(queue, due_at)`` after each add, so a
        scheduler on this node claims the task without waiting for Redis
        pub/sub to come round.
    :param claim_now: called with ``(queue, due_at)`` as an add is handed
        to the store, before its answer: whether a scheduler on this node
        claimed at once, the claim going after the add in the same Redis
        call (:meth:`torque.router.QueueRouter.claim_now`); then ``wake``
        is not called for that add.
    :param base_url: ``--base-task-url``, the prefix for path-only task URLs.
    :param metrics: the node's metrics (a fresh set by default).
    :param token_required: the node takes only requests with a bearer token
        (``--api-token``; :class:`torque.auth.RequireToken` enforces it),
        as ``/openapi.json`` then says.
    :param processed: whether a live node processes a queue (the node's
        heartbeat knows): an add to a queue that none processes logs a
        warning, once a minute per queue at most.
    :param completion_key: checks completion tokens (SPEC 4 "Later").
    :param policy: the node's retry limits, for a handler's reported failure.
    :param circuits: the target hosts of a queue whose circuit is open on
        this node (:meth:`torque.hosts.HostTable.open_circuits`).
    """

    app = Klein()

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        base_url: str | None = None,
        wake: Callable[[str, float], object] = lambda queue, due_at: None,
        claim_now: Callable[[str, float], bool] = lambda queue, due_at: False,
        new_id: Callable[[str], str] = new_task_id,
        metrics: Metrics | None = None,
        targets: TargetGuard | None = None,
        token_required: bool = False,
        processed: Callable[[str], bool] = lambda queue: True,
        completion_key: CompletionKey | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        circuits: Callable[[str], list[str]] = lambda queue: [],
    ):
        self.processed = processed
        self.completion_key = completion_key
        self.policy = policy
        self.circuits = circuits
        self._warned: dict[str, float] = {}  # queue -> when its warning was logged
        self.targets = targets
        self.token_required = token_required
        self.store = store
        self.clock = clock
        self.base_url = base_url
        self.wake = wake
        self.claim_now = claim_now
        self.new_id = new_id
        self.metrics = metrics if metrics is not None else Metrics(clock)
        self.metric_queues = METRICS_QUEUES  # queues with gauges in /metrics, at most

    def resource(self):
        # The hottest route, POST /hooks/add, skips Klein's routing (and
        # the check of what Klein would route on: its path is ASCII).
        routed = Utf8Only(self.app.resource())
        return HotRoute(routed, b"POST", b"/hooks/add", self.add, self.error_body)

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
            new_id=self.new_id,
            now=self.clock.seconds(),
            base_url=self.base_url,
            queue=queue,
            is_form=is_form,
        )
        if self.targets is not None:
            try:
                await self.targets.check_url(task.url)
            except TargetRefused as e:
                raise InvalidTask("url", str(e), "target_not_allowed") from None
        adding = self.store.add(task)
        claimed = self.claim_now(task.queue, task.due_at)  # sent after the add
        task_id, created = await adding
        if not created:
            existing = await self.store.describe(task_id)
            shown = public_task(task_id, existing) if existing else {"id": task_id}
            return json_body(request, 200, {**shown, "duplicate": True})
        self.metrics.task_added(task.queue)
        if not claimed:
            self.wake(task.queue, task.due_at)
        self._warn_if_unprocessed(task.queue)
        request.setHeader(b"Location", f"/tasks/{task_id}".encode())
        return json_body(request, 201, added_task(task))

    @app.route("/tasks/batch", methods=["POST"])
    async def add_batch(self, request):
        items = batch.read_batch(request.content.read())
        now = self.clock.seconds()
        parsed = batch.parse_items(items, self.new_id, now, self.base_url)
        if self.targets is not None:
            parsed = await self._check_targets(parsed)
        tasks = [task for task in parsed if isinstance(task, Task)]
        added = (await self.store.add_many(tasks)) if tasks else []
        results, duplicates = batch.results(parsed, added)
        for queue, (due_at, count) in batch.new_per_queue(tasks, added).items():
            self.metrics.task_added(queue, count)
            self.wake(queue, due_at)
            self._warn_if_unprocessed(queue)
        described = {  # rare: a round trip each, at once
            at: self.store.describe(task_id).addErrback(
                lambda failure: failure.trap(StoreUnavailable) and None
            )
            for at, task_id in duplicates.items()
        }
        for at, task_id in duplicates.items():
            fields = await described[at]
            shown = public_task(task_id, fields) if fields else {"id": task_id}
            results[at] = batch.duplicate_result(shown)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/json")
        return batch.answer(results)

    async def _check_targets(self, parsed: list) -> list:
        """``parsed`` with each task whose URL ``--allow-target`` refuses
        replaced by its error; each distinct URL is checked once."""
        verdicts = {}
        for item in parsed:
            if isinstance(item, Task) and item.url not in verdicts:
                try:
                    await self.targets.check_url(item.url)
                    verdicts[item.url] = None
                except TargetRefused as e:
                    verdicts[item.url] = InvalidTask("url", str(e), "target_not_allowed")
        return [
            verdicts[item.url] if isinstance(item, Task) and verdicts[item.url] else item
            for item in parsed
        ]

    def _warn_if_unprocessed(self, queue: str) -> None:
        if self.processed(queue):
            return
        now = self.clock.seconds()
        if now - self._warned.get(queue, -UNPROCESSED_WARNING_EVERY) < UNPROCESSED_WARNING_EVERY:
            return
        if len(self._warned) > 10_000:  # bounded, whatever the number of queues
            self._warned.clear()
        self._warned[queue] = now
        log.warn(
            "a task was added to queue {queue}, which no live node processes: it waits "
            "until a node runs with --queue '*' (the default) or --queue {queue}",
            queue=queue,
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
        if was == "delivered":
            message = f"task {task_id!r} is delivered: there is nothing left to cancel"
            return error_body(request, 409, "conflict", message, "id")
        body = {
            "id": task_id,
            "cancelled": True,
            "status": was,
            "running_attempt_finishes": was == "running",
        }
        if was == "running":
            body["note"] = "the attempt in flight finishes, but is never retried"
        return json_body(request, 200, body)

    @app.route("/tasks/<task_id>/run", methods=["POST"])
    async def run_task(self, request, task_id):
        state, queue, due_at = await self.store.run_now(task_id, self.clock.seconds())
        if not state:
            return error_body(request, 404, "not_found", f"no task {task_id!r}", "id")
        if state != "scheduled":
            hint = f"; retry it with POST /queues/{queue}/dead/retry" if state == "dead" else ""
            message = f"task {task_id!r} is {state}: only a scheduled task can be run now{hint}"
            return error_body(request, 409, "conflict", message, "id")
        self.wake(queue, due_at)
        return json_body(
            request, 200, {"id": task_id, "queue": queue, "status": state, "due_at": due_at}
        )

    # -- a handler's word on a task it took over (SPEC 4 "Later") -----------

    @app.route("/tasks/<task_id>/complete", methods=["POST"])
    async def complete_task(self, request, task_id):
        return await self._report(request, task_id, None)

    @app.route("/tasks/<task_id>/fail", methods=["POST"])
    async def fail_task(self, request, task_id):
        raw = request.content.read() if request.content is not None else b""
        return await self._report(request, task_id, raw)

    async def _report(self, request, task_id: str, failure_body: bytes | None):
        # The token first: a stranger learns nothing from the body's checks.
        attempt = await token_attempt(self.completion_key, bearer_token(request), task_id)
        failure = None if failure_body is None else read_failure(failure_body)
        now = self.clock.seconds()
        task, decision = await decide(self.store, self.policy, task_id, attempt, failure, now)
        if not await self.store.complete(task.queue, task, decision, now):
            raise Refused(409, "conflict", f"task {task_id!r} is no longer waiting", "id")
        if isinstance(decision, Retry):
            self.wake(task.queue, decision.at)
        status = {DELIVERED: "delivered", RETRIED: "scheduled"}.get(decision.label, "dead")
        return json_body(request, 200, {"id": task_id, "status": status})

    # -- queues ------------------------------------------------------------

    @app.route("/queues", methods=["GET"])
    async def list_queues(self, request):
        limit = int_arg(request, "limit", QUEUE_PAGE, 1, MAX_QUEUE_PAGE)
        after = cursor_arg(request)
        page = await self.store.queue_page(after, limit, self.clock.seconds())
        nodes = await self.store.live_nodes()
        queues = [
            public_queue(q, processed_by(q.name, nodes), self.circuits(q.name)) for q in page.queues
        ]
        return json_body(request, 200, {"queues": queues, "next_cursor": page.next_cursor})

    @app.route("/queues/<queue>", methods=["GET"])
    async def get_queue(self, request, queue):
        (stats,) = await self.store.queue_stats([queue_name(queue)], self.clock.seconds())
        settings = await self.store.get_settings(queue)
        if not stats.known and not settings:
            return error_body(request, 404, "not_found", f"no queue {queue!r}", "queue")
        nodes = await self.store.live_nodes()
        shown = public_queue(stats, processed_by(queue, nodes), self.circuits(queue))
        return json_body(request, 200, {**shown, "settings": settings})

    @app.route("/queues/<queue>", methods=["PATCH"])
    async def patch_queue(self, request, queue):
        queue_name(queue)
        raw = request.content.read() if request.content is not None else b""
        changes = check_changes(json_object(raw, "a JSON object of queue settings"))
        settings = await self.store.set_settings(queue, changes)
        return json_body(request, 200, {"name": queue, "settings": settings})

    @app.route("/queues/<queue>", methods=["DELETE"])
    async def delete_queue(self, request, queue):
        state, scheduled, running, dead = await self.store.delete_queue(queue_name(queue))
        if state == "unknown":
            return error_body(request, 404, "not_found", f"no queue {queue!r}", "queue")
        if state == "busy":
            message = (
                f"queue {queue!r} holds {scheduled} scheduled, {running} running and {dead} "
                "dead tasks: purge it (DELETE /queues/<q>/tasks) and delete its dead letters "
                "(DELETE /queues/<q>/dead) first"
            )
            return error_body(request, 409, "conflict", message, "queue")
        return json_body(request, 200, {"name": queue, "deleted": True})

    @app.route("/queues/<queue>/pause", methods=["POST"])
    async def pause(self, request, queue):
        if not await self.store.pause(queue_name(queue)):
            return error_body(request, 404, "not_found", f"no queue {queue!r}", "queue")
        return json_body(request, 200, {"name": queue, "paused": True})

    @app.route("/queues/<queue>/resume", methods=["POST"])
    async def resume(self, request, queue):
        if not await self.store.resume(queue_name(queue)):
            return error_body(request, 404, "not_found", f"no queue {queue!r}", "queue")
        self.wake(queue, self.clock.seconds())
        return json_body(request, 200, {"name": queue, "paused": False})

    @app.route("/queues/<queue>/tasks", methods=["DELETE"])
    async def purge(self, request, queue):
        purged = await self.store.purge(queue_name(queue))
        return json_body(request, 200, {"queue": queue, "purged": purged})

    @app.route("/queues/<queue>/tasks", methods=["GET"])
    async def list_tasks(self, request, queue):
        queue_name(queue)
        state, after, limit = task_page_args(request)
        page = await self.store.task_page(queue, state, after, limit)
        tasks = [public_task(task_id, fields) for task_id, fields in page.tasks]
        body = {"queue": queue, "state": state, "tasks": tasks}
        return json_body(request, 200, {**body, "next_cursor": encode_position(page.after)})

    # -- dead letters ------------------------------------------------------

    @app.route("/queues/<queue>/dead", methods=["GET"])
    async def dead_letters(self, request, queue):
        queue_name(queue)
        offset = int_arg(request, "offset", 0, 0, 10**9)
        limit = int_arg(request, "limit", 50, 1, MAX_PAGE)
        page = await self.store.dead_letters(queue, offset, limit)
        tasks = [public_task(i, {"status": "dead", **f}, full=False) for i, f in page.letters]
        body = {"queue": queue, "total": page.total, "offset": offset, "limit": limit}
        return json_body(request, 200, {**body, "tasks": tasks})

    @app.route("/queues/<queue>/dead/retry", methods=["POST"])
    async def retry_dead(self, request, queue):
        queue_name(queue)
        now = self.clock.seconds()
        retried = await self.store.retry_dead(queue, read_ids(request), now)
        if retried:
            self.wake(queue, now)
        return json_body(request, 200, {"queue": queue, "retried": retried})

    @app.route("/queues/<queue>/dead", methods=["DELETE"])
    async def delete_dead(self, request, queue):
        queue_name(queue)
        deleted = await self.store.delete_dead(queue, read_ids(request))
        return json_body(request, 200, {"queue": queue, "deleted": deleted})

    # -- the node ----------------------------------------------------------

    @app.route("/nodes", methods=["GET"])
    async def list_nodes(self, request):
        nodes = await self.store.live_nodes()
        return json_body(request, 200, {"nodes": [public_node(n) for n in nodes]})

    @app.route("/", methods=["GET"])
    def show_dashboard(self, request):
        return dashboard.render(request)

    @app.route("/openapi.json", methods=["GET"])
    def show_openapi(self, request):
        return json_body(request, 200, openapi.document(self.token_required))

    @app.route("/metrics", methods=["GET"])
    async def metrics_text(self, request):
        try:
            queues, truncated = await metric_queues(
                self.store, self.clock.seconds(), self.metric_queues
            )
        except StoreUnavailable:
            queues, truncated = None, False  # the node's own metrics still count
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode())
        return self.metrics.render(queues, truncated)

    @app.route("/health", methods=["GET"])
    async def health(self, request):
        try:
            await self.store.ping()
        except StoreUnavailable as e:
            request.setHeader(b"Retry-After", RETRY_AFTER)
            return json_body(request, 503, {"status": "unavailable", "error": str(e)})
        return json_body(request, 200, {"status": "ok"})

    # -- errors, in one place (tried in this order) ------------------------

    def error_body(self, failure, request) -> bytes:
        """The answer to a failure, as the handlers below give it: for the
        routes served without Klein (:class:`torque.hot_route.HotRoute`)."""
        if failure.check(InvalidTask):
            return self.invalid(request, failure)
        if failure.check(StoreUnavailable):
            return self.unavailable(request, failure)
        return self.crashed(request, failure)

    @app.handle_errors(InvalidTask)
    def invalid(self, request, failure):
        e = failure.value
        return error_body(request, 400, e.code, e.message, e.field)

    @app.handle_errors(Refused)
    def refused(self, request, failure):
        e = failure.value
        return error_body(request, e.status, e.code, e.message, e.field)

    @app.handle_errors(StoreUnavailable)
    def unavailable(self, request, failure):
        request.setHeader(b"Retry-After", RETRY_AFTER)
        return error_body(request, 503, "unavailable", failure.getErrorMessage())

    @app.handle_errors(NotFound)
    def not_found(self, request, failure):
        return error_body(request, 404, "not_found", "no such endpoint")

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request, failure):
        allowed = failure.value.valid_methods or []
        if request.path == b"/tasks/batch":  # it also matches /tasks/<task_id>'s methods
            allowed = ["POST"]
        request.setHeader(b"Allow", ", ".join(allowed).encode())
        return error_body(request, 405, "method_not_allowed", "method not allowed here")

    @app.handle_errors(Exception)
    def crashed(self, request, failure):
        log_crash(log, request, failure)
        return error_body(request, 500, "internal", "internal error; see the node's log")
