"""Secrets never leak, end to end: one node holding every kind of secret
(API tokens, a signing secret, a Redis password, a task's own
``Authorization`` header), made to log refusals, retries and a death, and
then read through every window it has: its log, ``/metrics``,
``GET /tasks/<id>``, the dead letters, the dashboard and ``/openapi.json``."""

import json

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.node import free_port, start_node, start_receiver, wait_for
from tests.test_redis_auth import run_redis
from torque.connection import connect_pool
from torque.embedded import find_redis_server
from torque.keys import Keys
from torque.redis_url import parse_redis_url

TOKEN = "tok-live-9f3b1c"
OLD_TOKEN = "tok-old-77aa01"
WRONG_TOKEN = "tok-guess-000000"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REDIS_PASSWORD = "redis-pw-5e6f"
TASK_SECRET = "Bearer task-secret-c0ffee"
SECRETS = (TOKEN, OLD_TOKEN, WRONG_TOKEN, SIGNING_SECRET[len("whsec_") :], REDIS_PASSWORD,
           "task-secret-c0ffee")  # fmt: skip


class SecretsTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_no_secret_reaches_the_log_metrics_api_or_dashboard(self):
        port = free_port()
        yield run_redis(self, find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                        "--requirepass", REDIS_PASSWORD, port=port)  # fmt: skip
        redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
        receiver = start_receiver(self)
        receiver.respond("/fails", 500)
        node = yield start_node(
            self,
            "--api-token", TOKEN, "--api-token", OLD_TOKEN,
            "--signing-secret", SIGNING_SECRET,
            "--min-task-delay", "0.1",
            redis=redis_url,
        )  # fmt: skip

        def call(method, path, token=TOKEN, **kwargs):
            headers = {"Authorization": f"Bearer {token}"}
            d = treq.request(method, node.url + path, headers=headers, persistent=False, **kwargs)
            return d.addCallback(lambda r: r.content().addCallback(lambda b: (r.code, b)))

        status, _ = yield call("GET", "/queues", token=WRONG_TOKEN)
        self.assertEqual(status, 401)
        task = {
            "url": receiver.url + "/fails",
            "headers": {"Authorization": TASK_SECRET},
            "max_errors": 2,
        }
        status, body = yield call("POST", "/hooks/add", json=task)
        self.assertEqual(status, 201)
        task_id = json.loads(body)["id"]

        @defer.inlineCallbacks
        def dead():
            _, body = yield call("GET", f"/tasks/{task_id}")
            return json.loads(body)["status"] == "dead"

        yield wait_for(dead, what="the task to die")
        # The task's own secret was delivered, signed, on both attempts.
        attempts = receiver.to("/fails")
        self.assertEqual([r.headers["authorization"] for r in attempts], [TASK_SECRET] * 2)
        self.assertTrue(all(r.headers["webhook-signature"] for r in attempts))

        windows = {"log": node.output}
        for path in ("/tasks/" + task_id, "/queues/default/dead", "/queues", "/metrics", "/",
                     "/openapi.json"):  # fmt: skip
            status, body = yield call("GET", path)
            self.assertEqual(status, 200, path)
            windows[path] = body.decode()
        self.assertIn("[redacted]", windows["/tasks/" + task_id])
        self.assertIn("[redacted]", windows["/queues/default/dead"])
        self.assertIn("missing or wrong API token", windows["log"], "the refusal is logged")
        self.assertIn(task_id, windows["log"], "the death is logged")
        for where, text in windows.items():
            for secret in SECRETS:
                self.assertNotIn(secret, text, f"a secret reached {where}")
        # Redis keeps the header (it is delivered), nothing else.
        redis = connect_pool(parse_redis_url(redis_url))
        self.addCleanup(redis.disconnect)
        stored = yield redis.hget(Keys(node.prefix).task("default", task_id), "headers")
        self.assertIn("task-secret-c0ffee", stored)
