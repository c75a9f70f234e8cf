"""The composition root: command-line options, and the node built from them.

``twistd -n torque [options]`` and ``twistd -y torque.tac`` both come here,
and both read the ``TORQUE_*`` environment variables with the same
:class:`Options` (the command line, when there is one, winning), so the two
entry points can't drift apart.  This is the only module that touches the
global reactor.
"""

from __future__ import annotations

import gc
import os
import secrets
import socket
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from twisted.application.service import MultiService
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage

from torque import __version__
from torque.connection import (
    RedisAddress,
    WakeSubscriber,
    connect_pool,
    glob_escape,
    parse_redis_url,
)
from torque.guarded import GuardedEndpoints, ReportingEndpoint
from torque.keys import Keys
from torque.retry import RetryPolicy
from torque.signing import Signer, decode_secret
from torque.targets import TargetGuard, TargetRules
from torque.task import QUEUE_RE

log = Logger()

# Seconds a scheduler of a '*' node stays without a wake-up, its queue empty,
# before it is retired (it polls Redis every --poll-interval meanwhile).
RETIRE_AFTER = 60.0


#: ``TORQUE_*`` variables that configure something else than a node: the
#: clients' ``TORQUE_URL`` and the test and benchmark tools' own.  Any other
#: ``TORQUE_*`` variable must name an option.
OTHER_VARIABLES = frozenset({"TORQUE_URL", "TORQUE_FAULT_REPORT", "TORQUE_SCREENSHOT"})
OTHER_PREFIXES = ("TORQUE_BENCH_",)
#: Spellings of a variable beside ``TORQUE_<OPTION>``.
ALIASES = {"TORQUE_QUEUES": "queue", "TORQUE_REDIS_URL": "redis"}
#: Options given once per value; from the environment, comma-separated.
REPEATABLE = {
    "queue": "queues",
    "api-token": "api-tokens",
    "signing-secret": "signing-secrets",
    "allow-target": "allow-targets",
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


class Options(usage.Options):
    """Options of ``twistd torque``, from the command line and from
    ``TORQUE_*`` environment variables (the command line wins).

    :param environ: where the variables are read; ``os.environ`` by default
        (``twistd`` makes this class with no arguments).
    """

    synopsis = "[options]"
    longdesc = (
        "Run a torque node: an HTTP API that takes tasks (POST /hooks/add) and a "
        "scheduler for each --queue that makes their web-hook requests when due. "
        "Without --redis, a private redis-server is started, keeping its data in "
        "--data-dir.  Every option can also be given as an environment variable: "
        "TORQUE_ and its name in capitals, with _ for - (TORQUE_API_TOKEN, "
        "TORQUE_MAX_TASK_ERRORS); repeatable ones comma-separated.  The command line "
        "wins."
    )
    optParameters = [
        ["port", "p", "8090",
         "where the API listens: a port number listens on 127.0.0.1 only; a Twisted "
         "endpoint string is taken as it is (tcp:8090 for every interface, "
         "unix:/run/torque.sock); 'none' for no API"],
        ["redis", None, None,
         "Redis URL: redis://[:password@]host:port/db, rediss://..., "
         "unix:///path/redis.sock?db=N [default: embedded redis-server]"],
        ["data-dir", None, "./torque-data",
         "where the embedded Redis keeps its files (relative to the working directory)"],
        ["base-task-url", None, None,
         "prefix for task URLs given as a path, e.g. http://app:8000 [default: none]"],
        ["max-task-errors", None, 20, "failed attempts after which a task is dead", _whole],
        ["min-task-delay", None, 1.0, "first retry delay, seconds", _number],
        ["max-task-delay", None, 3600.0, "cap on a retry delay, seconds", _number],
        ["task-timeout", None, 60.0, "per-request timeout, seconds", _number],
        ["concurrency", None, 100, "requests in flight per queue on this node", _whole],
        ["rate", None, 0.0,
         "dispatches per second per queue, shared by every node of the cluster "
         "(give them all the same); 0 for no limit", _number],
        ["redis-prefix", None, "torque:", "prefix of every Redis key torque uses"],
        ["max-body", None, 1024 * 1024, "largest request body the API takes, bytes", _whole],
        ["max-connections", None, 500,
         "open API connections at most; past it a new connection closes the one that "
         "has waited longest for its request head (or body), or is refused", _whole],
        ["lease-margin", None, 30.0,
         "seconds a claimed task's lease outlasts its timeout: how long after a node "
         "dies its tasks wait, beyond their timeout, to be delivered again", _number],
        ["poll-interval", None, 1.0,
         "seconds between safety-net polls (due tasks are claimed on wake-up, "
         "not by polling)", _number],
        ["dead-letter-max", None, 10000,
         "dead letters kept per queue; past it the oldest are deleted", _whole],
        ["dead-letter-ttl", None, 7 * 86400.0, "seconds a dead letter is kept", _number],
    ]  # fmt: skip
    optFlags = [
        ["log-deliveries", None,
         "log a line for every delivered task too, not only for failed attempts"],
    ]  # fmt: skip

    def __init__(self, environ: Mapping[str, str] | None = None):
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self["queues"] = []
        self["api-tokens"] = []
        self["signing-secrets"] = []
        self["allow-targets"] = []
        #: where each option given was read: ``--port`` or ``TORQUE_PORT``.
        self.sources: dict[str, str] = {}
        self._reading: str | None = None  # the variable being read, if any
        for name, handler in list(self._dispatch.items()):
            self._dispatch[name] = self._sourced(name, handler)

    def _sourced(self, name: str, handler):
        """Wrap an option's handler: remember where its value came from, and
        name that place in any error."""

        def dispatch(option, value=None):
            where = self._reading or f"--{name}"
            try:
                if isinstance(handler, usage.CoerceParameter):
                    try:
                        self[name] = handler.coerce(value)
                    except ValueError as e:
                        raise usage.UsageError(str(e)) from None
                else:
                    handler(option, value)
            except usage.UsageError as e:
                message = str(e)
                raise usage.UsageError(
                    message if message.startswith(where) else f"{where}: {message}"
                ) from None
            self.sources[name] = where

        return dispatch

    def named(self, option: str) -> str:
        """How the user gave ``option``: ``--port``, or ``TORQUE_PORT``."""
        return self.sources.get(option, f"--{option}")

    def opt_version(self) -> None:
        """print torque's version and exit"""
        print(f"torque {__version__}")
        sys.exit(0)

    def opt_queue(self, name: str) -> None:
        """a queue this node processes (repeatable); '*': every queue, new ones
        included; 'none': API only [default: *]"""
        self["queues"].append(name)

    opt_q = opt_queue

    def opt_api_token(self, token: str) -> None:
        """API calls need Authorization: Bearer <token> (repeatable) [default: none]"""
        self["api-tokens"].append(token)

    def opt_signing_secret(self, secret: str) -> None:
        """sign deliveries (Standard Webhooks) with a whsec_ secret (repeatable) [default: none]"""
        try:
            decode_secret(secret)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["signing-secrets"].append(secret)

    def opt_allow_target(self, rule: str) -> None:
        """only send tasks to this host, *.domain, range or host:port [default: anywhere]"""
        self["allow-targets"].append(rule)

    def variables(self) -> dict[str, str]:
        """Every ``TORQUE_*`` variable an option can be given by, and its option."""
        names = set(self.synonyms.values()) - {"help", "version"}
        table = {"TORQUE_" + name.upper().replace("-", "_"): name for name in names}
        return {**table, **ALIASES}

    def read_environ(self) -> None:
        """Take from ``TORQUE_*`` variables every option the command line did
        not give.  An empty variable counts as unset.

        :raises usage.UsageError: naming a variable that is no option, or
            whose value is bad.
        """
        table = self.variables()
        given = dict(self.sources)  # the command line's
        seen: dict[str, str] = {}
        for variable in sorted(self.environ):
            if not variable.startswith("TORQUE_") or variable in OTHER_VARIABLES:
                continue
            if variable.startswith(OTHER_PREFIXES):
                continue
            name = table.get(variable)
            if name is None:
                raise usage.UsageError(
                    f"{variable} is not a torque option (see twistd torque --help; "
                    "TORQUE_ and an option's name, e.g. TORQUE_PORT)"
                )
            if name in seen:
                raise usage.UsageError(f"give {seen[name]} or {variable}, not both")
            seen[name] = variable
            value = self.environ[variable].strip()
            if name in given or not value:
                continue
            self._reading = variable
            try:
                self._set_from_environ(name, value)
            finally:
                self._reading = None

    def _set_from_environ(self, name: str, value: str) -> None:
        if name in (flag[0] for flag in self.optFlags):
            if value.lower() not in TRUE + FALSE:
                raise usage.UsageError(
                    f"{self._reading}: {value!r} is not one of {', '.join(TRUE + FALSE[:-1])}"
                )
            self[name] = int(value.lower() in TRUE)
            self.sources[name] = self._reading
            return
        values = value.split(",") if name in REPEATABLE else [value]
        for one in values:
            if one.strip():
                self._dispatch[name](name, one.strip())

    def postOptions(self) -> None:
        self.read_environ()
        queues = self["queues"] or ["*"]
        self["all-queues"] = "*" in queues
        if self["all-queues"] and len(set(queues)) > 1:
            raise usage.UsageError("--queue '*' means every queue: give no other --queue")
        if "none" in queues and len(set(queues)) > 1:
            raise usage.UsageError("--queue none means no queue: give no other --queue")
        self["queues"] = [] if queues in (["none"], ["*"]) else list(dict.fromkeys(queues))
        for queue in self["queues"]:
            if not QUEUE_RE.fullmatch(queue):
                raise usage.UsageError(
                    f"{self.named('queue')}: {queue!r} must match {QUEUE_RE.pattern}"
                )
        self["endpoint"] = _endpoint(self["port"])
        if self["endpoint"]:
            try:  # parsed only: nothing listens (and no reactor is used) yet
                endpoints.serverFromString(None, self["endpoint"])
            except Exception as e:
                raise usage.UsageError(f"{self.named('port')}: {e}") from None
        try:
            self["targets"] = TargetRules.parse(self["allow-targets"])
        except ValueError as e:
            raise usage.UsageError(f"{self.named('allow-target')}: {e}") from None
        if self["redis"]:
            try:
                parse_redis_url(self["redis"])
            except ValueError as e:
                raise usage.UsageError(f"{self.named('redis')}: {e}") from None
        base = self["base-task-url"]
        if base and urlsplit(base).scheme not in ("http", "https"):
            raise usage.UsageError(
                f"{self.named('base-task-url')} must start with http:// or https://"
            )
        for name in (
            "max-task-errors",
            "concurrency",
            "dead-letter-max",
            "max-body",
            "max-connections",
        ):
            if self[name] < 1:
                raise usage.UsageError(f"{self.named(name)} must be at least 1")
        for name in (
            "min-task-delay",
            "max-task-delay",
            "task-timeout",
            "poll-interval",
            "lease-margin",
            "dead-letter-ttl",
        ):
            if not self[name] > 0:
                raise usage.UsageError(f"{self.named(name)} must be more than 0")
        if not 0 <= self["rate"] < float("inf"):
            raise usage.UsageError(f"{self.named('rate')} must be 0 (no limit) or more")
        if self["min-task-delay"] > self["max-task-delay"]:
            raise usage.UsageError(
                f"{self.named('min-task-delay')} must not exceed {self.named('max-task-delay')}"
            )


def _endpoint(port: str) -> str | None:
    """A bare port number listens on loopback only: an open API on every
    interface turns a node into a request relay for the whole network."""
    if port == "none":
        return None
    if port.isdigit():
        return f"tcp:{port}:interface=127.0.0.1"
    return port


def options_from_environ(environ: Mapping[str, str]) -> Options:
    """The options of ``twistd -y torque.tac``: ``TORQUE_*`` variables only,
    read exactly as ``twistd torque`` reads them."""
    options = Options(environ)
    options.parseOptions([])
    return options


class TorqueNode(MultiService):
    """One node: Redis connections, a scheduler per queue, the HTTP API.

    Everything is built in :meth:`startService`, after ``twistd`` has
    daemonised, because the embedded Redis must be a child of the process
    that runs the node.
    """

    def __init__(self, options: Options, reactor):
        super().__init__()
        self.options = options
        self.reactor = reactor
        self.keys = Keys(options["redis-prefix"])
        self.schedulers = {}
        self._stirred: dict[str, float] = {}  # queue -> its scheduler's last wake-up
        self.embedded = None
        self.redis = None
        self.subscriber = None
        self.http_pool = None

    def _redis_address(self) -> RedisAddress:
        if self.options["redis"]:
            return parse_redis_url(self.options["redis"])
        from torque.embedded import EmbeddedRedis

        self.embedded = EmbeddedRedis(self.options["data-dir"])
        self.embedded.startService()
        return self.embedded.address

    def startService(self) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        from torque.api import TorqueAPI
        from torque.auth import RequireToken
        from torque.dispatch import Dispatcher, QuietConnectionPool
        from torque.heartbeat import Heartbeat
        from torque.metrics import Metrics
        from torque.scheduler import QueueScheduler
        from torque.site import ApiService, QuietSite
        from torque.store import NodeInfo, RedisStore
        from torque.watcher import QueueWatcher

        o, reactor = self.options, self.reactor
        address = self._redis_address()
        self.redis = connect_pool(address)
        store = RedisStore(
            self.redis,
            reactor,
            self.keys,
            lease_margin=o["lease-margin"],
            dead_max=o["dead-letter-max"],
            dead_ttl=o["dead-letter-ttl"],
        )
        metrics = Metrics(reactor)  # this node's own registry, never the global one
        self.http_pool = QuietConnectionPool(reactor, persistent=True)
        self.http_pool.maxPersistentPerHost = o["concurrency"]
        # Below the idle timeout of most servers, so a reused connection is
        # rarely one the server is closing (a POST on it would fail).
        self.http_pool.cachedConnectionTimeout = 30
        # Always: link-local targets and this node's own API are refused by
        # default, whatever --allow-target says (SPEC §5).
        guard = TargetGuard(o["targets"], clock=reactor)
        endpoints_ = GuardedEndpoints(reactor, guard, connect_timeout=10)
        agent = Agent.usingEndpointFactory(reactor, endpoints_, pool=self.http_pool)
        http = HTTPClient(agent)
        signer = Signer.from_secrets(o["signing-secrets"]) if o["signing-secrets"] else None
        dispatcher = Dispatcher(http, reactor, signer=signer)
        policy = RetryPolicy(o["max-task-errors"], o["min-task-delay"], o["max-task-delay"])

        def new_scheduler(queue: str) -> QueueScheduler:
            return QueueScheduler(
                queue,
                store,
                dispatcher,
                reactor,
                policy,
                timeout=o["task-timeout"],
                concurrency=o["concurrency"],
                poll_interval=o["poll-interval"],
                rate=o["rate"],
                on_attempt=metrics.attempt_finished,
                log_deliveries=o["log-deliveries"],
            )

        self._new_scheduler = new_scheduler
        for queue in o["queues"]:
            self.process(queue)
        if o["all-queues"]:
            # Every wake-up, so the first add to a new queue starts its
            # scheduler at once; the watcher is the safety net.
            pattern = glob_escape(self.keys.wake("")) + "*"
            self.subscriber = WakeSubscriber(address, [], self._woken, patterns=[pattern])
            self.subscriber.start(reactor)
            QueueWatcher(store, reactor, self.process, self.idle).setServiceParent(self)
        elif self.schedulers:
            channels = [self.keys.wake(queue) for queue in self.schedulers]
            self.subscriber = WakeSubscriber(address, channels, self._woken)
            self.subscriber.start(reactor)
        node = NodeInfo(
            id=f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=None if o["all-queues"] else tuple(o["queues"]),
            started_at=reactor.seconds(),
        )
        in_flight = lambda: sum(len(s.in_flight) for s in self.schedulers.values())  # noqa: E731
        heartbeat = Heartbeat(store, reactor, node, in_flight)
        heartbeat.setServiceParent(self)
        if o["endpoint"]:
            api = TorqueAPI(
                store,
                reactor,
                base_url=o["base-task-url"],
                wake=self.wake,
                metrics=metrics,
                targets=guard,
                token_required=bool(o["api-tokens"]),
                processed=heartbeat.processed,
            )
            root = RequireToken(api.resource(), o["api-tokens"])
            endpoint = ReportingEndpoint(endpoints.serverFromString(reactor, o["endpoint"]), guard)
            site = QuietSite(root, max_body=o["max-body"], max_connections=o["max-connections"])
            token_required = bool(o["api-tokens"])
            ApiService(endpoint, site, token_required=token_required).setServiceParent(self)
        if self.embedded is not None:
            log.info(
                "embedded Redis keeps its data in {data_dir} (--data-dir, relative to the "
                "directory the node was started in; give another node its own)",
                data_dir=os.path.abspath(o["data-dir"]),
            )
        log.info(
            "torque node: queues {queues}, API on {endpoint}, Redis at {redis}",
            queues="* (every queue)" if o["all-queues"] else ",".join(o["queues"]) or "none",
            endpoint=o["endpoint"] or "none",
            redis=str(address),
        )
        warning = descriptors_warning(o, _open_files_limit())
        if warning:
            log.warn(warning)
        super().startService()
        _tune_gc()

    def process(self, queue: str) -> None:
        """Run a scheduler for ``queue`` on this node, unless one runs."""
        if queue not in self.schedulers and QUEUE_RE.fullmatch(queue):
            scheduler = self._new_scheduler(queue)
            self.schedulers[queue] = scheduler
            self._stirred[queue] = self.reactor.seconds()
            scheduler.setServiceParent(self)  # started at once if the node runs
            if self.options["all-queues"] and self.running:
                log.info("queue {queue}: new, processing it", queue=queue)

    def idle(self, queue: str) -> None:
        """``queue`` held no task when the registry was read: with ``--queue
        '*'``, retire its scheduler if nothing stirred it (a wake-up, its
        start) for :data:`RETIRE_AFTER` seconds and it has no request in
        flight.  Its next add (a wake-up) starts a new one at once."""
        scheduler = self.schedulers.get(queue)
        if scheduler is None or not self.options["all-queues"]:
            return
        if scheduler.in_flight or scheduler._claiming is not None:
            return
        if self.reactor.seconds() - self._stirred.get(queue, 0.0) < RETIRE_AFTER:
            return
        del self.schedulers[queue]
        self._stirred.pop(queue, None)
        scheduler.disownServiceParent()  # stops it
        log.info("queue {queue}: empty and idle, no longer polled", queue=queue)

    def wake(self, queue: str, due_at: float | None = None) -> None:
        if self.options["all-queues"] and self.running:
            self.process(queue)
            self._stirred[queue] = self.reactor.seconds()
        scheduler = self.schedulers.get(queue)
        if scheduler is not None:
            scheduler.wake(due_at)

    def _woken(self, channel: str | None, message: str | None) -> None:
        if channel is None:  # (re)subscribed by pattern: look at every queue
            for queue in list(self.schedulers):
                self.wake(queue)
            return
        queue = channel[len(self.keys.wake("")) :]
        try:
            self.wake(queue, float(message))
        except (TypeError, ValueError):
            self.wake(queue)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop the API and the schedulers (which finish and record their
        requests in flight), then the connections, then the embedded Redis."""
        yield super().stopService()
        if self.subscriber is not None:
            yield self.subscriber.disconnect()
        if self.redis is not None:
            yield self.redis.disconnect()
        if self.http_pool is not None:
            yield self.http_pool.closeCachedConnections()
        if self.embedded is not None:
            self.embedded.stopService()


#: File descriptors a node holds besides API connections and deliveries:
#: Redis connections and subscription, the embedded Redis's pipes, the log,
#: the listening socket, standard streams.
OTHER_DESCRIPTORS = 64


def descriptors_warning(options: Mapping, limit: int | None) -> str | None:
    """A warning when ``--max-connections`` API connections and one
    queue's ``--concurrency`` deliveries would not fit under the open-files
    limit (``ulimit -n``): past it, accepting, Redis and deliveries fail
    with "Too many open files".  ``None`` when they fit or there is no limit."""
    if limit is None or not options["endpoint"]:
        return None
    needed = options["max-connections"] + options["concurrency"] + OTHER_DESCRIPTORS
    if needed <= limit:
        return None
    return (
        f"--max-connections {options['max-connections']} and --concurrency "
        f"{options['concurrency']} may need {needed} file descriptors, over this "
        f"process's limit of {limit} (ulimit -n): raise the limit, or lower "
        "--max-connections"
    )


def _open_files_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _tune_gc() -> None:
    """Collect garbage less often than CPython's default, for a node that
    makes thousands of short-lived objects (Deferreds, requests, headers)
    a second: freeze what start-up built, so no collection scans it again,
    and run the youngest generation's collection every 20,000 allocations
    instead of 700.  The drain benchmark measured 8 % less CPU per
    delivery."""
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def makeService(options: Options) -> TorqueNode:
    from twisted.internet import reactor

    return TorqueNode(options, reactor)
