"""Flow control per target host: fairness, circuit breaker, throttle.

Pure, on an injected clock's ``now``: no I/O.  One :class:`HostTable` per
node, shared by the node's schedulers (a host that is down is down for
every queue), tells each claim how many tasks of each host it may take
(:class:`HostBudgets`) and learns from each attempt's outcome.

* **Fairness**: at most ``host_concurrency`` requests in flight per host on
  this node.  A claim passes over the due tasks of a host at its cap and
  takes other hosts' tasks behind them (:data:`torque.scripts.CLAIM`).
  Several queues' claims may be on their way at once: what each may take
  of a host is reserved until it returns (:meth:`HostTable.reserve`), so
  together they stay within the cap, and a queue that passed over a host's
  tasks is woken when a slot of that host frees, one queue per slot, in
  turn (:meth:`HostTable.wait`).
* **Circuit breaker**: :data:`BREAKER_THRESHOLD` connection errors or
  timeouts in a row open a host's circuit: its due tasks are postponed (no
  attempt spent) until the cool-down ends, then one probe goes out; an
  answer (any HTTP status: the host is reachable) closes the circuit, a
  failure opens it again for twice as long, up to ``max_cooldown``.
* **Throttle** (AIMD): a ``429`` or ``503`` halves the host's dispatch rate
  (at most once a second; the first one halves the rate it was getting),
  every other answer adds ``1 / rate`` (about one request per second more
  each second); a ``Retry-After`` on them holds the whole host that long.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs

from torque.retry import NoResponse, Outcome, Response

# Connection errors or timeouts in a row that open a host's circuit.
BREAKER_THRESHOLD = 5
# Statuses that mean "slow down".
THROTTLE_STATUSES = frozenset({429, 503})
# The slowest a throttle goes, requests per second.
MIN_RATE = 0.5
_HOST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
# Lua's twin of host_of, for the CLAIM script (same pattern, same case).
LUA_HOST_PATTERN = "^%a[%w+.-]*://([^/?#]*)"


def host_of(url: str) -> str:
    """The host a task's URL names, as ``host[:port]`` in lower case: the
    key flow control goes by (``""`` for a URL without one)."""
    match = _HOST_RE.match(url)
    return match.group(1).lower() if match else ""


@attrs.frozen
class HostBudgets:
    """What one claim may take, host by host.

    :param default: tasks a host not in ``budgets`` may have claimed.
    :param budgets: host -> tasks it may have claimed (0: none, its due
        tasks are passed over and stay where they are).
    :param holds: host -> time until which its due tasks are postponed
        (an open circuit, a ``Retry-After``): the claim moves them there.
    :param max_skip: due tasks a claim passes over at most before it stops
        looking (the cost of looking past a saturated host).
    :param max_postpone: due tasks of held hosts a claim postpones at most
        (the next claim goes on).
    """

    default: int
    budgets: dict[str, int] = attrs.field(factory=dict)
    holds: dict[str, float] = attrs.field(factory=dict)
    max_skip: int = 1000
    max_postpone: int = 1000


CLOSED = "closed"
OPEN = "open"
PROBING = "probing"


@attrs.define
class Host:
    """One host's state on this node."""

    in_flight: int = 0
    stale: int = 0  # of them, sent before the circuit opened
    failures: int = 0  # connection errors or timeouts in a row
    circuit: str = CLOSED
    cooldown: float = 0.0
    reopen_at: float = 0.0  # while open: when the probe may go
    hold_until: float = 0.0  # Retry-After
    rate: float | None = None  # throttle, requests per second; None: none
    tokens: float = 0.0
    tokens_at: float = 0.0
    decreased_at: float = float("-inf")
    started: list[float] = attrs.field(factory=list)  # starts in the last second
    queues: set[str] = attrs.field(factory=set)  # that sent it requests

    def idle(self, now: float) -> bool:
        """Nothing to remember: no request in flight or started in the last
        second (a host whose requests all ended at once stays listed, so
        that claims on their way share its cap: :meth:`HostTable.reserve`),
        no failure, throttle or hold."""
        return (
            self.in_flight == 0
            and (not self.started or self.started[-1] <= now - 1.0)
            and self.failures == 0
            and self.circuit == CLOSED
            and self.rate is None
            and self.hold_until <= now
        )


class HostTable:
    """Every target host this node talks to, and what it may do next.

    :param host_concurrency: requests in flight per host at most (the
        node's ``--host-concurrency``; a claim may pass another cap).
    :param cooldown: seconds an opened circuit waits before its first probe.
    :param max_cooldown: the cap on a cool-down that doubles.
    """

    def __init__(
        self, host_concurrency: int = 10, cooldown: float = 1.0, max_cooldown: float = 60.0
    ):
        self.host_concurrency = host_concurrency
        self.first_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.hosts: dict[str, Host] = {}
        # Tasks of each host that claims on their way may take.
        self._reserved: dict[str, int] = {}
        # Host -> the queues to wake, in turn, as its slots free: (queue, wake).
        self._waiting: dict[str, list[tuple[str, Callable[[str], None]]]] = {}

    # -- what a claim may take ---------------------------------------------

    def budgets(self, now: float, cap: int | None = None, max_skip: int = 1000) -> HostBudgets:
        """The budgets for a claim at ``now``.

        :param cap: the queue's own ``host_concurrency`` (default: the node's).
        """
        cap = self.cap(cap)
        budgets, holds = {}, {}
        for name, host in list(self.hosts.items()):
            reserved = self._reserved.get(name, 0)
            if host.idle(now) and not reserved:
                del self.hosts[name]
                continue
            self._open_to_probe(host, now)
            if host.circuit == OPEN:
                holds[name] = host.reopen_at
                budgets[name] = 0
                continue
            if host.hold_until > now:
                holds[name] = host.hold_until
                budgets[name] = 0
                continue
            free = cap - host.in_flight - reserved
            if host.circuit == PROBING:
                free = 1 - (host.in_flight - host.stale) - reserved
            if host.rate is not None:
                free = min(free, int(self._tokens(host, now)))
            budgets[name] = max(0, free)
        return HostBudgets(cap, budgets, holds, max_skip)

    def reserve(self, budgets: HostBudgets, limit: int) -> dict[str, int]:
        """A claim given ``budgets`` went out for ``limit`` tasks at most:
        until it returns (:meth:`unreserve`), the claims of other queues
        count what it may take of each listed host as in flight."""
        reserved = {}
        # (A host this node has had no request to in the last second is not
        # listed: claims on their way at once may each take up to the cap
        # of it, once.)
        for name, budget in budgets.budgets.items():
            if min(budget, limit) > 0:
                reserved[name] = min(budget, limit)
                self._reserved[name] = self._reserved.get(name, 0) + reserved[name]
        return reserved

    def unreserve(self, reserved: dict[str, int]) -> None:
        """The claim that :meth:`reserve` gave ``reserved`` returned (its
        tasks, started, are in flight now)."""
        for name, count in reserved.items():
            left = self._reserved[name] - count
            if left:
                self._reserved[name] = left
            else:
                del self._reserved[name]

    def wait(self, url_host: str, queue: str, wake: Callable[[str], None]) -> None:
        """A claim of ``queue`` passed over ``url_host``'s due tasks (at its
        cap): call ``wake(url_host)`` when a slot of it frees, after the
        queues that waited before.  Each freed slot wakes one queue, not the
        one whose request freed it (that one claims again by itself)."""
        waiting = self._waiting.setdefault(url_host, [])
        if all(waiter != queue for waiter, _ in waiting):
            waiting.append((queue, wake))

    def _slot_freed(self, url_host: str, queue: str) -> None:
        waiting = self._waiting.get(url_host, [])
        for i, (waiter, wake) in enumerate(waiting):
            if waiter != queue:
                del waiting[i]
                if not waiting:
                    del self._waiting[url_host]
                wake(url_host)
                return

    def cap(self, cap: int | None) -> int:
        """A queue's own ``host_concurrency``, or the node's when it has
        none (``None``)."""
        return self.host_concurrency if cap is None else cap

    def free(self, url_host: str, cap: int | None = None) -> int:
        """Requests ``url_host`` may have in flight beyond those it has,
        under ``cap`` (as :meth:`budgets` takes it; its throttle and
        circuit aside)."""
        host = self.hosts.get(url_host)
        return self.cap(cap) - (host.in_flight if host is not None else 0)

    def next_token_at(self, now: float) -> float | None:
        """When the earliest throttled host may send again, or ``None``
        when no host waits on its rate."""
        times = []
        for host in self.hosts.values():
            if host.rate is not None and self._tokens(host, now) < 1:
                times.append(now + (1 - host.tokens) / host.rate)
            if host.circuit == OPEN:
                times.append(host.reopen_at)
        return min(times) if times else None

    def open_circuits(self, queue: str | None = None) -> list[str]:
        """The hosts whose circuit is open (or probing), sorted; with
        ``queue``, only those that queue sent requests to."""
        return sorted(
            name
            for name, host in self.hosts.items()
            if host.circuit != CLOSED and (queue is None or queue in host.queues)
        )

    # -- what happened -------------------------------------------------------

    def started(self, url_host: str, now: float, queue: str = "") -> None:
        """A request to ``url_host`` goes out at ``now``, for ``queue``."""
        host = self.hosts.setdefault(url_host, Host())
        host.queues.add(queue)
        host.in_flight += 1
        if host.circuit == OPEN:
            host.stale += 1  # claimed before it opened: no probe
        if host.rate is not None:
            self._tokens(host, now)
            host.tokens -= 1
        started = host.started
        started.append(now)
        while started and started[0] <= now - 1.0:
            started.pop(0)

    def released(self, url_host: str, queue: str = "") -> None:
        """The request to ``url_host``, for ``queue``, ended with no
        outcome (a bug)."""
        host = self.hosts.get(url_host)
        if host is not None:
            host.in_flight = max(0, host.in_flight - 1)
        self._slot_freed(url_host, queue)

    def finished(self, url_host: str, outcome: Outcome, now: float, queue: str = "") -> None:
        """The request to ``url_host``, for ``queue``, ended at ``now`` with
        ``outcome``."""
        host = self.hosts.setdefault(url_host, Host())
        host.in_flight = max(0, host.in_flight - 1)
        self._learn(host, outcome, now)
        self._slot_freed(url_host, queue)

    # -- the parts -----------------------------------------------------------

    def _learn(self, host: Host, outcome: Outcome, now: float) -> None:
        """What a request's ``outcome`` says of its host."""
        stale = host.stale > 0
        host.stale = max(0, host.stale - 1)
        if isinstance(outcome, NoResponse):
            # A request sent before the circuit opened is no probe: its
            # failure is old news.
            if outcome.permanent or (stale and host.circuit != CLOSED):
                return
            host.failures += 1
            if host.circuit == PROBING or (
                host.circuit == CLOSED and host.failures >= BREAKER_THRESHOLD
            ):
                self._open(host, now)
            return
        assert isinstance(outcome, Response)
        host.failures = 0
        if host.circuit != CLOSED:
            host.circuit, host.cooldown = CLOSED, 0.0
        if outcome.status in THROTTLE_STATUSES:
            self._slow_down(host, outcome, now)
        elif host.rate is not None:
            host.rate += 1.0 / host.rate

    def _open(self, host: Host, now: float) -> None:
        if host.cooldown:
            host.cooldown = min(self.max_cooldown, host.cooldown * 2)
        else:
            host.cooldown = min(self.max_cooldown, self.first_cooldown)
        host.circuit = OPEN
        host.reopen_at = now + host.cooldown
        host.stale = host.in_flight

    def _open_to_probe(self, host: Host, now: float) -> None:
        if host.circuit == OPEN and host.reopen_at <= now:
            host.circuit = PROBING

    def _slow_down(self, host: Host, outcome: Response, now: float) -> None:
        if outcome.retry_after is not None:
            host.hold_until = max(host.hold_until, now + outcome.retry_after)
        # Answers to requests sent before the last decrease say nothing new.
        if now - host.decreased_at < 1.0:
            return
        host.decreased_at = now
        if host.rate is None:
            got = sum(1 for t in host.started if t > now - 1.0)
            host.rate = max(MIN_RATE, got / 2)
            host.tokens, host.tokens_at = 0.0, now
        else:
            self._tokens(host, now)
            host.rate = max(MIN_RATE, host.rate / 2)

    def _tokens(self, host: Host, now: float) -> float:
        """Refill ``host``'s bucket to ``now``: a tenth of a second's worth
        of requests at most (one, below ten a second), so a throttle's rate
        holds over any second."""
        assert host.rate is not None
        capacity = max(1.0, host.rate / 10)
        elapsed = max(0.0, now - host.tokens_at)
        host.tokens = min(capacity, host.tokens + elapsed * host.rate)
        host.tokens_at = now
        return host.tokens
