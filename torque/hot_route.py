"""The hottest route served by a plain twisted.web resource in front of
Klein.

Every ``POST /hooks/add`` went through Klein's routing (werkzeug's URL map,
bound afresh per request) and its rendering machinery: about 15 % of an
add's CPU in the profile (bench/README.md).  :class:`HotRoute` answers that
one route itself, with the same handler and the same error handlers, and
hands every other request to the Klein resource unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

log = Logger()


class HotRoute(resource.Resource):
    """``method path`` answered by ``handler``, the rest by ``wrapped``.

    :param handler: takes the request and returns a coroutine (or a
        Deferred, or bytes) of the body; it sets the status and headers.
    :param on_error: takes a failure of ``handler`` and the request, and
        returns the body of the error's answer (the API's error handlers).
    """

    isLeaf = True

    def __init__(
        self,
        wrapped: resource.IResource,
        method: bytes,
        path: bytes,
        handler: Callable[[Any], Coroutine | defer.Deferred | bytes],
        on_error: Callable[[Failure, Any], bytes],
    ):
        super().__init__()
        self.wrapped = wrapped
        self.method = method
        self.path = path
        self.handler = handler
        self.on_error = on_error

    def render(self, request):
        if request.method != self.method or request.path != self.path:
            return self.wrapped.render(request)
        try:
            result = self.handler(request)
        except Exception:
            d = defer.fail()
        else:
            is_async = isinstance(result, Coroutine | defer.Deferred)
            d = defer.ensureDeferred(result) if is_async else defer.succeed(result)
        gone = False

        def hung_up(_):
            # A client that hangs up cancels the work, as Klein does; there
            # is then no one to answer (nor to tell of an error), as in Klein.
            nonlocal gone
            gone = True
            d.cancel()

        request.notifyFinish().addErrback(hung_up)
        d.addErrback(lambda failure: None if gone else self.on_error(failure, request))

        def write(body: bytes) -> None:
            if gone:
                return
            # Its length, as Klein gives it: else twisted.web frames the
            # body in chunks, and the client has more to parse.
            request.setHeader(b"Content-Length", b"%d" % len(body))
            request.write(body)
            request.finish()

        d.addCallback(write)
        d.addErrback(lambda failure: log.failure("answering {path}", failure, path=self.path))
        return server.NOT_DONE_YET
