"""Google's JSON error shape, ``{"error": {"code", "message", "status"}}``,
with the gRPC status names the clients expect.

A field at fault is named the Google way, in a ``google.rpc.BadRequest``
detail (``fieldViolations``), and in the message.
"""

from __future__ import annotations

import json


class GoogleError(Exception):
    """An answer in Google's error shape.

    :param code: the HTTP status.
    :param status: the gRPC status name (``NOT_FOUND``, …).
    :param field: the request field at fault, if one is.
    """

    def __init__(self, code: int, status: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> dict:
        error: dict = {"code": self.code, "message": self.message, "status": self.status}
        if self.field is not None:
            violation = {"field": self.field, "description": self.message}
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [violation],
                }
            ]
        return {"error": error}


def invalid(field: str, message: str) -> GoogleError:
    return GoogleError(400, "INVALID_ARGUMENT", message, field)


def not_found(message: str = "Requested entity was not found.") -> GoogleError:
    return GoogleError(404, "NOT_FOUND", message)


def already_exists(message: str = "Requested entity already exists") -> GoogleError:
    return GoogleError(409, "ALREADY_EXISTS", message)


def failed_precondition(message: str) -> GoogleError:
    return GoogleError(400, "FAILED_PRECONDITION", message)


def unimplemented(message: str, field: str | None = None) -> GoogleError:
    """What torque does not do, refused (never ignored): 501, as Google
    answers an RPC a server does not implement."""
    return GoogleError(501, "UNIMPLEMENTED", message, field)


def unavailable(message: str) -> GoogleError:
    return GoogleError(503, "UNAVAILABLE", message)


def render(request, error: GoogleError) -> bytes:
    request.setResponseCode(error.code)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps(error.body()).encode()
