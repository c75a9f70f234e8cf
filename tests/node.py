"""End-to-end fixtures: a real HTTP receiver, and a real ``twistd`` node.

The node runs as a subprocess from a scratch directory (so ``twistd`` finds
the plugin through the installed package, not the checkout), against the
test run's redis-server under a fresh key prefix, or against its own
embedded Redis.  Tests wait with :func:`wait_for`, which polls a condition
with a generous bound instead of sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from typing import NamedTuple

import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.web import resource, server

from tests.redis_server import fresh_keys, redis_url

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What a node logs once its API listens (torque.site.ApiService).
LISTENING = re.compile(r"API listening on 127\.0\.0\.1:(\d+)")


@defer.inlineCallbacks
def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02, what: str = ""):
    """Poll ``predicate()`` until it is truthy; fail after ``timeout`` s.
    The predicate may return a Deferred (of a truthy value or not)."""
    deadline = time.monotonic() + timeout
    while True:
        value = yield defer.maybeDeferred(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what or predicate}")
        yield task.deferLater(reactor, interval, lambda: None)


def free_port() -> int:
    """A port free a moment ago, for a server that can't listen on port 0
    and say which port it got (redis-server, the README's receiver): it
    may be taken again before that server binds it.  A node listens on
    port 0 and reports its port (:meth:`Node.wait_healthy`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Received(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str]
    at: float  # wall-clock time of arrival


class Receiver(resource.Resource):
    """A web hook that records every request and answers scripted statuses
    per path (the last one repeats; 200 by default)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests: list[Received] = []
        self.scripts: dict[str, list[int]] = {}
        self.holding: set[str] = set()
        self.closing: set[str] = set()
        self.held: list = []
        self.url = ""

    def respond(self, path: str, *statuses: int) -> None:
        self.scripts[path] = list(statuses)

    def close_after(self, path: str) -> None:
        """Answer requests to ``path`` with ``Connection: close``, and close."""
        self.closing.add(path)

    def hold(self, path: str) -> None:
        """Hold requests to ``path`` open (a slow handler) until released."""
        self.holding.add(path)

    def release(self, status: int = 200) -> int:
        """Answer every held request that is still connected; how many."""
        answered = 0
        for request in self.held:
            if not request._disconnected and not request.finished:
                request.setResponseCode(status)
                request.write(b"ok")
                request.finish()
                answered += 1
        self.held = []
        self.holding.clear()
        return answered

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def render(self, request):
        body = request.content.read()
        path = request.path.decode()
        form = {}
        content_type = request.getHeader(b"content-type") or b""
        if content_type.startswith(b"application/x-www-form-urlencoded"):
            form = {k.decode(): v[0].decode() for k, v in request.args.items()}
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.requests.append(
            Received(request.method.decode(), path, headers, body, form, time.time())
        )
        if path in self.holding:
            self.held.append(request)
            return server.NOT_DONE_YET
        if path in self.closing:
            request.setHeader(b"Connection", b"close")
            request.channel.persistent = False
        statuses = self.scripts.get(path) or [200]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        request.setResponseCode(status)
        return b"ok" if status < 300 else b"handler says no"


class _TrackingSite(server.Site):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = set()

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        return channel

    def log(self, request):
        pass


def start_receiver(testcase) -> Receiver:
    """A real receiver on 127.0.0.1; closed (connections too) at cleanup."""
    receiver = Receiver()
    site = _TrackingSite(receiver)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    receiver.url = f"http://127.0.0.1:{port.getHost().port}"

    def close():
        for channel in site.channels:
            transport = getattr(channel, "transport", None)
            if transport is not None and transport.connected:
                transport.abortConnection()
        return port.stopListening()

    testcase.addCleanup(close)
    return receiver


class _NodeProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.output = bytearray()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.signal = reason.value.signal
        self.ended.callback(reason.value.exitCode)


class Node:
    """A ``twistd -n torque`` subprocess."""

    def __init__(self, workdir: str, argv: list[str], env: dict[str, str]):
        self.workdir = workdir
        self.argv = argv
        self.env = env
        #: the port its API got (it listens on port 0), known once it said so
        self.port: int | None = None
        self.url: str | None = None
        self.process = None
        self.exit_code = None

    def spawn(self) -> None:
        self.protocol = _NodeProcess()
        self.process = reactor.spawnProcess(
            self.protocol, self.argv[0], self.argv, env=self.env, path=self.workdir
        )
        self.protocol.ended.addCallback(self._ended)

    def _ended(self, code):
        self.exit_code = code
        self.exit_signal = self.protocol.signal
        self.process = None
        return code

    @property
    def output(self) -> str:
        return self.protocol.output.decode("utf-8", "replace")

    def listening_port(self) -> int | None:
        """The port the API reported listening on (``site.ApiService`` logs
        "API listening on 127.0.0.1:PORT"), once it has."""
        found = LISTENING.search(self.output)
        return int(found.group(1)) if found else None

    @defer.inlineCallbacks
    def wait_healthy(self, timeout: float = 30.0, health: int | None = 200):
        """Wait until the node's API listens and ``/health`` answers
        ``health``; or, with ``health=None`` (a node without an API), until
        it logs its start-up line.  Fails at once if the node exits."""

        def ready():
            if self.process is None:
                raise AssertionError(f"the node exited ({self.exit_code}):\n{self.output}")
            if health is None:
                return "torque node:" in self.output
            port = self.listening_port()
            if port is None:
                return False
            self.port, self.url = port, f"http://127.0.0.1:{port}"
            d = treq.get(self.url + "/health", persistent=False, timeout=timeout)
            d.addCallback(lambda response: response.content().addCallback(lambda _: response))
            return d.addCallback(lambda response: response.code == health)

        try:
            yield wait_for(ready, timeout=timeout, interval=0.05, what=f"/health to be {health}")
        except AssertionError as e:
            if "the node exited" in str(e):
                raise
            raise AssertionError(f"{e}; the node said:\n{self.output}") from None

    def signal(self, signum: int) -> defer.Deferred:
        """Send ``signum``; fires with the exit code once the node is gone."""
        if self.process is None:
            return defer.succeed(self.exit_code)
        ended = self.protocol.ended
        self.process.signalProcess(signum)
        waiter = defer.Deferred()
        ended.addBoth(lambda code: (waiter.callback(code), code)[1])
        return waiter

    def stop(self) -> defer.Deferred:
        """SIGTERM: a graceful stop.  Safe to call more than once."""
        return self.signal(signal.SIGTERM)

    def kill(self) -> defer.Deferred:
        return self.signal(signal.SIGKILL)

    @defer.inlineCallbacks
    def post(self, path: str = "/hooks/add", data=None, json_body=None, headers=None):
        """POST to the node; fires with ``(status, parsed JSON body, response)``."""
        kwargs = {"headers": headers, "persistent": False}
        if json_body is not None:
            kwargs["json"] = json_body
        else:
            kwargs["data"] = data
        response = yield treq.post(self.url + path, **kwargs)
        content = yield response.content()
        return response.code, json.loads(content) if content else None, response

    @defer.inlineCallbacks
    def get(self, path: str):
        response = yield treq.get(self.url + path, persistent=False)
        content = yield response.content()
        return response.code, json.loads(content) if content else None

    def has_status(self, task_id: str, status: str) -> defer.Deferred:
        """Fires with whether ``GET /tasks/<id>`` says ``status``."""
        d = self.get(f"/tasks/{task_id}")
        return d.addCallback(lambda answer: (answer[1] or {}).get("status") == status)

    @defer.inlineCallbacks
    def restart(self, timeout: float = 30.0):
        self.spawn()
        yield self.wait_healthy(timeout)
        return self


@defer.inlineCallbacks
def start_node(
    testcase,
    *args: str,
    env=None,
    embedded: bool = False,
    tac: bool = False,
    redis: str | None = None,
    prefix: str | None = None,
    health: int | None = 200,
):
    """Start a node and wait until ``/health`` answers 200.  Its API
    listens on port 0: ``node.port`` and ``node.url`` are where it got.

    :param args: extra ``twistd torque`` options.
    :param env: extra environment variables.
    :param embedded: run the node on its own embedded Redis in its workdir.
    :param tac: run ``twistd -y torque.tac``, configured by ``TORQUE_*``
        variables (``args`` must then be empty).
    :param redis: a Redis URL (default: the test run's redis-server).
    :param prefix: the Redis key prefix (default: a fresh one).
    :param health: the ``/health`` status to wait for (503: Redis is down).
    """
    workdir = os.path.abspath(testcase.mktemp())
    os.makedirs(workdir)
    prefix = prefix or fresh_keys().prefix
    common = ["-n", "--pidfile=", "--logfile=-"]
    # A node reads every TORQUE_* variable: none of the test run's own (a
    # TORQUE_API_TOKEN in the shell would put every node behind a token).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TORQUE_")}
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
    redis_url_ = None if embedded else (redis or redis_url())
    if tac:
        full_env.update(TORQUE_PORT="tcp:0:interface=127.0.0.1", TORQUE_REDIS_PREFIX=prefix)
        if redis_url_:
            full_env["TORQUE_REDIS_URL"] = redis_url_
        argv = [TWISTD, *common, "-y", os.path.join(ROOT, "torque.tac")]
    else:
        argv = [TWISTD, *common, "torque", "--port", "tcp:0:interface=127.0.0.1",
                "--redis-prefix", prefix, *args]  # fmt: skip
        if redis_url_:
            argv += ["--redis", redis_url_]
    node = Node(workdir, argv, full_env)
    node.prefix = prefix
    node.spawn()
    testcase.addCleanup(node.stop)
    yield node.wait_healthy(health=health)
    return node
