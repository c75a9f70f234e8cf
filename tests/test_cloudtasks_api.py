"""Unit tests of the Cloud Tasks door's routes, driven by ``StubTreq`` over
the in-memory store and a ``Clock``."""

from __future__ import annotations

import json

import treq
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.memory_store import MemoryStore
from torque.cloudtasks.api import CloudTasksAPI
from torque.queue_settings import QueueConfig
from torque.retry import RetryPolicy

HOST = "http://torque.test"
PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/jobs"
# What the official clients add to every call.
ALT = "?%24alt=json%3Benum-encoding%3Dint"
HOOK = "https://app.test/hook"


class DoorTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000.0)
        self.store = MemoryStore(clock=self.clock)
        self.woken: list[tuple[str, float]] = []
        ids = (f"t{i}" for i in range(1, 100))
        names = (f"{i:020d}" for i in range(1, 100))
        self.api = CloudTasksAPI(
            self.store,
            self.clock,
            QueueConfig(timeout=60.0, policy=RetryPolicy(max_errors=20)),
            wake=lambda queue, due_at: self.woken.append((queue, due_at)),
            new_id=lambda queue: f"{queue}.{next(ids)}",
            new_name=lambda: next(names),
        )
        self.stub = StubTreq(self.api.resource())

    def call(self, method, path, body=None, query=ALT):
        """Send as the official clients do (a JSON Content-Type, always);
        ``(status, parsed body)``."""
        headers = {"Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else b""
        d = self.stub.request(method, f"{HOST}/v2/{path}{query}", data=data, headers=headers)
        self.stub.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(treq.content(response))
        return response.code, json.loads(content)

    def create_task(self, task_id=None, queue=QUEUE, **task):
        task.setdefault("httpRequest", {"url": HOOK})
        if task_id is not None:
            task["name"] = f"{queue}/tasks/{task_id}"
        return self.call("POST", f"{queue}/tasks", {"task": task})

    def assertGoogleError(self, answer, code, status):
        got_code, body = answer
        self.assertEqual(got_code, code, body)
        self.assertEqual(set(body), {"error"})
        self.assertEqual((body["error"]["code"], body["error"]["status"]), (code, status))
        self.assertIsInstance(body["error"]["message"], str)


class QueueRouteTests(DoorTestCase):
    def test_errors_are_googles_shape(self):
        self.assertGoogleError(self.call("GET", QUEUE), 404, "NOT_FOUND")
        answer = self.call("POST", f"{PARENT}/queues", {"name": "projects/p/queues/q"})
        self.assertGoogleError(answer, 400, "INVALID_ARGUMENT")
        violation = answer[1]["error"]["details"][0]["fieldViolations"][0]
        self.assertEqual(violation["field"], "queue.name")
        self.assertGoogleError(self.call("POST", f"{QUEUE}:fly", {}), 404, "NOT_FOUND")
        self.assertGoogleError(self.call("GET", f"{QUEUE}:pause"), 404, "NOT_FOUND")
        self.assertGoogleError(self.call("PUT", QUEUE, {}), 501, "UNIMPLEMENTED")
        self.assertGoogleError(self.call("GET", "projects/p/nothing"), 404, "NOT_FOUND")

    def test_created_queue_settings_become_torque_queue_settings(self):
        body = {
            "name": QUEUE,
            "rateLimits": {"maxDispatchesPerSecond": 10, "maxConcurrentDispatches": 2},
            "retryConfig": {"maxAttempts": 5, "minBackoff": "0.5s", "maxBackoff": "60s"},
        }
        status, queue = self.call("POST", f"{PARENT}/queues", body)
        self.assertEqual(status, 200)
        self.assertEqual(queue["state"], "RUNNING")
        settings = self.successResultOf(self.store.get_settings("jobs"))
        self.assertEqual(
            settings,
            {"rate": 10.0, "concurrency": 2, "max_errors": 5, "min_delay": 0.5, "max_delay": 60.0},
        )
        self.assertGoogleError(self.call("POST", f"{PARENT}/queues", body), 409, "ALREADY_EXISTS")

    def test_a_queue_id_is_one_queue_of_the_node(self):
        self.call("POST", f"{PARENT}/queues", {"name": QUEUE})
        other = "projects/p/locations/elsewhere/queues/jobs"
        answer = self.call("POST", "projects/p/locations/elsewhere/queues", {"name": other})
        self.assertGoogleError(answer, 409, "ALREADY_EXISTS")
        self.assertIn(QUEUE, answer[1]["error"]["message"])
        self.assertGoogleError(self.call("GET", other), 404, "NOT_FOUND")
        self.assertGoogleError(self.create_task(queue=other), 404, "NOT_FOUND")

    def test_update_creates_a_missing_queue_and_changes_only_the_masked_settings(self):
        body = {"rateLimits": {"maxDispatchesPerSecond": 5}, "retryConfig": {"maxAttempts": 3}}
        status, queue = self.call("PATCH", QUEUE, body)
        self.assertEqual((status, queue["name"]), (200, QUEUE))
        self.successResultOf(self.store.set_settings("jobs", {"timeout": 9.0}))  # torque's own
        mask = ALT + "&updateMask=rateLimits.maxDispatchesPerSecond"
        self.call("PATCH", QUEUE, {"rateLimits": {"maxDispatchesPerSecond": 7}}, query=mask)
        settings = self.successResultOf(self.store.get_settings("jobs"))
        self.assertEqual(settings, {"rate": 7.0, "max_errors": 3, "timeout": 9.0})
        # As the Node client sends a mask its caller wrote in snake_case:
        mask = ALT + "&updateMask=retry_config.max_attempts"
        self.call("PATCH", QUEUE, {"retryConfig": {"maxAttempts": 8}}, query=mask)
        settings = self.successResultOf(self.store.get_settings("jobs"))
        self.assertEqual(settings, {"rate": 7.0, "max_errors": 8, "timeout": 9.0})

    def test_pausing_an_empty_queue_holds_its_first_task(self):
        self.call("POST", f"{PARENT}/queues", {"name": QUEUE})
        status, queue = self.call("POST", f"{QUEUE}:pause", {})
        self.assertEqual((status, queue["state"]), (200, "PAUSED"))
        self.assertNotIn("jobs", self.store.paused)  # torque has no such queue yet
        self.create_task("a")
        self.assertIn("jobs", self.store.paused)
        self.assertEqual(self.call("GET", QUEUE)[1]["state"], "PAUSED")
        self.assertEqual(self.call("POST", f"{QUEUE}:resume", {})[1]["state"], "RUNNING")
        self.assertNotIn("jobs", self.store.paused)
        self.assertEqual(self.woken[-1], ("jobs", self.clock.seconds()))

    def test_purge_deletes_the_tasks_and_says_when(self):
        self.create_task("a")
        status, queue = self.call("POST", f"{QUEUE}:purge", {})
        self.assertEqual((status, queue["purgeTime"]), (200, "2027-01-15T08:00:00.000000Z"))
        self.assertEqual(self.store.due["jobs"], {})

    def test_delete_queue_deletes_its_tasks(self):
        self.create_task("a")
        self.assertEqual(self.call("DELETE", QUEUE), (200, {}))
        self.assertEqual(self.store.tasks, {})
        self.assertGoogleError(self.call("GET", QUEUE), 404, "NOT_FOUND")

    def test_list_queues_pages_and_filters(self):
        for q in ("c", "a", "b"):
            self.call("POST", f"{PARENT}/queues", {"name": f"{PARENT}/queues/{q}"})
        self.call(
            "POST", "projects/p/locations/x/queues", {"name": "projects/p/locations/x/queues/d"}
        )
        self.call("POST", f"{PARENT}/queues/b:pause", {})
        status, first = self.call("GET", f"{PARENT}/queues", query=ALT + "&pageSize=2")
        self.assertEqual([q["name"][-1] for q in first["queues"]], ["a", "b"])
        token = first["nextPageToken"]
        _, second = self.call(
            "GET", f"{PARENT}/queues", query=ALT + f"&pageSize=2&pageToken={token}"
        )
        self.assertEqual([q["name"][-1] for q in second["queues"]], ["c"])
        self.assertNotIn("nextPageToken", second)
        _, paused = self.call("GET", f"{PARENT}/queues", query=ALT + "&filter=state%3A%20PAUSED")
        self.assertEqual([q["name"][-1] for q in paused["queues"]], ["b"])
        bad = self.call("GET", f"{PARENT}/queues", query=ALT + "&filter=name%3Ax")
        self.assertGoogleError(bad, 400, "INVALID_ARGUMENT")


class TaskRouteTests(DoorTestCase):
    def test_create_makes_the_queue_and_a_torque_task_and_wakes_it(self):
        status, task = self.create_task("a", scheduleTime="2027-01-15T08:00:10Z")
        self.assertEqual((status, task["name"]), (200, f"{QUEUE}/tasks/a"))
        self.assertEqual(task["scheduleTime"], "2027-01-15T08:00:10.000000Z")
        self.assertEqual(task["dispatchDeadline"], "60s")
        self.assertEqual(self.store.tasks["jobs.t1"]["door"], "cloudtasks")
        self.assertEqual(self.woken, [("jobs", 1_800_000_010.0)])
        self.assertEqual(self.call("GET", QUEUE)[0], 200)

    def test_a_duplicate_name_is_already_exists(self):
        self.create_task("a")
        answer = self.create_task("a")
        self.assertGoogleError(answer, 409, "ALREADY_EXISTS")
        self.assertEqual(answer[1]["error"]["message"], "Requested entity already exists")
        self.assertEqual(len(self.store.tasks), 1)

    def test_a_deleted_tasks_name_is_kept_an_hour(self):
        self.create_task("a")
        self.assertEqual(self.call("DELETE", f"{QUEUE}/tasks/a"), (200, {}))
        self.assertGoogleError(self.call("GET", f"{QUEUE}/tasks/a"), 404, "NOT_FOUND")
        self.assertGoogleError(self.call("DELETE", f"{QUEUE}/tasks/a"), 404, "NOT_FOUND")
        answer = self.create_task("a")
        self.assertGoogleError(answer, 409, "ALREADY_EXISTS")
        self.assertIn("existed too recently", answer[1]["error"]["message"])
        self.clock.advance(3599)
        self.assertGoogleError(self.create_task("a"), 409, "ALREADY_EXISTS")
        self.clock.advance(1)
        self.assertEqual(self.create_task("a")[0], 200)

    def test_get_in_either_view(self):
        body = "aGVsbG8="
        self.create_task("a", httpRequest={"url": HOOK, "body": body})
        _, basic = self.call("GET", f"{QUEUE}/tasks/a")
        self.assertEqual((basic["view"], "body" in basic["httpRequest"]), ("BASIC", False))
        _, full = self.call("GET", f"{QUEUE}/tasks/a", query=ALT + "&responseView=2")
        self.assertEqual((full["view"], full["httpRequest"]["body"]), ("FULL", body))
        _, named = self.call("GET", f"{QUEUE}/tasks/a", query=ALT + "&responseView=FULL")
        self.assertEqual(named, full)

    def test_a_task_torques_own_api_added_is_found_by_its_id(self):
        self.create_task("a")
        from torque.task import Task

        plain = Task(id="jobs.plain-1", queue="jobs", url=HOOK, due_at=1_800_000_000.0)
        self.successResultOf(self.store.add(plain))
        status, task = self.call("GET", f"{QUEUE}/tasks/plain-1")
        self.assertEqual((status, task["name"]), (200, f"{QUEUE}/tasks/plain-1"))
        self.assertGoogleError(self.call("GET", f"{QUEUE}/tasks/t1"), 404, "NOT_FOUND")

    def test_run_makes_a_task_due_now(self):
        self.create_task("a", scheduleTime="2027-01-15T09:00:00Z")
        self.clock.advance(5)
        status, task = self.call("POST", f"{QUEUE}/tasks/a:run", {})
        self.assertEqual((status, task["scheduleTime"]), (200, "2027-01-15T08:00:05.000000Z"))
        self.assertEqual(self.store.due["jobs"]["jobs.t1"], 1_800_000_005.0)
        self.assertEqual(self.woken[-1], ("jobs", 1_800_000_005.0))
        self.assertGoogleError(self.call("POST", f"{QUEUE}/tasks/nope:run", {}), 404, "NOT_FOUND")

    def test_list_pages_scheduled_then_running_tasks(self):
        for name in ("a", "b", "c"):
            self.create_task(name)
        self.successResultOf(self.store.claim("jobs", self.clock.seconds(), 1, 60.0, 20))
        seen, token = [], None
        while True:
            query = ALT + "&pageSize=2" + (f"&pageToken={token}" if token else "")
            status, page = self.call("GET", f"{QUEUE}/tasks", query=query)
            self.assertEqual(status, 200)
            seen.append([t["name"].rsplit("/", 1)[1] for t in page.get("tasks", [])])
            token = page.get("nextPageToken")
            if not token:
                break
        self.assertEqual(seen, [["b", "c"], ["a"]])
        bad = self.call("GET", f"{QUEUE}/tasks", query=ALT + "&pageToken=bm9wZQ")
        self.assertGoogleError(bad, 400, "INVALID_ARGUMENT")

    def test_buffer_and_batches_are_unimplemented(self):
        self.create_task("a")
        for path in ("tasks:buffer", "tasks/a:buffer", "tasks:batchCreate", "tasks:batchDelete"):
            self.assertGoogleError(self.call("POST", f"{QUEUE}/{path}", {}), 501, "UNIMPLEMENTED")

    def test_targets_torque_refuses_are_refused_here_too(self):
        from torque.targets import TargetGuard

        self.api.targets = TargetGuard()  # the node's defaults: link-local is refused
        url = "http://169.254.169.254/computeMetadata"
        answer = self.create_task("a", httpRequest={"url": url})
        self.assertGoogleError(answer, 400, "INVALID_ARGUMENT")
        violation = answer[1]["error"]["details"][0]["fieldViolations"][0]
        self.assertEqual(violation["field"], "task.httpRequest.url")
        self.assertEqual(self.store.tasks, {})

    def test_redis_unavailable_is_unavailable(self):
        self.store.available = False
        answer = self.create_task("a")
        self.assertGoogleError(answer, 503, "UNAVAILABLE")
