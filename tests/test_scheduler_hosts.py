"""The scheduler's flow control per target host, on a fake clock with a store
that answers a round trip later (``MemoryStore(clock=, latency=)``): a host
that hangs does not hold up the others, an open circuit postpones its tasks
and sends one probe per cool-down, a throttled host is held."""

from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.test_api import APITestCase
from tests.test_scheduler import LATENCY, SchedulerCase, in_q
from torque import scheduler
from torque.hosts import BREAKER_THRESHOLD, HostTable
from torque.retry import NoResponse
from torque.scheduler import DEEP_RETRY, DEEP_SKIP, SHALLOW_SKIP
from torque.task import Task


class Hosts(Resource):
    """Web hooks on several hosts: requests to a host in ``hang`` are held
    open (until the attempt's timeout), the others answer ``status`` (per
    host, default 200) with ``headers``."""

    isLeaf = True

    def __init__(self, clock, hang=(), status=None, headers=None):
        super().__init__()
        self.clock = clock
        self.hang = set(hang)
        self.status = status or {}
        self.headers = headers or {}
        self.seen: list[tuple[float, str, str]] = []  # time, host, task id

    def render(self, request):
        host = request.getHeader("host")
        task_id = request.getHeader("x-torque-task-id")
        self.seen.append((round(self.clock.seconds(), 6), host, task_id))
        if host in self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status.get(host, 200))
        for name, value in self.headers.get(host, {}).items():
            request.setHeader(name, value)
        return b"ok"

    def times(self, host):
        return [t for t, h, _ in self.seen if h == host]


class HeldHosts(Hosts):
    """:class:`Hosts` that keeps the requests it holds open, for a test
    to answer them one by one."""

    def __init__(self, clock, hang=()):
        super().__init__(clock, hang)
        self.held = []

    def render(self, request):
        result = super().render(request)
        if result is NOT_DONE_YET:
            self.held.append(request)
        return result


class HostSchedulerTests(SchedulerCase):
    latency = LATENCY

    def start(self, hook, concurrency=10, host_concurrency=3, cooldown=1.0, **policy):
        self.hosts = HostTable(host_concurrency, cooldown=cooldown, max_cooldown=8.0)
        self.budgets = []  # what each claim was given
        claim = self.store.claim

        def spy(*args):
            self.budgets.append(args[6])
            return claim(*args)

        def watch_claims():
            self.store.claim = spy

        # No safety tick (poll_interval an hour): every claim must be earned.
        return super().start(
            hook, concurrency=concurrency, hosts=self.hosts, before_start=watch_claims, **policy
        )

    def add_to(self, host, task_id, wake=True):
        task = Task(
            id=in_q(task_id), queue="q", url=f"http://{host}/do", due_at=self.clock.seconds()
        )
        self.store.add(task)
        if wake:
            self.scheduler.wake(task.due_at)

    def test_a_hanging_host_does_not_hold_up_another_hosts_tasks(self):
        hook = Hosts(self.clock, hang={"slow.test"})
        self.start(hook)
        for i in range(20):
            self.add_to("slow.test", f"slow{i}")
        self.later(1.0)
        t0 = self.clock.seconds()
        for i in range(6):
            self.add_to("fast.test", f"fast{i}")
        self.later(1.0)
        self.assertEqual(len(hook.times("slow.test")), 3, "the slow host at its cap")
        fast = hook.times("fast.test")
        self.assertEqual(len(fast), 6, "every fast task, not after the slow ones' timeout")
        self.assertLess(max(fast) - t0, 10 * self.L, "within a few round trips")

    def answer(self, request):
        request.finish()
        self.stub.flush()

    def test_slots_a_host_at_its_cap_frees_share_one_claim_and_one_write(self):
        hook = HeldHosts(self.clock, hang={"one.test"})
        self.start(hook, concurrency=10, host_concurrency=4)
        for i in range(12):
            self.add_to("one.test", f"t{i}")
        self.later(1.0)
        self.assertEqual(len(hook.held), 4, "the host at its cap")
        claims, settles = len(self.budgets), len(self.store.settled)
        self.answer(hook.held[0])
        self.later(scheduler.GATHER / 2)
        self.assertEqual(len(self.budgets), claims, "one freed slot waits for others")
        self.assertEqual(len(self.store.settled), settles, "its outcome waits for the claim")
        self.answer(hook.held[1])  # half the cap free: claim now
        self.later(0)
        self.assertEqual(len(self.budgets), claims + 1, "one claim for both slots")
        self.assertEqual([len(s) for s in self.store.settled[settles:]], [2], "one write")
        self.later(1.0)
        self.assertEqual(len(hook.held), 6, "both slots taken again")
        self.answer(hook.held[2])  # one slot alone: claimed after GATHER
        self.later(scheduler.GATHER)
        self.assertEqual(len(self.budgets), claims + 2)
        self.later(1.0)
        self.assertEqual(len(hook.held), 7)

    def test_the_queues_own_host_concurrency_setting_is_its_cap(self):
        hook = Hosts(self.clock, hang={"slow.test"})
        self.start(hook, host_concurrency=3)
        self.scheduler.apply_settings({"host_concurrency": 5})
        for i in range(20):
            self.add_to("slow.test", f"slow{i}")
        self.later(1.0)
        self.assertEqual(len(hook.times("slow.test")), 5, "the queue's setting, not the node's 3")
        self.scheduler.apply_settings({})  # cleared: the node's cap again, for new claims
        self.assertEqual(self.scheduler.host_cap(), None)

    def test_tasks_behind_a_saturated_host_are_found_when_their_host_frees_a_slot(self):
        hook = Hosts(self.clock, hang={"slow.test"})
        self.start(hook)
        for i in range(20):
            self.add_to("slow.test", f"slow{i}", wake=False)
        for i in range(9):
            self.add_to("fast.test", f"fast{i}", wake=False)
        self.scheduler.wake()  # one wake-up for them all
        self.later(1.0)
        self.assertEqual(len(hook.times("fast.test")), 9, "three at a time, each found at once")
        self.assertEqual(len(hook.times("slow.test")), 3)

    def test_draining_one_host_looks_no_deeper_than_before(self):
        hook = Hosts(self.clock)
        self.start(hook)
        for i in range(40):
            self.add_to("one.test", f"q.t{i}", wake=False)
        self.scheduler.wake()
        self.later(2.0)
        self.assertEqual(len(hook.times("one.test")), 40)
        skips = [b.max_skip for b in self.budgets]
        self.assertEqual(skips[:2], [DEEP_SKIP, DEEP_SKIP], "the start and the wake-up")
        self.assertEqual(set(skips[2:]), {SHALLOW_SKIP}, "then slots freeing: shallow claims")

    def test_a_burst_of_adds_to_a_saturated_host_does_not_make_every_claim_deep(self):
        self.patch(scheduler, "DEEP_COSTLY", 10)  # for 50 tasks, not 250
        hook = Hosts(self.clock, hang={"slow.test"})
        self.start(hook)
        for i in range(50):
            self.add_to("slow.test", f"slow{i}")
            self.later(0.01)
        deep = [b for b in self.budgets if b.max_skip == DEEP_SKIP]
        # The start, the adds until 10 are passed over, then one every
        # DEEP_RETRY over the half second of adds.
        self.assertLessEqual(len(deep), 1 + 3 + 11 + 0.5 / DEEP_RETRY + 1, "not one per add")
        self.assertGreater(len(self.budgets), 20, "but a claim per add")
        t0 = self.clock.seconds()
        self.add_to("fast.test", "fast0")  # right after a fruitless deep claim
        self.later(DEEP_RETRY + 2 * self.L)
        self.assertEqual(len(hook.times("fast.test")), 1)
        self.assertLessEqual(hook.times("fast.test")[0] - t0, DEEP_RETRY + 2 * self.L)

    def test_an_open_circuit_postpones_its_tasks_and_probes_once_per_cooldown(self):
        hook = Hosts(self.clock, hang={"down.test"})
        self.start(hook, host_concurrency=BREAKER_THRESHOLD, cooldown=1.0)
        for i in range(20):
            self.add_to("down.test", f"d{i}")
        self.later(0.5)
        self.assertEqual(len(hook.times("down.test")), BREAKER_THRESHOLD)
        # They time out at 10 s: the circuit opens for 1 s, then 2, 4, 8.
        self.later(60.0)
        probes = [t for t in hook.times("down.test") if t > 10.5]
        gaps = [round(b - a, 2) for a, b in zip(probes, probes[1:], strict=False)]
        # Each probe hangs until its 10 s timeout, then the next cool-down.
        self.assertEqual((round(probes[0], 2), gaps), (11.02, [12.0, 14.0, 18.0]))
        tried = {task_id for _, _, task_id in hook.seen}
        for i in range(20):
            if in_q(f"d{i}") not in tried:
                info = self.info(f"d{i}")
                self.assertEqual((info["status"], info.get("attempts", "0")), ("scheduled", "0"))
                # Postponed to the last cool-down's end (the probe then).
                self.assertEqual(round(float(info["due_at"]), 6), round(probes[-1] - self.L, 6))

    def test_a_successful_probe_closes_the_circuit_and_the_rest_follow(self):
        hook = Hosts(self.clock, hang={"down.test"})
        self.start(hook, host_concurrency=BREAKER_THRESHOLD, cooldown=1.0)
        for i in range(12):
            self.add_to("down.test", f"d{i}")
        self.later(10.5)  # the first five timed out: open until 11
        hook.hang.clear()  # the host is back
        self.later(5.0)
        self.assertEqual([self.status(f"d{i}") for i in range(5, 12)], ["delivered"] * 7)
        self.assertEqual(self.hosts.open_circuits("q"), [])

    def test_retry_after_holds_every_task_of_the_host(self):
        hook = Hosts(
            self.clock, status={"busy.test": 429}, headers={"busy.test": {"Retry-After": "5"}}
        )
        self.start(hook, host_concurrency=1)
        t0 = self.clock.seconds()
        for i in range(3):
            self.add_to("busy.test", f"b{i}")
        self.add_to("calm.test", "c0")
        self.later(4.9)
        self.assertEqual(len(hook.times("busy.test")), 1, "held after the first answer")
        self.assertEqual(len(hook.times("calm.test")), 1)
        self.assertEqual(float(self.info("b1")["due_at"]), round(t0 + 5 + self.L, 6))


class OpenCircuitsShownTests(APITestCase):
    """``GET /queues/<q>`` and ``GET /queues`` list the queue's open circuits
    as the node's :class:`HostTable` knows them."""

    def test_a_queues_open_circuits_are_listed(self):
        table = HostTable()
        for _ in range(BREAKER_THRESHOLD):
            table.started("down.test:8080", 1000.0, "default")
            table.finished("down.test:8080", NoResponse("connection refused"), 1000.0)
        table.started("other.test", 1000.0, "default")
        self.api.circuits = table.open_circuits
        self.add(data={"url": "http://down.test:8080/x"})
        _, queue = self.call("GET", "/queues/default")
        self.assertEqual(queue["open_circuits"], ["down.test:8080"])
        _, page = self.call("GET", "/queues")
        self.assertEqual(page["queues"][0]["open_circuits"], ["down.test:8080"])
        self.assertEqual(table.open_circuits("another"), [])


class QueuesSharingAHostTests(SchedulerCase):
    """Two queues' schedulers on one node share its :class:`HostTable`:
    their claims, on their way at once, stay within a host's cap together,
    and a slot one queue frees wakes the other."""

    latency = LATENCY

    def setUp(self):
        super().setUp()
        self.hosts = HostTable(4)
        self.hook = HeldHosts(self.clock, hang={"one.test"})

    def started(self, queue):
        # No safety tick (an hour): every claim must be earned.
        scheduler = self.scheduler_of(queue, hosts=self.hosts)
        scheduler.startService()
        self.addCleanup(self.stop_all, scheduler)
        return scheduler

    def stop_all(self, scheduler):
        stopped = scheduler.stopService()
        self.until(self.clock.seconds() + 60)
        return stopped

    def fill(self, queue, count):
        for _ in range(count):
            task_id = f"{queue}.t{len(self.store.tasks)}"
            url = "http://one.test/do"
            self.store.add(Task(id=task_id, queue=queue, url=url, due_at=self.clock.seconds()))

    def test_claims_on_their_way_at_once_stay_within_the_cap_together(self):
        self.stub = StubTreq(self.hook)
        self.fill("q", 1)
        q, r = self.started("q"), self.started("r")
        self.later(1.0)
        self.assertEqual(len(self.hook.held), 1, "one.test has a request out")
        self.fill("q", 10)
        self.fill("r", 10)
        q.wake()
        r.wake()  # while q's claim is on its way
        self.later(1.0)
        self.assertEqual(len(self.hook.held), 4, "the host's cap, not each queue's")

    def test_a_slot_another_queue_frees_is_taken_without_waiting_for_the_tick(self):
        self.stub = StubTreq(self.hook)
        self.fill("q", 10)
        q = self.started("q")
        self.later(1.0)
        self.assertEqual(len(self.hook.held), 4)
        self.fill("r", 1)
        r = self.started("r")  # its start-up claim passes over one.test
        self.later(1.0)
        self.assertEqual(len(self.hook.held), 4, "r waits: the host is at its cap")
        self.hook.held[0].finish()
        self.stub.flush()
        self.later(1.0)
        self.assertIn(
            "r.t10", [request.getHeader("x-torque-task-id") for request in self.hook.held[4:]]
        )
        self.assertTrue(q.running and r.running)
