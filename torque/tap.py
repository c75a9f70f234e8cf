"""The composition root: the node built from its options.

``twistd -n torque [options]`` and ``twistd -y torque.tac`` both come here,
and both read the ``TORQUE_*`` environment variables with the same
:class:`~torque.options.Options` (the command line, when there is one,
winning), so the two entry points can't drift apart.  ``twistd torque``
finds ``Options`` here, through the plugin's ``ServiceMaker``.  This is the
only torque module that takes the global reactor, and it passes it to every
part it builds.  txredisapi, imported by ``store.py`` and ``connection.py``
only, installs the global reactor when imported and uses it inside its pool
(``tests/test_reactor_free.py`` keeps every other module free of it).
"""

from __future__ import annotations

import gc
import os
import secrets
import socket
from collections.abc import Mapping

from twisted.application.service import MultiService
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from torque import __version__
from torque.connection import WakeSubscriber, connect
from torque.guarded import GuardedEndpoints, ReportingEndpoint
from torque.keys import Keys
from torque.options import Options, options_from_environ
from torque.redis_state import is_cluster
from torque.redis_url import RedisAddress, parse_redis_url
from torque.retry import RetryPolicy
from torque.router import QueueRouter
from torque.signing import Signer
from torque.targets import TargetGuard, resolver_on
from torque.worker import AdoptedEndpoint, WorkerRole

#: ``twistd torque`` and ``torque.tac`` take their options from here.
__all__ = ["Options", "TorqueNode", "makeService", "options_from_environ"]

log = Logger()


class TorqueNode(MultiService):
    """One node: Redis connections, a scheduler per queue, the HTTP API.

    Everything is built in :meth:`startService`, after ``twistd`` has
    daemonised, because the embedded Redis must be a child of the process
    that runs the node.
    """

    def __init__(self, options: Options, reactor, role: WorkerRole | None = None):
        super().__init__()
        self.options = options
        self.reactor = reactor
        self.role = role  # a supervised worker's (torque.worker), else None
        self.keys = Keys(options["redis-prefix"])
        self.router = QueueRouter(self, reactor, self.keys, options["all-queues"])
        self.embedded = None
        self.redis = None
        self.subscriber = None
        self.http_pool = None
        self.leases = None

    def _redis_address(self) -> RedisAddress:
        if self.options["redis"]:
            return parse_redis_url(self.options["redis"])
        from torque.embedded import EmbeddedRedis

        self.embedded = EmbeddedRedis(self.options["data-dir"])
        self.embedded.startService()
        return self.embedded.address

    def _refuse(self, why: str) -> None:
        """Stop the node at start: it must not run on this Redis (exit 1)."""
        log.critical("torque: refusing to start: {why}", why=why)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()

    def startService(self) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        from torque import cloudtasks
        from torque.api import TorqueAPI, Utf8Only
        from torque.auth import RequireToken
        from torque.cloudtasks.api import CloudTasksAPI
        from torque.cloudtasks.profile import CloudTasksProfile
        from torque.completion import CompletionKey
        from torque.dispatch import Dispatcher
        from torque.doors import Doors
        from torque.fast_http import FastHTTP
        from torque.heartbeat import Heartbeat
        from torque.hosts import HostTable
        from torque.http_pool import delivery_pool
        from torque.leases import LeaseKeeper
        from torque.metrics import Metrics
        from torque.qstash import DOOR as QSTASH
        from torque.qstash.callbacks import Callbacks
        from torque.qstash.profile import QStashProfile
        from torque.qstash.routes import PREFIXES as QSTASH_PATHS
        from torque.qstash.routes import QStashAPI
        from torque.qstash.signing_keys import KeyLoader, SigningKeys
        from torque.queue_settings import QueueConfig
        from torque.scheduler import QueueScheduler
        from torque.site import ApiService, QuietSite
        from torque.storage import NodeInfo
        from torque.store import RedisStore
        from torque.watcher import QueueWatcher

        o, reactor = self.options, self.reactor
        address = self._redis_address()
        # An add with --redis-wait-replicas holds its connection while the
        # replicas confirm: more connections, so that adds don't queue.
        poolsize = 8 if o["redis-wait-replicas"] else 2
        # One pool, or on a Redis Cluster one per primary.
        self.redis = connect(address, poolsize=poolsize, reactor=reactor)
        store = RedisStore(
            self.redis,
            reactor,
            self.keys,
            lease=o["lease"],
            wait_replicas=o["redis-wait-replicas"],
            dead_max=o["dead-letter-max"],
            dead_ttl=o["dead-letter-ttl"],
        )
        from torque.migrate import refuse_old_layout

        refuse_old_layout(self.redis, self.keys.prefix, reactor, self._refuse)
        role = self.role
        # This node's own registry, never the global one; a worker's sums
        # every worker of its supervisor.
        metrics = Metrics(reactor, multiprocess_dir=role.metrics_dir if role else None)
        self.http_pool = delivery_pool(reactor, o["concurrency"], o["host-concurrency"])
        # Always: link-local targets and this node's own API are refused by
        # default, whatever --allow-target says (SPEC §5).
        guard = TargetGuard(o["targets"], resolver=resolver_on(reactor), clock=reactor)
        endpoints_ = GuardedEndpoints(reactor, guard, connect_timeout=10)
        agent = Agent.usingEndpointFactory(reactor, endpoints_, pool=self.http_pool)
        http = HTTPClient(agent)
        signer = Signer.from_secrets(o["signing-secrets"]) if o["signing-secrets"] else None
        completion_key = CompletionKey(store.completion_key)
        qstash_keys = SigningKeys(
            {"current": o["qstash-current-signing-key"], "next": o["qstash-next-signing-key"]}
        )
        KeyLoader(qstash_keys, store, reactor).setServiceParent(self)
        profiles = {cloudtasks.DOOR: CloudTasksProfile(), QSTASH: QStashProfile(qstash_keys)}
        dispatcher = Dispatcher(
            http,
            reactor,
            signer=signer,
            completion_key=completion_key,
            profiles=profiles,
            fast=FastHTTP(self.http_pool, endpoints_),
        )
        policy = RetryPolicy(
            o["max-task-errors"],
            o["min-task-delay"],
            o["max-task-delay"],
            max_age=o["max-task-age"],
        )

        self.hosts = HostTable(o["host-concurrency"], o["breaker-cooldown"], o["max-cooldown"])
        metrics.open_circuits.set_function(lambda: len(self.hosts.open_circuits()))

        callbacks = Callbacks(store, reactor, self.router.wake)

        def on_attempt(task, outcome, decision) -> None:
            metrics.attempt_finished(task, outcome, decision)
            callbacks.attempt_finished(task, outcome, decision)

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
                on_attempt=on_attempt,
                log_deliveries=o["log-deliveries"],
                hosts=self.hosts,
            )

        if is_cluster(self.redis):
            self._wake_ups_on_cluster(new_scheduler)
        else:
            self.router.new_scheduler = new_scheduler
        for queue in o["queues"]:
            self.router.process(queue)
        if o["all-queues"]:
            if self.subscriber is None:
                # Every wake-up, so the first add to a new queue starts its
                # scheduler at once; the watcher is the safety net.
                pattern = self.keys.wake_pattern
                self.subscriber = WakeSubscriber(address, [], self.router.woken, patterns=[pattern])
                self.subscriber.start(reactor)
            router = self.router
            QueueWatcher(store, reactor, router.process, router.idle).setServiceParent(self)
        elif self.schedulers and self.subscriber is None:
            channels = [self.keys.wake(queue) for queue in self.schedulers]
            self.subscriber = WakeSubscriber(address, channels, self.router.woken)
            self.subscriber.start(reactor)
        node = NodeInfo(
            id=f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=None if o["all-queues"] else tuple(o["queues"]),
            started_at=reactor.seconds(),
            worker=role.index if role else 0,
            supervisor_pid=role.supervisor_pid if role else 0,
        )
        in_flight = lambda: sum(len(s.in_flight) for s in self.schedulers.values())  # noqa: E731
        heartbeat = Heartbeat(store, reactor, node, in_flight)
        heartbeat.setServiceParent(self)
        if o["endpoint"]:
            api = TorqueAPI(
                store,
                reactor,
                base_url=o["base-task-url"],
                wake=self.router.wake,
                claim_now=self.router.claim_now,
                metrics=metrics,
                targets=guard,
                token_required=bool(o["api-tokens"]),
                processed=heartbeat.processed,
                completion_key=completion_key,
                policy=policy,
                circuits=self.hosts.open_circuits,
            )
            cloud_tasks = CloudTasksAPI(
                store,
                reactor,
                QueueConfig(o["task-timeout"], o["concurrency"], o["rate"] or 0.0, policy),
                wake=self.router.wake,
                base_url=o["base-task-url"],
                targets=guard,
                metrics=metrics,
            )
            qstash = QStashAPI(
                store,
                reactor,
                qstash_keys,
                wake=self.router.wake,
                metrics=metrics,
                targets=guard,
                default_parallelism=o["concurrency"],
            )
            qstash_door = Utf8Only(qstash.resource())
            prefixes = {path: qstash_door for path in QSTASH_PATHS}
            prefixes[b"/v2/projects/"] = cloud_tasks.resource()
            doors = Doors(api.resource(), prefixes)
            root = RequireToken(doors, o["api-tokens"])
            if role is not None and role.listen_fd is not None:
                listening = AdoptedEndpoint(reactor, role.listen_fd)  # the supervisor's socket
            else:
                listening = endpoints.serverFromString(reactor, o["endpoint"])
            endpoint = ReportingEndpoint(listening, guard)
            site = QuietSite(
                root,
                max_body=o["max-body"],
                max_connections=o["max-connections"],
                reactor=reactor,
            )
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
        for warning in (descriptors_warning(o, _open_files_limit()), retired_warning(o)):
            if warning:
                log.warn(warning)
        super().startService()
        # Not a child: it must outlive the schedulers' drain at stop, whose
        # requests it keeps leased.
        self.leases = LeaseKeeper(store, reactor, lambda: list(self.schedulers.values()))
        self.leases.startService()
        _tune_gc()

    def _wake_ups_on_cluster(self, new_scheduler) -> None:
        """On a Redis Cluster, wake-ups come through sharded pub/sub, each
        queue's channel on its slot's primary: subscribed as each queue's
        scheduler starts (sharded pub/sub has no patterns, so a ``*`` node
        finds new queues through its watcher, within a second)."""
        from torque.cluster_wake import ShardedSubscriber

        subscriber = ShardedSubscriber(self.redis, self.reactor, self.router.woken)
        self.subscriber = subscriber

        def new_scheduler_listening(queue: str):
            subscriber.listen(self.keys.wake(queue))
            return new_scheduler(queue)

        self.router.new_scheduler = new_scheduler_listening

    @property
    def schedulers(self) -> dict:
        return self.router.schedulers

    @defer.inlineCallbacks
    def stopService(self):
        """Stop the API and the schedulers (which finish and record their
        requests in flight), then the connections, then the embedded Redis."""
        yield super().stopService()
        if self.leases is not None:
            self.leases.stopService()
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


def retired_warning(options: Mapping) -> str | None:
    """A warning for an option that is accepted but no longer does anything."""
    if options["lease-margin"] is None:
        return None
    return (
        f"{options.named('lease-margin')} is ignored: a lease no longer lasts a task's "
        f"timeout plus a margin, but --lease seconds ({options['lease']:g}), renewed while "
        "the request runs; remove it"
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


def makeService(options: Options):
    """A lone node, or with ``--workers`` over 1, a supervisor of workers."""
    from twisted.internet import reactor

    if options["redis"]:
        address = parse_redis_url(options["redis"])
        if address.sentinels:
            from torque.sentinel import check_master_name

            problem = check_master_name(address)
            if problem is not None:
                raise SystemExit(f"torque: {problem}")
    if options["workers"] > 1:
        from torque.supervisor import Supervisor

        return Supervisor(options, reactor)
    return TorqueNode(options, reactor)
