"""A QStash publish (destination, ``Upstash-*`` headers, body) becomes an
ordinary :class:`~torque.task.Task`.

Pure: no I/O, no clock.  Header names are matched case-insensitively (the
Python SDK sends ``Upstash-Delay``, the JS one ``upstash-delay``), and every
``Upstash-*`` header is either honoured or refused with a 400 naming it
(:data:`REFUSED`): never ignored silently.  The task itself is built and
checked by :func:`torque.submission.parse_submission`, so a message keeps
every rule of a task added through torque's own API (URL, headers, limits).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping

import attrs

from torque.qstash import DOOR
from torque.submission import InvalidTask, parse_submission
from torque.task import Task

#: The queue a plain ``/v2/publish`` goes to: torque's default queue.
DEFAULT_QUEUE = "default"
#: Retries of a message that names none (QStash's free-plan default).
DEFAULT_RETRIES = 3
#: Retries a message may ask for (torque's ``max_errors`` is at most 10,000).
MAX_RETRIES = 9999

#: The media type of a body published without one.
UNTYPED = "application/octet-stream"
FORWARD = "upstash-forward-"
CALLBACK = "upstash-callback"
FAILURE_CALLBACK = "upstash-failure-callback"
#: Headers the JS SDK adds to every call: about the client, not the message.
IGNORED_PREFIX = "upstash-telemetry-"
#: Headers with a meaning torque does not have; refused with a 400.
REFUSED = {
    "upstash-retry-delay": "a retry delay expression (torque retries with its own backoff)",
    "upstash-flow-control-key": "flow control (set a queue's parallelism instead)",
    "upstash-flow-control-value": "flow control (set a queue's parallelism instead)",
    "upstash-redact-fields": "redacted fields",
    "upstash-region": "regions",
    "upstash-cron": "schedules",
    "upstash-schedule-id": "schedules",
}
KNOWN = frozenset(
    {
        "upstash-method",
        "upstash-delay",
        "upstash-not-before",
        "upstash-retries",
        "upstash-timeout",
        "upstash-deduplication-id",
        "upstash-content-based-deduplication",
        CALLBACK,
        FAILURE_CALLBACK,
        "upstash-label",
    }
)
# The torque field a submission error names, as the QStash header it came from.
_FIELD_HEADERS = {
    "url": "destination",
    "method": "Upstash-Method",
    "headers": "Upstash-Forward-*",
    "delay": "Upstash-Delay",
    "eta": "Upstash-Not-Before",
    "timeout": "Upstash-Timeout",
    "max_errors": "Upstash-Retries",
    "queue": "queue",
}
_DURATION = re.compile(r"(?:[0-9]{1,9}[smhd])+")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class QStashError(Exception):
    """A request the QStash door refuses; the answer is ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def duration(header: str, text: str) -> float:
    """Seconds in a QStash duration: ``10s``, ``5m``, ``1h``, ``2d``, or a
    sum such as ``1h30m``; a bare number counts seconds."""
    text = text.strip()
    if re.fullmatch(r"[0-9]{1,9}", text):
        return float(text)
    if not _DURATION.fullmatch(text):
        raise QStashError(400, f"{header} must be a duration such as 10s, 5m, 1h or 2d")
    return float(sum(int(n) * _UNIT[u] for n, u in re.findall(r"([0-9]+)([smhd])", text)))


def whole(header: str, text: str, low: int, high: int) -> int:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,12}", text) or not low <= int(text) <= high:
        raise QStashError(400, f"{header} must be a whole number from {low} to {high}")
    return int(text)


def flag(header: str, text: str) -> bool:
    """``true`` in any letter case (the Python SDK sends ``True``)."""
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise QStashError(400, f"{header} must be true or false")
    return lowered == "true"


@attrs.frozen
class Publish:
    """One message as published: what :func:`build_task` needs.

    :param headers: the request's headers, names lower-cased.
    :param caller_ip: the publisher's address, shown as ``callerIP``.
    """

    destination: str
    headers: Mapping[str, str]
    body: bytes
    queue: str = DEFAULT_QUEUE
    caller_ip: str = ""


def lower_headers(pairs) -> dict[str, str]:
    """Header names lower-cased (the last value of a repeated header wins)."""
    return {str(name).lower(): str(value) for name, value in pairs}


def build_task(message: Publish, *, new_id: Callable[[str], str], now: float) -> Task:
    """The task that delivers ``message``.

    :raises QStashError: a 400 naming the header (or ``destination``) at fault.
    """
    h = message.headers
    forwarded: dict[str, str] = {}
    callback_headers: dict[str, str] = {}
    failure_headers: dict[str, str] = {}
    for name, value in h.items():
        if not name.startswith("upstash-") or name.startswith(IGNORED_PREFIX) or name in KNOWN:
            continue
        if name.startswith(FORWARD):
            forwarded[_title(name[len(FORWARD) :])] = value
        elif name.startswith(FAILURE_CALLBACK + "-"):
            failure_headers[_title(name[len(FAILURE_CALLBACK) + 1 :])] = value
        elif name.startswith(CALLBACK + "-"):
            callback_headers[_title(name[len(CALLBACK) + 1 :])] = value
        elif name in REFUSED:
            what = REFUSED[name]
            raise QStashError(400, f"{_title(name)} is not supported: torque has no {what}")
        else:
            raise QStashError(400, f"{_title(name)} is not supported by torque's QStash door")
    try:
        body = message.body.decode("utf-8")
    except UnicodeDecodeError:
        raise QStashError(400, "the body must be UTF-8 text: torque keeps bodies as text") from None
    retries = DEFAULT_RETRIES
    if "upstash-retries" in h:
        retries = whole("Upstash-Retries", h["upstash-retries"], 0, MAX_RETRIES)
    fields: dict = {
        "url": message.destination,
        "queue": message.queue,
        "max_errors": retries + 1,
        "name": _dedup_name(message),
    }
    if "upstash-method" in h:
        fields["method"] = h["upstash-method"].strip()
    if forwarded:
        fields["headers"] = forwarded
    if "upstash-not-before" in h:
        # A time already past means now, as in QStash.
        fields["eta"] = max(now, whole("Upstash-Not-Before", h["upstash-not-before"], 0, 10**11))
    elif "upstash-delay" in h:
        fields["delay"] = duration("Upstash-Delay", h["upstash-delay"])
    if "upstash-timeout" in h:
        fields["timeout"] = duration("Upstash-Timeout", h["upstash-timeout"])
    task = _submit(fields, new_id, now)
    door_data = {"retries": str(retries)}
    if message.caller_ip:
        door_data["caller_ip"] = message.caller_ip
    if "upstash-label" in h:
        door_data["label"] = h["upstash-label"]
    for header, key, extra, extra_key in [
        (CALLBACK, "callback", callback_headers, "callback_headers"),
        (FAILURE_CALLBACK, "failure_callback", failure_headers, "failure_callback_headers"),
    ]:
        if header in h:
            # Checked as a task's would be, headers too: the callback is one.
            checked = {"url": h[header].strip(), "headers": extra or None}
            door_data[key] = _submit(checked, lambda queue: "check", now, _title(header)).url
            if extra:
                door_data[extra_key] = json.dumps(extra)
        elif extra:
            raise QStashError(400, f"{_title(header)}-* headers need an {_title(header)} URL")
    content_type = h.get("content-type", "")
    if body and not content_type:
        # Said so, as torque would otherwise read a body without a media
        # type back as a form (hand-written tasks, docs/redis-keys.rst).
        content_type = UNTYPED
    return attrs.evolve(
        task,
        body=body,
        content_type=content_type,
        door=DOOR,
        door_data=door_data,
    )


def _submit(fields: dict, new_id: Callable[[str], str], now: float, callback: str = "") -> Task:
    """:param callback: the callback header whose URL and headers these are."""
    try:
        return parse_submission(fields, new_id=new_id, now=now)
    except InvalidTask as e:
        where = _FIELD_HEADERS.get(e.field, e.field)
        if callback:
            where = callback + ("-*" if e.field == "headers" else "")
        raise QStashError(400, f"{where}: {e.message}") from None


def _dedup_name(message: Publish) -> str | None:
    """The task name that makes a duplicate publish answer with the first
    message (torque keeps a name while its task lives and an hour after)."""
    h = message.headers
    if h.get("upstash-deduplication-id"):
        key = "id\n" + h["upstash-deduplication-id"]
    elif "upstash-content-based-deduplication" in h and flag(
        "Upstash-Content-Based-Deduplication", h["upstash-content-based-deduplication"]
    ):
        options = sorted(
            (k, v)
            for k, v in h.items()
            # The flag itself is left out: ``True`` (Python) and ``true``
            # (JS) publish the same message.
            if k.startswith("upstash-")
            and not k.startswith(IGNORED_PREFIX)
            and k != "upstash-content-based-deduplication"
        )
        key = "content\n" + json.dumps([message.destination, options])
        key += "\n" + hashlib.sha256(message.body).hexdigest()
    else:
        return None
    return "qstash-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _title(name: str) -> str:
    """``x-custom`` → ``X-Custom``, as the header is usually written."""
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def new_message_id(token: Callable[[int], str]) -> str:
    """``msg_`` and 120 random bits, URL-safe (QStash ids start ``msg_``)."""
    return "msg_" + token(15)
