"""A worker of ``--workers N`` (torque.worker), and the option itself:
the inherited socket, the log lines the supervisor relays, the metrics that
every worker shares, and ``--workers`` on the command line and in the
environment."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from twisted.python import usage
from twisted.trial import unittest

from torque.options import Options, cpu_count
from torque.tap import TorqueNode, makeService
from torque.worker import AdoptedEndpoint, line_observer, parse_argv


def parse(*argv: str, environ=None) -> Options:
    options = Options(environ or {})
    options.parseOptions(list(argv))
    return options


class WorkersOptionTests(unittest.TestCase):
    def test_one_worker_by_default_is_todays_single_process(self):
        options = parse()
        self.assertEqual(options["workers"], 1)
        self.assertIsInstance(makeService(options), TorqueNode)

    def test_a_number_auto_and_the_environment(self):
        self.assertEqual(parse("--workers", "4")["workers"], 4)
        self.assertEqual(parse("--workers", "auto")["workers"], cpu_count())
        self.assertEqual(parse(environ={"TORQUE_WORKERS": "3"})["workers"], 3)
        self.assertEqual(parse("--workers", "1", environ={"TORQUE_WORKERS": "3"})["workers"], 1)

    def test_more_than_one_makes_a_supervisor(self):
        from torque.supervisor import Supervisor

        self.assertIsInstance(makeService(parse("--workers", "2")), Supervisor)

    def test_bad_values_name_the_option(self):
        for argv, environ, expected in [
            (["--workers", "0"], {}, "--workers must be at least 1 (or 'auto')"),
            (["--workers", "many"], {}, "--workers: 'many' is not a whole number or 'auto'"),
            ([], {"TORQUE_WORKERS": "-2"}, "TORQUE_WORKERS must be at least 1 (or 'auto')"),
            (
                ["--workers", "2", "--port", "ssl:8443:privateKey=k.pem"],
                {},
                "--workers: workers can't share a TLS port (ssl:)",
            ),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                parse(*argv, environ=environ)
            self.assertIn(expected, str(caught.exception), argv)

    def test_the_command_line_is_kept_for_the_workers(self):
        self.assertEqual(
            parse("--queue", "a", "--workers", "2").argv, ["--queue", "a", "--workers", "2"]
        )


class ArgvTests(unittest.TestCase):
    def test_parse_argv(self):
        self.assertEqual(parse_argv(["2", "3", "--queue", "a"]), (2, 3, ["--queue", "a"]))
        self.assertEqual(parse_argv(["1", "-"]), (1, None, []))
        self.assertRaises(SystemExit, parse_argv, ["1"])


class LineObserverTests(unittest.TestCase):
    def test_one_json_line_per_event_with_its_level_and_traceback(self):
        out = io.StringIO()
        log = Logger(observer=line_observer(out))
        log.warn("queue {queue}: slow", queue="a")
        log.debug("not written: below info")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("it broke")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        first, second = (json.loads(line) for line in lines)
        self.assertEqual(first, {"level": "warn", "text": "queue a: slow"})
        self.assertEqual(second["level"], "critical")
        self.assertTrue(second["text"].startswith("it broke\n"), second["text"])
        self.assertIn("ZeroDivisionError", second["text"])


class _Hello(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")
        self.transport.loseConnection()


class AdoptedEndpointTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_serves_a_socket_another_process_opened_and_closes_the_inherited_one(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        fd = listener.detach()  # as a worker finds it: a bare descriptor
        port = yield AdoptedEndpoint(reactor, fd).listen(protocol.Factory.forProtocol(_Hello))
        self.addCleanup(port.stopListening)
        self.assertRaises(OSError, os.fstat, fd)  # adopted as a copy; this one closed
        address = port.getHost()
        got = yield _read_all(address.host, address.port)
        self.assertEqual(got, b"hello")


@defer.inlineCallbacks
def _read_all(host: str, port: int):
    received = bytearray()
    done = defer.Deferred()

    class Reader(protocol.Protocol):
        def dataReceived(self, data):
            received.extend(data)

        def connectionLost(self, reason):
            done.callback(bytes(received))

    yield protocol.ClientCreator(reactor, Reader).connectTCP(host, port)
    return (yield done)


#: A process standing for one worker: counts ``n`` adds and one delivery
#: with torque's Metrics, in multiprocess mode.
_COUNTING = textwrap.dedent(
    """
    import sys
    from twisted.internet.task import Clock
    from torque.metrics import Metrics
    metrics = Metrics(Clock(), multiprocess_dir=sys.argv[1])
    for _ in range(int(sys.argv[2])):
        metrics.task_added("q")
    """
)
_RENDERING = textwrap.dedent(
    """
    import sys
    from twisted.internet.task import Clock
    from torque.metrics import Metrics
    sys.stdout.write(Metrics(Clock(), multiprocess_dir=sys.argv[1]).render([]).decode())
    """
)


class MultiprocessMetricsTests(unittest.TestCase):
    def run_python(self, code: str, *args: str, multiproc_dir: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        if multiproc_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_any_workers_metrics_sum_every_workers_counters(self):
        directory = tempfile.mkdtemp(prefix="torque-metrics-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.run_python(_COUNTING, directory, "3", multiproc_dir=directory)
        self.run_python(_COUNTING, directory, "4", multiproc_dir=directory)
        text = self.run_python(_RENDERING, directory, multiproc_dir=directory)
        self.assertIn('torque_tasks_added_total{queue="q"} 7.0', text)
        self.assertIn("torque_redis_up 1.0", text)

    def test_without_the_variable_at_start_it_refuses_rather_than_count_alone(self):
        directory = tempfile.mkdtemp(prefix="torque-metrics-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        done = subprocess.run(
            [sys.executable, "-c", _COUNTING, directory, "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("PROMETHEUS_MULTIPROC_DIR", done.stderr)
