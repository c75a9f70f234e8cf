"""Tests of the command line (§2 of the spec): ``twistd torque`` options, the
``TORQUE_*`` environment that ``torque.tac`` reads, and Redis URLs.

Nothing here starts a service.  Each table case is a tuple whose first item
names it; every assertion carries that name.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial import unittest

from torque.options import Options, options_from_environ
from torque.redis_url import RedisAddress, parse_redis_url
from torque.tap import descriptors_warning

DEFAULTS = {
    "queues": [],
    "all-queues": True,
    "endpoint": "tcp:8090:interface=127.0.0.1",
    "port": "8090",
    "redis": None,
    "data-dir": "./torque-data",
    "base-task-url": None,
    "max-task-errors": 20,
    "min-task-delay": 1.0,
    "max-task-delay": 3600.0,
    "task-timeout": 60.0,
    "concurrency": 100,
    "rate": 0.0,
}


def parse(*argv: str, environ: dict[str, str] | None = None) -> Options:
    """``twistd torque *argv`` options, in ``environ`` (by default an empty
    one, so that the test run's own environment doesn't leak in).
    (``parseOptions()`` with no list would read ``sys.argv``.)"""
    options = Options(environ or {})
    options.parseOptions(list(argv))
    return options


def usage_error(testcase, argv=(), environ=None) -> str:
    """The message of the usage error that ``argv`` in ``environ`` makes
    (fails the test when they are accepted)."""
    try:
        options = parse(*argv, environ=environ)
    except usage.UsageError as e:
        return str(e)
    testcase.fail(f"{argv!r} in {environ!r} was accepted as {dict(options)!r}")


class OptionsTests(unittest.TestCase):
    def assertOptions(self, case: str, options: Options, expected: dict) -> None:
        for key, value in expected.items():
            self.assertEqual(options[key], value, f"{case}: {key}")

    def test_defaults(self):
        self.assertOptions("no options", parse(), DEFAULTS)

    def test_table(self):
        cases = [
            ("two queues", ["--queue", "a", "--queue", "b"], {"queues": ["a", "b"]}),
            ("short -q", ["-q", "emails"], {"queues": ["emails"]}),
            ("repeated queue once", ["-q", "a", "-q", "b", "-q", "a"], {"queues": ["a", "b"]}),
            ("no queue", ["--queue", "none"], {"queues": [], "all-queues": False}),
            ("every queue", ["--queue", "*"], {"queues": [], "all-queues": True}),
            ("named queues only", ["-q", "a"], {"queues": ["a"], "all-queues": False}),
            ("no API", ["--port", "none"], {"endpoint": None}),
            ("port number: loopback only", ["--port", "9000"],
             {"endpoint": "tcp:9000:interface=127.0.0.1"}),
            ("short -p", ["-p", "9000"], {"endpoint": "tcp:9000:interface=127.0.0.1"}),
            ("every interface, said so", ["--port", "tcp:9000"], {"endpoint": "tcp:9000"}),
            ("TCP endpoint", ["--port", "tcp:8090:interface=127.0.0.1"],
             {"endpoint": "tcp:8090:interface=127.0.0.1"}),
            ("UNIX endpoint", ["--port", "unix:/run/torque.sock"],
             {"endpoint": "unix:/run/torque.sock"}),
            ("Redis", ["--redis", "redis://:pw@cache:6380/2"], {"redis": "redis://:pw@cache:6380/2"}),
            ("data dir", ["--data-dir", "/var/lib/torque"], {"data-dir": "/var/lib/torque"}),
            ("base URL", ["--base-task-url", "http://app:8000"], {"base-task-url": "http://app:8000"}),
            ("max errors", ["--max-task-errors", "5"], {"max-task-errors": 5}),
            ("delays", ["--min-task-delay", "0.5", "--max-task-delay", "60"],
             {"min-task-delay": 0.5, "max-task-delay": 60.0}),
            ("equal delays", ["--min-task-delay", "5", "--max-task-delay", "5"],
             {"min-task-delay": 5.0, "max-task-delay": 5.0}),
            ("timeout", ["--task-timeout", "30"], {"task-timeout": 30.0}),
            ("concurrency", ["--concurrency", "1"], {"concurrency": 1}),
            ("rate", ["--rate", "2.5"], {"rate": 2.5}),
            ("everything else default", ["-q", "a"],
             {**DEFAULTS, "queues": ["a"], "all-queues": False}),
        ]  # fmt: skip
        for name, argv, expected in cases:
            self.assertOptions(name, parse(*argv), expected)

    def test_bad_options_are_usage_errors(self):
        cases = [
            ("queue with a space", ["--queue", "my queue"]),
            ("queue with a slash", ["--queue", "a/b"]),
            ("101-character queue", ["--queue", "q" * 101]),
            ("empty queue", ["--queue", ""]),
            ("every queue and one", ["--queue", "*", "--queue", "a"]),
            ("no queue and one", ["--queue", "none", "--queue", "a"]),
            ("Redis URL, wrong scheme", ["--redis", "http://localhost:6379"]),
            ("Redis URL, no scheme", ["--redis", "localhost:6379"]),
            ("Redis URL, bad db", ["--redis", "redis://localhost/cache"]),
            ("Redis URL, bad port", ["--redis", "redis://localhost:99999/0"]),
            ("zero concurrency", ["--concurrency", "0"]),
            ("negative rate", ["--rate", "-1"]),
            ("NaN rate", ["--rate", "nan"]),
            ("infinite rate", ["--rate", "inf"]),
            ("concurrency not a number", ["--concurrency", "many"]),
            ("zero max errors", ["--max-task-errors", "0"]),
            ("negative max errors", ["--max-task-errors", "-1"]),
            ("min delay over max", ["--min-task-delay", "10", "--max-task-delay", "5"]),
            ("zero min delay", ["--min-task-delay", "0"]),
            ("zero timeout", ["--task-timeout", "0"]),
            ("NaN timeout", ["--task-timeout", "nan"]),
            ("negative poll interval", ["--poll-interval", "-1"]),
            ("FTP base URL", ["--base-task-url", "ftp://app"]),
            ("base URL without a scheme", ["--base-task-url", "app:8000"]),
            ("base URL that is a path", ["--base-task-url", "/hooks"]),
            ("unknown option", ["--bogus"]),
            ("unknown endpoint type", ["--port", "tpc:8090"]),
            ("endpoint port not a number", ["--port", "tcp:http"]),
            ("zero max connections", ["--max-connections", "0"]),
        ]
        for name, argv in cases:
            try:
                options = parse(*argv)
            except usage.UsageError:
                continue
            self.fail(f"{name}: {argv!r} was accepted as {dict(options)!r}")

    def test_security_options_repeat_for_rotation(self):
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        options = parse("--api-token", "old", "--api-token", "new", "--signing-secret", secret)
        self.assertEqual(
            (options["api-tokens"], options["signing-secrets"]), (["old", "new"], [secret])
        )

    def test_signing_secret_must_be_base64(self):
        self.assertRaises(usage.UsageError, parse, "--signing-secret", "whsec_not base64!")


class EnvironTests(unittest.TestCase):
    def test_environment_means_what_the_flags_mean(self):
        cases = [
            ("empty", {}, []),
            ("port", {"TORQUE_PORT": "9000"}, ["--port", "9000"]),
            ("no API", {"TORQUE_PORT": "none"}, ["--port", "none"]),
            ("endpoint", {"TORQUE_PORT": "unix:/run/t.sock"}, ["--port", "unix:/run/t.sock"]),
            ("queues", {"TORQUE_QUEUES": "a,b"}, ["-q", "a", "-q", "b"]),
            ("queues, spaced", {"TORQUE_QUEUES": " a , b ,"}, ["-q", "a", "-q", "b"]),
            ("no queue", {"TORQUE_QUEUES": "none"}, ["-q", "none"]),
            ("empty queues", {"TORQUE_QUEUES": ""}, []),
            ("Redis", {"TORQUE_REDIS_URL": "redis://cache:6380/2"},
             ["--redis", "redis://cache:6380/2"]),
            ("data dir", {"TORQUE_DATA_DIR": "/d"}, ["--data-dir", "/d"]),
            ("base URL", {"TORQUE_BASE_TASK_URL": "http://app:8000"},
             ["--base-task-url", "http://app:8000"]),
            ("max errors", {"TORQUE_MAX_TASK_ERRORS": "5"}, ["--max-task-errors", "5"]),
            ("delays", {"TORQUE_MIN_TASK_DELAY": "2", "TORQUE_MAX_TASK_DELAY": "60"},
             ["--min-task-delay", "2", "--max-task-delay", "60"]),
            ("timeout", {"TORQUE_TASK_TIMEOUT": "30"}, ["--task-timeout", "30"]),
            ("concurrency", {"TORQUE_CONCURRENCY": "7"}, ["--concurrency", "7"]),
            ("rate", {"TORQUE_RATE": "10"}, ["--rate", "10"]),
            ("allow targets", {"TORQUE_ALLOW_TARGET": "*.app.internal,10.0.0.0/8"},
             ["--allow-target", "*.app.internal", "--allow-target", "10.0.0.0/8"]),
            ("flag on", {"TORQUE_LOG_DELIVERIES": "yes"}, ["--log-deliveries"]),
            ("flag on, 1", {"TORQUE_LOG_DELIVERIES": "1"}, ["--log-deliveries"]),
            ("flag off", {"TORQUE_LOG_DELIVERIES": "0"}, []),
            ("empty value ignored", {"TORQUE_PORT": ""}, []),
            ("other variables ignored", {"PATH": "/bin", "TORQUE_URL": "http://torque:8090"}, []),
        ]  # fmt: skip
        for name, environ, argv in cases:
            self.assertEqual(dict(options_from_environ(environ)), dict(parse(*argv)), name)

    def test_environment_values(self):
        options = options_from_environ(
            {
                "TORQUE_PORT": "9000",
                "TORQUE_QUEUES": "emails,reports",
                "TORQUE_REDIS_URL": "redis://cache:6380/2",
                "TORQUE_MAX_TASK_ERRORS": "5",
                "TORQUE_BASE_TASK_URL": "http://app:8000",
                "TORQUE_TASK_TIMEOUT": "30",
            }
        )
        expected = {
            "endpoint": "tcp:9000:interface=127.0.0.1",
            "queues": ["emails", "reports"],
            "redis": "redis://cache:6380/2",
            "max-task-errors": 5,
            "base-task-url": "http://app:8000",
            "task-timeout": 30.0,
        }
        for key, value in expected.items():
            self.assertEqual(options[key], value, key)

    def test_bad_environment_is_a_usage_error(self):
        cases = [
            ("zero concurrency", {"TORQUE_CONCURRENCY": "0"}),
            ("bad queue", {"TORQUE_QUEUES": "good,bad queue"}),
            ("bad Redis URL", {"TORQUE_REDIS_URL": "http://cache"}),
            ("max errors not a number", {"TORQUE_MAX_TASK_ERRORS": "lots"}),
        ]
        for name, environ in cases:
            try:
                options = options_from_environ(environ)
            except usage.UsageError:
                continue
            self.fail(f"{name}: {environ!r} was accepted as {dict(options)!r}")

    def test_security_options_from_the_environment(self):
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        options = options_from_environ(
            {"TORQUE_API_TOKEN": "old,new", "TORQUE_SIGNING_SECRET": secret}
        )
        self.assertEqual(
            (options["api-tokens"], options["signing-secrets"]), (["old", "new"], [secret])
        )

    def test_twistd_torque_reads_the_environment_too(self):
        # twistd makes the plugin's Options with no arguments: os.environ.
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        environ = {
            "TORQUE_API_TOKEN": "s3cret",
            "TORQUE_SIGNING_SECRET": secret,
            "TORQUE_ALLOW_TARGET": "*.app.internal",
            "TORQUE_MAX_TASK_ERRORS": "5",
            "TORQUE_LOG_DELIVERIES": "on",
        }
        options = parse("--queue", "emails", environ=environ)
        self.assertEqual(
            (options["api-tokens"], options["signing-secrets"], options["allow-targets"],
             options["max-task-errors"], options["log-deliveries"], options["queues"]),
            (["s3cret"], [secret], ["*.app.internal"], 5, 1, ["emails"]),
        )  # fmt: skip
        self.patch(os, "environ", {"TORQUE_API_TOKEN": "from-os-environ"})
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["api-tokens"], ["from-os-environ"])

    def test_the_command_line_wins(self):
        environ = {
            "TORQUE_PORT": "9000",
            "TORQUE_QUEUES": "a,b",
            "TORQUE_API_TOKEN": "env-token",
            "TORQUE_MAX_TASK_ERRORS": "5",
            "TORQUE_RATE": "2",
        }
        cases = [
            ("port", ["--port", "9001"], "endpoint", "tcp:9001:interface=127.0.0.1"),
            ("short -p", ["-p", "9001"], "endpoint", "tcp:9001:interface=127.0.0.1"),
            ("queues: replaced, not added to", ["-q", "c"], "queues", ["c"]),
            ("token: replaced", ["--api-token", "cli-token"], "api-tokens", ["cli-token"]),
            ("an option not given comes from the environment", ["-q", "c"],
             "max-task-errors", 5),
            ("even where the command line says the default", ["--rate", "0"], "rate", 0.0),
        ]  # fmt: skip
        for name, argv, key, value in cases:
            self.assertEqual(parse(*argv, environ=environ)[key], value, name)

    def test_an_unknown_variable_is_an_error_naming_it(self):
        for variable in ("TORQUE_PROT", "TORQUE_QUEUEE", "TORQUE_API_TOKENS", "TORQUE_HELP",
                         "TORQUE_ENDPOINT"):  # fmt: skip
            for entry, read in [
                ("twistd torque", lambda env: parse("-q", "a", environ=env)),
                ("torque.tac", options_from_environ),
            ]:
                with self.assertRaises(usage.UsageError, msg=f"{entry}: {variable}") as caught:
                    read({variable: "9000"})
                self.assertIn(variable, str(caught.exception), entry)

    def test_variables_of_other_tools_are_not_options(self):
        environ = {
            "TORQUE_URL": "http://torque:8090",  # the clients'
            "TORQUE_FAULT_REPORT": "faults.jsonl",
            "TORQUE_BENCH_TREE": "/tmp/t",
            "TORQUE_SCREENSHOT": "docs/dashboard.png",
            "PATH": "/bin",
        }
        self.assertEqual(dict(parse(environ=environ)), dict(parse()))

    def test_a_bad_value_is_an_error_naming_its_variable(self):
        cases = [
            ({"TORQUE_CONCURRENCY": "0"}, "TORQUE_CONCURRENCY"),
            ({"TORQUE_MAX_TASK_ERRORS": "lots"}, "TORQUE_MAX_TASK_ERRORS"),
            ({"TORQUE_TASK_TIMEOUT": "soon"}, "TORQUE_TASK_TIMEOUT"),
            ({"TORQUE_RATE": "nan"}, "TORQUE_RATE"),
            ({"TORQUE_QUEUES": "good,bad queue"}, "TORQUE_QUEUES"),
            ({"TORQUE_QUEUE": "a/b"}, "TORQUE_QUEUE"),
            ({"TORQUE_REDIS_URL": "http://cache"}, "TORQUE_REDIS_URL"),
            ({"TORQUE_REDIS": "cache:6379"}, "TORQUE_REDIS"),
            ({"TORQUE_PORT": "tpc:8090"}, "TORQUE_PORT"),
            ({"TORQUE_BASE_TASK_URL": "ftp://app"}, "TORQUE_BASE_TASK_URL"),
            ({"TORQUE_ALLOW_TARGET": "10.0.0.0/8,not a host!"}, "TORQUE_ALLOW_TARGET"),
            ({"TORQUE_SIGNING_SECRET": "whsec_c2hvcnQ="}, "TORQUE_SIGNING_SECRET"),
            ({"TORQUE_LOG_DELIVERIES": "maybe"}, "TORQUE_LOG_DELIVERIES"),
            ({"TORQUE_MAX_CONNECTIONS": "-1"}, "TORQUE_MAX_CONNECTIONS"),
            ({"TORQUE_MIN_TASK_DELAY": "10", "TORQUE_MAX_TASK_DELAY": "5"},
             "TORQUE_MIN_TASK_DELAY"),
            ({"TORQUE_QUEUE": "a", "TORQUE_QUEUES": "b"}, "TORQUE_QUEUES"),
            ({"TORQUE_REDIS": "redis://a", "TORQUE_REDIS_URL": "redis://b"}, "TORQUE_REDIS_URL"),
        ]  # fmt: skip
        for environ, variable in cases:
            message = usage_error(self, environ=environ)
            self.assertIn(variable, message, environ)

    def test_a_bad_option_is_named_as_it_was_given(self):
        self.assertIn("--concurrency", usage_error(self, ["--concurrency", "0"]))
        message = usage_error(self, ["--concurrency", "many"])
        self.assertIn("--concurrency", message)
        self.assertIn("'many' is not a whole number", message)

    def test_a_refused_signing_secret_is_not_repeated(self):
        message = usage_error(self, environ={"TORQUE_SIGNING_SECRET": "whsec_c2hvcnQ="})
        self.assertNotIn("c2hvcnQ", message)

    def test_flags_from_the_environment(self):
        for value, on in [("1", 1), ("true", 1), ("ON", 1), ("0", 0), ("no", 0), ("off", 0)]:
            options = parse(environ={"TORQUE_LOG_DELIVERIES": value})
            self.assertEqual(options["log-deliveries"], on, value)


class ParseRedisUrlTests(unittest.TestCase):
    def test_table(self):
        cases = [
            ("host, port, db", "redis://localhost:6380/2",
             RedisAddress(host="localhost", port=6380, db=2)),
            ("host only", "redis://cache.internal", RedisAddress(host="cache.internal")),
            ("trailing slash", "redis://cache/", RedisAddress(host="cache")),
            ("db in the query", "redis://cache/?db=4", RedisAddress(host="cache", db=4)),
            ("IPv6", "redis://[::1]:6379/0", RedisAddress(host="::1")),
            ("password", "redis://:s3cret@localhost:6379/0",
             RedisAddress(host="localhost", password="s3cret")),
            ("user and password", "redis://alice:s3cret@localhost/1",
             RedisAddress(host="localhost", db=1, username="alice", password="s3cret")),
            ("quoted password", "redis://:p%40ss%2Fw@localhost/0",
             RedisAddress(host="localhost", password="p@ss/w")),
            ("TLS", "rediss://cache.example.com:6380/0",
             RedisAddress(host="cache.example.com", port=6380, tls=True)),
            ("unix socket", "unix:///var/run/redis.sock?db=3",
             RedisAddress(path="/var/run/redis.sock", db=3)),
            ("unix socket, db 0", "unix:///tmp/redis.sock", RedisAddress(path="/tmp/redis.sock")),
            ("unix socket, password", "unix:///tmp/redis.sock?db=1&password=pw",
             RedisAddress(path="/tmp/redis.sock", db=1, password="pw")),
        ]  # fmt: skip
        for name, url, address in cases:
            self.assertEqual(parse_redis_url(url), address, name)

    def test_bad_urls_are_value_errors(self):
        cases = [
            ("HTTP", "http://localhost:6379"),
            ("no scheme", "localhost:6379"),
            ("empty", ""),
            ("db not a number", "redis://localhost/cache"),
            ("port out of range", "redis://localhost:99999/0"),
            ("port not a number", "redis://localhost:port/0"),
            ("unix without a path", "unix://"),
            ("unix db not a number", "unix:///tmp/redis.sock?db=x"),
        ]
        for name, url in cases:
            try:
                address = parse_redis_url(url)
            except ValueError:
                continue
            self.fail(f"{name}: {url!r} was read as {address!r}")

    def test_unix_url_with_two_slashes_is_refused(self):
        # unix://var/run/redis.sock reads as host "var" and path /run/redis.sock.
        self.assertRaises(ValueError, parse_redis_url, "unix://var/run/redis.sock")

    def test_negative_db_is_refused(self):
        self.assertRaises(ValueError, parse_redis_url, "redis://localhost/-1")

    def test_address_prints_without_its_password(self):
        address = parse_redis_url("redis://alice:s3cret@cache:6380/2")
        for name, text in [("str", str(address)), ("repr", repr(address))]:
            self.assertNotIn("s3cret", text, name)
        self.assertEqual(str(address), "redis://cache:6380/2")


class DescriptorsTests(unittest.TestCase):
    def test_a_cap_over_the_open_files_limit_is_warned_about(self):
        cases = [
            ("the defaults under ulimit -n 1024", [], 1024, False),
            ("a cap over it", ["--max-connections", "2000"], 1024, True),
            ("the cap with deliveries over it", ["--max-connections", "900"], 1024, True),
            ("a raised limit", ["--max-connections", "2000"], 65536, False),
            ("no limit", ["--max-connections", "2000"], None, False),
            ("no API", ["--max-connections", "2000", "--port", "none"], 1024, False),
        ]
        for name, argv, limit, warned in cases:
            warning = descriptors_warning(parse(*argv), limit)
            self.assertEqual(warning is not None, warned, name)
        warning = descriptors_warning(parse("--max-connections", "2000"), 1024)
        self.assertIn("ulimit -n", warning)
