"""Redis Sentinel end to end: ``twistd`` nodes on ``redis+sentinel://``,
with a real primary, replica and three Sentinels (tests/sentinel_servers.py).

The failover test is the one the issue asks for: tasks added at a steady
rate through two nodes with ``--redis-wait-replicas 1``; the primary is
killed with ``kill -9``; Sentinel promotes the replica (the old primary,
restarted, comes back as its replica).  Every add answered 201 is
delivered, no task is delivered twice except attempts in flight at the
kill, adds answer 503 (never 500, never a hang) during the switch.  It
prints the timeline and the counts (and appends them to
``$TORQUE_FAULT_REPORT`` when set).
"""

import collections
import json
import os
import time

import treq
from twisted.internet import defer, task
from twisted.trial import unittest

from tests import sentinel_servers as servers
from tests.node import free_port, start_node, start_receiver, wait_for

if servers.redis_server_binary() is None:
    skip = "no redis-server on PATH"

# Adds per second per node, and how long to go on adding after the first
# 201 that follows the failover.
ADD_RATE = 20
AFTER_RECOVERY = 3.0
# An add must be answered within this (the store's 5 s timeout bounds
# every Redis call): past it, it hung.
ANSWER_BOUND = 8.0


class StartTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_an_unknown_master_name_stops_the_node_at_start(self):
        primary = servers.primary(self)
        yield primary.start()
        sentinel = servers.sentinel(self, primary, quorum=1)
        yield sentinel.start()
        url = servers.sentinel_url([sentinel], name="typo")
        with self.assertRaises(AssertionError) as caught:
            yield start_node(self, redis=url)
        message = str(caught.exception)
        self.assertIn("the node exited (1)", message)
        self.assertIn("knows no master named 'typo'", message)

    @defer.inlineCallbacks
    def test_no_sentinel_answering_the_node_starts_503_and_connects_when_one_appears(self):
        primary = servers.primary(self)
        yield primary.start()
        sentinel = servers.sentinel(self, primary, quorum=1)
        other = free_port()
        url = f"redis+sentinel://127.0.0.1:{sentinel.port},127.0.0.1:{other}/{servers.MASTER}/0"
        node = yield start_node(self, redis=url, health=503)

        def health_names_the_sentinels():
            d = node.get("/health")
            return d.addCallback(lambda answer: "tried" in (answer[1] or {}).get("error", ""))

        yield wait_for(health_names_the_sentinels, what="/health to name the Sentinels")
        status, body = yield node.get("/health")
        self.assertEqual(status, 503)
        self.assertIn(f"127.0.0.1:{sentinel.port},127.0.0.1:{other}", body["error"])
        status, body, _ = yield node.post(data={"url": "http://127.0.0.1:9/x"})
        self.assertEqual(status, 503, body)
        yield sentinel.start()
        yield node.wait_healthy(timeout=60)
        status, body, _ = yield node.post(data={"url": "http://127.0.0.1:9/x"})
        self.assertEqual(status, 201, body)


class FailoverTests(unittest.TestCase):
    """The issue's set-up: a primary and one replica.  With one replica and
    ``--redis-wait-replicas 1``, adds are refused from the kill until the
    old primary, restarted, is the new one's replica (restarted as one
    here; Sentinel would reconfigure it some 10 s after its return)."""

    timeout = 300
    replicas = 1

    @defer.inlineCallbacks
    def test_kill_9_of_the_primary_loses_no_accepted_task(self):
        primary = servers.primary(self)
        yield primary.start()
        replicas = [servers.replica(self, primary) for _ in range(self.replicas)]
        for replica in replicas:
            yield replica.start()
            yield servers.replicated(primary, replica)
        ports = {replica.port for replica in replicas}
        sentinels = [servers.sentinel(self, primary) for _ in range(3)]
        for s in sentinels:
            yield s.start()
        yield servers.watching(sentinels, replicas)
        url = servers.sentinel_url(sentinels)
        receiver = start_receiver(self)
        options = ("--redis-wait-replicas", "1")
        first = yield start_node(self, *options, redis=url)
        second = yield start_node(self, *options, redis=url, prefix=first.prefix)
        nodes = [first, second]

        answers = []  # (sent at, answered at, status, task id or None)
        start = time.time()

        @defer.inlineCallbacks
        def add(node):
            sent = time.time()
            try:
                response = yield treq.post(
                    node.url + "/hooks/add",
                    data={"url": receiver.url + "/hook"},
                    persistent=False,
                    timeout=30,
                )
                content = yield response.content()
                status = response.code
                body = json.loads(content) if content else {}
            except Exception as e:  # a hang or a dropped connection: recorded, asserted below
                status, body = f"no answer: {e!r}", {}
            answers.append((sent, time.time(), status, body.get("id")))

        adding = []
        loops = [task.LoopingCall(lambda n=n: adding.append(add(n))) for n in nodes]
        for loop in loops:
            loop.start(1.0 / ADD_RATE)
            self.addCleanup(lambda loop=loop: loop.running and loop.stop())

        def count(status):
            return sum(1 for a in answers if a[2] == status)

        yield wait_for(lambda: count(201) >= 3 * ADD_RATE, timeout=60, what="adds before")
        # Let the first ones be delivered: attempts in flight at the kill are
        # then the ones of a steady flow.
        primary.kill()
        killed = time.time()
        yield wait_for(
            lambda: servers.master_port(sentinels[0]) in ports,
            timeout=60,
            what="Sentinel to promote a replica",
        )
        promoted = time.time()
        # The old primary comes back as the new one's replica, as Sentinel
        # would make it (--redis-wait-replicas 1 needs one): in its config,
        # not by Sentinel, whose TILT mode on a loaded machine once held it
        # off for more than 90 s in CI.
        yield primary.start_as_replica_of(servers.master_port(sentinels[0]))
        restarted = time.time()

        seen = {}  # what the last look found, to say why if it never rejoins

        def rejoined():
            info = servers.ask(primary.port, "INFO", "replication") or ""
            if "master_link_status:up" in info:
                return True
            # Sentinel may have failed over once more meanwhile (down-after is
            # 1 s, and a loaded machine stalls): follow the primary it names
            # now, as Sentinel would reconfigure the old one.
            master = servers.master_port(sentinels[0])
            seen.update(info=info, master=master)
            if master is not None and f"master_port:{master}\r" not in info + "\r":
                servers.ask(primary.port, "REPLICAOF", "127.0.0.1", str(master))
            return False

        try:
            yield wait_for(rejoined, timeout=90, interval=0.1, what="the old primary to rejoin")
        except AssertionError as e:
            raise AssertionError(f"{e}; Sentinel's primary {seen.get('master')}, its INFO: "
                                 f"{seen.get('info')!r}") from None  # fmt: skip
        rejoined_at = time.time()

        def accepted_after(moment):
            return [a for a in answers if a[2] == 201 and a[0] > moment]

        yield wait_for(lambda: accepted_after(promoted), timeout=90, what="a 201 after promotion")
        recovered_at = min(a[1] for a in accepted_after(killed))
        yield wait_for(
            lambda: time.time() > recovered_at + AFTER_RECOVERY, timeout=30, what="adds after"
        )
        for loop in loops:
            loop.stop()
        yield defer.DeferredList(adding)

        accepted = {a[3] for a in answers if a[2] == 201}

        def arrivals():
            return collections.Counter(r.headers["x-torque-task-id"] for r in receiver.to("/hook"))

        yield wait_for(lambda: accepted <= set(arrivals()), timeout=90, what="every 201 delivered")
        delivered = arrivals()
        last_delivery = max(r.at for r in receiver.to("/hook"))
        first_arrival = {}
        for r in receiver.to("/hook"):
            first_arrival.setdefault(r.headers["x-torque-task-id"], r.at)
        duplicates = {i: n for i, n in delivered.items() if n > 1}
        statuses = collections.Counter(a[2] for a in answers)
        refused = [a for a in answers if a[2] == 503]
        timeline = {
            "kill": 0.0,
            "first 503": round(min(a[1] for a in refused) - killed, 2) if refused else None,
            "promotion": round(promoted - killed, 2),
            "old primary restarted": round(restarted - killed, 2),
            "old primary rejoined as replica": round(rejoined_at - killed, 2),
            "first 201 again": round(recovered_at - killed, 2),
            "last delivery": round(last_delivery - killed, 2),
        }
        counts = {
            "added": len(answers),
            "201": len(accepted),
            "503": len(refused),
            "delivered": len(delivered),
            "duplicates": sum(n - 1 for n in duplicates.values()),
            "longest answer s": round(max(a[1] - a[0] for a in answers), 2),
            "adds before the kill": sum(1 for a in answers if a[0] < killed),
            "started s before the kill": round(killed - start, 1),
        }
        print(f"\n{self.replicas} replica(s): failover timeline (s after kill -9): {timeline}")
        print(f"counts: {counts}")
        path = os.environ.get("TORQUE_FAULT_REPORT")
        if path:
            with open(path, "a") as out:
                scenario = f"sentinel failover, {self.replicas} replica(s)"
                out.write(json.dumps({"scenario": scenario, **timeline, **counts}))
                out.write("\n")

        self.assertEqual(set(statuses) - {201, 503}, set(), f"answers: {statuses}")
        self.assertLess(counts["longest answer s"], ANSWER_BOUND, "an add hung")
        self.assertTrue(refused, "no add was refused while there was no primary")
        self.assertEqual(accepted - set(delivered), set(), "accepted tasks lost")
        # A task delivered twice was in flight at the kill: delivered (its
        # first arrival) before or just as the primary died, its outcome
        # lost with it.
        late = {i: first_arrival[i] - killed for i in duplicates if first_arrival[i] > killed + 1}
        self.assertEqual(late, {}, "delivered twice, though first delivered after the kill")


class TwoReplicasFailoverTests(FailoverTests):
    """With two replicas, one is left to the new primary at once: adds are
    taken again as soon as it is in sync, without waiting for the old
    primary's return."""

    replicas = 2
