"""Opaque cursors for paged listings (``GET /queues/<q>/tasks``).

A cursor is where the previous page ended, as the store understands it (a
task's score and id), written as URL-safe base64 of a JSON list so that
clients pass it back as it is and never build one.  It is not secret, and it
needs no signature: whatever a client makes of it, decoding either yields a
well-formed position or refuses it as bad input naming the field, and the
store answers any well-formed position with the page after it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

from torque.submission import InvalidTask

# Longer than any cursor this node writes (a task id is at most a few
# hundred characters, even one written to Redis by hand).
MAX_LENGTH = 2000


def encode_position(after: tuple[float, str] | None) -> str | None:
    """The cursor of the page after ``after``; ``None`` for no more pages."""
    if after is None:
        return None
    score, task_id = after
    text = json.dumps([repr(float(score)), task_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_position(cursor: str, field: str = "cursor") -> tuple[float, str]:
    """The position a cursor of :func:`encode_position` names.

    :raises InvalidTask: naming ``field``, for anything else.
    """
    bad = InvalidTask(field, f"{field} is not one this API gave out", "invalid_cursor")
    if len(cursor) > MAX_LENGTH:
        raise bad
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError too
        raise bad from None
    if not (isinstance(position, list) and len(position) == 2):
        raise bad
    score_text, task_id = position
    if not (isinstance(score_text, str) and isinstance(task_id, str) and task_id):
        raise bad
    try:
        task_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no id is one
        raise bad from None
    try:
        score = float(score_text)
    except ValueError:
        raise bad from None
    if not math.isfinite(score):
        raise bad
    return score, task_id
