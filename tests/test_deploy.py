"""deploy/: the systemd unit, the Dockerfile and the compose file, checked
with what runs here without a network (no image is built or pulled): the
compose file parsed (every service's image or build, command, volumes,
dependencies), torque's command lines parsed by torque's own options, the
Dockerfile's instructions read, and the unit verified by
``systemd-analyze verify`` when the machine has it."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys

import yaml
from twisted.python import usage
from twisted.trial import unittest

from torque.options import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
SENTINEL_URL = "redis+sentinel://sentinel1:26379,sentinel2:26379,sentinel3:26379/mymaster/0"
SERVICES = {
    "redis-primary",
    "redis-replica",
    "sentinel1",
    "sentinel2",
    "sentinel3",
    "torque1",
    "torque2",
}


def read(name: str) -> str:
    with open(os.path.join(DEPLOY, name), encoding="utf-8") as f:
        return f.read()


def torque_options(argv: list[str]) -> Options:
    """``argv`` parsed as ``twistd torque`` would, in an empty environment."""
    options = Options({})
    options.parseOptions(argv)
    return options


def has_option(name: str) -> bool:
    return name in Options({}).synonyms


class ComposeTests(unittest.TestCase):
    def setUp(self):
        self.compose = yaml.safe_load(read("compose.yaml"))
        self.services = self.compose["services"]

    def test_the_services_are_a_primary_a_replica_three_sentinels_and_two_nodes(self):
        self.assertEqual(set(self.services), SERVICES)

    def test_every_service_has_an_image_or_a_build_and_a_command(self):
        for name, service in self.services.items():
            self.assertTrue(service.get("image") or service.get("build"), name)
            self.assertIsInstance(service.get("command"), list, name)
            self.assertTrue(all(isinstance(a, str) for a in service["command"]), name)
            self.assertEqual(service.get("restart"), "unless-stopped", name)

    def test_dependencies_and_volumes_name_what_exists(self):
        volumes = set(self.compose.get("volumes") or {})
        for name, service in self.services.items():
            for dependency in service.get("depends_on", []):
                self.assertIn(dependency, SERVICES, f"{name} depends on {dependency}")
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("."):
                    self.assertTrue(os.path.exists(os.path.join(DEPLOY, source)), volume)
                else:
                    self.assertIn(source, volumes, f"{name}: undeclared volume {source}")

    def test_the_replica_follows_the_primary_and_both_keep_an_append_only_file(self):
        primary = self.services["redis-primary"]["command"]
        replica = self.services["redis-replica"]["command"]
        self.assertEqual(replica[replica.index("--replicaof") + 1 :][:2], ["redis-primary", "6379"])
        for command in (primary, replica):
            self.assertEqual(command[0], "redis-server")
            self.assertEqual(command[command.index("--appendonly") + 1], "yes")
            self.assertEqual(command[command.index("--maxmemory-policy") + 1], "noeviction")

    def test_three_sentinels_watch_the_primary_as_mymaster_with_a_quorum_of_two(self):
        conf = read("sentinel.conf")
        self.assertRegex(conf, r"(?m)^sentinel monitor mymaster redis-primary 6379 2$")
        for name in ("sentinel1", "sentinel2", "sentinel3"):
            service = self.services[name]
            self.assertIn("./sentinel.conf:/etc/sentinel/sentinel.conf:ro", service["volumes"])
            script = service["command"][-1]
            self.assertIn("--sentinel", script, name)
            self.assertIn("/etc/sentinel/sentinel.conf", script, name)
        for name in ("torque1", "torque2"):
            self.assertLessEqual({"sentinel1", "sentinel2", "sentinel3"}, set(
                self.services[name]["depends_on"]
            ), name)  # fmt: skip

    def test_the_nodes_use_the_sentinels_wait_for_a_replica_and_every_core(self):
        for name in ("torque1", "torque2"):
            service = self.services[name]
            command = service["command"]
            self.assertEqual(service["build"], {"context": "..", "dockerfile": "deploy/Dockerfile"})
            self.assertEqual(command[command.index("--redis") + 1], SENTINEL_URL, name)
            self.assertEqual(command[command.index("--redis-wait-replicas") + 1], "1", name)
            self.assertEqual(command[command.index("--workers") + 1], "auto", name)
            self.assertEqual(command[command.index("--port") + 1], "tcp:8090", name)
            self.assertIn("TORQUE_API_TOKEN", service["environment"], name)
            self.assertIn("TORQUE_SIGNING_SECRET", service["environment"], name)
            self.assertEqual(service["ports"][0].split(":")[1], "8090", name)

    def test_torque_takes_the_nodes_command_lines(self):
        command = self.services["torque1"]["command"]
        if not (has_option("redis-wait-replicas") and _takes_sentinel_urls()):
            raise unittest.SkipTest("this torque has no Sentinel URLs or --redis-wait-replicas yet")
        options = torque_options(command)
        self.assertGreaterEqual(options["workers"], 1)


def _takes_sentinel_urls() -> bool:
    try:
        torque_options(["--redis", SENTINEL_URL])
    except usage.UsageError:
        return False
    return True


class DockerfileTests(unittest.TestCase):
    def setUp(self):
        text = re.sub(r"\\\n", " ", read("Dockerfile"))
        self.instructions = [
            tuple(line.strip().split(None, 1))
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def test_it_runs_as_a_user_that_is_not_root(self):
        users = self.values("USER")
        self.assertEqual(len(users), 1)
        self.assertNotIn(users[0], ("root", "0"))
        self.assertIn("useradd --system --uid 10001", " ".join(self.values("RUN")))

    def test_its_health_check_asks_for_health_on_the_port_it_exposes(self):
        (check,) = self.values("HEALTHCHECK")
        (port,) = self.values("EXPOSE")
        self.assertIn(f"http://127.0.0.1:{port}/health", check)
        entrypoint = self.values("ENTRYPOINT")[0]
        self.assertIn('"twistd", "-n"', entrypoint)
        self.assertIn(f'"tcp:{port}"', self.values("CMD")[0])

    def test_it_copies_only_what_exists_from_the_repository_root(self):
        for value in self.values("COPY"):
            *sources, _ = value.split()
            for source in sources:
                self.assertTrue(os.path.exists(os.path.join(ROOT, source)), source)

    def test_its_default_command_is_a_torque_command_line(self):
        import json

        options = torque_options(json.loads(self.values("CMD")[0]))
        self.assertEqual(options["endpoint"], "tcp:8090")


class SystemdUnitTests(unittest.TestCase):
    def setUp(self):
        self.unit = configparser.ConfigParser(strict=False, interpolation=None)
        self.unit.optionxform = str
        self.unit.read_string(read("torque.service"))

    def test_the_service_runs_every_core_restarts_and_drains(self):
        service = self.unit["Service"]
        argv = service["ExecStart"].split()
        self.assertEqual(argv[1:4], ["-n", "--pidfile=", "--logfile=-"])
        self.assertEqual(argv[4], "torque")
        self.assertEqual(torque_options(argv[5:])["workers"], _cpus())
        self.assertEqual(service["Restart"], "always")
        self.assertEqual(service["KillMode"], "mixed")  # SIGTERM to the supervisor only
        self.assertGreaterEqual(int(service["TimeoutStopSec"]), 60 + 30)
        self.assertEqual(service["EnvironmentFile"], "/etc/torque/torque.env")
        self.assertNotIn("root", service["User"])

    def test_the_example_environment_file_names_only_torque_options(self):
        environ = {}
        for line in read("torque.env.example").splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, value = line.partition("=")
                environ[name] = value
        self.assertIn("TORQUE_API_TOKEN", environ)
        self.assertIn("TORQUE_SIGNING_SECRET", environ)
        table = Options({}).variables()
        if not has_option("redis-wait-replicas"):  # not in this torque yet
            environ.pop("TORQUE_REDIS_WAIT_REPLICAS")
        for name in environ:
            self.assertIn(name, table, f"{name} is no torque option")

    def test_systemd_analyze_verifies_it(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("no systemd-analyze on this machine")
        # ExecStart must name an executable that exists here: this run's twistd.
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "torque.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(read("torque.service").replace("/opt/torque/bin/twistd", twistd))
        done = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertNotIn("torque.service", done.stdout + done.stderr)


def _cpus() -> int:
    from torque.options import cpu_count

    return cpu_count()
