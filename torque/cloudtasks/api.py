"""The Cloud Tasks REST v2 routes: thin Klein handlers over the store.

Mounted at ``/v2/projects/`` (:mod:`torque.doors`).  Custom verbs
(``my-queue:pause``, ``task-1:run``) sit in a path's last segment, which is
split on its last ``:``.  What a request says beyond its route is read by
:mod:`~torque.cloudtasks.query`; queues and tasks are looked up by
:mod:`~torque.cloudtasks.book`.  Errors are Google's shape, in one place at
the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from torque.api import Utf8Only
from torque.cloudtasks import DOOR, names
from torque.cloudtasks.book import QueueBook
from torque.cloudtasks.errors import (
    GoogleError,
    already_exists,
    failed_precondition,
    invalid,
    not_found,
    render,
    unavailable,
    unimplemented,
)
from torque.cloudtasks.query import (
    LIVE,
    arg,
    camel,
    json_answer,
    no_verb,
    page_size,
    page_token,
    read_json,
    read_page_token,
    state_filter,
    task_position,
)
from torque.cloudtasks.queues import QueueRecord, new_queue, updated_queue
from torque.cloudtasks.tasks import task_from_request, task_json
from torque.cloudtasks.wire import view
from torque.keys import task_id
from torque.logs import log_crash
from torque.metrics import Metrics
from torque.queue_settings import QueueConfig
from torque.storage import DELIVERED_TTL, Store, StoreUnavailable
from torque.targets import TargetGuard, TargetRefused

log = Logger()

DEFAULTS = QueueConfig()
PARENT = "/v2/projects/<project>/locations/<location>"
# Tasks in a page of ListTasks: by default and at most (Cloud Tasks' own).
MAX_TASK_PAGE = 1000
# Queues in a page of ListQueues: by default, and at most.
QUEUE_PAGE = 100
MAX_QUEUE_PAGE = 1000
IAM_VERBS = frozenset({"getIamPolicy", "setIamPolicy", "testIamPermissions"})


def new_torque_id(queue: str) -> str:
    return task_id(queue, secrets.token_urlsafe(15))


class CloudTasksAPI:
    """The Cloud Tasks door of one node.

    :param defaults: the node's options a queue without settings follows
        (shown in a queue's ``rateLimits`` and ``retryConfig``).
    :param wake: ``(queue, due_at)`` after an add, as torque's own API.
    :param new_id: torque task ids; ``new_name``: Cloud Tasks task ids for
        tasks created without a name.
    """

    app = Klein()

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        defaults: QueueConfig = DEFAULTS,
        wake: Callable[[str, float], object] = lambda queue, due_at: None,
        base_url: str | None = None,
        targets: TargetGuard | None = None,
        metrics: Metrics | None = None,
        new_id: Callable[[str], str] = new_torque_id,
        new_name: Callable[[], str] = names.new_task_id,
    ):
        self.store = store
        self.clock = clock
        self.defaults = defaults
        self.wake = wake
        self.base_url = base_url
        self.targets = targets
        self.metrics = metrics
        self.new_id = new_id
        self.new_name = new_name
        self.book = QueueBook(store, clock, defaults)

    def resource(self):
        return Utf8Only(self.app.resource())

    # -- queues: reading -----------------------------------------------------

    @app.route(PARENT, methods=["GET"])
    def get_location(self, request, project, location):
        parent = names.parent_of(project, location)
        return json_answer(request, {"name": parent, "locationId": location})

    @app.route("/v2/projects/<project>/locations", methods=["GET"])
    async def list_locations(self, request, project):
        names.parent_of(project, "x")
        records = (await self.store.door_records(DOOR)).values()
        named = [QueueRecord.from_text(text).name for text in records]
        mine = sorted({n.location for n in named if n.project == project})
        locations = [
            {"name": f"projects/{project}/locations/{loc}", "locationId": loc} for loc in mine
        ]
        return json_answer(request, {"locations": locations} if locations else {})

    @app.route(PARENT + "/cmekConfig", methods=["GET", "PATCH"])
    def cmek_config(self, request, project, location):
        names.parent_of(project, location)
        raise unimplemented("CMEK is not supported by torque: Redis holds the tasks")

    @app.route(PARENT + "/operations/<operation>", methods=["GET"])
    def get_operation(self, request, project, location, operation):
        names.parent_of(project, location)
        raise not_found(
            f"no operation {operation!r}: torque starts none (batchCreate and batchDelete, "
            "the long-running ones, are not supported)"
        )

    @app.route(PARENT + "/queues", methods=["GET"])
    async def list_queues(self, request, project, location):
        parent = names.parent_of(project, location)
        size = page_size(request, QUEUE_PAGE, MAX_QUEUE_PAGE)
        token = arg(request, "pageToken")
        after = read_page_token(token) if token else ""
        if not isinstance(after, str):
            raise invalid("pageToken", "pageToken is not one this server gave out")
        state = state_filter(arg(request, "filter"))
        records = await self.store.door_records(DOOR)
        mine = sorted(
            (r for r in map(QueueRecord.from_text, records.values()) if r.name.parent == parent),
            key=lambda r: r.name.queue,
        )
        mine = [r for r in mine if r.name.queue > after]
        shown: list[dict[str, Any]] = []
        next_after = None
        while mine and len(shown) < size:
            batch, mine = mine[: size - len(shown)], mine[size - len(shown) :]
            for queue in await self.book.shown(batch):
                if state is None or queue["state"] == state:
                    shown.append(queue)
            next_after = batch[-1].name.queue
        answer: dict[str, Any] = {}
        if shown:
            answer["queues"] = shown
        if mine:
            answer["nextPageToken"] = page_token(next_after)
        return json_answer(request, answer)

    @app.route(PARENT + "/queues/<segment>", methods=["GET"])
    async def get_queue(self, request, project, location, segment):
        name = names.queue_name(project, location, no_verb(segment))
        (shown,) = await self.book.shown([await self.book.record(name)])
        return json_answer(request, shown)

    # -- queues: changing ----------------------------------------------------

    @app.route(PARENT + "/queues", methods=["POST"])
    async def create_queue(self, request, project, location):
        parent = names.parent_of(project, location)
        body = read_json(request)
        name = names.parse_queue_name(body.get("name"), "queue.name")
        if name.parent != parent:
            raise invalid("queue.name", f"queue.name must be in {parent}, the parent of the call")
        record = new_queue(body, name)
        if not await self.store.put_door_record(DOOR, name.queue, record.to_text(), True):
            existing = QueueRecord.from_text(await self.store.door_record(DOOR, name.queue))
            if existing.name == name:
                raise already_exists("Queue already exists.")
            raise already_exists(
                f"Queue id {name.queue!r} is taken on this torque node by {existing.name}"
            )
        settings = {k: v for k, v in record.settings().items() if v is not None}
        if settings:
            await self.store.set_settings(name.queue, settings)
        (shown,) = await self.book.shown([record])
        return json_answer(request, shown)

    @app.route(PARENT + "/queues/<segment>", methods=["PATCH"])
    async def update_queue(self, request, project, location, segment):
        name = names.queue_name(project, location, no_verb(segment))
        body = read_json(request)
        mask_text = arg(request, "updateMask")
        mask = [camel(p.strip()) for p in mask_text.split(",") if p.strip()] if mask_text else None
        try:
            record = await self.book.record(name)
        except GoogleError as e:
            if e.status != "NOT_FOUND" or await self.store.door_record(DOOR, name.queue):
                raise
            record = None  # UpdateQueue creates a queue that does not exist
        if record is None:
            new = new_queue({k: v for k, v in body.items() if k != "name"}, name)
            old_settings: dict[str, Any] = {}
        else:
            new = updated_queue(record, body, mask)
            old_settings = record.settings()
        await self.store.put_door_record(DOOR, name.queue, new.to_text())
        changes = {k: v for k, v in new.settings().items() if old_settings.get(k) != v}
        if changes:
            await self.store.set_settings(name.queue, changes)
        (shown,) = await self.book.shown([new])
        return json_answer(request, shown)

    @app.route(PARENT + "/queues/<segment>", methods=["DELETE"])
    async def delete_queue(self, request, project, location, segment):
        name = names.queue_name(project, location, no_verb(segment))
        await self.book.record(name)
        await self.store.purge(name.queue)
        await self.store.delete_dead(name.queue, None)
        await self.store.delete_queue(name.queue)  # busy while attempts finish: fine
        await self.store.delete_door_record(DOOR, name.queue)
        return json_answer(request, {})

    @app.route(PARENT + "/queues/<segment>", methods=["POST"])
    async def queue_verb(self, request, project, location, segment):
        queue, verb = names.split_verb(segment)
        name = names.queue_name(project, location, queue)
        read_json(request)
        if verb in IAM_VERBS:
            raise unimplemented(f"IAM is not supported by torque ({verb}): use --api-token")
        if verb not in ("pause", "resume", "purge"):
            raise not_found(f"no method {verb!r} on a queue")
        record = await self.book.record(name)
        now = self.clock.seconds()
        if verb == "purge":
            await self.store.purge(name.queue)
            record = attrs.evolve(record, purged_at=now)
        else:
            record = attrs.evolve(record, paused=verb == "pause")
        await self.store.put_door_record(DOOR, name.queue, record.to_text())
        if verb == "pause":
            await self.store.pause(name.queue)
        elif verb == "resume":
            await self.store.resume(name.queue)
            self.wake(name.queue, now)
        (shown,) = await self.book.shown([record])
        return json_answer(request, shown)

    # -- tasks ---------------------------------------------------------------

    @app.route(PARENT + "/queues/<queue>/tasks", methods=["POST"])
    async def create_task(self, request, project, location, queue):
        name = names.queue_name(project, location, queue, "parent")
        body = read_json(request)
        now = self.clock.seconds()
        task, named = task_from_request(
            body,
            name,
            new_id=self.new_id,
            new_name=self.new_name(),
            now=now,
            base_url=self.base_url,
        )
        shown_view = view(body.get("responseView", 0))
        if self.targets is not None:
            try:
                await self.targets.check_url(task.url)
            except TargetRefused as e:
                raise invalid("task.httpRequest.url", str(e)) from None
        record = await self.book.queue_for_task(name)
        was_known = True
        if record.paused:
            (stats,) = await self.store.queue_stats([name.queue], now)
            was_known = stats.known
        task_id, created = await self.store.add(task)
        if not created:
            existing = await self.store.describe(task_id)
            if existing is None or existing.get("status") not in LIVE:
                raise already_exists(
                    "The task cannot be created because a task with this name existed too "
                    "recently (torque keeps a name an hour after its task ran or was deleted)."
                )
            raise already_exists("Requested entity already exists")
        if record.paused and not was_known:
            await self.store.pause(name.queue)  # the door paused it while it was empty
        if self.metrics is not None:
            self.metrics.task_added(task.queue)
        self.wake(task.queue, task.due_at)
        flat = task.to_fields()
        fields = {**dict(zip(flat[::2], flat[1::2], strict=True)), "status": "scheduled"}
        return json_answer(request, task_json(name, task.name, fields, shown_view, self._timeout))

    @property
    def _timeout(self) -> float:
        return self.defaults.timeout

    @app.route(PARENT + "/queues/<queue>/tasks/<segment>", methods=["GET"])
    async def get_task(self, request, project, location, queue, segment):
        name = names.queue_name(project, location, queue, "name")
        task_id = names.check_task_id(no_verb(segment))
        shown_view = view(arg(request, "responseView") or 0)
        _, fields = await self.book.find(name, task_id)
        return json_answer(request, task_json(name, task_id, fields, shown_view, self._timeout))

    @app.route(PARENT + "/queues/<queue>/tasks/<segment>", methods=["DELETE"])
    async def delete_task(self, request, project, location, queue, segment):
        name = names.queue_name(project, location, queue, "name")
        task_id = names.check_task_id(no_verb(segment))
        torque_id, _ = await self.book.find(name, task_id)
        # As Cloud Tasks, the name stays taken a while (as after a delivery).
        if await self.store.cancel(torque_id, keep_name=DELIVERED_TTL) in ("", "delivered"):
            raise not_found(f"Task {name.task(task_id)} does not exist.")
        return json_answer(request, {})

    @app.route(PARENT + "/queues/<queue>/tasks/<segment>", methods=["POST"])
    async def task_verb(self, request, project, location, queue, segment):
        name = names.queue_name(project, location, queue, "name")
        task_id, verb = names.split_verb(segment)
        body = read_json(request)
        if verb == "buffer":
            raise unimplemented("BufferTask is not supported by torque: use CreateTask")
        if verb != "run":
            raise not_found(f"no method {verb!r} on a task")
        names.check_task_id(task_id)
        shown_view = view(body.get("responseView", 0))
        torque_id, fields = await self.book.find(name, task_id)
        if fields["status"] != "scheduled":
            raise failed_precondition(f"Task {name.task(task_id)} is being dispatched already.")
        state, _, due_at = await self.store.run_now(torque_id, self.clock.seconds())
        if state != "scheduled":
            raise not_found(f"Task {name.task(task_id)} does not exist.")
        self.wake(name.queue, due_at)
        fields = {**fields, "due_at": repr(due_at)}
        return json_answer(request, task_json(name, task_id, fields, shown_view, self._timeout))

    @app.route(PARENT + "/queues/<queue>/<segment>", methods=["POST"])
    def tasks_verb(self, request, project, location, queue, segment):
        names.queue_name(project, location, queue, "parent")
        if segment in ("tasks:buffer", "tasks:batchCreate", "tasks:batchDelete"):
            verb = segment.partition(":")[2]
            raise unimplemented(f"{verb} is not supported by torque: use CreateTask")
        raise NotFound()

    @app.route(PARENT + "/queues/<queue>/tasks", methods=["GET"])
    async def list_tasks(self, request, project, location, queue):
        name = names.queue_name(project, location, queue, "parent")
        await self.book.record(name)
        size = page_size(request, MAX_TASK_PAGE, MAX_TASK_PAGE)
        shown_view = view(arg(request, "responseView") or 0)
        state, after = task_position(arg(request, "pageToken"))
        tasks: list[dict[str, Any]] = []
        token = None
        while True:
            page = await self.store.task_page(name.queue, state, after, size - len(tasks))
            for torque_id, fields in page.tasks:
                task_id = fields.get("name") or torque_id.partition(".")[2]
                tasks.append(task_json(name, task_id, fields, shown_view, self._timeout))
            if page.after is not None:
                token = [state, repr(page.after[0]), page.after[1]]
                break
            if state == LIVE[-1]:
                break
            state, after = LIVE[LIVE.index(state) + 1], None
            if len(tasks) >= size:
                token = [state]
                break
        answer: dict[str, Any] = {}
        if tasks:
            answer["tasks"] = tasks
        if token is not None:
            answer["nextPageToken"] = page_token(token)
        return json_answer(request, answer)

    # -- errors, in one place ------------------------------------------------

    @app.handle_errors(GoogleError)
    def google_error(self, request, failure):
        return render(request, failure.value)

    @app.handle_errors(StoreUnavailable)
    def store_unavailable(self, request, failure):
        request.setHeader(b"Retry-After", b"1")
        return render(request, unavailable(failure.getErrorMessage()))

    @app.handle_errors(NotFound)
    def no_route(self, request, failure):
        return render(request, not_found("no such Cloud Tasks method"))

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request, failure):
        return render(request, unimplemented("no such Cloud Tasks method for this path"))

    @app.handle_errors(Exception)
    def crashed(self, request, failure):
        log_crash(log, request, failure)
        return render(request, GoogleError(500, "INTERNAL", "internal error; see the node's log"))
