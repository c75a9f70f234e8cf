"""HTTP helpers of the QStash door: its Klein app (shared by the route
classes of :mod:`torque.qstash.routes`, :mod:`torque.qstash.queue_routes`
and :mod:`torque.qstash.dlq_routes`), JSON answers and request arguments."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein

from torque.qstash.headers import QStashError
from torque.submission import strict_json
from torque.task import QUEUE_RE

#: The door's routes, registered by each route class and bound to the
#: :class:`~torque.qstash.routes.QStashAPI` instance that serves them.
app = Klein()

#: Messages in one ``/v2/batch``, and ids in one bulk action, at most.
MAX_BATCH = 1000
#: Dead letters a DLQ page or bulk action holds by default, and at most.
DLQ_PAGE = 100
MAX_DLQ_PAGE = 1000


def json_answer(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


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
