"""End to end: ``twistd`` nodes as subprocesses, a real receiver, real Redis.

What a user does: start a node, post tasks, watch the web hook get called.
"""

import json
import time

from twisted.internet import defer
from twisted.trial import unittest

from tests.node import start_node, start_receiver, wait_for
from tests.redis_server import redis_address
from torque.connection import connect_pool
from torque.keys import Keys

SEED_PARAMS = json.dumps({"foo": "somevalue", "baz": 99})


class DeliveryTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_seed_example_delivers_form_params(self):
        receiver = start_receiver(self)
        node = yield start_node(self)
        hook = receiver.url + "/hooks/do/foo"
        status, body, response = yield node.post(data={"url": hook, "params": SEED_PARAMS})
        self.assertEqual(status, 201)
        self.assertEqual(response.headers.getRawHeaders("location"), [f"/tasks/{body['id']}"])
        self.assertEqual((body["queue"], body["status"]), ("default", "scheduled"))
        yield wait_for(lambda: receiver.to("/hooks/do/foo"), what="the delivery")
        (got,) = receiver.requests
        self.assertEqual((got.method, got.body), ("POST", b"foo=somevalue&baz=99"))
        self.assertEqual(got.headers["x-torque-task-id"], body["id"])
        self.assertEqual(got.headers["x-torque-retry-count"], "0")
        self.assertTrue(got.headers["user-agent"].startswith("torque/"))
        # Sent by torque.fast_http (treq's ContentDecoderAgent asks for gzip).
        self.assertNotIn("accept-encoding", got.headers)
        yield wait_for(lambda: node.has_status(body["id"], "delivered"))

    @defer.inlineCallbacks
    def test_json_request_to_a_named_queue_and_the_alias(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--queue", "mail", "--queue", "default")
        status, _, _ = yield node.post(
            "/queues/mail/tasks", json_body={"url": receiver.url + "/a", "json": {"x": [1, 2]}}
        )
        self.assertEqual(status, 201)
        status, _, _ = yield node.post(
            "/add_task", data={"url": receiver.url + "/b", "params": '{"a": 1}'}
        )
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/a") and receiver.to("/b"))
        (a,) = receiver.to("/a")
        self.assertEqual(
            (a.headers["content-type"], a.body, a.headers["x-torque-queue"]),
            ("application/json", b'{"x":[1,2]}', "mail"),
        )
        self.assertEqual(receiver.to("/b")[0].form, {"a": "1"})

    @defer.inlineCallbacks
    def test_seed_params_through_json_the_queue_route_and_the_alias(self):
        """The seed's task, three more ways: a JSON body with ``params`` as
        an object, ``POST /queues/<q>/tasks``, and a form post to the
        ``/add_task`` alias; each delivers the seed's form body."""
        receiver = start_receiver(self)
        node = yield start_node(self)
        as_object = json.loads(SEED_PARAMS)
        adds = [
            ("/hooks/add", {"json_body": {"url": receiver.url + "/json", "params": as_object}}),
            # In a JSON body, params may also be the object as JSON text.
            (
                "/queues/default/tasks",
                {"json_body": {"url": receiver.url + "/route", "params": SEED_PARAMS}},
            ),
            ("/add_task", {"data": {"url": receiver.url + "/alias", "params": SEED_PARAMS}}),
        ]
        for path, kwargs in adds:
            status, body, response = yield node.post(path, **kwargs)
            self.assertEqual(status, 201, body)
            self.assertEqual(response.headers.getRawHeaders("location"), [f"/tasks/{body['id']}"])
        paths = ["/json", "/route", "/alias"]
        yield wait_for(lambda: all(receiver.to(p) for p in paths), what="three deliveries")
        for path in paths:
            (got,) = receiver.to(path)
            self.assertEqual((got.method, got.body), ("POST", b"foo=somevalue&baz=99"))
            self.assertEqual(got.headers["content-type"], "application/x-www-form-urlencoded")

    @defer.inlineCallbacks
    def test_delayed_task_arrives_after_its_delay(self):
        receiver = start_receiver(self)
        node = yield start_node(self)
        _, body, _ = yield node.post(data={"url": receiver.url + "/later", "delay": "1.5"})
        yield wait_for(lambda: receiver.requests)
        self.assertGreaterEqual(receiver.requests[0].at, body["due_at"])
        self.assertEqual(body["due_at"], body["created_at"] + 1.5)

    @defer.inlineCallbacks
    def test_rate_is_shared_by_two_nodes(self):
        """``--rate 5`` on two nodes of one queue: a second's worth goes at
        once, then five a second between them, so 15 tasks take 2 s at
        least (not 1 s, as two separate limits would allow)."""
        receiver = start_receiver(self)
        first = yield start_node(self, "--rate", "5")
        yield start_node(self, "--rate", "5", prefix=first.prefix)
        for _ in range(15):
            status, _, _ = yield first.post(data={"url": receiver.url + "/rated"})
            self.assertEqual(status, 201)
        yield wait_for(lambda: len(receiver.to("/rated")) == 15, what="15 deliveries")
        times = sorted(r.at for r in receiver.to("/rated"))
        self.assertGreaterEqual(times[-1] - times[0], 1.8)

    @defer.inlineCallbacks
    def test_flaky_handler_is_retried_until_it_succeeds(self):
        receiver = start_receiver(self)
        receiver.respond("/flaky", 503, 500, 200)
        node = yield start_node(self, "--min-task-delay", "0.2")
        _, body, _ = yield node.post(data={"url": receiver.url + "/flaky"})
        yield wait_for(lambda: len(receiver.to("/flaky")) == 3)
        counts = [r.headers["x-torque-retry-count"] for r in receiver.to("/flaky")]
        self.assertEqual(counts, ["0", "1", "2"])
        times = [r.at for r in receiver.to("/flaky")]
        self.assertGreaterEqual(times[1] - times[0], 0.2)
        self.assertGreaterEqual(times[2] - times[1], 0.4)
        yield wait_for(lambda: node.has_status(body["id"], "delivered"))

    @defer.inlineCallbacks
    def test_failing_handler_is_buried_after_max_task_errors(self):
        receiver = start_receiver(self)
        receiver.respond("/broken", 500)
        node = yield start_node(self, "--max-task-errors", "3", "--min-task-delay", "0.1")
        _, body, _ = yield node.post(data={"url": receiver.url + "/broken"})
        yield wait_for(lambda: node.has_status(body["id"], "dead"))
        self.assertEqual(len(receiver.to("/broken")), 3)
        _, task = yield node.get(f"/tasks/{body['id']}")
        self.assertEqual((task["attempts"], task["last_status"]), (3, 500))
        self.assertIn("gave up after 3 attempts", task["last_error"])

    @defer.inlineCallbacks
    def test_base_task_url_prefixes_paths(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--base-task-url", receiver.url)
        status, body, _ = yield node.post(data={"url": "/hooks/do/foo"})
        self.assertEqual((status, body["url"]), (201, receiver.url + "/hooks/do/foo"))
        yield wait_for(lambda: receiver.to("/hooks/do/foo"))

    @defer.inlineCallbacks
    def test_task_written_to_redis_by_hand_is_delivered(self):
        """README's recipe: HSET the task, ZADD its id, PUBLISH a wake-up."""
        receiver = start_receiver(self)
        node = yield start_node(self)
        redis = connect_pool(redis_address())
        self.addCleanup(redis.disconnect)
        keys = Keys(node.prefix)
        now = repr(time.time())
        yield redis.execute_command(
            "HSET", keys.task("default", "default.by-hand-1"),
            "url", receiver.url + "/by-hand", "body", "x=1", "created_at", now,
        )  # fmt: skip
        yield redis.execute_command("ZADD", keys.due("default"), now, "default.by-hand-1")
        yield redis.execute_command("PUBLISH", keys.wake("default"), now)
        yield wait_for(lambda: receiver.to("/by-hand"))
        self.assertEqual(receiver.to("/by-hand")[0].form, {"x": "1"})
        (delivery,) = receiver.to("/by-hand")
        self.assertEqual(delivery.headers["x-torque-task-id"], "default.by-hand-1")


class EntryPointTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_tac_file_runs_a_node_configured_by_the_environment(self):
        receiver = start_receiver(self)
        node = yield start_node(
            self, tac=True, env={"TORQUE_QUEUES": "jobs", "TORQUE_MAX_TASK_ERRORS": "1"}
        )
        receiver.respond("/tac", 500)
        _, body, _ = yield node.post("/queues/jobs/tasks", data={"url": receiver.url + "/tac"})
        yield wait_for(lambda: receiver.to("/tac"))
        yield wait_for(lambda: node.has_status(body["id"], "dead"))

    @defer.inlineCallbacks
    def test_embedded_redis_keeps_tasks_across_a_restart(self):
        receiver = start_receiver(self)
        node = yield start_node(self, embedded=True)
        _, body, _ = yield node.post(data={"url": receiver.url + "/kept", "delay": "3"})
        yield node.stop()
        self.assertEqual(receiver.requests, [])
        yield node.restart()
        yield wait_for(lambda: receiver.to("/kept"))
        self.assertEqual(receiver.to("/kept")[0].headers["x-torque-task-id"], body["id"])


class BadInputTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_bad_input_gets_a_json_error_naming_the_field(self):
        node = yield start_node(self)
        status, body, _ = yield node.post(data={"url": "/relative"})
        self.assertEqual((status, body["error"]["field"]), (400, "url"))
        status, body, _ = yield node.post(
            data=b"{not json", headers={"Content-Type": "application/json"}
        )
        self.assertEqual((status, body["error"]["code"]), (400, "invalid_json"))

    @defer.inlineCallbacks
    def test_max_body_is_configurable(self):
        node = yield start_node(self, "--max-body", "1000")
        status, body, _ = yield node.post(data={"url": "http://x.test/", "params": "x" * 1000})
        self.assertEqual((status, body["error"]["code"]), (413, "too_large"))
        self.assertIn("1000 bytes", body["error"]["message"])

    @defer.inlineCallbacks
    def test_body_over_one_mebibyte_gets_413(self):
        node = yield start_node(self)
        status, body, _ = yield node.post(data={"url": "http://x.test/", "params": "x" * 2**20})
        self.assertEqual((status, body["error"]["code"]), (413, "too_large"))
        status, _, _ = yield node.post(data={"url": "http://x.test/"})
        self.assertEqual(status, 201)

    @defer.inlineCallbacks
    def test_unreachable_redis_answers_503_never_201(self):
        node = yield start_node(self, redis="redis://127.0.0.1:1/0", health=503)
        started = time.monotonic()
        status, body, _ = yield node.post(data={"url": "http://x.test/"})
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        self.assertLess(time.monotonic() - started, 15)
