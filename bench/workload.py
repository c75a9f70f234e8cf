"""The one task shape every figure uses, so that torque and the floor post
the same requests: a form body of two small fields to a short local URL."""

from __future__ import annotations

import json

from torque.submission import encode_params

PARAMS = {"a": 1, "b": "x"}
PARAMS_JSON = json.dumps(PARAMS)
FORM_BODY = encode_params(PARAMS)  # a=1&b=x
QUEUE = "default"


def hook_url(base: str, token: str, n: int) -> str:
    """``<base>/<token>/<n>``: the token tells one measurement's arrivals
    in nginx's log from every other's, ``n`` tells the tasks apart."""
    return f"{base}/{token}/{n}"
