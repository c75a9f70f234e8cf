"""The supervisor of ``--workers N`` (torque.supervisor, torque.worker_pool):
which workers it starts, when it starts them again, how it stops them.  On a Clock, with a
process spawner that records what it was asked and lets the test end the
processes it "started"; the real processes are tests/test_workers_e2e.py's.
"""

from __future__ import annotations

import json
import os

from twisted.internet import error, reactor
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial import unittest

from torque.supervisor import worker_command
from torque.worker_pool import (
    MAX_BACKOFF,
    START_WINDOW,
    WorkerPool,
    describe_exit,
    restart_delay,
)


class FakeProcess:
    def __init__(self, pid: int):
        self.pid = pid
        self.signals: list[str] = []
        self.stdin_closed = False

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def closeStdin(self) -> None:
        self.stdin_closed = True


class FakeSpawner:
    """``reactor.spawnProcess``'s signature; remembers every call."""

    def __init__(self):
        self.calls: list[dict] = []
        self.fail_next: Exception | None = None

    def __call__(self, proto, executable, args, env=None, path=None, childFDs=None):
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        process = FakeProcess(1000 + len(self.calls))
        self.calls.append(
            {"protocol": proto, "process": process, "args": args, "env": env, "fds": childFDs}
        )
        proto.makeConnection(process)
        return process

    def indexes(self) -> list[int]:
        """The worker number of each process started, in order."""
        return [int(call["args"][3]) for call in self.calls]

    def end(self, n: int, code: int | None = 1, signal: int | None = None) -> None:
        """The n-th process started exits (``code``) or is killed (``signal``)."""
        call = self.calls[n]
        if code == 0 and signal is None:
            reason = error.ProcessDone(0)
        else:
            reason = error.ProcessTerminated(exitCode=code, signal=signal)
        call["protocol"].processEnded(Failure(reason))


def command(index: int):
    return "/usr/bin/python3", ["python3", "-m", "torque.worker", str(index), "3"]


class PoolTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.spawn = FakeSpawner()

    def pool(self, count: int = 3, **kw) -> WorkerPool:
        pool = WorkerPool(count, self.clock, self.spawn, command, child_fds={3: 7}, **kw)
        pool.start()
        return pool


class StartTests(PoolTestCase):
    def test_starts_one_process_per_worker_with_the_socket_as_descriptor_3(self):
        self.pool(3, env={"PROMETHEUS_MULTIPROC_DIR": "/tmp/m"})
        self.assertEqual(self.spawn.indexes(), [1, 2, 3])
        for call in self.spawn.calls:
            self.assertEqual(call["fds"], {0: "w", 1: "r", 2: "r", 3: 7})
            self.assertEqual(call["env"], {"PROMETHEUS_MULTIPROC_DIR": "/tmp/m"})
            self.assertTrue(call["process"].stdin_closed, "a worker's stdin is left open")

    def test_worker_command_passes_the_options_and_forces_one_worker(self):
        _, args = worker_command(["--queue", "a"], 3, "unix:///d/redis.sock")(2)
        self.assertEqual(
            args[1:],
            ["-m", "torque.worker", "2", "3", "--queue", "a",
             "--redis", "unix:///d/redis.sock", "--workers", "1"],
        )  # fmt: skip
        _, args = worker_command([], None, None)(1)
        self.assertEqual(args[1:], ["-m", "torque.worker", "1", "-", "--workers", "1"])


class RestartTests(PoolTestCase):
    def test_a_worker_killed_after_it_started_is_started_again_at_once(self):
        self.pool(2)
        self.clock.advance(START_WINDOW + 50)
        with capturedLogs() as events:
            self.spawn.end(1, code=None, signal=9)
        self.clock.advance(0)
        self.assertEqual(self.spawn.indexes(), [1, 2, 2], "worker 2 was not started again")
        said = [e for e in events if "was killed by SIGKILL" in _text(e)]
        self.assertEqual(len(said), 1, [_text(e) for e in events])
        self.assertEqual(said[0]["log_level"], LogLevel.error)

    def test_a_worker_dying_at_start_is_restarted_with_a_doubling_back_off(self):
        self.pool(1)
        started_at = [self.clock.seconds()]
        for expected_delay in (1, 2, 4, 8, 16, 32, 60, 60):
            self.clock.advance(0.5)  # it dies half a second after its start
            self.spawn.end(len(self.spawn.calls) - 1, code=1)
            self.clock.advance(expected_delay - 0.01)
            before = len(self.spawn.calls)
            self.clock.advance(0.01)
            self.assertEqual(len(self.spawn.calls), before + 1, f"not restarted {expected_delay}")
            self.assertEqual(
                before, len(started_at), f"restarted before {expected_delay} s had passed"
            )
            started_at.append(self.clock.seconds())

    def test_a_crash_loop_is_not_a_fork_bomb(self):
        pool = self.pool(4)
        for _ in range(600):  # ten minutes, every worker dying at once at each start
            for call in list(self.spawn.calls):
                if call["process"] in [w.process for w in pool.workers]:
                    self.spawn.end(self.spawn.calls.index(call), code=1)
            self.clock.advance(1)
        # 1+2+4+8+16+32 s, then one a minute: 6 + about 9 starts each.
        self.assertLessEqual(pool.spawned, 4 * 17)

    def test_the_back_off_ends_once_a_worker_has_run_a_while(self):
        pool = self.pool(1)
        for _ in range(3):  # three deaths at start: the next one would wait 8 s
            self.clock.advance(0.1)
            self.spawn.end(len(self.spawn.calls) - 1, code=1)
            self.clock.advance(MAX_BACKOFF)
        self.assertEqual(pool.workers[0].failures, 3)
        self.clock.advance(START_WINDOW)
        self.spawn.end(len(self.spawn.calls) - 1, code=None, signal=9)
        before = len(self.spawn.calls)
        self.clock.advance(0)
        self.assertEqual(len(self.spawn.calls), before + 1, "a worker that ran waited")
        self.assertEqual(pool.workers[0].failures, 0)

    def test_the_log_says_why_a_worker_died_at_start(self):
        self.pool(1)
        worker = self.spawn.calls[0]["protocol"]
        line = {"level": "critical", "text": "worker 1 could not start: no redis-server found"}
        with capturedLogs() as events:
            worker.outReceived(json.dumps(line).encode() + b"\n")
            self.clock.advance(0.2)
            self.spawn.end(0, code=1)
        texts = [_text(e) for e in events]
        relayed = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(
            [_text(e) for e in relayed],
            ["worker 1: worker 1 could not start: no redis-server found"],
        )
        died = [t for t in texts if "exited with code 1" in t]
        self.assertEqual(len(died), 1, texts)
        self.assertIn("at start (1 in a row): starting it again in 1 s", died[0])
        self.assertIn("its last words: worker 1 could not start: no redis-server found", died[0])

    def test_a_worker_that_cannot_be_spawned_is_tried_again_with_the_back_off(self):
        self.pool(1)
        self.spawn.fail_next = OSError(24, "Too many open files")
        self.clock.advance(START_WINDOW)
        with capturedLogs() as events:
            self.spawn.end(0, code=None, signal=9)
            self.clock.advance(0)  # the restart: spawning fails
        self.assertEqual(len(self.spawn.calls), 1)
        self.assertEqual(len([e for e in events if "could not be started" in _text(e)]), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(0.99)
        self.assertEqual(len(self.spawn.calls), 1, "tried again before the back-off")
        self.clock.advance(0.01)
        self.assertEqual(self.spawn.indexes(), [1, 1])

    def test_output_that_is_not_a_log_line_is_relayed_as_a_warning(self):
        self.pool(1)
        worker = self.spawn.calls[0]["protocol"]
        with capturedLogs() as events:
            worker.errReceived(b"Traceback (most recent call last):\n  File ")
            worker.errReceived(b'"x.py"\n')
        self.assertEqual(
            [(_text(e), e["log_level"]) for e in events],
            [
                ("worker 1: Traceback (most recent call last):", LogLevel.warn),
                ('worker 1:   File "x.py"', LogLevel.warn),
            ],
        )


class StopTests(PoolTestCase):
    def test_stop_terminates_every_worker_and_waits_for_all(self):
        pool = self.pool(3)
        stopped = pool.stop(timeout=90)
        self.assertEqual([c["process"].signals for c in self.spawn.calls], [["TERM"]] * 3)
        self.spawn.end(0, code=0)
        self.spawn.end(2, code=0)
        self.assertFalse(stopped.called, "stopped with a worker still draining")
        self.spawn.end(1, code=0)
        self.assertTrue(stopped.called)
        self.clock.advance(MAX_BACKOFF * 2)
        self.assertEqual(len(self.spawn.calls), 3, "a worker was started while stopping")

    def test_a_worker_that_does_not_stop_in_time_is_killed(self):
        pool = self.pool(2)
        stopped = pool.stop(timeout=90)
        self.spawn.end(0, code=0)
        self.clock.advance(89.9)
        self.assertEqual(self.spawn.calls[1]["process"].signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(self.spawn.calls[1]["process"].signals, ["TERM", "KILL"])
        self.spawn.end(1, code=None, signal=9)
        self.assertTrue(stopped.called)

    def test_stop_cancels_a_pending_restart(self):
        pool = self.pool(2)
        self.clock.advance(0.5)
        self.spawn.end(0, code=1)  # its restart is 1 s away
        stopped = pool.stop(timeout=90)
        self.spawn.end(1, code=0)
        self.assertTrue(stopped.called)
        self.clock.advance(10)
        self.assertEqual(len(self.spawn.calls), 2, "the pending restart still happened")


class PolicyTests(unittest.TestCase):
    def test_restart_delay(self):
        for ran_for, failures, expected in [
            (START_WINDOW, 0, 0.0),
            (3600.0, 0, 0.0),
            (0.1, 1, 1.0),
            (9.9, 2, 2.0),
            (0.1, 6, 32.0),
            (0.1, 7, MAX_BACKOFF),
            (0.1, 40, MAX_BACKOFF),
        ]:
            self.assertEqual(restart_delay(ran_for, failures), expected, (ran_for, failures))

    def test_describe_exit(self):
        self.assertEqual(describe_exit(error.ProcessTerminated(signal=9)), "was killed by SIGKILL")
        self.assertEqual(describe_exit(error.ProcessTerminated(exitCode=3)), "exited with code 3")
        self.assertEqual(describe_exit(error.ProcessDone(0)), "exited")


def _text(event) -> str:
    from twisted.logger import formatEvent

    return formatEvent(event)


class SupervisorServiceTests(unittest.TestCase):
    """The service around the pool, with the real reactor listening and a
    fake spawner."""

    def supervisor(self, *argv: str):
        from torque.options import Options
        from torque.supervisor import Supervisor

        options = Options({})
        options.parseOptions(["--redis", "redis://127.0.0.1:1/0", "--workers", "2", *argv])
        self.spawn = FakeSpawner()
        supervisor = Supervisor(options, reactor, spawn=self.spawn)
        supervisor.privilegedStartService()
        supervisor.startService()
        return supervisor

    def test_it_listens_once_accepts_nothing_itself_and_hands_the_socket_to_each_worker(self):
        import socket

        supervisor = self.supervisor("--port", "tcp:0:interface=127.0.0.1")
        port = supervisor.port
        self.assertNotIn(port, reactor.getReaders(), "the supervisor accepts connections")
        self.assertEqual(self.spawn.indexes(), [1, 2])
        for call in self.spawn.calls:
            self.assertEqual(call["fds"][3], port.fileno())
            self.assertEqual(call["args"][4], "3")
            self.assertEqual(call["env"]["PROMETHEUS_MULTIPROC_DIR"], supervisor.metrics_dir)
            self.assertEqual(call["args"][-2:], ["--workers", "1"])
        # The socket listens (a connection is queued by the kernel) but the
        # supervisor's reactor never accepts it: that is the workers' job.
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5):
            pass
        self.assertTrue(os.path.isdir(supervisor.metrics_dir))
        stopped = supervisor.stopService()
        self.assertEqual([c["process"].signals for c in self.spawn.calls], [["TERM"]] * 2)
        self.spawn.end(0, code=0)
        self.spawn.end(1, code=0)
        self.assertTrue(stopped.called)
        self.assertFalse(os.path.exists(supervisor.metrics_dir), "the metrics directory is left")

    def test_with_no_api_the_workers_get_no_socket(self):
        supervisor = self.supervisor("--port", "none")
        self.assertIsNone(supervisor.port)
        for call in self.spawn.calls:
            self.assertNotIn(3, call["fds"])
            self.assertEqual(call["args"][4], "-")
        stopped = supervisor.stopService()
        self.spawn.end(0, code=0)
        self.spawn.end(1, code=0)
        self.assertTrue(stopped.called)
