"""``--redis-wait-replicas``: when the primary has too few replicas, adds
(and cancels, pauses, resumes) are refused at once instead of each holding
a connection for the ``WAIT``.

An add that waits for N replicas runs its script and ``WAIT`` on one pinned
connection.  Right after a failover the new primary often has no replica
yet (the old primary comes back as one only once Sentinel reconfigures it):
every ``WAIT`` would then run to its timeout, each add holding a connection
meanwhile, and the adds behind them would queue until the store's timeout.
So once a ``WAIT`` comes back short, :class:`ReplicaGate` refuses adds
before they write anything (``503``, nothing written), and every ``retry``
seconds lets one through: its ``WAIT`` says whether the replicas are back.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

# Seconds adds are refused after a WAIT that came back short.
RETRY = 1.0


class ReplicaGate:
    """Whether adds may try to write now, learnt from ``WAIT`` answers.

    :param wanted: the replicas each add waits for (``--redis-wait-replicas``).
    """

    def __init__(self, clock: IReactorTime, wanted: int, retry: float = RETRY):
        self.clock = clock
        self.wanted = wanted
        self.retry = retry
        self._closed_until: float | None = None
        self._why = ""

    def refusal(self) -> str | None:
        """Why an add must not be written now, or ``None`` to go ahead.

        Once the gate has been shut ``retry`` seconds, one add goes ahead (a
        probe: its ``WAIT`` tells whether the replicas are back) and the
        others wait ``retry`` seconds more, or for the probe to open it."""
        if self._closed_until is None:
            return None
        now = self.clock.seconds()
        if now >= self._closed_until:
            self._closed_until = now + self.retry
            return None
        return f"{self._why}; nothing was written: try again shortly"

    def observed(self, confirmed: int) -> None:
        """A ``WAIT`` counted ``confirmed`` replicas."""
        if confirmed >= self.wanted:
            self._closed_until = None
        else:
            self.shut(
                f"the Redis primary has fewer than {self.wanted} replicas in sync "
                f"(--redis-wait-replicas; {confirmed} confirmed the last write)"
            )

    def shut(self, why: str) -> None:
        """An add failed (``why``): until a probe's ``WAIT`` counts enough
        replicas, refuse the others.  After a lost connection, say, the
        adds queued behind a failover would otherwise all hold a connection
        for their ``WAIT`` at once on the new primary."""
        self._why = why
        self._closed_until = self.clock.seconds() + self.retry
