"""End to end: the official ``qstash`` Python SDK, unmodified, drives a real
node's QStash door (every route it has), and its ``Receiver`` verifies a
real delivery's signature.

The SDK is blocking (httpx): its calls run in a thread (``deferToThread``),
so the reactor, and the receiver on it, keep running meanwhile.
"""

from __future__ import annotations

import base64
import functools
import json
import os

import treq
from qstash import QStash, Receiver
from qstash.errors import QStashError, SignatureError
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.node import ROOT, start_node, start_receiver, wait_for

CURRENT = "sig_current_for_tests_0123456789"
NEXT = "sig_next_for_tests_0123456789abc"
WRONG = "sig_a_key_torque_does_not_sign_with_"


class QStashSDKTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.receiver = start_receiver(self)
        self.node = yield start_node(
            self,
            "--qstash-current-signing-key",
            CURRENT,
            "--qstash-next-signing-key",
            NEXT,
            "--min-task-delay",
            "0.2",
        )
        self.client = QStash("any-token", base_url=self.node.url)

    def call(self, fn, /, *args, **kwargs):
        return deferToThread(fn, *args, **kwargs)

    def delivered_to(self, path: str, count: int = 1):
        return wait_for(
            lambda: len(self.receiver.to(path)) >= count and self.receiver.to(path),
            what=f"{count} deliveries to {path}",
        )

    @defer.inlineCallbacks
    def test_a_published_message_is_delivered_signed_and_the_receiver_verifies_it(self):
        url = self.receiver.url + "/hook?x=1&y=2"
        published = yield self.call(
            self.client.message.publish_json,
            url=url,
            body={"hello": "world"},
            headers={"X-Custom": "v"},
        )
        # A torque id carries its queue: <queue>.msg_<token> (QStash's own: msg_<token>).
        self.assertTrue(published.message_id.startswith("default.msg_"))
        (got,) = yield self.delivered_to("/hook")
        print("\nQStash delivery headers as the receiver saw them:", json.dumps(got.headers))
        self.assertEqual(got.headers["upstash-message-id"], published.message_id)
        self.assertEqual(got.headers["upstash-retried"], "0")
        self.assertEqual(got.headers["user-agent"], "Upstash-QStash")
        self.assertEqual(got.headers["x-custom"], "v")
        self.assertEqual(got.headers["content-type"], "application/json")
        self.assertEqual(json.loads(got.body), {"hello": "world"})
        keys = yield self.call(self.client.signing_key.get)
        self.assertEqual((keys.current, keys.next), (CURRENT, NEXT))
        receiver = Receiver(current_signing_key=keys.current, next_signing_key=keys.next)
        signature = got.headers["upstash-signature"]
        body = got.body.decode()
        receiver.verify(signature=signature, body=body, url=url)  # raises if invalid
        wrong = Receiver(current_signing_key=WRONG + "1", next_signing_key=WRONG + "2")
        with self.assertRaises(SignatureError):
            wrong.verify(signature=signature, body=body, url=url)
        with self.assertRaises(SignatureError):
            receiver.verify(signature=signature, body=body + " ", url=url)
        # One system: the message is an ordinary torque task, counted.
        _, task = yield self.node.get(f"/tasks/{published.message_id}")
        self.assertEqual(task["status"], "delivered")
        self.assertEqual(task["url"], url)
        response = yield treq.get(self.node.url + "/metrics", persistent=False)
        metrics = (yield response.text()).splitlines()
        self.assertIn('torque_tasks_added_total{queue="default"} 1.0', metrics)
        self.assertIn('torque_deliveries_total{outcome="delivered",queue="default"} 1.0', metrics)

    @defer.inlineCallbacks
    def test_messages_get_cancel_cancel_many_and_cancel_all(self):
        url = self.receiver.url + "/later"
        published = []
        for n in range(4):
            result = yield self.call(
                self.client.message.publish,
                url=url,
                body=f"body {n}",
                content_type="text/plain",
                method="PUT",
                delay="1h",
                retries=2,
                timeout="30s",
                headers={"X-N": str(n)},
                callback=self.receiver.url + "/cb",
                failure_callback=self.receiver.url + "/failed",
                label="nightly",
            )
            published.append(result.message_id)
        got = yield self.call(self.client.message.get, published[0])
        self.assertEqual(got.message_id, published[0])
        self.assertEqual(got.url, url)
        self.assertEqual(got.method, "PUT")
        self.assertEqual(got.body, "body 0")
        self.assertEqual(got.headers, {"X-N": ["0"], "Content-Type": ["text/plain"]})
        self.assertEqual(got.max_retries, 2)
        self.assertEqual(got.callback, self.receiver.url + "/cb")
        self.assertEqual(got.failure_callback, self.receiver.url + "/failed")
        self.assertEqual(got.label, "nightly")
        self.assertEqual(got.queue, "default")
        # The delay: due an hour after it was created, in milliseconds.
        self.assertAlmostEqual(got.not_before - got.created_at, 3_600_000, delta=5)
        _, task = yield self.node.get(f"/tasks/{published[0]}")
        self.assertEqual((task["timeout"], task["max_errors"]), (30.0, 3))

        yield self.call(self.client.message.cancel, published[0])
        with self.assertRaises(QStashError) as raised:
            yield self.call(self.client.message.get, published[0])
        self.assertIn("404", str(raised.exception))
        cancelled = yield self.call(
            self.client.message.cancel_many, [published[1], "msg_no_such_message"]
        )
        self.assertEqual(cancelled, 1)
        # A task added through torque's own API is not a QStash message:
        # cancel_all leaves it.
        status, own, _ = yield self.node.post(data={"url": url, "delay": "3600"})
        self.assertEqual(status, 201, own)
        cancelled = yield self.call(self.client.message.cancel_all)
        self.assertEqual(cancelled, 2)
        self.assertTrue((yield self.node.has_status(own["id"], "scheduled")))
        self.assertEqual(self.receiver.to("/later"), [])

    @defer.inlineCallbacks
    def test_enqueue_and_queues_upsert_get_list_pause_resume_delete(self):
        queue = self.client.queue
        yield self.call(queue.upsert, "emails", parallelism=2)
        got = yield self.call(queue.get, "emails")
        self.assertEqual((got.name, got.parallelism, got.paused, got.lag), ("emails", 2, False, 0))
        yield self.call(queue.pause, "emails")
        url = self.receiver.url + "/email"
        sent = yield self.call(
            self.client.message.enqueue_json, queue="emails", url=url, body={"to": "a@b.c"}
        )
        # Enqueueing creates a queue too, with QStash's parallelism of 1.
        yield self.call(self.client.message.enqueue, queue="sms", url=url, body="hi")
        listed = yield self.call(queue.list)
        self.assertEqual([(q.name, q.parallelism) for q in listed], [("emails", 2), ("sms", 1)])
        got = yield self.call(queue.get, "emails")
        self.assertEqual((got.paused, got.lag), (True, 1))
        # One system: torque's own API shows the queue paused, the task waiting.
        _, shown = yield self.node.get("/queues/emails")
        self.assertIs(shown["paused"], True)
        self.assertTrue((yield self.node.has_status(sent.message_id, "scheduled")))
        yield self.call(queue.resume, "emails")
        yield self.delivered_to("/email", 2)
        yield wait_for(lambda: self.node.has_status(sent.message_id, "delivered"))
        yield self.call(queue.delete, "emails")
        listed = yield self.call(queue.list)
        self.assertEqual([q.name for q in listed], ["sms"])
        with self.assertRaises(QStashError) as raised:
            yield self.call(queue.get, "emails")
        self.assertIn("404", str(raised.exception))

    @defer.inlineCallbacks
    def test_a_queues_parallelism_is_its_concurrency_on_every_node(self):
        yield self.call(self.client.queue.upsert, "slow", parallelism=2, paused=True)
        self.receiver.hold("/slow")
        url = self.receiver.url + "/slow"
        for n in range(3):
            yield self.call(self.client.message.enqueue, queue="slow", url=url, body=str(n))
        yield self.call(self.client.queue.resume, "slow")

        @defer.inlineCallbacks
        def two_running_one_waiting():
            _, shown = yield self.node.get("/queues/slow")
            return (shown["running"], shown["due"]) == (2, 1) and len(self.receiver.held) == 2

        yield wait_for(two_running_one_waiting, what="two held and one waiting")
        self.assertEqual(self.receiver.release(), 2)
        yield wait_for(lambda: len(self.receiver.to("/slow")) == 3, what="the third")

    @defer.inlineCallbacks
    def test_batch_and_batch_json(self):
        from qstash.message import BatchJsonRequest, BatchRequest

        results = yield self.call(
            self.client.message.batch_json,
            [
                BatchJsonRequest(url=self.receiver.url + "/a", body={"n": 1}, delay="0s"),
                BatchJsonRequest(url=self.receiver.url + "/b", body={"n": 2}, queue="batched"),
            ],
        )
        self.assertEqual(len(results), 2)
        raw = yield self.call(
            self.client.message.batch,
            [BatchRequest(url=self.receiver.url + "/c", body="plain", method="PUT")],
        )
        (a,) = yield self.delivered_to("/a")
        (b,) = yield self.delivered_to("/b")
        (c,) = yield self.delivered_to("/c")
        self.assertEqual(json.loads(a.body), {"n": 1})
        self.assertEqual(b.headers["upstash-message-id"], results[1].message_id)
        self.assertEqual((c.method, c.body), ("PUT", b"plain"))
        self.assertEqual(c.headers["upstash-message-id"], raw[0].message_id)
        _, task = yield self.node.get(f"/tasks/{results[1].message_id}")
        self.assertEqual(task["queue"], "batched")

    @defer.inlineCallbacks
    def test_a_message_out_of_retries_is_in_the_dlq_to_get_list_retry_and_delete(self):
        self.receiver.respond("/down", 500)
        url = self.receiver.url + "/down"
        ids = []
        for n in range(3):
            result = yield self.call(self.client.message.publish, url=url, body=f"{n}", retries=0)
            ids.append(result.message_id)
        for message_id in ids:
            yield wait_for(lambda i=message_id: self.node.has_status(i, "dead"), what=message_id)
        listed = yield self.call(self.client.dlq.list)
        self.assertEqual(sorted(m.dlq_id for m in listed.messages), sorted(ids))
        self.assertEqual({m.response_status for m in listed.messages}, {500})
        # Paged with a cursor, and filtered.
        first = yield self.call(self.client.dlq.list, count=2)
        self.assertEqual(len(first.messages), 2)
        rest = yield self.call(self.client.dlq.list, cursor=first.cursor, count=2)
        self.assertEqual(len(rest.messages), 1)
        self.assertIsNone(rest.cursor)
        paged = [m.dlq_id for m in first.messages + rest.messages]
        self.assertEqual(sorted(paged), sorted(ids))
        # One system: torque's own dead letters of the queue are the same.
        _, dead = yield self.node.get("/queues/default/dead")
        self.assertEqual(sorted(t["id"] for t in dead["tasks"]), sorted(ids))
        only = yield self.call(self.client.dlq.list, filter={"message_id": ids[0]})
        self.assertEqual([m.message_id for m in only.messages], [ids[0]])
        got = yield self.call(self.client.dlq.get, ids[0])
        self.assertEqual((got.message_id, got.url, got.response_status), (ids[0], url, 500))
        yield self.call(self.client.dlq.delete, ids[0])
        with self.assertRaises(QStashError):
            yield self.call(self.client.dlq.get, ids[0])
        # Retry is the JS SDK's (POST /v2/dlq/retry?dlqIds=…): raw HTTP here.
        self.receiver.respond("/down", 200)
        response = yield treq.post(
            f"{self.node.url}/v2/dlq/retry?dlqIds={ids[1]}", persistent=False
        )
        self.assertEqual(response.code, 200)
        answer = yield response.json()
        self.assertEqual(answer, {"responses": [{"messageId": ids[1]}]})
        yield wait_for(lambda: self.node.has_status(ids[1], "delivered"))
        deleted = yield self.call(self.client.dlq.delete_many, [ids[2], ids[1]])
        self.assertEqual(deleted, 1)  # ids[1] left the DLQ when it was retried
        listed = yield self.call(self.client.dlq.list)
        self.assertEqual(listed.messages, [])

    @defer.inlineCallbacks
    def test_deduplication_by_id_and_by_content(self):
        url = self.receiver.url + "/once"
        kwargs = {"url": url, "body": "same", "delay": "1h"}
        first = yield self.call(self.client.message.publish, deduplication_id="d-1", **kwargs)
        again = yield self.call(self.client.message.publish, deduplication_id="d-1", **kwargs)
        self.assertEqual(again.message_id, first.message_id)
        self.assertTrue(again.deduplicated)
        other = yield self.call(self.client.message.publish, deduplication_id="d-2", **kwargs)
        self.assertNotEqual(other.message_id, first.message_id)
        by_content = []
        for _ in range(2):
            result = yield self.call(
                self.client.message.publish, content_based_deduplication=True, **kwargs
            )
            by_content.append(result)
        self.assertEqual(by_content[0].message_id, by_content[1].message_id)
        self.assertTrue(by_content[1].deduplicated)
        changed = yield self.call(
            self.client.message.publish,
            content_based_deduplication=True,
            **{**kwargs, "body": "other"},
        )
        self.assertNotEqual(changed.message_id, by_content[0].message_id)

    @defer.inlineCallbacks
    def test_what_torque_does_not_support_is_refused_with_a_400_naming_it(self):
        url = self.receiver.url + "/never"
        cases = [
            ({"retry_delay": "1000 * retried"}, "Upstash-Retry-Delay"),
            ({"flow_control": {"key": "k", "parallelism": 2}}, "Upstash-Flow-Control-Key"),
        ]
        for extra, named in cases:
            with self.assertRaises(QStashError) as raised:
                yield self.call(self.client.message.publish, url=url, body="x", **extra)
            self.assertIn("400", str(raised.exception))
            self.assertIn(named, str(raised.exception))
        with self.assertRaises(QStashError) as raised:
            yield self.call(self.client.message.publish, url_group="my-group", body="x")
        self.assertIn("URL groups", str(raised.exception))
        # Every SDK call torque has no meaning for is a 400 saying what.
        c = self.client
        calls = [
            (c.schedule.list, (), "schedules"),
            (c.schedule.get, ("scd_1",), "schedules"),
            (
                functools.partial(c.schedule.create, destination=url, cron="* * * * *"),
                (),
                "schedules",
            ),
            (c.url_group.list, (), "URL groups"),
            (c.url_group.get, ("g",), "URL groups"),
            (c.url_group.delete, ("g",), "URL groups"),
            (c.log.list, (), "events"),
            (c.flow_control.get, ("k",), "flow control"),
            (c.flow_control.get_global_parallelism, (), "flow control"),
        ]
        for fn, args, what in calls:
            with self.assertRaises(QStashError, msg=repr(fn)) as raised:
                yield self.call(fn, *args)
            self.assertIn("status: 400", str(raised.exception), repr(fn))
            self.assertIn(f"{what}", str(raised.exception))
            self.assertIn("are not supported", str(raised.exception))
        self.assertEqual(self.receiver.requests, [])

    @defer.inlineCallbacks
    def test_callbacks_after_each_attempt_and_a_failure_callback_once_dead(self):
        self.receiver.respond("/flaky", 503, 200)
        self.receiver.respond("/down", 500)
        common = {
            "body": "payload",
            "callback": self.receiver.url + "/cb",
            "failure_callback": self.receiver.url + "/failed",
            "callback_headers": {"X-Cb": "1"},
            "failure_callback_headers": {"X-Fcb": "2"},
        }
        flaky = yield self.call(
            self.client.message.publish, url=self.receiver.url + "/flaky", retries=2, **common
        )
        down = yield self.call(
            self.client.message.publish, url=self.receiver.url + "/down", retries=0, **common
        )
        callbacks = yield self.delivered_to("/cb", 3)
        (failed,) = yield self.delivered_to("/failed")
        bodies = [json.loads(c.body) for c in callbacks]
        by_source = sorted((b["sourceMessageId"], b["retried"], b["status"]) for b in bodies)
        expected = [(down.message_id, 0, 500), (flaky.message_id, 0, 503)]
        expected.append((flaky.message_id, 1, 200))
        self.assertEqual(by_source, sorted(expected))
        for callback in callbacks:
            self.assertEqual(callback.headers["x-cb"], "1")
            self.assertIn("upstash-signature", callback.headers)
        body = json.loads(failed.body)
        self.assertEqual((body["sourceMessageId"], body["status"]), (down.message_id, 500))
        self.assertEqual(base64.b64decode(body["sourceBody"]), b"payload")
        self.assertEqual(base64.b64decode(body["body"]), b"handler says no")
        self.assertEqual(failed.headers["x-fcb"], "2")
        yield wait_for(lambda: self.node.has_status(flaky.message_id, "delivered"))
        self.assertEqual(len(self.receiver.to("/failed")), 1)
        attempts = [r.headers["upstash-retried"] for r in self.receiver.to("/flaky")]
        self.assertEqual(attempts, ["0", "1"])


def docs_snippet() -> str:
    """The Python example of docs/coming-from-qstash.rst."""
    with open(os.path.join(ROOT, "docs", "coming-from-qstash.rst"), encoding="utf-8") as f:
        text = f.read()
    block = text.split(".. code-block:: python\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


class QStashDocsTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_the_docs_example_works(self):
        receiver = start_receiver(self)
        node = yield start_node(self)
        code = docs_snippet()
        self.assertIn("publish_json", code)
        code = code.replace("http://127.0.0.1:8090", node.url)
        code = code.replace("http://127.0.0.1:8000", receiver.url)
        names: dict = {}
        yield deferToThread(exec, code, names)
        (got,) = yield wait_for(lambda: receiver.to("/hooks/hello"), timeout=60)
        self.assertEqual(got.headers["upstash-message-id"], names["result"].message_id)
        names["receiver"].verify(
            signature=got.headers["upstash-signature"],
            body=got.body.decode(),
            url=receiver.url + "/hooks/hello?lang=en",
        )


class QStashTokenTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_the_api_token_is_the_sdks_token(self):
        receiver = start_receiver(self)
        node = yield start_node(self, "--api-token", "s3cret")
        url = receiver.url + "/hook"
        wrong = QStash("not-the-token", base_url=node.url)
        with self.assertRaises(QStashError) as raised:
            yield deferToThread(wrong.message.publish_json, url=url, body={})
        self.assertIn("401", str(raised.exception))
        right = QStash("s3cret", base_url=node.url)
        published = yield deferToThread(right.message.publish_json, url=url, body={})
        (got,) = yield wait_for(lambda: receiver.to("/hook"))
        self.assertEqual(got.headers["upstash-message-id"], published.message_id)
        # Keys generated once, kept in Redis: another node on it serves the same.
        keys = yield deferToThread(right.signing_key.get)
        self.assertTrue(keys.current.startswith("sig_") and keys.next.startswith("sig_"))
        self.assertNotEqual(keys.current, keys.next)
        other = yield start_node(self, "--api-token", "s3cret", prefix=node.prefix)
        again = yield deferToThread(QStash("s3cret", base_url=other.url).signing_key.get)
        self.assertEqual((again.current, again.next), (keys.current, keys.next))
        Receiver(keys.current, keys.next).verify(
            signature=got.headers["upstash-signature"], body=got.body.decode(), url=url
        )
