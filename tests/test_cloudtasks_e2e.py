"""The Cloud Tasks door end to end, driven by Google's own client
(``google-cloud-tasks``, REST transport, ``api_endpoint`` the node's URL)
against a real ``twistd`` node and a real receiver.

The client is blocking (``requests``): each call runs in a thread, so the
receiver, on this process's reactor, answers the node meanwhile.
"""

from __future__ import annotations

import datetime
import json
import os

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for

try:
    from google.api_core import exceptions
    from google.api_core.client_options import ClientOptions
    from google.auth.exceptions import RefreshError
    from google.cloud import tasks_v2
    from google.oauth2.credentials import Credentials
    from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
except ImportError:  # pragma: no cover - the test extras install it
    tasks_v2 = None

TOKEN = "ct-secret"
PROJECT, LOCATION = "my-proj", "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


def client_for(node, token: str = TOKEN):
    """The official client, as a user points it at torque."""
    return tasks_v2.CloudTasksClient(
        transport="rest",
        client_options=ClientOptions(api_endpoint=node.url),
        credentials=Credentials(token),
    )


def call(method, *args, **kwargs) -> defer.Deferred:
    return deferToThread(method, *args, **kwargs)


def in_a_while(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds))
    return stamp


class CloudTasksClientTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        if tasks_v2 is None:
            raise AssertionError("google-cloud-tasks is missing: pip install -e '.[test]'")

    @defer.inlineCallbacks
    def start(self, *args):
        self.receiver = start_receiver(self)
        self.node = yield start_node(self, "--api-token", TOKEN, *args)
        self.client = client_for(self.node)
        self.addCleanup(lambda: self.client.transport.close())

    def torque(self, path: str):
        """GET on torque's own API, with the token."""
        import treq

        d = treq.get(
            self.node.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, persistent=False
        )
        return d.addCallback(lambda r: r.content().addCallback(lambda b: (r.code, json.loads(b))))

    @defer.inlineCallbacks
    def test_every_queue_route(self):
        yield self.start()
        c = self.client
        created = yield call(
            c.create_queue,
            parent=PARENT,
            queue=tasks_v2.Queue(
                name=f"{PARENT}/queues/q-b",
                rate_limits=tasks_v2.RateLimits(
                    max_dispatches_per_second=10, max_concurrent_dispatches=2
                ),
                retry_config=tasks_v2.RetryConfig(
                    max_attempts=5,
                    min_backoff=duration_pb2.Duration(seconds=1),
                    max_backoff=duration_pb2.Duration(seconds=60),
                    max_doublings=3,
                ),
            ),
        )
        self.assertEqual(created.name, f"{PARENT}/queues/q-b")
        self.assertEqual(created.state, tasks_v2.Queue.State.RUNNING)
        self.assertEqual(created.rate_limits.max_dispatches_per_second, 10)
        self.assertEqual(created.rate_limits.max_concurrent_dispatches, 2)
        self.assertEqual(created.retry_config.max_attempts, 5)
        self.assertEqual(created.retry_config.max_backoff.total_seconds(), 60)
        self.assertEqual(created.retry_config.max_doublings, 3)
        for queue in ("q-a", "q-c"):
            yield call(c.create_queue, parent=PARENT, queue={"name": f"{PARENT}/queues/{queue}"})
        with self.assertRaises(exceptions.Conflict):
            yield call(c.create_queue, parent=PARENT, queue={"name": f"{PARENT}/queues/q-a"})
        # The pager follows nextPageToken: one queue a page.
        pager = yield call(c.list_queues, request={"parent": PARENT, "page_size": 1})
        listed = yield call(lambda: [q.name.rsplit("/", 1)[1] for q in pager])
        self.assertEqual(listed, ["q-a", "q-b", "q-c"])
        got = yield call(c.get_queue, name=f"{PARENT}/queues/q-b")
        self.assertEqual(got.retry_config.max_attempts, 5)
        with self.assertRaises(exceptions.NotFound):
            yield call(c.get_queue, name=f"{PARENT}/queues/nope")
        updated = yield call(
            c.update_queue,
            queue={
                "name": f"{PARENT}/queues/q-b",
                "rate_limits": {"max_dispatches_per_second": 5},
            },
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
        )
        self.assertEqual(updated.rate_limits.max_dispatches_per_second, 5)
        self.assertEqual(updated.rate_limits.max_concurrent_dispatches, 2)
        self.assertEqual(updated.retry_config.max_attempts, 5)
        # torque's own queue settings say the same.
        paused = yield call(c.pause_queue, name=f"{PARENT}/queues/q-b")
        self.assertEqual(paused.state, tasks_v2.Queue.State.PAUSED)
        filtered = yield call(c.list_queues, request={"parent": PARENT, "filter": "state: PAUSED"})
        self.assertEqual((yield call(lambda: [q.name for q in filtered])), [str(paused.name)])
        resumed = yield call(c.resume_queue, name=f"{PARENT}/queues/q-b")
        self.assertEqual(resumed.state, tasks_v2.Queue.State.RUNNING)
        purged = yield call(c.purge_queue, name=f"{PARENT}/queues/q-b")
        self.assertTrue(purged.purge_time)
        yield call(c.delete_queue, name=f"{PARENT}/queues/q-c")
        with self.assertRaises(exceptions.NotFound):
            yield call(c.get_queue, name=f"{PARENT}/queues/q-c")

    @defer.inlineCallbacks
    def test_every_task_route(self):
        yield self.start()
        c = self.client
        queue = f"{PARENT}/queues/jobs"
        yield call(c.create_queue, parent=PARENT, queue={"name": queue})
        later = in_a_while(3600)
        for i in range(3):
            yield call(
                c.create_task,
                parent=queue,
                task={
                    "name": f"{queue}/tasks/later-{i}",
                    "http_request": {"url": self.receiver.url + f"/later/{i}", "body": b"x"},
                    "schedule_time": later,
                },
            )
        made = yield call(
            c.create_task,
            request={
                "parent": queue,
                "task": {
                    "http_request": {
                        "url": self.receiver.url + "/now",
                        "http_method": tasks_v2.HttpMethod.PUT,
                        "headers": {"Content-Type": "application/json", "X-Custom": "v"},
                        "body": b'{"hello": "world"}',
                    },
                    "schedule_time": later,
                    "dispatch_deadline": duration_pb2.Duration(seconds=30),
                },
                "response_view": tasks_v2.Task.View.FULL,
            },
        )
        task_id = made.name.rsplit("/", 1)[1]
        self.assertRegex(task_id, r"^[0-9]{20}$")
        self.assertEqual(made.http_request.body, b'{"hello": "world"}')
        self.assertEqual(made.http_request.http_method, tasks_v2.HttpMethod.PUT)
        self.assertEqual(made.dispatch_deadline.total_seconds(), 30)
        self.assertEqual(made.view, tasks_v2.Task.View.FULL)
        basic = yield call(c.get_task, name=made.name)
        self.assertEqual((basic.view, basic.http_request.body), (tasks_v2.Task.View.BASIC, b""))
        full = yield call(c.get_task, request={"name": made.name, "response_view": 2})
        self.assertEqual(full.http_request.body, b'{"hello": "world"}')
        self.assertEqual(full.http_request.headers["X-Custom"], "v")
        # Four tasks, two a page: the pager follows nextPageToken.
        pager = yield call(c.list_tasks, request={"parent": queue, "page_size": 2})
        pages = yield call(lambda: [[t.name for t in page.tasks] for page in pager.pages])
        self.assertEqual(
            sorted(sum(pages, [])),
            sorted([f"{queue}/tasks/later-{i}" for i in range(3)] + [made.name]),
        )
        self.assertEqual([len(p) for p in pages][:2], [2, 2])
        with self.assertRaises(exceptions.Conflict):
            yield call(
                c.create_task,
                parent=queue,
                task={"name": f"{queue}/tasks/later-0", "http_request": {"url": self.receiver.url}},
            )
        # RunTask: dispatched at once, its schedule time was an hour away.
        yield call(c.run_task, name=made.name)
        yield wait_for(lambda: self.receiver.to("/now"), what="the run task's delivery")
        (delivery,) = self.receiver.to("/now")
        self.assertEqual(delivery.method, "PUT")
        self.assertEqual(delivery.body, b'{"hello": "world"}')
        h = delivery.headers
        self.assertEqual(h["user-agent"], "Google-Cloud-Tasks")
        self.assertEqual(h["x-cloudtasks-queuename"], "jobs")
        self.assertEqual(h["x-cloudtasks-taskname"], task_id)
        self.assertEqual(h["x-cloudtasks-taskretrycount"], "0")
        self.assertEqual(h["x-cloudtasks-taskexecutioncount"], "0")
        self.assertRegex(h["x-cloudtasks-tasketa"], r"^[0-9]+\.[0-9]{6}$")
        self.assertEqual((h["content-type"], h["x-custom"]), ("application/json", "v"))
        print("\nA delivery as the receiver saw it:", delivery.method, delivery.path)
        for name, value in sorted(h.items()):
            print(f"  {name}: {value}")
        # Delivered: gone from Cloud Tasks' view, and its name kept an hour.
        yield wait_for(lambda: self._missing(made.name), what="the delivered task to be gone")
        with self.assertRaises(exceptions.Conflict):
            yield call(
                c.create_task,
                parent=queue,
                task={"name": made.name, "http_request": {"url": self.receiver.url}},
            )
        # DeleteTask: gone, and its name too is kept (Cloud Tasks' rule).
        yield call(c.delete_task, name=f"{queue}/tasks/later-1")
        with self.assertRaises(exceptions.NotFound):
            yield call(c.get_task, name=f"{queue}/tasks/later-1")
        with self.assertRaises(exceptions.NotFound):
            yield call(c.delete_task, name=f"{queue}/tasks/later-1")
        with self.assertRaises(exceptions.Conflict) as raised:
            yield call(
                c.create_task,
                parent=queue,
                task={"name": f"{queue}/tasks/later-1", "http_request": {"url": self.receiver.url}},
            )
        self.assertIn("existed too recently", str(raised.exception))
        # One system: torque's own API sees the same tasks.
        code, stats = yield self.torque("/queues/jobs")
        self.assertEqual((code, stats["scheduled"]), (200, 2))
        code, listed = yield self.torque("/queues/jobs/tasks")
        names = sorted(t["name"] for t in listed["tasks"])
        self.assertEqual(names, ["later-0", "later-2"])
        code, one = yield self.torque(f"/tasks/{listed['tasks'][0]['id']}")
        self.assertEqual((code, one["queue"], one["status"]), (200, "jobs", "scheduled"))
        import treq

        response = yield treq.get(
            self.node.url + "/metrics",
            headers={"Authorization": f"Bearer {TOKEN}"},
            persistent=False,
        )
        metrics = (yield response.text()).splitlines()
        self.assertIn('torque_queue_tasks{queue="jobs",state="scheduled"} 2.0', metrics)
        self.assertIn('torque_tasks_added_total{queue="jobs"} 4.0', metrics)

    @defer.inlineCallbacks
    def test_deliveries_follow_the_queues_retry_config(self):
        yield self.start()
        c = self.client
        queue = f"{PARENT}/queues/flaky"
        retry = {"max_attempts": 3, "min_backoff": {"nanos": 100_000_000}, "max_backoff": "1s"}
        yield call(c.create_queue, parent=PARENT, queue={"name": queue, "retry_config": retry})
        self.receiver.respond("/flaky", 503)
        made = yield call(
            c.create_task,
            parent=queue,
            task={"http_request": {"url": self.receiver.url + "/flaky"}},
        )
        # Three attempts (maxAttempts, not the node's --max-task-errors 20), then none.
        yield wait_for(lambda: self._missing(made.name), what="the task to fail for good")
        attempts = self.receiver.to("/flaky")
        self.assertEqual(len(attempts), 3)
        counts = [a.headers["x-cloudtasks-taskretrycount"] for a in attempts]
        self.assertEqual(counts, ["0", "1", "2"])
        previous = [a.headers.get("x-cloudtasks-taskpreviousresponse") for a in attempts]
        self.assertEqual(previous, [None, "503", "503"])
        reasons = [a.headers.get("x-cloudtasks-taskretryreason") for a in attempts]
        self.assertEqual(reasons, [None, "HTTP 503: handler says no", "HTTP 503: handler says no"])
        # Cloud Tasks would have dropped it; torque keeps the dead letter.
        code, dead = yield self.torque("/queues/flaky/dead")
        self.assertEqual([t["attempts"] for t in dead["tasks"]], [3])

    @defer.inlineCallbacks
    def test_the_docs_snippet_runs_as_written(self):
        """docs/cloudtasks.rst's Python example, with only the ports and the
        token changed, creates a queue and a task that is delivered."""
        from docutils import nodes

        from tests.test_docs import ROOT, doctree

        tree = doctree(os.path.join(ROOT, "docs", "cloudtasks.rst"))
        blocks = [n.astext() for n in tree.findall(nodes.literal_block) if "python" in n["classes"]]
        self.assertEqual(len(blocks), 1)
        yield self.start()
        hook_port = self.receiver.url.rsplit(":", 1)[1]
        code = (
            blocks[0]
            .replace("8090", str(self.node.port))
            .replace("8000", hook_port)
            .replace("your-api-token", TOKEN)
        )
        yield call(exec, code, {})
        yield wait_for(lambda: self.receiver.to("/hooks/send-email"), what="the docs' task")
        (delivery,) = self.receiver.to("/hooks/send-email")
        self.assertEqual(delivery.body, b'{"to": "ada@example.com"}')
        self.assertEqual(delivery.headers["x-cloudtasks-queuename"], "emails")

    def _missing(self, name: str) -> defer.Deferred:
        d = call(self.client.get_task, name=name)
        return d.addCallbacks(lambda _: False, lambda f: f.check(exceptions.NotFound) is not None)

    @defer.inlineCallbacks
    def test_what_torque_does_not_do_is_refused(self):
        yield self.start()
        c = self.client
        queue = f"{PARENT}/queues/jobs"
        yield call(c.create_queue, parent=PARENT, queue={"name": queue})
        refused = [
            {
                "http_request": {
                    "url": self.receiver.url,
                    "oidc_token": {"service_account_email": "a@b.c"},
                }
            },
            {
                "http_request": {
                    "url": self.receiver.url,
                    "oauth_token": {"service_account_email": "a@b.c"},
                }
            },
            {"app_engine_http_request": {"relative_uri": "/x"}},
        ]
        for task in refused:
            with self.assertRaises(exceptions.MethodNotImplemented) as raised:
                yield call(c.create_task, parent=queue, task=task)
            self.assertIn("torque", str(raised.exception))
        unsupported = [
            (c.get_iam_policy, {"resource": queue}),
            (c.set_iam_policy, {"request": {"resource": queue, "policy": {}}}),
            (c.test_iam_permissions, {"resource": queue, "permissions": ["x"]}),
            (c.batch_create_tasks, {"parent": queue, "requests": []}),
            (c.batch_delete_tasks, {"parent": queue, "names": [f"{queue}/tasks/t"]}),
            (c.get_cmek_config, {"name": f"{PARENT}/cmekConfig"}),
            (c.update_cmek_config, {"cmek_config": {"name": f"{PARENT}/cmekConfig"}}),
        ]
        for method, kwargs in unsupported:
            with self.assertRaises(exceptions.MethodNotImplemented, msg=method.__name__):
                yield call(method, **kwargs)
        with self.assertRaises(exceptions.NotFound):
            yield call(c.get_operation, {"name": f"{PARENT}/operations/op-1"})
        with self.assertRaises(exceptions.BadRequest) as raised:
            yield call(
                c.create_task,
                parent=queue,
                task={"http_request": {"url": self.receiver.url, "http_method": "HEAD"}},
            )
        self.assertIn("HEAD", str(raised.exception))
        code, _ = yield self.torque("/queues/jobs")
        self.assertEqual(code, 404)  # no task was stored: torque never heard of the queue

    @defer.inlineCallbacks
    def test_locations(self):
        yield self.start()
        c = self.client
        location = yield call(c.get_location, {"name": PARENT})
        self.assertEqual((location.name, location.location_id), (PARENT, LOCATION))
        for parent in (PARENT, f"projects/{PROJECT}/locations/europe-west1"):
            yield call(
                c.create_queue, parent=parent, queue={"name": f"{parent}/queues/q-{parent[-4:]}"}
            )
        locations = yield call(c.list_locations, {"name": f"projects/{PROJECT}"})
        shown = [loc.location_id for loc in locations.locations]
        self.assertEqual(shown, ["europe-west1", LOCATION])

    @defer.inlineCallbacks
    def test_the_api_token_guards_the_door(self):
        yield self.start()
        import treq

        response = yield treq.get(f"{self.node.url}/v2/{PARENT}/queues", persistent=False)
        self.assertEqual(response.code, 401)
        yield response.content()
        # On a 401, google-auth tries to refresh a token it can't refresh.
        with self.assertRaises(RefreshError):
            yield call(client_for(self.node, "wrong").list_queues, parent=PARENT)
        pager = yield call(self.client.list_queues, parent=PARENT)
        self.assertEqual((yield call(list, pager)), [])
