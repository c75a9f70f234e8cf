"""The options of a node: ``twistd torque``'s command line and the
``TORQUE_*`` environment variables, read with the same :class:`Options` (the
command line, when there is one, winning), and checked before anything
starts.  Nothing here listens or connects: :mod:`torque.tap` builds the node
from these options.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from twisted.internet import endpoints
from twisted.python import usage

from torque import __version__
from torque.redis_url import parse_redis_url
from torque.signing import decode_secret
from torque.targets import TargetRules
from torque.task import QUEUE_RE

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


def _real(text: str) -> float:
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
         "unix:///path/redis.sock?db=N, redis+sentinel://[:password@]host:26379,"
         "host2:26379/<master-name>/<db>, or redis+cluster://[:password@]host:port,"
         "host2:port (nodes of a Redis Cluster) [default: embedded redis-server]"],
        ["redis-wait-replicas", None, 0,
         "answer an add 201 only once this many replicas hold it (Redis WAIT), so a "
         "failover loses no accepted task; 0 to answer once the primary has it", _whole],
        ["data-dir", None, "./torque-data",
         "where the embedded Redis keeps its files (relative to the working directory)"],
        ["base-task-url", None, None,
         "prefix for task URLs given as a path, e.g. http://app:8000 [default: none]"],
        ["max-task-errors", None, 20, "failed attempts after which a task is dead", _whole],
        ["min-task-delay", None, 1.0, "first retry delay, seconds", _real],
        ["max-task-delay", None, 3600.0, "cap on a retry delay, seconds", _real],
        ["task-timeout", None, 60.0, "per-request timeout, seconds", _real],
        ["max-task-age", None, 30 * 86400.0,
         "seconds from a task's creation during which its handler may postpone it "
         "(Torque-Postpone); past it the task is dead", _real],
        ["concurrency", None, 100, "requests in flight per queue on this node", _whole],
        ["rate", None, 0.0,
         "dispatches per second per queue, shared by every node of the cluster "
         "(give them all the same); 0 for no limit", _real],
        ["host-concurrency", None, 10,
         "requests in flight per target host on this node; a host at its cap "
         "does not hold up other hosts' tasks", _whole],
        ["breaker-cooldown", None, 1.0,
         "seconds a host's open circuit waits before its first probe (doubling "
         "while the host keeps failing)", _real],
        ["max-cooldown", None, 60.0,
         "cap on a host circuit's cool-down, seconds (--breaker-cooldown doubles up to it)", _real],
        ["redis-prefix", None, "torque:", "prefix of every Redis key torque uses"],
        ["max-body", None, 1024 * 1024, "largest request body the API takes, bytes", _whole],
        ["max-connections", None, 500,
         "open API connections at most; past it a new connection closes the one that "
         "has waited longest for its request head (or body), or is refused", _whole],
        ["lease", None, 10.0,
         "seconds a claimed task's lease lasts, renewed while its request runs: how "
         "long after a node dies its tasks wait to be delivered again", _real],
        ["lease-margin", None, None,
         "ignored (leases are renewed now: see --lease); accepted so that older "
         "configurations still start [default: none]", _real],
        ["poll-interval", None, 1.0,
         "seconds between safety-net polls (due tasks are claimed on wake-up, "
         "not by polling)", _real],
        ["dead-letter-max", None, 10000,
         "dead letters kept per queue; past it the oldest are deleted", _whole],
        ["dead-letter-ttl", None, 7 * 86400.0, "seconds a dead letter is kept", _real],
        ["qstash-current-signing-key", None, None,
         "the key QStash deliveries are signed with (Upstash-Signature), served by "
         "GET /v2/keys [default: generated once, kept in Redis]"],
        ["qstash-next-signing-key", None, None,
         "the next QStash signing key, served by GET /v2/keys "
         "[default: generated once, kept in Redis]"],
        ["workers", None, "1",
         "worker processes sharing the API's socket, each with the API and the "
         "schedulers, under a supervisor that restarts them; 'auto': one per CPU"],
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

    def parseOptions(self, options=None):
        #: the command line as given, which a supervisor hands to its workers
        #: (with the same environment, they read the same options).
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

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
        self["workers"] = _workers(self["workers"], self.named("workers"))
        if self["workers"] > 1 and self["endpoint"] and self["endpoint"].startswith("ssl:"):
            raise usage.UsageError(
                f"{self.named('workers')}: workers can't share a TLS port (ssl:); "
                "put TLS in a reverse proxy in front of a tcp: port"
            )
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
            "host-concurrency",
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
            "max-task-age",
            "poll-interval",
            "lease",
            "dead-letter-ttl",
            "breaker-cooldown",
            "max-cooldown",
        ):
            if not self[name] > 0:
                raise usage.UsageError(f"{self.named(name)} must be more than 0")
        for name in ("qstash-current-signing-key", "qstash-next-signing-key"):
            key = self[name]
            if key is not None and (not key.strip() or not key.isprintable()):
                raise usage.UsageError(f"{self.named(name)} must be printable text")
        if self["redis-wait-replicas"] < 0:
            raise usage.UsageError(f"{self.named('redis-wait-replicas')} must be 0 or more")
        if not 0 <= self["rate"] < float("inf"):
            raise usage.UsageError(f"{self.named('rate')} must be 0 (no limit) or more")
        if self["min-task-delay"] > self["max-task-delay"]:
            raise usage.UsageError(
                f"{self.named('min-task-delay')} must not exceed {self.named('max-task-delay')}"
            )


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers(value, where: str) -> int:
    """``--workers``: a whole number of at least 1, or ``auto`` (one per CPU)."""
    if isinstance(value, int):
        return value
    if str(value).strip().lower() == "auto":
        return cpu_count()
    try:
        workers = int(value)
    except ValueError:
        raise usage.UsageError(f"{where}: {value!r} is not a whole number or 'auto'") from None
    if workers < 1:
        raise usage.UsageError(f"{where} must be at least 1 (or 'auto')")
    return workers


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
