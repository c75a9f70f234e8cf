"""Delivery profiles: the headers a front door adds to its tasks' requests.

A task added through torque's own API is delivered with torque's headers
(SPEC §4).  A task that came in by a compatible front door (SPEC §10) names
that door in :attr:`~torque.task.Task.door`, and the door's profile adds the
headers its users' handlers expect (``X-CloudTasks-*``, ``Upstash-*``), from
the task, the moment of the attempt and the body sent.  A profile's headers
are added last, so a door may also replace ``User-Agent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from torque.task import Task


class DeliveryProfile(Protocol):
    def headers(self, task: Task, now: float, body: bytes) -> Mapping[str, str]:
        """The headers this door adds to one attempt of ``task``."""
