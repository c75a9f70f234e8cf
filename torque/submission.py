"""How a submission becomes a :class:`~torque.task.Task`: validation, the
limits a task must keep, and the encoding of its payload.

Everything here is pure: no I/O, no clock.  Submissions come in as a mapping
of field names to values (a form post gives strings, a JSON body gives JSON
values); :func:`parse_submission` either returns a :class:`Task` or raises
:class:`InvalidTask` naming the field at fault.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

from hyperlink import EncodedURL

from torque.task import FORM, JSON, METHODS, NAME_RE, QUEUE_RE, Task

BODYLESS_METHODS = frozenset({"GET", "DELETE"})
MAX_URL_LENGTH = 2083
# How far ahead a task may be scheduled, as Cloud Tasks and App Engine allow.
MAX_AHEAD = 30 * 86400
# How far in the past an ``eta`` may lie: an eta a little behind (a clock a
# little off, a task computed a while ago) means "now"; one from long ago is
# a mistake, and would tell ``oldest_due_age`` the queue has waited years.
MAX_BEHIND = 86400
# How deeply params, json and headers may nest.
MAX_DEPTH = 32
# Extra headers on a task, as Cloud Tasks allows: count, and total bytes.
MAX_TASK_HEADERS = 100
MAX_HEADER_BYTES = 80 * 1024
# Headers that describe the request itself: torque sets them, a task can't.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type"}
)
# Torque's own headers (SPEC §4 and §5), reserved in any letter case: a
# handler trusts them, so a task must not send a second, spoofed copy.
OWN_HEADERS = frozenset(
    {
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "torque-completion-token",
    }
)
OWN_HEADER_PREFIX = "x-torque-"
FIELDS = frozenset(
    {
        "url",
        "params",
        "json",
        "delay",
        "eta",
        "queue",
        "name",
        "method",
        "headers",
        "timeout",
        "max_errors",
    }
)


class InvalidTask(ValueError):
    """A submission that can't become a task; ``field`` says which part."""

    def __init__(self, field: str, message: str, code: str = "invalid_field"):
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


def strict_json(text: str | bytes) -> Any:
    """Parse what RFC 8259 calls JSON, and only that.

    :func:`json.loads` also takes ``NaN`` and ``Infinity`` (and turns
    ``1e999`` into infinity), which :func:`json.dumps` would then pass on to
    a web hook as a body that isn't JSON; and it raises ``RecursionError``,
    not ``ValueError``, on an array nested some thousand levels deep.

    :raises ValueError: for all of those, as for any text that isn't JSON.
    """
    if not isinstance(text, str):
        text = text.decode(json.detect_encoding(text), "surrogatepass")  # as json.loads does
    try:
        return _STRICT.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


# One decoder for every call: json.loads with options builds one each time.
_STRICT = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_float)


def require_text(field: str, value: Any) -> Any:
    """Refuse strings that aren't Unicode text: a JSON ``"\\ud800"`` escape
    parses to a lone surrogate, which has no UTF-8 form, so Redis, the URL
    and the request headers could never carry it."""
    try:
        is_text = _is_text(value)
    except RecursionError:  # parsed a little higher up the stack than this
        raise InvalidTask(field, f"{field} is nested too deeply", "too_deep") from None
    if not is_text:
        raise InvalidTask(
            field, f"{field} holds a lone surrogate, which is not text", "invalid_encoding"
        )
    return value


def _is_text(value: Any, level: int = 1) -> bool:
    """Whether every string in a JSON value has a UTF-8 form.  Walked here,
    not by encoding the whole value with :func:`json.dumps` (a new encoder
    per call: a tenth of a batch task's validation); nesting past
    :data:`MAX_DEPTH`, refused later anyway, is left to :func:`json.dumps`,
    which stops a value too deep to check."""
    kind = type(value)
    if kind is str:
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if kind is dict:
        if level > MAX_DEPTH:
            return _dumps_as_text(value)
        for key, item in value.items():
            if not (_is_text(key, level) and _is_text(item, level + 1)):
                return False
        return True
    if kind is list:
        if level > MAX_DEPTH:
            return _dumps_as_text(value)
        return all(_is_text(item, level + 1) for item in value)
    if value is None or kind in _SCALARS:
        return True
    return _dumps_as_text(value)


_SCALARS = (int, float, bool)


def _dumps_as_text(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def encode_params(params: Mapping[str, Any]) -> str:
    """Form-encode a JSON object: ``{"foo": "x", "baz": 99}`` becomes
    ``foo=x&baz=99``.  Lists repeat the key; JSON scalars are written as JSON
    (``true``, ``1.5``), nested objects as JSON text, ``null`` as empty.

    What :func:`urllib.parse.urlencode` gives, without its four calls per
    string for the keys and values that need no quoting (most of them).
    """
    pairs = []
    for key, value in params.items():
        name = _quoted(key)
        if isinstance(value, list):
            pairs += [f"{name}={_quoted(_form_value(item))}" for item in value]
        else:
            pairs.append(f"{name}={_quoted(_form_value(value))}")
    return "&".join(pairs)


# What quote_plus leaves as it is.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(text: str) -> str:
    return text if _UNQUOTED.fullmatch(text) else quote_plus(text)


def _form_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is int:  # as json.dumps writes them, without an encoder each
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value, separators=(",", ":"))


def parse_submission(
    fields: Mapping[str, Any],
    *,
    new_id: Callable[[str], str],
    now: float,
    base_url: str | None = None,
    queue: str | None = None,
    is_form: bool = False,
) -> Task:
    """Validate a submission and build its :class:`Task`.

    :param fields: the submitted fields.
    :param new_id: the task's id from its queue (an id carries its queue:
        :func:`torque.keys.task_id`).
    :param now: the current time; ``delay`` counts from it.
    :param base_url: ``--base-task-url``, the prefix for path-only URLs.
    :param queue: the queue named by the route (``/queues/<q>/tasks``).
    :param is_form: values come from a form post, so JSON-valued fields
        (``params``, ``json``, ``headers``) arrive as JSON text.
    :raises InvalidTask: naming the first field at fault.
    """
    unknown = [] if FIELDS.issuperset(fields) else sorted(set(fields) - FIELDS)
    if unknown:
        raise InvalidTask(
            unknown[0],
            f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(FIELDS))}",
            "unknown_field",
        )
    for name, value in fields.items():
        require_text(name, value)
    method = _method(fields.get("method"))
    url = _url(fields.get("url"), base_url)
    content_type, body, query = _payload(fields, method, is_form)
    if query:
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))
        if len(url) > MAX_URL_LENGTH:
            raise InvalidTask("params", f"url with params is over {MAX_URL_LENGTH} characters")
    queue = _queue(fields.get("queue"), queue)
    return Task(
        id=new_id(queue),
        queue=queue,
        url=url,
        method=method,
        body=body,
        content_type=content_type,
        headers=_valid_headers(fields.get("headers"), is_form),
        name=_pattern("name", fields.get("name"), NAME_RE, "") or "",
        due_at=_due_at(fields, now),
        created_at=now,
        timeout=_positive("timeout", fields.get("timeout"), float, 86400),
        max_errors=_positive("max_errors", fields.get("max_errors"), int, 10000),
    )


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _url(value: Any, base_url: str | None) -> str:
    if not _present(value):
        raise InvalidTask("url", "url is required", "missing_field")
    if not isinstance(value, str):
        raise InvalidTask("url", "url must be a string")
    if value.startswith("/"):
        if not base_url:
            raise InvalidTask(
                "url",
                "url is a path, and this node has no --base-task-url to prefix it with",
            )
        value = base_url.rstrip("/") + value
    return _checked_url(value)


# Most tasks of an application go to a handful of URLs, and checking one
# (hyperlink's parse and IDNA, below) is a third of an add's validation:
# each distinct URL is checked once.  Only URLs that pass are kept.
@functools.lru_cache(maxsize=1024)
def _checked_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise InvalidTask("url", f"url is over {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise InvalidTask("url", "url must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
    except ValueError as e:
        raise InvalidTask("url", f"url is malformed: {e}") from None
    if "@" in parts.netloc:
        # Never delivered as such (treq sends no credentials from a URL),
        # and a password in the URL would show in GET /tasks/<id>: the
        # message must not repeat it.
        raise InvalidTask(
            "url",
            "url must not carry a user name or password; "
            "give them in an Authorization header instead",
        )
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as e:
        raise InvalidTask("url", f"url is malformed: {e}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidTask("url", "url must be an http:// or https:// URL, or a path")
    _requestable(value, parts.hostname)
    return value


def _requestable(url: str, host: str) -> None:
    """Refuse a URL that treq can't turn into a request, as it would do at
    every attempt until the task is dead: treq parses it with hyperlink,
    which wants a port after a ``:`` (``http://app:/``) and IDNA-encodes the
    host, refusing names such as ``my_app``, ``-app`` or ``a..b``, and IPv6
    literals (``[::1]``) too.
    """
    if ":" in host:
        raise InvalidTask("url", "url can't be an IPv6 literal; give a host name for it")
    try:
        EncodedURL.from_text(url).to_uri()
    except ValueError as e:  # hyperlink's URLParseError, idna's IDNAError
        raise InvalidTask("url", f"url can't be requested: {e}") from None


def _method(value: Any) -> str:
    if not _present(value):
        return "POST"
    # ASCII only: "poſt".upper() is "POST" too.
    method = value.upper() if isinstance(value, str) and value.isascii() else ""
    if method not in METHODS:
        raise InvalidTask("method", f"method must be one of {', '.join(sorted(METHODS))}")
    return method


def _json_field(name: str, value: Any, is_form: bool) -> Any:
    if is_form or isinstance(value, str) and name != "json":
        try:
            value = strict_json(value)
        except (TypeError, ValueError) as e:
            raise InvalidTask(name, f"{name} must be JSON: {e}") from None
        require_text(name, value)
    if _depth(value) > MAX_DEPTH:
        raise InvalidTask(name, f"{name} is nested more than {MAX_DEPTH} levels deep", "too_deep")
    return value


def _depth(value: Any, level: int = 1) -> int:
    """How deeply a JSON value nests (stops counting past the limit)."""
    if level > MAX_DEPTH or not isinstance(value, dict | list):
        return level
    items = value.values() if isinstance(value, dict) else value
    deepest = level
    for item in items:
        # A scalar inside is one level down; only containers go further.
        below = _depth(item, level + 1) if isinstance(item, dict | list) else level + 1
        if below > deepest:
            deepest = below
    return deepest


def _payload(fields: Mapping[str, Any], method: str, is_form: bool) -> tuple[str, str, str]:
    """Return (content type, body, query string) for the request to make."""
    has_params, has_json = _present(fields.get("params")), "json" in fields
    if has_params and has_json:
        raise InvalidTask("json", "give params or json, not both")
    if has_json:
        if method in BODYLESS_METHODS:
            raise InvalidTask("json", f"a {method} request has no body to carry json")
        value = _json_field("json", fields["json"], is_form)
        return JSON, json.dumps(value, separators=(",", ":")), ""
    if not has_params:
        return "", "", ""
    params = _json_field("params", fields["params"], is_form)
    if not isinstance(params, dict):
        raise InvalidTask("params", "params must be a JSON object")
    encoded = encode_params(params)
    if method in BODYLESS_METHODS:
        return "", "", encoded
    return FORM, encoded, ""


def _valid_headers(value: Any, is_form: bool) -> dict[str, str]:
    if not _present(value):
        return {}
    headers = _json_field("headers", value, is_form)
    if not isinstance(headers, dict):
        raise InvalidTask("headers", "headers must be a JSON object of strings")
    if len(headers) > MAX_TASK_HEADERS:
        raise InvalidTask("headers", f"at most {MAX_TASK_HEADERS} headers", "too_many")
    size = sum(len(str(k)) + len(str(v)) for k, v in headers.items())
    if size > MAX_HEADER_BYTES:
        raise InvalidTask(
            "headers", f"headers total more than {MAX_HEADER_BYTES} bytes", "too_large"
        )
    for key, item in headers.items():
        if not isinstance(item, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
            raise InvalidTask("headers", f"header {key!r} must be a token with a string value")
        if any(c in item for c in "\r\n\x00"):
            raise InvalidTask("headers", f"header {key!r} must not contain CR, LF or NUL")
        if key.lower() in RESERVED_HEADERS or is_own_header(key):
            raise InvalidTask("headers", f"header {key!r} is set by torque itself")
    return headers


def is_own_header(name: str) -> bool:
    """Whether ``name`` is one of torque's own headers, in any letter case."""
    lower = name.lower()
    return lower in OWN_HEADERS or lower.startswith(OWN_HEADER_PREFIX)


def _queue(value: Any, route_queue: str | None) -> str:
    given = value if _present(value) else route_queue
    queue = _pattern("queue", given, QUEUE_RE, "default")
    if route_queue is not None and queue != route_queue:
        raise InvalidTask("queue", f"queue {queue!r} differs from the URL's {route_queue!r}")
    return queue


def _pattern(field: str, value: Any, pattern: re.Pattern[str], default: str) -> str:
    if not _present(value):
        return default
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidTask(field, f"{field} must match {pattern.pattern}")
    return value


def _number_field(field: str, value: Any, kind: type) -> float:
    if isinstance(value, bool) or kind is int and isinstance(value, float):
        raise InvalidTask(field, f"{field} must be a {'whole ' if kind is int else ''}number")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):  # float(10**400) overflows
        raise InvalidTask(field, f"{field} must be a number") from None
    if not math.isfinite(number):
        raise InvalidTask(field, f"{field} must be finite")
    return number


def _due_at(fields: Mapping[str, Any], now: float) -> float:
    delay, eta = fields.get("delay"), fields.get("eta")
    if _present(delay) and _present(eta):
        raise InvalidTask("eta", "give delay or eta, not both")
    if _present(eta):
        due_at = _number_field("eta", eta, float)
        if due_at > now + MAX_AHEAD:
            raise InvalidTask("eta", f"eta must be at most {MAX_AHEAD} seconds (30 days) ahead")
        if due_at < now - MAX_BEHIND:
            raise InvalidTask("eta", f"eta must be at most {MAX_BEHIND} seconds (a day) ago")
        return max(due_at, now)  # a time in the past is now
    if not _present(delay):
        return now
    seconds = _number_field("delay", delay, float)
    if not 0 <= seconds <= MAX_AHEAD:
        raise InvalidTask("delay", f"delay must be from 0 to {MAX_AHEAD} seconds (30 days)")
    return now + seconds


def _positive(field: str, value: Any, kind: type, limit: float) -> Any:
    if not _present(value):
        return None
    number = _number_field(field, value, kind)
    if not 0 < number <= limit:
        raise InvalidTask(field, f"{field} must be more than 0 and at most {limit:g}")
    return number
