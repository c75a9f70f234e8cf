"""The OpenAPI 3.0 description of the API, served at ``GET /openapi.json``.

Written by hand, next to the routes it describes; ``tests/test_openapi.py``
checks that every Klein route is here with its methods (and nothing else
is), and validates real answers of every endpoint against the schemas of
:mod:`torque.openapi_schemas`.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from torque import __version__
from torque.openapi_schemas import (
    JSON,
    LISTED_STATES,
    QUEUE_PATTERN,
    RESPONSES,
    SCHEMAS,
    error_responses,
    json_response,
    ref,
)

_QUEUE = {
    "name": "queue",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": QUEUE_PATTERN},
}
_TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
_IDS_BODY = {
    "required": False,
    "description": 'no body: every dead letter of the queue; {"ids": [...]}: those',
    "content": {JSON: {"schema": ref("Ids")}},
}

_TASK_PAGE_PARAMETERS = [
    {
        "name": "state",
        "in": "query",
        "description": "the tasks' state (empty, as every field given empty: scheduled)",
        "schema": {"type": "string", "enum": [*LISTED_STATES, ""], "default": "scheduled"},
    },
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "the next_cursor of the previous page, as it is",
        "schema": {"type": "string"},
    },
]


# Where the id of an added task leads.
_TASK_LINKS = {
    name: {"operationId": operation, "parameters": {"task_id": "$response.body#/id"}}
    for name, operation in [
        ("GetTask", "getTask"),
        ("CancelTask", "cancelTask"),
        ("RunTask", "runTask"),
    ]
}


def _add_operation(summary: str, operation_id: str, parameters=()) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "parameters": list(parameters),
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": ref("Submission")},
                "application/x-www-form-urlencoded": {"schema": ref("FormSubmission")},
            },
        },
        "responses": {
            "201": {
                **json_response(ref("Added"), "the task is stored"),
                "headers": {"Location": {"schema": {"type": "string"}}},
                "links": _TASK_LINKS,
            },
            "200": json_response(
                ref("Duplicate"), "a live task already has this name: nothing added"
            ),
            **error_responses("400", "401", "413", "503"),
        },
    }


PATHS: dict[str, Any] = {
    "/hooks/add": {"post": _add_operation("Add a task", "addTask")},
    "/add_task": {"post": _add_operation("Add a task (the older spelling)", "addTaskAlias")},
    "/queues/{queue}/tasks": {
        "post": {
            **_add_operation("Add a task to this queue", "addTaskToQueue", [_QUEUE]),
            "description": "The body's queue, if it names one, must be this one (else 400).",
        },
        "get": {
            "summary": "A page of the queue's tasks in one state, oldest first",
            "description": "Each task as GET /tasks/{task_id} shows it.  Pages follow "
            "next_cursor; a page costs the same in a queue of ten tasks or ten million, and "
            "ends early past 1 MiB of request bodies.  waiting is accepted, and empty until "
            "handlers can take tasks over.",
            "operationId": "listTasks",
            "parameters": [_QUEUE, *_TASK_PAGE_PARAMETERS],
            "responses": {
                "200": json_response(ref("TaskPage"), "a page of tasks"),
                **error_responses("400", "401", "503"),
            },
        },
        "delete": {
            "summary": "Purge the queue's scheduled tasks (running ones finish)",
            "operationId": "purgeQueue",
            "parameters": [_QUEUE],
            "responses": {
                "200": json_response(ref("Purged"), "how many were deleted"),
                **error_responses("400", "401", "503"),
            },
        },
    },
    "/tasks/batch": {
        "post": {
            "summary": "Add many tasks at once",
            "description": "Up to 1,000 tasks (and the node's --max-body, 1 MiB by default), "
            "each with its own queue, stored in one Redis round trip.  Each task is judged on "
            "its own: the valid ones are stored even when others are refused, and the answer "
            "holds one result per task, in order.  Only a body that is no such array is "
            "refused whole (400, field body).",
            "operationId": "addTasks",
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("Batch")}}},
            "responses": {
                "200": json_response(ref("BatchResults"), "one result per task, in order"),
                **error_responses("400", "401", "413", "503"),
            },
        },
    },
    "/tasks/{task_id}": {
        "get": {
            "summary": "A task, with its last attempts",
            "operationId": "getTask",
            "parameters": [_TASK_ID],
            "responses": {
                "200": json_response(ref("Task"), "the task"),
                **error_responses("401", "404", "503"),
            },
        },
        "delete": {
            "summary": "Cancel a task (a running attempt finishes, never retried; 409 if "
            "delivered)",
            "operationId": "cancelTask",
            "parameters": [_TASK_ID],
            "responses": {
                "200": json_response(ref("Cancelled"), "cancelled; status is the state it was in"),
                **error_responses("401", "404", "409", "503"),
            },
        },
    },
    "/tasks/{task_id}/run": {
        "post": {
            "summary": "Make a scheduled task due now",
            "operationId": "runTask",
            "parameters": [_TASK_ID],
            "responses": {
                "200": json_response(ref("RunNow"), "due now"),
                **error_responses("401", "404", "409", "503"),
            },
        }
    },
    "/tasks/{task_id}/complete": {
        "post": {
            "summary": (
                "A handler that took the task over (it answered 202 with "
                "Torque-Complete-Within) reports it done; authorised by the delivery's "
                "Torque-Completion-Token as the bearer token (or an API token)"
            ),
            "operationId": "completeTask",
            "parameters": [_TASK_ID],
            "responses": {
                "200": json_response(ref("Reported"), "delivered"),
                **error_responses("401", "403", "404", "409", "503"),
            },
        }
    },
    "/tasks/{task_id}/fail": {
        "post": {
            "summary": (
                "A handler that took the task over reports its attempt failed: retried "
                "(after retry_after or the backoff), or dead on its last attempt"
            ),
            "operationId": "failTask",
            "parameters": [_TASK_ID],
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("Failure")}}},
            "responses": {
                "200": json_response(ref("Reported"), "retried or dead"),
                **error_responses("400", "401", "403", "404", "409", "413", "503"),
            },
        }
    },
    "/queues": {
        "get": {
            "summary": "The queues with their counts, a page at a time, by name",
            "operationId": "listQueues",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "the next_cursor of the page before (none or empty: the first)",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,100}$"},
                },
            ],
            "responses": {
                "200": json_response(ref("Queues"), "a page of queues"),
                **error_responses("400", "401", "503"),
            },
        }
    },
    "/nodes": {
        "get": {
            "summary": "The live nodes (their heartbeat in Redis is less than 15 s old)",
            "operationId": "listNodes",
            "responses": {
                "200": json_response(ref("Nodes"), "the live nodes, oldest first"),
                **error_responses("401", "503"),
            },
        }
    },
    "/queues/{queue}": {
        "get": {
            "summary": "One queue's counts",
            "operationId": "getQueue",
            "parameters": [_QUEUE],
            "responses": {
                "200": json_response(ref("Queue"), "the queue"),
                **error_responses("400", "401", "404", "503"),
            },
        },
        "patch": {
            "summary": (
                "Change the queue's own settings: stored in Redis, applied by every node "
                "within a second, overriding the node's options for this queue"
            ),
            "operationId": "patchQueue",
            "parameters": [_QUEUE],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("QueueSettingsChange")}},
            },
            "responses": {
                "200": json_response(ref("QueueSettingsChanged"), "the settings after the change"),
                **error_responses("400", "401", "413", "503"),
            },
        },
        "delete": {
            "summary": "Forget an empty queue (409 while it holds tasks)",
            "operationId": "deleteQueue",
            "parameters": [_QUEUE],
            "responses": {
                "200": json_response(ref("QueueDeleted"), "forgotten"),
                **error_responses("400", "401", "404", "409", "503"),
            },
        },
    },
    "/queues/{queue}/pause": {
        "post": {
            "summary": "Stop dispatching the queue, on every node (adds go on)",
            "operationId": "pauseQueue",
            "parameters": [_QUEUE],
            "responses": {
                "200": json_response(ref("Paused"), "paused"),
                **error_responses("400", "401", "404", "503"),
            },
        }
    },
    "/queues/{queue}/resume": {
        "post": {
            "summary": "Dispatch the queue again",
            "operationId": "resumeQueue",
            "parameters": [_QUEUE],
            "responses": {
                "200": json_response(ref("Paused"), "resumed"),
                **error_responses("400", "401", "404", "503"),
            },
        }
    },
    "/queues/{queue}/dead": {
        "get": {
            "summary": "The queue's dead letters, newest first",
            "operationId": "listDeadLetters",
            "parameters": [
                _QUEUE,
                {
                    "name": "offset",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                },
            ],
            "responses": {
                "200": json_response(ref("DeadPage"), "a page of dead letters"),
                **error_responses("400", "401", "503"),
            },
        },
        "delete": {
            "summary": "Delete dead letters (all, or the ids given)",
            "operationId": "deleteDeadLetters",
            "parameters": [_QUEUE],
            "requestBody": _IDS_BODY,
            "responses": {
                "200": json_response(ref("Deleted"), "how many were deleted"),
                **error_responses("400", "401", "413", "503"),
            },
        },
    },
    "/queues/{queue}/dead/retry": {
        "post": {
            "summary": "Make dead letters due now with fresh attempts (all, or the ids given)",
            "operationId": "retryDeadLetters",
            "parameters": [_QUEUE],
            "requestBody": _IDS_BODY,
            "responses": {
                "200": json_response(ref("Retried"), "how many were re-queued"),
                **error_responses("400", "401", "413", "503"),
            },
        }
    },
    "/health": {
        "get": {
            "summary": "200 when Redis answers, else 503 (no token needed)",
            "operationId": "health",
            "security": [],
            "responses": {
                "200": json_response(ref("Health"), "Redis answers"),
                "503": json_response(ref("Health"), "Redis does not answer"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": (
                "Prometheus metrics: this node's counters, the gauges of the first 1,000 "
                "queues by name"
            ),
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **error_responses("401"),
            },
        }
    },
    "/": {
        "get": {
            "summary": "The dashboard page (no token needed: it holds no data, and asks for "
            "the token the API calls it makes need)",
            "operationId": "dashboard",
            "security": [],
            "responses": {
                "200": {
                    "description": "an HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": json_response({"type": "object"}, "the OpenAPI document"),
                **error_responses("401"),
            },
        }
    },
}


@cache
def _document(token_required: bool) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "torque",
            "version": __version__,
            "description": (
                "A web-hook task queue.  Every time is Unix seconds (a float).  Errors are "
                '{"error": {"code", "message", "field"?}}; a method a path does not list '
                "answers 405 with an Allow header, a body over --max-body (1 MiB) 413, and a "
                "request head of over 100 headers or 16 KiB 431, on any path.  "
                "With --api-token, every endpoint but /health and the dashboard page / "
                "needs Authorization: Bearer <token>."
            ),
        },
        # A node without --api-token takes a request with or without one.
        "security": [{"bearer": []}] if token_required else [{"bearer": []}, {}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def document(token_required: bool = False) -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it).

    :param token_required: the node was started with ``--api-token``, so
        the bearer token is not optional.
    """
    return copy.deepcopy(_document(token_required))
