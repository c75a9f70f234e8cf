"""``--redis-wait-replicas``: a write a client is promised (an add, a
cancel, a pause or resume) is answered only once that many replicas hold
it (:class:`ReplicatedWrites`), and when the primary has too few replicas,
such writes are refused at once instead of each holding a connection for
the ``WAIT`` (:class:`ReplicaGate`).

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

import hashlib
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from torque.cluster_slots import key_slot
from torque.redis_state import down_reason, is_cluster
from torque.storage import StoreUnavailable

# Seconds adds are refused after a WAIT that came back short.
RETRY = 1.0
# Seconds a write waits for its replicas at most (Redis WAIT): on a healthy
# network they confirm in about a round trip.
WAIT_TIMEOUT = 1.0


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


class ReplicatedWrites:
    """Writes answered only once ``wanted`` replicas hold them: the script
    and ``WAIT`` on the same connection (a pipeline takes one out of the
    pool for both: ``WAIT`` counts the writes of its own connection).

    :param redis: the store's connection (pool, or cluster connection).
    :param timeout: the store's bound on a call, seconds.
    :param unavailable: the store's errback that turns Redis's failures
        into :class:`StoreUnavailable`.
    """

    def __init__(
        self,
        redis,
        clock: IReactorTime,
        wanted: int,
        timeout: float,
        unavailable: Callable[[Failure], object],
    ):
        self.redis = redis
        self.clock = clock
        self.wanted = wanted
        self.timeout = timeout
        self.unavailable = unavailable
        self._cluster = is_cluster(redis)
        self._gates: dict[tuple[str, int] | None, ReplicaGate] = {}  # by primary

    def write(self, script: str, keys: Sequence[str], args: Sequence) -> defer.Deferred:
        """Run ``script`` (its text as this Redis runs it), then ``WAIT``.
        Fails with :class:`StoreUnavailable` when fewer replicas confirm in
        time: then the write may or may not survive a failover."""
        gate = self._gate(keys)
        reason = down_reason(self.redis)
        if reason is not None:
            # Back, the primary may be a new one without its replicas yet:
            # probe before letting every add hold a connection for WAIT.
            gate.shut(reason)
            return defer.fail(StoreUnavailable(reason))
        reason = gate.refusal()
        if reason is not None:
            return defer.fail(StoreUnavailable(reason))
        work = defer.ensureDeferred(
            self._run_and_wait(script, list(keys), [str(a) for a in args], gate)
        )
        # Bounded without cancelling: a pipeline cancelled while it waits
        # for a connection would lose that connection from the pool.
        bounded = defer.Deferred()

        def settle(result):
            if not bounded.called:
                bounded.callback(result)
            return None  # a late failure is already answered (timed out)

        def time_out():
            if not bounded.called:
                bounded.errback(defer.TimeoutError())

        def stop_timer(result):
            if timer.active():
                timer.cancel()
            return result

        def shut(failure):
            failure.trap(StoreUnavailable)
            gate.shut(failure.getErrorMessage())
            return failure

        timer = self.clock.callLater(self.timeout, time_out)
        work.addBoth(settle)
        bounded.addBoth(stop_timer)
        return bounded.addErrback(self.unavailable).addErrback(shut)

    def _gate(self, keys: Sequence[str]) -> ReplicaGate:
        """The replica gate of the primary that takes writes to ``keys``:
        one per primary on a Redis Cluster (a primary left without its
        replica by a failover must not shut the other primaries' adds),
        the one primary's otherwise."""
        primary = self.redis.node_for(key_slot(keys[0])) if self._cluster else None
        gate = self._gates.get(primary)
        if gate is None:
            gate = self._gates[primary] = ReplicaGate(self.clock, self.wanted)
        return gate

    async def _run_and_wait(self, script: str, keys: list, args: list, gate: ReplicaGate):
        sha = hashlib.sha1(script.encode()).hexdigest()
        wait_ms = int(min(WAIT_TIMEOUT, self.timeout / 2) * 1000)
        for command, body in (("EVALSHA", sha), ("EVAL", script)):
            pipe = await self.redis.pipeline()
            pipe.execute_command(command, body, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.wanted, wait_ms)
            try:
                reply, replicas = await pipe.execute_pipeline()
            except defer.FirstError as e:
                error = e.subFailure.value
                if command == "EVALSHA" and str(error).startswith("NOSCRIPT"):
                    continue  # a new primary (or a restart): send the script itself
                raise error from None
            break
        gate.observed(int(replicas))
        if int(replicas) < self.wanted:
            raise StoreUnavailable(
                f"only {replicas} of {self.wanted} Redis replicas confirmed the write "
                "in time (--redis-wait-replicas): it may or may not survive a failover; "
                "add it again (with a name, so that it is added once)"
            )
        return reply
