"""QStash's delivery headers (:class:`torque.profiles.DeliveryProfile`):
what a handler written for QStash reads and verifies."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

from torque.qstash.signature import sign
from torque.qstash.signing_keys import SigningKeys
from torque.task import Task

USER_AGENT = "Upstash-QStash"


class QStashProfile:
    """Adds ``Upstash-Signature`` (signed with the current key),
    ``Upstash-Message-Id``, ``Upstash-Retried`` (0 on the first attempt) and
    QStash's ``User-Agent``; :class:`~torque.qstash.signing_keys.KeysNotLoaded`
    until the keys are known, which the attempt records as no answer."""

    def __init__(self, keys: SigningKeys, new_jti: Callable[[], str] | None = None):
        self.keys = keys
        self.new_jti = new_jti or (lambda: "jwt_" + secrets.token_hex(12))

    def headers(self, task: Task, now: float, body: bytes) -> Mapping[str, str]:
        current, _ = self.keys.require()
        headers = {
            "Upstash-Signature": sign(current, task.url, body, now, self.new_jti()),
            "Upstash-Message-Id": task.id,
            "Upstash-Retried": str(max(task.attempts - 1, 0)),
            "User-Agent": USER_AGENT,
        }
        if task.door_data.get("caller_ip"):
            headers["Upstash-Caller-Ip"] = task.door_data["caller_ip"]
        return headers
