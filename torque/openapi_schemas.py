"""The JSON shapes of the API, as OpenAPI 3.0 schema objects: what
:mod:`torque.openapi` puts under ``components`` and refers to from every
path.  The names match the bodies :mod:`torque.api` and :mod:`torque.views`
write; ``tests/test_openapi.py`` validates real answers against them.
"""

from __future__ import annotations

from typing import Any

from torque.queue_settings import MOST, SETTINGS, Setting
from torque.submission import MAX_AHEAD, MAX_URL_LENGTH
from torque.task import METHODS, NAME_RE, QUEUE_RE

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **more) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **more}


def _object(properties: dict, required=(), extra: bool = False, **more) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return {**schema, **more}


def _setting(setting: Setting) -> dict[str, Any]:
    """One queue setting's schema (OpenAPI 3.0: ``exclusiveMinimum`` is a
    flag beside ``minimum``)."""
    kind = "integer" if setting.kind is int else "number"
    schema = {"type": kind, "minimum": setting.least, "maximum": MOST}
    if not setting.inclusive:
        schema["exclusiveMinimum"] = True
    return {**schema, "description": f"{setting.doc} (overrides {setting.option})"}


def json_response(schema: dict, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def error_responses(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{_ERROR_NAMES[code]}"} for code in codes}


_ERROR_NAMES = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "405": "MethodNotAllowed",
    "409": "Conflict",
    "413": "TooLarge",
    "503": "Unavailable",
}

TASK_STATUSES = ["scheduled", "running", "waiting", "delivered", "dead"]
# The states GET /queues/<q>/tasks lists (torque.store.LISTED_STATES).
LISTED_STATES = ["scheduled", "running", "waiting", "dead"]
QUEUE_PATTERN = f"^{QUEUE_RE.pattern}$"

_TASK_PROPERTIES = {
    "id": {"type": "string", "description": "the task's id, sent as X-Torque-Task-Id"},
    "queue": {"type": "string"},
    "name": _nullable("string", description="its idempotency key; null when it has none"),
    "url": {"type": "string", "description": "the URL it requests"},
    "method": {"type": "string", "enum": sorted(METHODS)},
    "status": {
        "type": "string",
        "enum": TASK_STATUSES,
        "description": "scheduled: waiting to be due, or due; running: a node holds it and "
        "its request is under way; delivered: a 2xx came (kept an hour); dead: a dead letter",
    },
    "attempts": {
        "type": "integer",
        "minimum": 0,
        "description": "attempts made, the one under way included; 0 again once retried "
        "from the dead letters",
    },
    "due_at": _nullable("number", description="when it is due, or was due for its latest attempt"),
    "created_at": _nullable("number", description="when it was added"),
    "last_attempt_at": _nullable(
        "number",
        description="when the last attempt that ended ended (or its lost lease was noticed); "
        "null before any did",
    ),
    "last_status": _nullable(
        "integer",
        description="HTTP status of the last attempt that ended; null when it got no answer "
        "(timeout, connection error, lost lease) or none ended yet",
    ),
    "last_error": _nullable(
        "string",
        description="why the last attempt that ended failed; null when it succeeded (every "
        "delivered task) or none ended yet",
    ),
    "delivered_at": _nullable("number", description="when it was delivered, else null"),
    "dead_at": _nullable("number", description="when it became a dead letter, else null"),
    "waiting_until": _nullable(
        "number",
        description=(
            "while it is waiting: the deadline of its handler's word "
            "(Torque-Complete-Within), else null"
        ),
    ),
    "timeout": _nullable(
        "number",
        description="its own request timeout, seconds; null: the node's --task-timeout",
    ),
    "max_errors": _nullable(
        "integer",
        description="its own limit of failed attempts; null: the node's --max-task-errors",
    ),
    "content_type": _nullable(
        "string",
        description="the media type of its request body; null without a body (a delivered "
        "task keeps none)",
    ),
    "headers": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "the task's extra headers; credentials show as [redacted]; {} once "
        "delivered",
    },
}
_TASK_REQUIRED = list(_TASK_PROPERTIES)

# What every accepted url looks like; the node checks more (no whitespace
# at all, a host it can request, a valid port, the length once joined to
# --base-task-url).  ASCII ranges, not \s: that differs between regex dialects.
_URL = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_URL_LENGTH,
    "pattern": r"^([Hh][Tt][Tt][Pp][Ss]?://[^/?#\x00-\x20]|/)[^\x00-\x20]*$",
    "description": "an http(s) URL, or a path when the node has --base-task-url; "
    "no whitespace or control characters",
}

# A method, in any case (ASCII only).
_METHOD_PATTERN = "^({})$".format(
    "|".join("".join(f"[{c}{c.lower()}]" for c in method) for method in sorted(METHODS))
)


def _optional(schema: dict, description: str) -> dict[str, Any]:
    """A submission field that may also be null or "", meaning not given,
    as an empty field of a form post is."""
    return {
        "anyOf": [schema, {"type": "string", "maxLength": 0}],
        "nullable": True,
        "description": description,
    }


def _number_or_text(schema: dict) -> dict[str, Any]:
    """A number that may also come as its text, as in a form post."""
    return {"anyOf": [schema, {"type": "string"}]}


_ERROR_DETAIL = _object(
    {
        "code": {"type": "string", "example": "invalid_field"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "the field at fault"},
    },
    ["code", "message"],
)

SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _ERROR_DETAIL}, ["error"]),
    "Submission": _object(
        {
            "url": _URL,
            "params": _optional(
                {"oneOf": [{"type": "object"}, {"type": "string"}]},
                "a JSON object (or its JSON text), delivered form-encoded",
            ),
            "json": {"description": "any JSON value, delivered as an application/json body"},
            "delay": _optional(
                _number_or_text({"type": "number", "minimum": 0, "maximum": MAX_AHEAD}),
                "seconds from now",
            ),
            "eta": _optional(
                _number_or_text({"type": "number"}),
                "absolute Unix time, seconds; from a day ago (a past time is now) to 30 days ahead",
            ),
            "queue": _optional({"type": "string", "pattern": QUEUE_PATTERN}, "default: default"),
            "name": _optional(
                {"type": "string", "pattern": f"^{NAME_RE.pattern}$"}, "an idempotency key"
            ),
            "method": _optional(
                {"type": "string", "pattern": _METHOD_PATTERN},
                f"{', '.join(sorted(METHODS))}, in any case; default: POST",
            ),
            "headers": _optional(
                {
                    "oneOf": [
                        {"type": "object", "additionalProperties": {"type": "string"}},
                        {"type": "string"},
                    ]
                },
                "extra request headers: an object of strings (or its JSON text)",
            ),
            "timeout": _optional(
                _number_or_text(
                    {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 86400}
                ),
                "seconds; default: the node's --task-timeout",
            ),
            "max_errors": _optional(
                _number_or_text({"type": "integer", "minimum": 1, "maximum": 10000}),
                "default: the node's --max-task-errors",
            ),
        },
        ["url"],
        description='a task to add; a field that is null or "" is as if not given',
    ),
    "FormSubmission": _object(
        {
            "url": _URL,
            **{
                name: {"type": "string"}
                for name in ("params", "json", "delay", "eta", "queue", "name", "method")
                + ("headers", "timeout", "max_errors")
            },
        },
        ["url"],
        description="the fields of Submission as form fields; params, json and headers "
        "as JSON text",
    ),
    "Added": _object(
        {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "name": _nullable("string"),
            "url": {"type": "string"},
            "status": {"type": "string", "enum": ["scheduled"]},
            "due_at": {"type": "number"},
            "created_at": {"type": "number"},
        },
        ["id", "queue", "name", "url", "status", "due_at", "created_at"],
    ),
    "Duplicate": _object(
        {
            **_TASK_PROPERTIES,
            "body": _nullable("string"),
            "history": {"type": "array", "items": ref("Attempt")},
            "duplicate": {"type": "boolean", "enum": [True]},
        },
        ["id", "duplicate"],
        description="the task that already has this name",
    ),
    "Batch": {
        "type": "array",
        "minItems": 1,
        "maxItems": 1000,
        # Any item is taken: one that is no valid Submission gets its error
        # in the results, and the others are stored.
        "items": {"description": "a task, as a Submission (with its own queue)"},
        "description": "tasks, each judged on its own: an item that is not a valid "
        "Submission is refused in the results, the others are stored",
    },
    "BatchResults": _object(
        {
            "results": {
                "type": "array",
                "description": "one per task of the batch, in order",
                "items": {
                    "oneOf": [
                        _object(
                            {"status": {"type": "integer", "enum": [201]}, "task": ref("Added")},
                            ["status", "task"],
                            description="stored",
                        ),
                        _object(
                            {
                                "status": {"type": "integer", "enum": [200]},
                                "task": ref("Duplicate"),
                            },
                            ["status", "task"],
                            description="a live task already has this name: nothing added",
                        ),
                        _object(
                            {
                                "status": {"type": "integer", "enum": [400]},
                                "error": _ERROR_DETAIL,
                            },
                            ["status", "error"],
                            description="refused: error.field names the field",
                        ),
                    ]
                },
            }
        },
        ["results"],
    ),
    "Attempt": _object(
        {
            "attempt": _nullable("integer", description="null for a requeue"),
            "at": {"type": "number", "description": "when it ended (Unix seconds)"},
            "duration": _nullable("number"),
            "outcome": {
                "type": "string",
                "enum": ["delivered", "retried", "dead", "postponed", "waiting", "requeued"],
            },
            "status": _nullable("integer"),
            "error": _nullable("string"),
        },
        ["attempt", "at", "duration", "outcome", "status", "error"],
    ),
    "Task": _object(
        {
            **_TASK_PROPERTIES,
            "body": _nullable("string", description="the request body (gone once delivered)"),
            "history": {
                "type": "array",
                "items": ref("Attempt"),
                "description": "the last attempts, newest first",
            },
        },
        [*_TASK_REQUIRED, "body", "history"],
    ),
    "DeadLetter": _object(_TASK_PROPERTIES, _TASK_REQUIRED),
    "TaskPage": _object(
        {
            "queue": {"type": "string"},
            "state": {"type": "string", "enum": LISTED_STATES},
            "tasks": {
                "type": "array",
                "items": ref("Task"),
                "description": "in order: scheduled tasks by due time, running ones by lease "
                "end, dead ones by time of death; ties by id",
            },
            "next_cursor": _nullable(
                "string", description="pass it as cursor for the next page; null on the last"
            ),
        },
        ["queue", "state", "tasks", "next_cursor"],
    ),
    "Cancelled": _object(
        {
            "id": {"type": "string"},
            "cancelled": {"type": "boolean", "enum": [True]},
            "status": {"type": "string", "enum": TASK_STATUSES},
            "running_attempt_finishes": {"type": "boolean"},
            "note": {"type": "string"},
        },
        ["id", "cancelled", "status", "running_attempt_finishes"],
    ),
    "RunNow": _object(
        {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "status": {"type": "string", "enum": ["scheduled"]},
            "due_at": {"type": "number"},
        },
        ["id", "queue", "status", "due_at"],
    ),
    "Minute": _object(
        {
            "at": {"type": "integer", "description": "start of the minute, Unix seconds"},
            "delivered": {"type": "integer", "minimum": 0},
            "retried": {"type": "integer", "minimum": 0},
            "dead": {"type": "integer", "minimum": 0},
        },
        ["at", "delivered", "retried", "dead"],
    ),
    "Queue": _object(
        {
            "name": {"type": "string"},
            "scheduled": {
                "type": "integer",
                "minimum": 0,
                "description": "tasks waiting, due or not",
            },
            "due": {"type": "integer", "minimum": 0, "description": "of those, due already"},
            "running": {"type": "integer", "minimum": 0},
            "dead": {"type": "integer", "minimum": 0},
            "delivered": {
                "type": "integer",
                "minimum": 0,
                "description": "running total of delivered attempts",
            },
            "failed": {
                "type": "integer",
                "minimum": 0,
                "description": "running total of failed attempts",
            },
            "oldest_due_age": {
                "type": "number",
                "minimum": 0,
                "description": "seconds the earliest due task has waited; 0 when none is due",
            },
            "paused": {"type": "boolean"},
            "recent": {
                "type": "array",
                "items": ref("Minute"),
                "description": "outcomes per minute, the last 15 minutes, oldest first",
            },
            "processed_by": {
                "type": "integer",
                "minimum": 0,
                "description": (
                    "live nodes that process the queue (GET /nodes); 0: its tasks wait "
                    "for a node started with --queue '*' or naming it"
                ),
            },
            "settings": {
                **ref("QueueSettings"),
                "description": "the queue's own settings (GET /queues/<q> only)",
            },
            "open_circuits": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    "target hosts (host[:port]) of this queue whose circuit is open on the "
                    "node that answered: their tasks are postponed until a probe succeeds"
                ),
            },
        },
        [
            "name",
            "scheduled",
            "due",
            "running",
            "dead",
            "delivered",
            "failed",
            "oldest_due_age",
            "paused",
            "recent",
            "processed_by",
            "open_circuits",
        ],
    ),
    "Failure": _object(
        {
            "error": {
                "type": "string",
                "minLength": 1,
                "description": "what went wrong (the first 200 characters are kept)",
            },
            "retry_after": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_AHEAD,
                "description": "seconds before the next attempt (default: the backoff)",
            },
        },
        ["error"],
    ),
    "Reported": _object(
        {
            "id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["delivered", "scheduled", "dead"],
                "description": "the task's status after the handler's word",
            },
        },
        ["id", "status"],
    ),
    "QueueSettings": _object(
        {name: _setting(setting) for name, setting in SETTINGS.items()},
        description=(
            "the queue's own settings, each overriding the node's option for this queue "
            "on every node; a field that is absent falls back to the option"
        ),
    ),
    "QueueSettingsChange": _object(
        {name: {**_setting(setting), "nullable": True} for name, setting in SETTINGS.items()},
        description="the settings to change; null clears one (the node's option applies)",
        minProperties=1,
    ),
    "QueueSettingsChanged": _object(
        {"name": {"type": "string"}, "settings": ref("QueueSettings")},
        ["name", "settings"],
    ),
    "Queues": _object(
        {
            "queues": {"type": "array", "items": ref("Queue"), "description": "by name"},
            "next_cursor": {
                **_nullable("string"),
                "description": "give it as cursor for the next page; null on the last",
            },
        },
        ["queues", "next_cursor"],
    ),
    "QueueDeleted": _object(
        {"name": {"type": "string"}, "deleted": {"type": "boolean", "enum": [True]}},
        ["name", "deleted"],
    ),
    "Node": _object(
        {
            "id": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "version": {"type": "string", "description": "torque's version on the node"},
            "queues": {
                "oneOf": [
                    {"type": "string", "enum": ["*"]},
                    {"type": "array", "items": {"type": "string"}},
                ],
                "description": '"*": every queue, new ones included; else the queues named',
            },
            "in_flight": {
                "type": "integer",
                "minimum": 0,
                "description": "requests in flight at its last heartbeat",
            },
            "started_at": {"type": "number"},
            "seen_at": {"type": "number", "description": "its last heartbeat"},
            "worker": _nullable(
                "integer", description="its number under a --workers supervisor; null: a lone node"
            ),
            "supervisor_pid": _nullable(
                "integer", description="the process id of its supervisor; null: none"
            ),
        },
        ["id", "host", "pid", "version", "queues", "in_flight", "started_at", "seen_at"],
    ),
    "Nodes": _object({"nodes": {"type": "array", "items": ref("Node")}}, ["nodes"]),
    "Paused": _object(
        {"name": {"type": "string"}, "paused": {"type": "boolean"}}, ["name", "paused"]
    ),
    "Purged": _object(
        {"queue": {"type": "string"}, "purged": {"type": "integer", "minimum": 0}},
        ["queue", "purged"],
    ),
    "DeadPage": _object(
        {
            "queue": {"type": "string"},
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1},
            "tasks": {"type": "array", "items": ref("DeadLetter")},
        },
        ["queue", "total", "offset", "limit", "tasks"],
    ),
    "Ids": _object(
        {"ids": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 10000}},
        ["ids"],
    ),
    "Retried": _object(
        {"queue": {"type": "string"}, "retried": {"type": "integer", "minimum": 0}},
        ["queue", "retried"],
    ),
    "Deleted": _object(
        {"queue": {"type": "string"}, "deleted": {"type": "integer", "minimum": 0}},
        ["queue", "deleted"],
    ),
    "Health": _object(
        {"status": {"type": "string", "enum": ["ok", "unavailable"]}, "error": {"type": "string"}},
        ["status"],
    ),
}

_ERROR_DESCRIPTIONS = {
    "BadRequest": "invalid input; error.field names the field",
    "Unauthorized": "missing or wrong bearer token (nodes run with --api-token)",
    "Forbidden": "a completion token of another task",
    "NotFound": "no such task, queue or endpoint",
    "MethodNotAllowed": "the path exists, not with this method; Allow lists the methods",
    "Conflict": "the task (or queue) is not in a state that allows this",
    "TooLarge": "the request body is over the node's --max-body (1 MiB by default)",
}
RESPONSES: dict[str, Any] = {
    name: json_response(ref("Error"), description)
    for name, description in _ERROR_DESCRIPTIONS.items()
}
RESPONSES["Unavailable"] = {
    **json_response(ref("Error"), "Redis did not answer in time: nothing was changed; retry"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
}
