"""The retry rule: what an attempt's outcome means for its task.

Pure functions of values.  An attempt ends in an *outcome* (:class:`Response`
or :class:`NoResponse`); :func:`next_step` turns it into a *decision*
(:class:`Delivered`, :class:`Retry` or :class:`Dead`) that the store records.

**A settled outcome has one word**, its decision's ``label`` (ClassVar):
``delivered``, ``retried`` or ``dead``.  That same word is

* what :meth:`torque.storage.Store.settle` hands the ``SETTLE`` script
  (:mod:`torque.scripts`) as the action, and the field of the queue's
  per-minute counts it adds one to in Redis (:class:`torque.storage.Minute`;
  the keys are in :mod:`torque.keys`), beside the queue's running totals,
  which count ``delivered`` and ``failed`` (retried or dead);
* the ``outcome`` of the attempt's entry in the task's history
  (:func:`torque.storage.history_entry`, ``GET /tasks/<id>``), beside
  ``requeued`` (taken back from the dead letters: not an attempt);
* the ``outcome`` label of ``torque_deliveries`` (:mod:`torque.metrics`)
  and the kind of line the scheduler logs for the attempt.

A lost lease is settled by the ``CLAIM`` script itself, with the same words
(``retried``, or ``dead`` on the last attempt).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import ClassVar

import attrs

from torque.task import Task

# Statuses that mean "not now" rather than "no": worth another attempt.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@attrs.frozen
class RetryPolicy:
    """A node's defaults (``--max-task-errors``, ``--min-task-delay``,
    ``--max-task-delay``, ``--max-task-age``), or a queue's own settings
    over them; a task may override ``max_errors``.

    :param max_age: seconds from a task's creation after which a handler
        can no longer postpone it (SPEC 4 "Not yet").

    :param jitter: at most this fraction is *added* to a backoff delay, so
        that tasks failing together don't retry together, and no retry comes
        earlier than the documented schedule.
    """

    max_errors: int = 20
    min_delay: float = 1.0
    max_delay: float = 3600.0
    jitter: float = 0.1
    max_age: float = 30 * 86400.0


@attrs.frozen
class Response:
    """The handler answered.  ``retry_after`` is its ``Retry-After`` in
    seconds from now, if it sent one; ``detail`` is the start of its body."""

    status: int
    duration: float = 0.0
    retry_after: float | None = None
    detail: str = ""


@attrs.frozen
class NoResponse:
    """No HTTP answer: a timeout, a refused or reset connection, DNS...
    ``permanent`` when asking again can't help (a forbidden target)."""

    error: str
    duration: float = 0.0
    permanent: bool = False


Outcome = Response | NoResponse


# The words of the three decisions (see the module's docstring).
DELIVERED = "delivered"
RETRIED = "retried"
DEAD = "dead"


@attrs.frozen
class Delivered:
    """The handler took the task: it is done."""

    label: ClassVar[str] = DELIVERED
    status: int


@attrs.frozen
class Retry:
    """Another attempt at ``at``."""

    label: ClassVar[str] = RETRIED
    at: float
    status: int | None
    error: str


@attrs.frozen
class Dead:
    """No more attempts: the task becomes a dead letter."""

    label: ClassVar[str] = DEAD
    status: int | None
    error: str


Decision = Delivered | Retry | Dead


def backoff(retry: int, policy: RetryPolicy) -> float:
    """Seconds before the ``retry``-th retry (1 after the first failure):
    ``min(max_delay, min_delay * 2 ** (retry - 1))``, without jitter."""
    # The exponent is clamped: past 2**64 the cap has long been reached.
    return min(policy.max_delay, policy.min_delay * 2.0 ** min(retry - 1, 64))


def classify(status: int) -> str:
    """``"delivered"`` for 2xx; ``"retry"`` for 408, 425, 429 and 5xx;
    ``"refused"`` for every other status: the handler said no, and asking
    again would only get the same answer."""
    if 200 <= status < 300:
        return "delivered"
    if status in RETRYABLE_STATUSES or status >= 500:
        return "retry"
    return "refused"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an
    HTTP date.  ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def describe_outcome(outcome: Outcome) -> str:
    """One line for ``last_error``."""
    if isinstance(outcome, NoResponse):
        return outcome.error
    text = f"HTTP {outcome.status}"
    return f"{text}: {outcome.detail}" if outcome.detail else text


def next_step(
    task: Task,
    outcome: Outcome,
    now: float,
    policy: RetryPolicy,
    rng: Callable[[], float] = random.random,
) -> Decision:
    """Decide what becomes of ``task`` after the attempt that ended at
    ``now`` with ``outcome``; ``task.attempts`` counts that attempt.

    :param rng: a source of floats in [0, 1) for the jitter; tests pass a
        constant.
    """
    status = outcome.status if isinstance(outcome, Response) else None
    if status is not None:
        kind = classify(status)
        if kind == "delivered":
            return Delivered(status)
        if kind == "refused":
            return Dead(status, f"refused by the handler: {describe_outcome(outcome)}")
    error = describe_outcome(outcome)
    if isinstance(outcome, NoResponse) and outcome.permanent:
        return Dead(None, error)
    max_errors = task.max_errors or policy.max_errors
    if task.attempts >= max_errors:
        return Dead(status, f"gave up after {task.attempts} attempts: {error}")
    retry_after = outcome.retry_after if isinstance(outcome, Response) else None
    if retry_after is not None:
        delay = min(policy.max_delay, retry_after)
    else:
        delay = backoff(task.attempts, policy) * (1 + policy.jitter * rng())
    return Retry(now + delay, status, error)
