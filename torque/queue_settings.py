"""A queue's own settings (``PATCH /queues/<q>``, SPEC 9 "Queue settings"):
what each field means, how it is checked, stored and read back.  Pure.

Each setting overrides the node's option of the same meaning for that one
queue, on every node (a task's own ``timeout`` or ``max_errors`` still wins
over both).  The store keeps them in one hash per queue
(:meth:`torque.storage.Store.get_settings`), as the decimal text of each
value; a field that is absent falls back to the node's option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from torque.retry import RetryPolicy
from torque.submission import InvalidTask


@attrs.frozen
class Setting:
    """One field: its type, the least value it takes, whether that least
    value is allowed itself, the node option it overrides, and what it does."""

    kind: type
    least: float
    inclusive: bool
    option: str
    doc: str


#: Every queue setting, in the order they are shown.
SETTINGS: dict[str, Setting] = {
    "rate": Setting(
        float, 0, True, "--rate", "dispatches per second, shared by every node; 0 for no limit"
    ),
    "concurrency": Setting(int, 1, True, "--concurrency", "requests in flight per node"),
    "host_concurrency": Setting(
        int, 1, True, "--host-concurrency", "requests in flight per target host per node"
    ),
    "max_errors": Setting(
        int, 1, True, "--max-task-errors", "failed attempts after which a task is dead"
    ),
    "min_delay": Setting(float, 0, True, "--min-task-delay", "first retry delay, seconds"),
    "max_delay": Setting(float, 0, True, "--max-task-delay", "cap on a retry delay, seconds"),
    "timeout": Setting(float, 0, False, "--task-timeout", "per-request timeout, seconds"),
    "max_age": Setting(
        float,
        0,
        False,
        "--max-task-age",
        "seconds from a task's creation during which a handler may postpone it",
    ),
}

# The largest value any setting takes: past it a number means nothing
# useful (and JSON would give floats with no exact integer).
MOST = 10.0**12


def encode(value: int | float) -> str:
    """A value as the settings hash holds it."""
    return str(value) if isinstance(value, int) else repr(float(value))


def decode(fields: Mapping[str, str]) -> dict[str, int | float]:
    """The settings a hash holds, typed; a field that is unknown or not a
    number (the hash was written by hand) is passed over."""
    settings: dict[str, int | float] = {}
    for name, setting in SETTINGS.items():
        text = fields.get(name)
        if text is None:
            continue
        try:
            value = setting.kind(float(text)) if setting.kind is int else float(text)
        except (TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(value):
            settings[name] = value
    return settings


def check_changes(body: Any) -> dict[str, int | float | None]:
    """The changes a ``PATCH /queues/<q>`` body asks for: each field a
    number in its range, or ``null`` to fall back to the node's option.

    :raises InvalidTask: naming the first field that is unknown or wrong.
    """
    if not isinstance(body, dict) or not body:
        known = ", ".join(SETTINGS)
        raise InvalidTask("body", f"send a JSON object with one or more of: {known}")
    changes: dict[str, int | float | None] = {}
    for name, value in body.items():
        setting = SETTINGS.get(name)
        if setting is None:
            known = ", ".join(SETTINGS)
            raise InvalidTask(name, f"unknown field {name!r}; known: {known}", "unknown_field")
        changes[name] = None if value is None else _checked(name, setting, value)
    return changes


def _checked(name: str, setting: Setting, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTask(name, f"{name} must be a number, or null for the node's option")
    if setting.kind is int:
        if not math.isfinite(value) or value != int(value):
            raise InvalidTask(name, f"{name} must be a whole number")
        value = int(value)
    elif not math.isfinite(value):
        raise InvalidTask(name, f"{name} must be a finite number")
    low = setting.least
    if value < low or (value == low and not setting.inclusive) or value > MOST:
        bound = f"at least {low:g}" if setting.inclusive else f"more than {low:g}"
        raise InvalidTask(name, f"{name} must be {bound} and at most {MOST:g}")
    return value


@attrs.frozen
class QueueConfig:
    """What one queue's scheduler works with: the node's options, or the
    queue's own settings over them (:meth:`with_settings`).

    :param policy: the retry rule's limits, ``max_age`` included.
    """

    timeout: float = 60.0
    concurrency: int = 100
    rate: float = 0.0
    policy: RetryPolicy = RetryPolicy()

    def with_settings(self, settings: Mapping[str, int | float]) -> QueueConfig:
        """This node's options with ``settings`` (as
        :meth:`torque.storage.Store.get_settings` gives them) over them.
        ``host_concurrency`` is not here: :meth:`QueueScheduler.host_cap`
        reads it."""
        limits = ("max_errors", "min_delay", "max_delay", "max_age")
        policy = attrs.evolve(self.policy, **{k: settings[k] for k in limits if k in settings})
        return QueueConfig(
            timeout=settings.get("timeout", self.timeout),
            concurrency=int(settings.get("concurrency", self.concurrency)),
            rate=settings.get("rate", self.rate),
            policy=policy,
        )
