"""The proto3 JSON forms the Cloud Tasks clients send and accept:
timestamps (RFC 3339, up to 9 fraction digits), durations (``"30s"``,
``"0.100s"``) and enums, which arrive as numbers (the official clients ask
for ``enum-encoding=int``) or as names (curl, gcloud, the docs).  Pure.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re
import time
from typing import Any

from torque.cloudtasks.errors import invalid

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DURATION = re.compile(r"(-?)(\d{1,12})(?:\.(\d{1,9}))?s")

#: HttpMethod by number (0, unspecified, means POST).
HTTP_METHODS = {
    0: "POST",
    1: "POST",
    2: "GET",
    3: "HEAD",
    4: "PUT",
    5: "DELETE",
    6: "PATCH",
    7: "OPTIONS",
}
#: Task.View by number (0, unspecified, means BASIC).
VIEWS = {0: "BASIC", 1: "BASIC", 2: "FULL"}


def parse_timestamp(value: Any, field: str) -> float:
    """Unix seconds of an RFC 3339 timestamp."""
    match = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise invalid(field, f"{field} must be an RFC 3339 timestamp (2030-01-02T03:04:05.5Z)")
    year, month, day, hour, minute, second, fraction, zulu, sign, oh, om = match.groups()
    parts = [int(year), int(month), int(day), int(hour), int(minute), int(second)]
    try:
        # (a leap second, :60, is read as :59 to check the date)
        datetime.datetime(*parts[:5], min(parts[5], 59))
    except ValueError:
        raise invalid(field, f"{field} is not a valid date and time") from None
    seconds = calendar.timegm(tuple(parts))
    if not zulu:
        offset = (int(oh) * 60 + int(om)) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def format_timestamp(at: float, whole: bool = False) -> str:
    """``at`` in RFC 3339 UTC, to the microsecond (or the second)."""
    seconds = math.floor(at)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if whole:
        return text + "Z"
    micros = min(round((at - seconds) * 1e6), 999_999)
    return f"{text}.{micros:06d}Z"


def parse_duration(value: Any, field: str) -> float:
    """Seconds of a proto3 JSON Duration (``"30s"``, ``"0.100s"``)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise invalid(field, f'{field} must be a duration in seconds, such as "30s" or "0.5s"')
    sign, whole, fraction = match.groups()
    seconds = int(whole) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    return -seconds if sign else seconds


def format_duration(seconds: float) -> str:
    """A Duration as proto3 JSON writes it: 0, 3, 6 or 9 fraction digits."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    if "." in text:
        whole, fraction = text.split(".")
        text = f"{whole}.{fraction.ljust(-(-len(fraction) // 3) * 3, '0')}"
    return text + "s"


def enum(value: Any, names: dict[int, str], field: str, unspecified: str) -> str:
    """An enum given as its number or its name; the name it means."""
    if isinstance(value, bool):
        raise invalid(field, f"{field} must be one of {', '.join(sorted(set(names.values())))}")
    if isinstance(value, int) and value in names:
        return names[value]
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) in names:
            return names[int(text)]
        if text == unspecified:
            return names[0]
        if text in names.values():
            return text
    raise invalid(field, f"{field} must be one of {', '.join(sorted(set(names.values())))}")


def http_method(value: Any, field: str = "task.httpRequest.httpMethod") -> str:
    return enum(value, HTTP_METHODS, field, "HTTP_METHOD_UNSPECIFIED")


def view(value: Any, field: str = "responseView") -> str:
    return enum(value, VIEWS, field, "VIEW_UNSPECIFIED")
