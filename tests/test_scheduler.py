"""The scheduler on a fake clock: when attempts happen, to the millisecond.

The web hook is a twisted.web resource behind ``StubTreq``; the store is the
in-memory double (held to the Redis store's contract in test_store.py).  The
timing tests run twice: with a store that answers at once, and with one
whose answers arrive a round trip later on the same clock (``LATENCY``), as
Redis's do; there every claim costs ``L`` seconds, and the expected times
say so.
"""

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.memory_store import MemoryStore
from torque.dispatch import Dispatcher
from torque.retry import RetryPolicy
from torque.scheduler import QueueScheduler
from torque.storage import Claim, StoreUnavailable
from torque.task import Task


def in_q(task_id: str) -> str:
    """The id of a task of queue q: ``q.<token>`` (an id carries its queue)."""
    return task_id if "." in task_id else f"q.{task_id}"


class Hook(Resource):
    """A web hook that answers the scripted statuses in turn (the last one
    repeats), or holds every request open when ``hold`` is set."""

    isLeaf = True

    def __init__(self, clock, *statuses, headers=None, hold=False):
        super().__init__()
        self.clock = clock
        self.statuses = list(statuses) or [200]
        self.headers = headers or {}
        self.hold = hold
        self.times: list[float] = []  # to the microsecond
        self.paths: list[str] = []  # in the same order
        self.held: list = []

    def render(self, request):
        self.times.append(round(self.clock.seconds(), 6))
        self.paths.append(request.path.decode())
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        request.setResponseCode(status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return b"ok"


LATENCY = 0.004  # a Redis round trip on a busy machine


class SchedulerCase(unittest.TestCase):
    """Helpers; ``latency`` is the store's answer delay, ``L`` for short."""

    latency = 0.0
    timeout = 10  # a Clock test that hangs is a broken test: say so soon

    def setUp(self):
        self.clock = Clock()
        self.L = self.latency
        self.store = MemoryStore(clock=self.clock, latency=self.latency)

    def start(
        self,
        hook,
        poll_interval=3600.0,
        concurrency=10,
        rng=lambda: 0.0,
        rate=0.0,
        hosts=None,
        before_start=lambda: None,
        **policy,
    ):
        """Start ``self.scheduler`` on ``hook`` (``before_start`` runs just
        before, to watch the store, say)."""
        self.stub = StubTreq(hook)
        self.scheduler = self.scheduler_of(
            "q",
            RetryPolicy(**policy),
            poll_interval=poll_interval,
            concurrency=concurrency,
            rng=rng,
            rate=rate,
            hosts=hosts,
        )
        before_start()
        self.scheduler.startService()
        self.addCleanup(self.stop)
        self.until(self.L)  # the start-up claim has its answer: t0 = L
        return self.scheduler

    def scheduler_of(self, queue, policy=None, **options):
        """A scheduler of ``queue`` on this test's store, clock and
        ``self.stub`` (not started); ``options`` as QueueScheduler takes
        them (no safety tick and ten slots unless given)."""
        options = {"poll_interval": 3600.0, "concurrency": 10, "rng": lambda: 0.0, **options}
        return QueueScheduler(
            queue,
            self.store,
            Dispatcher(self.stub, self.clock),
            self.clock,
            policy or RetryPolicy(),
            timeout=10.0,
            **options,
        )

    def stop(self):
        """Stop, letting held requests reach their timeout and the store
        answer."""
        if self.scheduler.running:
            stopped = self.scheduler.stopService()
            self.until(self.clock.seconds() + 60)
            return stopped

    def until(self, at: float) -> None:
        """Move the clock to ``at``, stopping at every delayed call on the
        way, so that each runs at its own time (``Clock.advance`` runs
        them all at the end of the step, as a reactor late by that much
        would)."""
        for _ in range(100_000):  # a scheduler that spins must fail, not hang
            times = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= at]
            step = min([*times, at])
            self.clock.rightNow = max(self.clock.rightNow, step)
            self.clock.advance(0)
            if step >= at:
                return
        self.fail(f"still busy at {self.clock.seconds()}: a delayed call keeps coming back")

    def later(self, seconds: float) -> None:
        self.until(self.clock.seconds() + seconds)

    def add(self, task_id="q.t1", due_at=None, **kw):
        due_at = self.clock.seconds() if due_at is None else due_at
        task = Task(id=in_q(task_id), queue="q", url="http://hook.test/do", due_at=due_at, **kw)
        self.store.add(task)  # written at once; its answer may come later
        self.scheduler.wake(due_at)

    def info(self, task_id="q.t1"):
        with self.store.at_once():
            return self.successResultOf(self.store.describe(in_q(task_id)))

    def status(self, task_id="q.t1"):
        return self.info(task_id)["status"]

    def at(self, *times):
        """Times as ``Hook.times`` records them."""
        return [round(t, 6) for t in times]


class TimingTests:
    """When attempts happen, at any store latency ``L``: an attempt starts
    one claim's round trip after its task falls due (``+ L``), never later."""

    def attempts_at(self, hook, expected, *, epsilon=0.001):
        """Step to each expected attempt: none an instant before, one at it."""
        for n, at in enumerate(expected):
            if at - epsilon > self.clock.seconds():
                self.until(at - epsilon)
                self.assertEqual(len(hook.times), n, f"attempt {n + 1} came early")
            self.until(at)
            self.assertEqual(len(hook.times), n + 1, f"attempt {n + 1} came late")
        self.assertEqual(hook.times, self.at(*expected))

    def test_due_task_is_dispatched_on_wake_up_not_on_the_next_tick(self):
        hook = Hook(self.clock)
        self.start(hook)
        self.until(5.0)
        self.add()
        self.later(self.L)
        self.assertEqual(hook.times, self.at(5.0 + self.L))
        self.assertEqual(self.status(), "delivered")

    def test_delayed_task_waits_for_its_timer(self):
        hook = Hook(self.clock)
        self.start(hook)
        self.add(due_at=2.5)
        self.attempts_at(hook, [2.5 + self.L])

    def test_earlier_task_moves_the_timer_forward(self):
        hook = Hook(self.clock)
        self.start(hook)
        self.add("late", due_at=10.0)
        self.add("early", due_at=3.0)
        self.attempts_at(hook, [3.0 + self.L, 10.0 + self.L])

    def test_retries_follow_the_backoff_to_the_millisecond(self):
        hook = Hook(self.clock, 503, 503, 503, 200)
        self.start(hook)
        t0, L = self.clock.seconds(), self.L
        self.add()
        # Each retry falls due ``backoff`` after the attempt, and is claimed
        # then: a round trip later it starts.
        self.attempts_at(hook, [t0 + L, t0 + 1 + 2 * L, t0 + 3 + 3 * L, t0 + 7 + 4 * L])
        self.later(self.L)
        self.assertEqual(self.status(), "delivered")

    def test_jitter_only_ever_delays_a_retry(self):
        hook = Hook(self.clock, 500, 200)
        self.start(hook, rng=lambda: 1.0)
        t0, L = self.clock.seconds(), self.L
        self.add()
        self.later(self.L)
        self.assertEqual(self.store.due["q"], {"q.t1": t0 + L + 1.1})
        self.attempts_at(hook, [t0 + L, t0 + 1.1 + 2 * L], epsilon=0.01)

    def test_retry_after_is_honoured(self):
        hook = Hook(self.clock, 429, 200, headers={"Retry-After": "7"})
        self.start(hook)
        t0, L = self.clock.seconds(), self.L
        self.add()
        self.attempts_at(hook, [t0 + L, t0 + 7 + 2 * L])

    def test_task_dies_after_max_errors_attempts(self):
        hook = Hook(self.clock, 500)
        self.start(hook, max_errors=3)
        t0, L = self.clock.seconds(), self.L
        self.add()
        self.attempts_at(hook, [t0 + L, t0 + 1 + 2 * L, t0 + 3 + 3 * L])
        self.later(60)
        self.assertEqual(len(hook.times), 3)
        info = self.info()
        self.assertEqual((info["status"], info["last_status"]), ("dead", "500"))
        self.assertIn("gave up after 3 attempts", info["last_error"])

    def test_refusal_goes_straight_to_the_dead_letters(self):
        hook = Hook(self.clock, 404)
        self.start(hook)
        t0 = self.clock.seconds()
        self.add()
        self.later(10)
        self.assertEqual(hook.times, self.at(t0 + self.L))
        self.assertEqual(self.status(), "dead")

    def test_requests_in_flight_never_exceed_concurrency(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook, poll_interval=1.0, concurrency=2)
        for i in range(5):
            self.add(f"q.t{i}")
        self.later(5)
        self.assertEqual(len(hook.held), 2)
        self.assertTrue(all(limit <= 2 for _, _, limit in self.store.claims))
        for request in hook.held[:2]:
            request.finish()
        self.stub.flush()
        self.later(2 * self.L)  # a claim for each slot, at worst one after the other
        self.assertEqual(len(hook.held), 4)

    def test_rate_spaces_dispatches_after_a_seconds_worth(self):
        hook = Hook(self.clock)
        self.start(hook, rate=2.0)
        for i in range(6):
            self.add(f"q.t{i}")
        self.later(3)
        # A second's worth at once (the second claimed by the claim after the
        # first), then one each half second from the first claim on.
        t0, L = self.L, self.L
        self.assertEqual(
            hook.times,
            self.at(t0 + L, t0 + 2 * L, t0 + 0.5 + L, t0 + 1 + L, t0 + 1.5 + L, t0 + 2 + L),
        )

    def test_failed_and_dead_attempts_free_their_slots(self):
        hook = Hook(self.clock, 503, 404, 404, 404, 200)
        self.start(hook, concurrency=2)
        for i in range(5):
            self.add(f"q.t{i}")
        self.later(5)
        # One retried, three refused, two delivered (t0 on its retry): two
        # slots served six attempts, so every ending gave its slot back.
        self.assertEqual(len(hook.times), 6)
        statuses = [self.status(f"q.t{i}") for i in range(5)]
        self.assertEqual(statuses, ["delivered", "dead", "dead", "dead", "delivered"])

    def test_a_tasks_own_timeout_wins_over_the_nodes(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook)  # the node's timeout: 10 s
        t0 = self.clock.seconds()
        self.add(timeout=2.0)
        self.until(t0 + self.L + 2.0 - 0.001)
        self.assertEqual(self.info()["attempts"], "1")
        self.assertNotIn("last_error", self.info())
        self.until(t0 + self.L + 2.0)
        self.later(self.L)
        self.assertEqual(self.info().get("last_error"), "timed out after 2 s")

    def test_safety_tick_finds_tasks_nobody_announced(self):
        hook = Hook(self.clock)
        self.start(hook, poll_interval=1.0)
        task = Task(id="q.quiet", queue="q", url="http://hook.test/do", due_at=0.5)
        self.store.add(task)  # no wake-up
        self.attempts_at(hook, [1.0 + self.L])


class SchedulerTests(TimingTests, SchedulerCase):
    """The store answers at once: the timing tests, and what needs no
    round trip to show."""

    def test_ticks_never_overlap_a_slow_claim(self):
        pending = []
        self.store.claim = lambda *args: pending.append(defer.Deferred()) or pending[-1]
        self.start(Hook(self.clock), poll_interval=1.0)
        self.clock.pump([1.0] * 5)
        self.assertEqual(len(pending), 1)
        pending[0].callback(Claim([], None))
        self.clock.advance(1.0)
        self.assertEqual(len(pending), 2)
        pending[1].callback(Claim([], None))

    def test_a_failing_tick_does_not_stop_the_loop(self):
        calls = []
        real_claim = self.store.claim

        def claim(*args):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return real_claim(*args)

        self.store.claim = claim
        hook = Hook(self.clock)
        self.start(hook, poll_interval=1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        task = Task(id="q.t1", queue="q", url="http://hook.test/do", due_at=0.0)
        self.successResultOf(self.store.add(task))
        self.clock.advance(1.0)
        self.assertEqual(hook.times, [1.0])

    def test_redis_outage_pauses_claims_and_delivery_resumes(self):
        hook = Hook(self.clock)
        self.start(hook, poll_interval=1.0)
        task = Task(id="q.t1", queue="q", url="http://hook.test/do", due_at=0.5)
        self.successResultOf(self.store.add(task))
        tries = []
        real_claim = self.store.claim
        self.store.claim = lambda *args: tries.append(args) or real_claim(*args)
        self.store.available = False
        self.clock.pump([0.25] * 40)
        self.assertEqual(hook.times, [])
        self.assertEqual(len(tries), 10, "one claim per tick, no spinning")
        self.store.available = True
        self.clock.advance(1.0)
        self.assertEqual(hook.times, [11.0])
        self.assertEqual(self.status(), "delivered")

    def test_with_a_far_safety_tick_a_failed_claim_is_retried_each_second(self):
        hook = Hook(self.clock)
        self.start(hook, poll_interval=3600.0)
        tries = []
        real_claim = self.store.claim
        self.store.claim = lambda *args: tries.append(args) or real_claim(*args)
        task = Task(id="q.t1", queue="q", url="http://hook.test/do", due_at=0.0)
        self.successResultOf(self.store.add(task))
        self.store.available = False
        self.scheduler.wake(0.0)  # the wake-up finds Redis down
        self.clock.pump([0.25] * 20)
        self.assertEqual(len(tries), 6, "the wake-up, then one a second")
        self.store.available = True
        self.clock.advance(1.0)
        self.assertEqual(hook.times, [6.0])

    def attempt_events(self) -> list[dict]:
        """The log events about attempts, from now on (filled as they come)."""
        events = []

        def observe(event):
            if "task_id" in event:
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events

    def test_each_failed_attempt_is_one_structured_log_event(self):
        attempts = self.attempt_events()
        hook = Hook(self.clock, 503, 404)
        self.start(hook)
        self.add()
        self.clock.advance(1.0)
        fields = [
            {k: e[k] for k in ("task_id", "queue", "attempt", "status", "log_level")}
            for e in attempts
        ]
        self.assertEqual(
            fields,
            [
                {"task_id": "q.t1", "queue": "q", "attempt": 1, "status": 503,
                 "log_level": LogLevel.info},
                {"task_id": "q.t1", "queue": "q", "attempt": 2, "status": 404,
                 "log_level": LogLevel.warn},
            ],
        )  # fmt: skip
        self.assertEqual(
            [e["error"] for e in attempts], ["HTTP 503: ok", "refused by the handler: HTTP 404: ok"]
        )
        self.assertTrue(all(e["duration"] >= 0 for e in attempts))

    def test_deliveries_are_logged_only_when_asked(self):
        attempts = self.attempt_events()
        self.start(Hook(self.clock))
        self.add("quiet")
        self.scheduler.log_deliveries = True
        self.add("told")
        logged = [(e["task_id"], e["status"]) for e in attempts]
        self.assertEqual(logged, [("q.told", 200)])

    def test_outcome_waits_for_redis_and_is_then_recorded(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook, poll_interval=1.0)
        self.add()
        self.store.available = False
        hook.held[0].finish()
        self.stub.flush()
        self.assertEqual(self.status_when_back(), "running")
        self.clock.advance(1.0)
        self.assertEqual(self.status(), "delivered")

    def status_when_back(self):
        self.store.available = True
        return self.status()

    def test_stop_waits_for_requests_in_flight_and_records_them(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook)
        self.add()
        stopped = self.scheduler.stopService()
        self.assertNoResult(stopped)
        hook.held[0].finish()
        self.stub.flush()
        self.successResultOf(stopped)
        self.assertEqual(self.status(), "delivered")

    def test_stopped_scheduler_claims_nothing(self):
        hook = Hook(self.clock)
        self.start(hook, poll_interval=1.0)
        self.successResultOf(self.scheduler.stopService())
        self.add()
        self.clock.pump([1.0] * 3)
        self.assertEqual(hook.times, [])


class RoundTripTests(TimingTests, SchedulerCase):
    """The store's answers arrive ``LATENCY`` seconds after each call."""

    latency = LATENCY

    def test_a_task_falling_due_during_a_claim_is_claimed_when_the_answer_comes(self):
        hook = Hook(self.clock)
        self.start(hook)
        self.add("first", due_at=1.0)
        self.add("second", due_at=1.0 + self.L / 2)  # due while the claim travels
        self.until(1.0 + self.L)
        self.assertEqual(hook.times, self.at(1.0 + self.L))
        # The answer names 1.002 as the next due time, already past: a claim
        # goes at once, not at the safety tick an hour later.
        self.until(1.0 + 2 * self.L)
        self.assertEqual(hook.times, self.at(1.0 + self.L, 1.0 + 2 * self.L))

    def test_a_retry_due_before_its_outcome_is_recorded_is_claimed_then(self):
        hook = Hook(self.clock, 429, 200, headers={"Retry-After": "0"})
        self.start(hook)
        t0, L = self.clock.seconds(), self.L
        self.add()
        # The attempt at t0+L says "again now"; the write of that outcome is
        # answered at t0+2L, when the retry is already due: claimed then.
        self.attempts_at(hook, [t0 + L, t0 + 3 * L])

    def test_a_burst_of_tasks_falling_due_during_claims_is_each_on_time(self):
        """200 tasks added 1.8 ms apart (the API's pace, about 550/s) with a
        2 s delay: they fall due while claims are on their way, and each
        starts within two round trips of its due time (the claim that was
        out when it fell due, then its own)."""
        hook = Hook(self.clock)
        self.start(hook, concurrency=64, poll_interval=30.0)
        due = {}
        for n in range(200):
            self.until(self.L + n * 0.0018)
            due[f"/{n}"] = self.clock.seconds() + 2.0
            task = Task(id=f"q.t{n}", queue="q", url=f"http://hook.test/{n}", due_at=due[f"/{n}"])
            self.store.add(task)
            self.scheduler.wake(task.due_at)
        self.until(35.0)  # past the safety tick
        self.assertEqual(sorted(hook.paths), sorted(due))
        late = {path: at - due[path] for path, at in zip(hook.paths, hook.times, strict=True)}
        worst = max(late, key=late.get)
        self.assertLessEqual(late[worst], 2 * self.L + 1e-6, f"task {worst} was late")
        self.assertGreaterEqual(min(late.values()), -1e-6, "a task went early")

    def test_a_paused_queue_with_due_tasks_is_not_claimed_in_a_loop(self):
        hook = Hook(self.clock)
        self.start(hook)
        self.store.paused.add("q")
        self.add("held", due_at=1.0)
        self.until(5.0)
        self.add("also held")  # its claim's answer names 1.0, long past
        self.until(10.0)
        self.assertEqual(hook.times, [])
        self.assertEqual(len(self.store.claims), 3, "the start-up claim, the timer's, the add's")

    # -- behaviours a deliberate bug once broke unnoticed (issue 11) --------

    def three_held(self) -> Hook:
        """A hook holding tasks a, b and c in flight: a claimed alone, then
        b and c (added during that claim) by the next."""
        hook = Hook(self.clock, hold=True)
        self.start(hook)
        for task_id in ("a", "b", "c"):
            self.add(task_id)
        self.later(3 * self.L)
        self.assertEqual(len(hook.held), 3)
        return hook

    def test_a_batch_of_retries_arms_the_timer_for_the_earliest(self):
        hook = self.three_held()
        first, late, soon = hook.held
        first.finish()  # its outcome's write goes out alone ...
        self.stub.flush()
        for request, after in ((late, b"9"), (soon, b"2")):  # ... these two wait for it
            request.setResponseCode(503)
            request.setHeader(b"Retry-After", after)
            request.finish()
        self.stub.flush()
        finished_at = self.clock.seconds()
        self.later(2 * self.L)
        self.assertEqual([len(batch) for batch in self.store.settled], [1, 2])
        retry_at = finished_at + 2 + self.L  # the earlier retry, claimed then
        self.until(retry_at - 0.001)
        self.assertEqual(len(hook.times), 3, "the retry came early")
        self.until(retry_at)
        self.assertEqual(len(hook.times), 4, "the retry came late")
        self.assertEqual(self.info("c")["attempts"], "2")

    def test_stop_records_outcomes_queued_behind_a_write_in_flight(self):
        first, *others = self.three_held().held
        first.finish()  # its write goes out
        self.stub.flush()
        stopped = self.scheduler.stopService()  # SIGTERM
        for request in others:  # these wait behind that write
            request.finish()
        self.stub.flush()
        self.later(self.L)  # the first write is answered; the second goes out
        self.assertNoResult(stopped)
        self.later(self.L)
        self.successResultOf(stopped)
        self.assertEqual([len(batch) for batch in self.store.settled], [1, 2])
        self.assertEqual([self.status(i) for i in ("a", "b", "c")], ["delivered"] * 3)


class SchedulerEdgeTests(SchedulerCase):
    """Edges that mutation testing found unguarded (tests/mutation/run
    scheduler): each test names the behaviour a one-token change breaks."""

    def test_a_claim_asks_for_every_free_slot(self):
        self.start(Hook(self.clock, hold=True), concurrency=10)
        for i in range(4):
            self.add(f"q.t{i}")
        limits = [limit for _, _, limit in self.store.claims]
        self.assertEqual(limits, [10, 10, 9, 8, 7], "the first tick's, then one per add")

    def test_an_overdue_task_is_dispatched_at_once(self):
        hook = Hook(self.clock)
        self.start(hook)
        self.clock.advance(5)
        self.add(due_at=3.0)  # an eta already past
        self.assertEqual(hook.times, [5.0])

    def test_a_wake_up_without_a_time_claims_at_once(self):
        # What a node does on (re)subscribing: "look now".
        hook = Hook(self.clock)
        self.start(hook)
        self.clock.advance(2)
        task = Task(id="q.t1", queue="q", url="http://hook.test/do", due_at=1.0)
        self.successResultOf(self.store.add(task))
        self.scheduler.wake()
        self.assertEqual(hook.times, [2.0])

    def test_a_wake_up_during_a_claim_is_served_right_after_it(self):
        pending = []
        real_claim = self.store.claim

        def claim(*args):
            if not pending:
                pending.append(defer.Deferred())
                return pending[0]
            return real_claim(*args)

        self.store.claim = claim
        hook = Hook(self.clock)
        self.start(hook)  # its first tick's claim hangs
        self.add()  # added, and the wake-up comes during that claim
        self.assertEqual(hook.times, [])
        pending[0].callback(Claim([], None))
        self.assertEqual(hook.times, [0.0])

    def test_an_outage_is_logged_once_and_so_is_the_recovery(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start(Hook(self.clock), poll_interval=1.0)
        self.clock.pump([1.0] * 3)
        self.store.available = False
        self.clock.pump([1.0] * 5)
        self.store.available = True
        self.clock.pump([1.0] * 3)
        formats = [e.get("log_format", "") for e in events]
        self.assertEqual(sum("waiting for Redis" in f for f in formats), 1)
        self.assertEqual(sum("Redis answers again" in f for f in formats), 1)

    def test_stop_records_an_outcome_that_waited_for_redis(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook)
        self.add()
        self.store.available = False
        hook.held[0].finish()
        self.stub.flush()
        self.store.available = True
        self.successResultOf(self.scheduler.stopService())
        self.assertEqual(self.status(), "delivered")

    def test_stop_gives_up_on_outcomes_when_redis_does_not_answer(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook)
        self.add()
        self.store.available = False
        hook.held[0].finish()
        self.stub.flush()
        self.successResultOf(self.scheduler.stopService())
        self.store.available = True
        self.assertEqual(self.status(), "running", "its lease will run out")

    def test_outcomes_queued_behind_a_failed_write_are_all_recorded_later(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook, poll_interval=1.0)
        for i in range(3):
            self.add(f"q.t{i}")
        writes = []
        real_settle = self.store.settle
        self.store.settle = lambda *args: writes.append(defer.Deferred()) or writes[-1]
        for request in hook.held:  # t0's outcome is written; t1's and t2's wait
            request.finish()
        self.stub.flush()
        self.assertEqual(len(writes), 1)
        self.store.settle = real_settle
        writes[0].errback(StoreUnavailable("Redis did not answer in time"))
        self.clock.advance(1.0)  # the next tick records what is pending
        self.assertEqual([self.status(f"q.t{i}") for i in range(3)], ["delivered"] * 3)

    def test_a_full_claim_is_followed_by_another_however_large_the_concurrency(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook, concurrency=300)
        for i in range(301):
            self.successResultOf(self.store.add(Task(id=f"q.t{i}", queue="q", url="http://h/")))
        self.scheduler.wake()
        self.assertEqual(len(hook.held), 300)
        hook.held[0].finish()
        self.stub.flush()
        self.assertEqual(len(hook.held), 301, "the slot that freed took the last task")

    def test_with_a_two_second_tick_a_failed_claim_is_retried_after_one(self):
        hook = Hook(self.clock)
        self.start(hook, poll_interval=2.0)
        self.clock.advance(0.5)
        self.successResultOf(self.store.add(Task(id="q.t1", queue="q", url="http://h/")))
        self.store.available = False
        self.scheduler.wake()  # the wake-up finds Redis down
        self.store.available = True
        self.clock.advance(1.0)
        self.assertEqual(hook.times, [1.5])

    def test_with_a_fast_tick_a_failed_claim_waits_for_the_tick_alone(self):
        tries = []
        real_claim = self.store.claim
        self.store.claim = lambda *args: tries.append(args) or real_claim(*args)
        self.start(Hook(self.clock), poll_interval=0.5)
        self.store.available = False
        self.clock.pump([0.25] * 12)  # 3 s: ticks at 0.5, 1.0 ... 3.0
        self.assertEqual(len(tries), 7, "the first tick's claim, then one per tick")

    def test_a_stopped_scheduler_leaves_no_timer_behind(self):
        self.start(Hook(self.clock), poll_interval=1.0)
        self.add(due_at=30.0)  # a timer armed for it
        self.successResultOf(self.scheduler.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_outcomes_queued_behind_a_write_go_as_soon_as_it_is_recorded(self):
        hook = Hook(self.clock, hold=True)
        self.start(hook)  # no safety tick to help
        for i in range(2):
            self.add(f"q.t{i}")
        writes = []
        real_settle = self.store.settle

        def settle(*args):
            writes.append(defer.Deferred())
            return writes[-1].addCallback(lambda _: real_settle(*args))

        self.store.settle = settle
        for request in hook.held:  # t0's outcome is written; t1's waits
            request.finish()
        self.stub.flush()
        self.assertEqual(len(writes), 1)
        writes[0].callback(None)
        self.assertEqual(len(writes), 2, "t1's outcome went as soon as t0's was recorded")
        writes[1].callback(None)
        self.assertEqual([self.status(f"q.t{i}") for i in range(2)], ["delivered"] * 2)
