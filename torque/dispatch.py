"""One attempt: a task becomes an HTTP request, the answer becomes an outcome.

:meth:`Dispatcher.dispatch` never fails: whatever happens (an answer, a
timeout, a refused connection) ends in a :class:`~torque.retry.Response` or
:class:`~torque.retry.NoResponse` value for the retry rule to judge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hyperlink import EncodedURL
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from torque import __version__
from torque.body import BodyReader
from torque.completion import CompletionKey, token_for
from torque.fast_http import FastHTTP
from torque.profiles import DeliveryProfile
from torque.retry import NoResponse, Outcome, Response, parse_retry_after, parse_seconds
from torque.signing import Signer
from torque.submission import is_own_header
from torque.targets import TargetRefused
from torque.task import Task

USER_AGENT = f"torque/{__version__}"
COMPLETION_HEADER = "Torque-Completion-Token"


class ReadyURL(EncodedURL):
    """A URL handed to treq already in the form treq sends.

    treq parses every ``str`` URL with hyperlink, then IDNA-encodes it with
    ``to_uri()`` and writes it out with ``to_text()``: a fifth of a
    delivery's CPU.  Given a hyperlink URL, treq skips the parse and only
    asks ``to_uri().to_text()`` (and, with cookies to set, which torque
    never passes, the URL's origin); this one answers with the text treq
    would have made.  :meth:`parse` makes it the long way, once per URL;
    :meth:`known` wraps a text already in that form (see
    :meth:`Dispatcher.url`) without parsing it at all.
    """

    _text: str

    @classmethod
    def parse(cls, url: str) -> ReadyURL:
        uri = EncodedURL.from_text(url).to_uri()
        ready = cls(
            scheme=uri.scheme,
            host=uri.host,
            path=uri.path,
            query=uri.query,
            fragment=uri.fragment,
            port=uri.port,
            rooted=uri.rooted,
            userinfo=uri.userinfo,
            uses_netloc=uri.uses_netloc,
        )
        ready._text = uri.to_text()
        return ready

    @classmethod
    def known(cls, text: str) -> ReadyURL:
        """``text``, which hyperlink would leave as it is, unparsed: only
        what treq asks of it works."""
        ready = cls.__new__(cls)
        ready._text = text
        return ready

    def to_uri(self) -> ReadyURL:
        return self

    def to_text(self, with_password: bool = False) -> str:
        return self._text


# Distinct URLs (and origins) a dispatcher keeps parsed; past this it starts
# afresh, so that URLs all different never grow it without bound.
URL_CACHE = 1024
# A path and query that hyperlink's ``to_uri().to_text()`` gives back as
# they are: ASCII that needs no %-encoding (``%`` escapes are kept as they
# are), no fragment, and no empty query (a bare trailing ``?`` is dropped).
_PLAIN_REST = re.compile(r"(/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*)?")


def _origin(url: str) -> tuple[str, str]:
    """``url`` cut into ``scheme://host[:port]`` and the rest."""
    start = url.find("://") + 3
    end = url.find("/", start) if start > 2 else -1
    return (url, "") if end < 0 else (url[:end], url[end:])


class Dispatcher:
    """Makes one task's request with an injected treq-like client.

    :param http: a ``treq.client.HTTPClient`` (or ``StubTreq`` in tests).
    :param clock: times the request out and measures it.
    :param max_body: bytes of a handler's answer read at most; past this the
        connection is dropped and the status stands, so a handler can't
        exhaust the node's memory or hold its connection.
    :param detail_bytes: how much of a failing answer goes into
        ``last_error``.
    :param signer: signs each attempt (``--signing-secret``), if given.
    :param profiles: the front doors' delivery profiles, by door name.
    :param completion_key: the key of completion tokens
        (:mod:`torque.completion`): each attempt carries its token.
    :param fast: sends the requests it can on pooled connections directly
        (:class:`torque.fast_http.FastHTTP`); ``http`` sends the others.
    """

    def __init__(
        self,
        http,
        clock: IReactorTime,
        max_body: int = 64 * 1024,
        detail_bytes: int = 200,
        signer: Signer | None = None,
        profiles: Mapping[str, DeliveryProfile] | None = None,
        completion_key: CompletionKey | None = None,
        fast: FastHTTP | None = None,
    ):
        self.http = http
        self.clock = clock
        self.max_body = max_body
        self.detail_bytes = detail_bytes
        self.signer = signer
        self.profiles = profiles or {}
        self.completion_key = completion_key
        self.fast = fast
        self._urls: dict[str, ReadyURL | str] = {}
        self._origins: dict[str, bool] = {}  # origin -> hyperlink leaves it as it is

    def url(self, url: str) -> ReadyURL | str:
        """``url`` in the form treq sends (:class:`ReadyURL`), each distinct
        one parsed once.  An origin (scheme, host and port) is parsed once
        too: when hyperlink leaves it as it is (an ASCII host name in lower
        case, no default port), a URL of it with a plain path and query
        (:data:`_PLAIN_REST`) is already in treq's form and is not parsed
        at all, though every task's URL differ.  A URL that hyperlink
        refuses is given to treq as it is, to fail there as any attempt
        does."""
        origin, rest = _origin(url)
        if self._origins.get(origin) and _PLAIN_REST.fullmatch(rest) and rest[-1:] != "?":
            return ReadyURL.known(url)
        ready = self._urls.get(url)
        if ready is None:
            if len(self._urls) >= URL_CACHE:
                self._urls.clear()
            try:
                ready = ReadyURL.parse(url)
            except ValueError:
                ready = url
            self._urls[url] = ready
        if origin not in self._origins:
            if len(self._origins) >= URL_CACHE:
                self._origins.clear()
            try:
                self._origins[origin] = ReadyURL.parse(origin).to_text() == origin
            except ValueError:
                self._origins[origin] = False
        return ready

    def headers(self, task: Task, body: bytes = b"") -> dict[str, str]:
        """The task's own headers plus torque's (SPEC §4 and §5).

        A task's headers can't name torque's own in any letter case (they
        are refused when added), but a task written to Redis by hand, or
        stored before that rule, might: those copies are dropped, so a
        handler sees one ``X-Torque-Task-Id``, torque's.
        """
        headers = {
            **_task_headers(task),
            "User-Agent": USER_AGENT,
            "X-Torque-Task-Id": task.id,
            "X-Torque-Queue": task.queue,
            "X-Torque-Retry-Count": str(max(task.attempts - 1, 0)),
            "X-Torque-ETA": repr(task.due_at),
        }
        if task.name:
            headers["X-Torque-Task-Name"] = task.name
        if task.content_type:
            headers["Content-Type"] = task.content_type
        if self.signer is not None:
            headers.update(self.signer.headers(task.id, int(self.clock.seconds()), body))
        if task.door in self.profiles:
            headers.update(self.profiles[task.door].headers(task, self.clock.seconds(), body))
        return headers

    def dispatch(self, task: Task, timeout: float) -> defer.Deferred:
        """Make ``task``'s request; a Deferred firing with an outcome.

        :param timeout: seconds for the whole exchange, body included.
        """
        started = self.clock.seconds()
        timed_out = []
        body = task.body.encode()
        completion = self.completion_key
        if completion is not None and completion.known is None:
            # Read from Redis once; from then on it is known at once.
            d = completion.get().addCallback(self._send, task, body)
        else:
            key = None if completion is None else completion.known
            d = defer.maybeDeferred(self._send, key, task, body)
        d.addCallback(self._read, started)

        def expire():
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(timeout, expire)

        def finish(result: Outcome | Failure) -> Outcome:
            if timer.active():
                timer.cancel()
            if not isinstance(result, Failure):
                return result
            duration = self.clock.seconds() - started
            if timed_out:
                return NoResponse(f"timed out after {timeout:g} s", duration)
            if result.check(TargetRefused):
                return NoResponse(result.getErrorMessage(), duration, permanent=True)
            return NoResponse(describe_failure(result), duration)

        return d.addBoth(finish)

    def _send(self, key: str | None, task: Task, body: bytes) -> defer.Deferred:
        """Send the request; a Deferred firing with the answer.

        The headers are made here, inside the attempt: a door's profile
        that can't sign yet (its keys not read from Redis) is a failed
        attempt.
        """
        headers = self.headers(task, body)
        if key is not None:
            headers[COMPLETION_HEADER] = token_for(key, task.id, task.attempts)
        url = self.url(task.url)
        if self.fast is not None and isinstance(url, ReadyURL):
            sent = self.fast.request(task.method, url.to_text(), headers, body)
            if sent is not None:
                return sent
        return self.http.request(
            task.method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            unbuffered=True,
        )

    def _read(self, response, started: float) -> defer.Deferred:
        """Read a bounded part of the body: the connection goes back to the
        pool only once the body is read."""
        reader = BodyReader(keep=self.detail_bytes, limit=self.max_body)
        response.deliverBody(reader)

        def done(head: bytes) -> Response:
            status = response.code
            detail = ""
            if not 200 <= status < 300:
                detail = " ".join(head.decode("utf-8", "replace").split())
            headers = response.headers

            def header(name: bytes) -> str:
                return headers.getRawHeaders(name, [b""])[-1].decode("latin-1")

            return Response(
                status,
                duration=self.clock.seconds() - started,
                retry_after=parse_retry_after(header(b"retry-after"), self.clock.seconds()),
                detail=detail,
                postpone=parse_seconds(header(b"torque-postpone")),
                complete_within=parse_seconds(header(b"torque-complete-within")),
            )

        return reader.done.addCallback(done)


def _task_headers(task: Task) -> Mapping[str, str]:
    """``task.headers`` without any torque sets itself, whatever their case."""
    if not any(is_own_header(name) or name.lower() == "content-type" for name in task.headers):
        return task.headers  # the usual case: nothing to copy
    return {
        name: value
        for name, value in task.headers.items()
        if not (is_own_header(name) or (name.lower() == "content-type" and task.content_type))
    }


def describe_failure(failure: Failure) -> str:
    """A short, stable description of why there was no answer."""
    reason = failure
    if failure.check(ResponseNeverReceived, ResponseFailed) and failure.value.reasons:
        reason = failure.value.reasons[0]
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.DNSLookupError):
        return reason.getErrorMessage()
    if reason.check(error.TimeoutError):
        return "connect timed out"
    if reason.check(error.ConnectionLost, error.ConnectionDone):
        return "connection lost before a complete answer"
    return f"{reason.type.__name__}: {reason.getErrorMessage()}"
