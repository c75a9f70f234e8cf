"""A Cloud Tasks ``Queue``: its JSON, the door record that keeps it, and
the torque queue settings (SPEC 9) it maps onto.  Pure.

=========================================  =================================
Cloud Tasks                                torque queue setting
=========================================  =================================
``rateLimits.maxDispatchesPerSecond``      ``rate`` (shared by every node)
``rateLimits.maxConcurrentDispatches``     ``concurrency`` (per node)
``retryConfig.maxAttempts``                ``max_errors`` (-1: unlimited)
``retryConfig.minBackoff``                 ``min_delay``
``retryConfig.maxBackoff``                 ``max_delay``
``retryConfig.maxDoublings``               kept and shown; torque doubles
                                           until ``max_delay``
``retryConfig.maxRetryDuration``           kept and shown, not applied
``stackdriverLoggingConfig``               kept and shown, not applied
=========================================  =================================

What a queue leaves unset follows the node's options (``--rate``,
``--max-task-errors``, …), and the queue's JSON shows the values in force.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from torque.cloudtasks.errors import invalid, unimplemented
from torque.cloudtasks.names import QueueName, parse_queue_name
from torque.cloudtasks.wire import format_duration, format_timestamp, parse_duration
from torque.queue_settings import QueueConfig

QUEUE_FIELDS = frozenset({"name", "rateLimits", "retryConfig", "stackdriverLoggingConfig"})
# Output only: accepted (a client may send back a queue it read) and ignored.
OUTPUT_FIELDS = frozenset({"state", "purgeTime"})
RATE_FIELDS = frozenset({"maxDispatchesPerSecond", "maxConcurrentDispatches", "maxBurstSize"})
RETRY_FIELDS = frozenset(
    {"maxAttempts", "minBackoff", "maxBackoff", "maxDoublings", "maxRetryDuration"}
)
REFUSED = {
    "appEngineRoutingOverride": "App Engine routing is not supported by torque",
    "httpTarget": "queue-level HTTP targets (uriOverride, headerOverrides, tokens) are not "
    "supported by torque: give each task its httpRequest",
    "cmekConfig": "CMEK is not supported by torque",
}
# torque's max_errors for maxAttempts -1 (unlimited).
UNLIMITED_ATTEMPTS = 10**9
MAX_RATE = 500.0
MAX_CONCURRENT = 5000


@attrs.frozen
class QueueRecord:
    """What the door keeps of a queue (a door record, JSON), beside the
    torque queue and its settings: the full name it was created under and
    the configuration as the client gave it, to show it back."""

    name: QueueName
    rate_limits: Mapping[str, Any] = attrs.field(factory=dict)
    retry_config: Mapping[str, Any] = attrs.field(factory=dict)
    logging: Mapping[str, Any] | None = None
    paused: bool = False
    purged_at: float | None = None

    def to_text(self) -> str:
        record: dict[str, Any] = {
            "name": str(self.name),
            "rateLimits": dict(self.rate_limits),
            "retryConfig": dict(self.retry_config),
            "paused": self.paused,
        }
        if self.logging is not None:
            record["stackdriverLoggingConfig"] = dict(self.logging)
        if self.purged_at is not None:
            record["purgeTime"] = self.purged_at
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> QueueRecord:
        record = json.loads(text)
        return cls(
            name=parse_queue_name(record["name"]),
            rate_limits=record.get("rateLimits") or {},
            retry_config=record.get("retryConfig") or {},
            logging=record.get("stackdriverLoggingConfig"),
            paused=bool(record.get("paused")),
            purged_at=record.get("purgeTime"),
        )

    def settings(self) -> dict[str, int | float | None]:
        """The torque queue settings this configuration means (``None``:
        unset, the node's option applies)."""
        rate, retry = self.rate_limits, self.retry_config
        attempts = retry.get("maxAttempts")
        return {
            "rate": rate.get("maxDispatchesPerSecond"),
            "concurrency": rate.get("maxConcurrentDispatches"),
            "max_errors": UNLIMITED_ATTEMPTS if attempts == -1 else attempts,
            "min_delay": _seconds(retry.get("minBackoff")),
            "max_delay": _seconds(retry.get("maxBackoff")),
        }


def _seconds(duration: str | None) -> float | None:
    return None if duration is None else parse_duration(duration, "retryConfig")


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(field, f"{field} must be a JSON object")
    return value


def _number(value: Any, field: str, low: float, high: float, whole: bool = False) -> float | int:
    kind = "a whole number" if whole else "a number"
    if isinstance(value, str):  # proto3 JSON writes 64-bit integers as strings
        try:
            value = int(value) if whole else float(value)
        except ValueError:
            raise invalid(field, f"{field} must be {kind}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(field, f"{field} must be {kind}")
    if whole and value != int(value):
        raise invalid(field, f"{field} must be {kind}")
    if not low <= value <= high:
        raise invalid(field, f"{field} must be from {low:g} to {high:g}")
    return int(value) if whole else float(value)


def _duration(value: Any, field: str) -> str:
    seconds = parse_duration(value, field)
    if seconds < 0:
        raise invalid(field, f"{field} must not be negative")
    return format_duration(seconds)


def rate_limits(value: Any) -> dict[str, Any]:
    """``rateLimits`` as given, checked (``maxBurstSize`` is output only)."""
    given = _object(value, "rateLimits")
    for key in given:
        if key not in RATE_FIELDS:
            raise invalid(f"rateLimits.{key}", f"Unknown name \"{key}\" at 'rateLimits'")
    kept: dict[str, Any] = {}
    if given.get("maxDispatchesPerSecond") is not None:
        field = "rateLimits.maxDispatchesPerSecond"
        rate = _number(given["maxDispatchesPerSecond"], field, 0, MAX_RATE)
        if rate:
            kept["maxDispatchesPerSecond"] = rate
    if given.get("maxConcurrentDispatches") is not None:
        field = "rateLimits.maxConcurrentDispatches"
        concurrent = _number(given["maxConcurrentDispatches"], field, 0, MAX_CONCURRENT, True)
        if concurrent:
            kept["maxConcurrentDispatches"] = concurrent
    return kept


def retry_config(value: Any) -> dict[str, Any]:
    """``retryConfig`` as given, checked; a zero means "the default"."""
    given = _object(value, "retryConfig")
    for key in given:
        if key not in RETRY_FIELDS:
            raise invalid(f"retryConfig.{key}", f"Unknown name \"{key}\" at 'retryConfig'")
    kept: dict[str, Any] = {}
    if given.get("maxAttempts") is not None:
        attempts = _number(given["maxAttempts"], "retryConfig.maxAttempts", -1, 10**6, True)
        if attempts:
            kept["maxAttempts"] = attempts
    if given.get("maxDoublings") is not None:
        doublings = _number(given["maxDoublings"], "retryConfig.maxDoublings", 0, 10**6, True)
        if doublings:
            kept["maxDoublings"] = doublings
    for key in ("minBackoff", "maxBackoff", "maxRetryDuration"):
        if given.get(key) not in (None, ""):
            kept[key] = _duration(given[key], f"retryConfig.{key}")
    low, high = kept.get("minBackoff"), kept.get("maxBackoff")
    if low and high and _seconds(low) > _seconds(high):
        raise invalid("retryConfig.minBackoff", "retryConfig.minBackoff is over maxBackoff")
    return kept


def _check_fields(body: Mapping[str, Any]) -> None:
    for key in body:
        if key in REFUSED:
            raise unimplemented(REFUSED[key], key)
        if key not in QUEUE_FIELDS | OUTPUT_FIELDS:
            raise invalid(key, f'Unknown name "{key}": not a field of Queue')


def _logging(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    given = _object(value, "stackdriverLoggingConfig")
    for key in given:
        if key != "samplingRatio":
            raise invalid(f"stackdriverLoggingConfig.{key}", f'Unknown name "{key}"')
    ratio = given.get("samplingRatio", 0)
    return {"samplingRatio": _number(ratio, "stackdriverLoggingConfig.samplingRatio", 0, 1)}


def new_queue(body: Mapping[str, Any], name: QueueName) -> QueueRecord:
    """CreateQueue's body as a record of queue ``name``."""
    _check_fields(body)
    return QueueRecord(
        name=name,
        rate_limits=rate_limits(body.get("rateLimits")),
        retry_config=retry_config(body.get("retryConfig")),
        logging=_logging(body.get("stackdriverLoggingConfig")),
    )


#: The paths an ``updateMask`` may name.
MASK_PATHS = frozenset(
    {"rateLimits", "retryConfig", "stackdriverLoggingConfig"}
    | {f"rateLimits.{f}" for f in RATE_FIELDS - {"maxBurstSize"}}
    | {f"retryConfig.{f}" for f in RETRY_FIELDS}
    | {"stackdriverLoggingConfig.samplingRatio"}
)


def updated_queue(
    record: QueueRecord, body: Mapping[str, Any], mask: list[str] | None
) -> QueueRecord:
    """UpdateQueue: ``record`` with the fields ``mask`` names taken from
    ``body`` (a named field the body leaves out goes back to its default);
    with no mask, every field is taken from the body."""
    _check_fields(body)
    if "name" in body and body["name"] not in ("", str(record.name)):
        raise invalid("queue.name", "queue.name must be the queue the request names")
    if mask is None:
        fresh = new_queue({k: v for k, v in body.items() if k != "name"}, record.name)
        return attrs.evolve(fresh, paused=record.paused, purged_at=record.purged_at)
    for path in mask:
        if path.split(".")[0] in REFUSED:
            raise unimplemented(REFUSED[path.split(".")[0]], path)
        if path not in MASK_PATHS:
            raise invalid("updateMask", f"updateMask names {path!r}, which can't be updated")
    new = {
        "rateLimits": dict(record.rate_limits),
        "retryConfig": dict(record.retry_config),
    }
    given = {"rateLimits": body.get("rateLimits"), "retryConfig": body.get("retryConfig")}
    logging = record.logging
    for path in mask:
        top, _, leaf = path.partition(".")
        if top == "stackdriverLoggingConfig":
            logging = _logging(body.get(top))
            continue
        source = _object(given[top], top)
        if leaf:
            new[top].pop(leaf, None)
            if source.get(leaf) is not None:
                new[top][leaf] = source[leaf]
        else:
            new[top] = dict(source)
    return attrs.evolve(
        record,
        rate_limits=rate_limits(new["rateLimits"]),
        retry_config=retry_config(new["retryConfig"]),
        logging=logging,
    )


def queue_json(
    record: QueueRecord, paused: bool, settings: Mapping[str, Any], node: QueueConfig
) -> dict[str, Any]:
    """A queue as Cloud Tasks shows it: the values in force (the queue's
    settings over the node's options, as its schedulers work with them)."""
    config = node.with_settings({k: v for k, v in settings.items() if v is not None})
    limits: dict[str, Any] = {"maxConcurrentDispatches": config.concurrency}
    if config.rate:
        limits["maxDispatchesPerSecond"] = config.rate
    attempts = config.policy.max_errors
    retry: dict[str, Any] = {
        "maxAttempts": -1 if attempts >= UNLIMITED_ATTEMPTS else attempts,
        "minBackoff": format_duration(config.policy.min_delay),
        "maxBackoff": format_duration(config.policy.max_delay),
    }
    for key in ("maxDoublings", "maxRetryDuration"):
        if key in record.retry_config:
            retry[key] = record.retry_config[key]
    queue: dict[str, Any] = {
        "name": str(record.name),
        "rateLimits": limits,
        "retryConfig": retry,
        "state": "PAUSED" if paused else "RUNNING",
    }
    if record.purged_at is not None:
        queue["purgeTime"] = format_timestamp(record.purged_at)
    if record.logging is not None:
        queue["stackdriverLoggingConfig"] = dict(record.logging)
    return queue
