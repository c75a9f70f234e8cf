"""The entry points as a user runs them: real ``twistd`` processes.

``TORQUE_API_TOKEN=s3cret twistd -n torque`` requires the token; a
misspelt ``TORQUE_*`` variable stops ``twistd torque`` and ``torque.tac``
alike, naming it; ``twistd torque --version`` prints torque's version; the
embedded Redis's data directory is logged as an absolute path.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest

import torque
from tests.node import ROOT, TWISTD, _NodeProcess, start_node


@defer.inlineCallbacks
def run_twistd(testcase, *argv: str, env: dict[str, str] | None = None):
    """Run ``twistd *argv`` to its end, in a scratch directory; its exit
    code and everything it wrote."""
    workdir = os.path.abspath(testcase.mktemp())
    os.makedirs(workdir)
    process = _NodeProcess()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TORQUE_")}
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
    transport = reactor.spawnProcess(process, TWISTD, [TWISTD, *argv], env=full_env, path=workdir)
    testcase.addCleanup(lambda: process.ended.called or transport.signalProcess("KILL"))
    code = yield process.ended
    return code, process.output.decode("utf-8", "replace")


class EnvironmentTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_twistd_torque_requires_the_token_from_the_environment(self):
        node = yield start_node(self, env={"TORQUE_API_TOKEN": "s3cret"})

        def status(path, token=None):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            d = treq.get(node.url + path, headers=headers, persistent=False)
            return d.addCallback(lambda r: r.content().addCallback(lambda _: r.code))

        self.assertEqual((yield status("/queues")), 401, "no token")
        self.assertEqual((yield status("/queues", "wrong")), 401, "a wrong token")
        self.assertEqual((yield status("/queues", "s3cret")), 200, "the token")
        self.assertEqual((yield status("/health")), 200, "health is open")

    @defer.inlineCallbacks
    def test_a_misspelt_variable_stops_both_entry_points_naming_it(self):
        env = {"TORQUE_PROT": "9000", "TORQUE_REDIS_URL": "redis://127.0.0.1:1/0"}
        for name, argv in [
            ("twistd torque", ["-n", "--pidfile=", "torque"]),
            ("torque.tac", ["-n", "--pidfile=", "-y", os.path.join(ROOT, "torque.tac")]),
        ]:
            code, output = yield run_twistd(self, *argv, env=env)
            self.assertNotEqual(code, 0, f"{name}:\n{output}")
            self.assertIn("TORQUE_PROT is not a torque option", output, name)
            self.assertNotIn("torque node: queues", output, f"{name} started a node")

    @defer.inlineCallbacks
    def test_a_bad_value_stops_the_node_naming_the_variable(self):
        env = {"TORQUE_MAX_TASK_ERRORS": "lots", "TORQUE_REDIS_URL": "redis://127.0.0.1:1/0"}
        code, output = yield run_twistd(self, "-n", "--pidfile=", "torque", env=env)
        self.assertNotEqual(code, 0, output)
        self.assertIn("TORQUE_MAX_TASK_ERRORS: 'lots' is not a whole number", output)


class VersionTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_twistd_torque_version_prints_torques_version(self):
        code, output = yield run_twistd(self, "torque", "--version")
        self.assertEqual((code, output.strip()), (0, f"torque {torque.__version__}"))

    def test_the_distribution_is_txtorque(self):
        # ("torque" on PyPI is an unrelated project.)  After this rename an
        # older checkout's install needs: pip uninstall torque, and install again.
        try:
            distribution = metadata.distribution("txtorque")
        except metadata.PackageNotFoundError:
            self.fail("no txtorque distribution installed: pip install -e . again")
        self.assertEqual(
            (distribution.metadata["Name"], distribution.version), ("txtorque", torque.__version__)
        )


class DataDirectoryTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_the_embedded_redis_data_directory_is_logged_absolute(self):
        node = yield start_node(self, embedded=True)
        expected = os.path.join(node.workdir, "torque-data")
        self.assertIn(f"embedded Redis keeps its data in {expected}", node.output)


def help_defaults(text: str) -> dict[str, str | None]:
    """Each option of a ``--help`` text, and the default it shows (``None``
    for a flag, or an option that shows none)."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        start = re.match(r"^\s+(?:-\w, )?--([\w-]+)=?(?:\s+(.*))?$", line)
        if start:
            current = entries.setdefault(start.group(1), [start.group(2) or ""])
        elif current is not None and line.startswith(" " * 10):
            current.append(line.strip())
        elif not line.strip():
            current = None
    defaults = {}
    for name, lines in entries.items():
        found = re.search(r"\[default:\s*([^\]]+)\]", " ".join(lines))
        defaults[name] = " ".join(found.group(1).split()) if found else None
    return defaults


def readme_defaults(text: str) -> dict[str, str]:
    """Each option of README.rst's options table (the simple table whose
    header is "option  meaning  default"), and its default column."""
    lines = text.splitlines()
    header = next(
        i for i, line in enumerate(lines) if re.match(r"^option\s+meaning\s+default", line)
    )
    border = lines[header - 1]
    starts = [m.start() for m in re.finditer(r"=+", border)]
    defaults: dict[str, str] = {}
    names: list[str] = []
    cell = ""
    for line in lines[header + 2 :]:
        if line.startswith("="):
            break
        first, default = line[: starts[1]].strip(), line[starts[2] :].strip()
        if first and not first.startswith("``--") and cell.endswith("-``"):
            # A name too long for the column, wrapped: ``--qstash-current-``
            # then ``signing-key`` on the next line.
            written = " ".join(defaults.pop(name) for name in names)
            cell = cell[:-2] + first[2:]
            names = re.findall(r"``--([\w-]+)``", cell)
            for name in names:
                defaults[name] = f"{written} {default}".strip()
        elif first:
            cell = first
            names = re.findall(r"``--([\w-]+)``", first)
            for name in names:
                defaults[name] = default
        elif default:
            for name in names:
                defaults[name] += " " + default
    return {name: value.replace("``", "") for name, value in defaults.items()}


def same_default(shown: str | None, written: str) -> bool:
    """Whether README's default says what ``--help`` shows: the same number,
    or the same first word (``embedded`` for ``embedded redis-server``);
    ``off`` for a flag."""
    if shown is None:
        return written == "off"
    first = written.split()[0]
    try:
        return float(shown) == float(first)
    except ValueError:
        return shown.split()[0] == first


class HelpTests(unittest.TestCase):
    """Defaults are tested where users read them: ``twistd torque --help``
    and README.rst's options table say the same, for every option."""

    timeout = 60

    @defer.inlineCallbacks
    def test_every_default_in_the_help_is_the_readmes(self):
        code, output = yield run_twistd(self, "torque", "--help")
        self.assertEqual(code, 0, output)
        shown = help_defaults(output)
        for name in ("help", "version"):
            shown.pop(name)
        with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
            written = readme_defaults(f.read())
        self.assertIn("port", shown)
        self.assertEqual(sorted(shown), sorted(written), "options in --help, and in README")
        differ = {
            name: (shown[name], written[name])
            for name in shown
            if not same_default(shown[name], written[name])
        }
        self.assertEqual(differ, {}, "option: (--help's default, README's)")

    def test_the_parsers_read_what_they_should(self):
        help_text = (
            "Options:\n"
            "  -p, --port=             where it listens [default:\n"
            "                          8090]\n"
            "      --log-deliveries    log a line\n"
            "      --redis=            Redis URL [default: embedded redis-server]\n"
        )
        self.assertEqual(
            help_defaults(help_text),
            {"port": "8090", "log-deliveries": None, "redis": "embedded redis-server"},
        )
        border = "=" * 18 + "  " + "=" * 8 + "  " + "=" * 8

        def row(option: str, meaning: str, default: str) -> str:
            return f"{option:<18}  {meaning:<8}  {default}".rstrip()

        readme = "\n".join(
            [
                "Options:",
                "",
                border,
                row("option", "meaning", "default"),
                border,
                row("``--port``, ``-p``", "where", "``8090`` (loopback)"),
                row("", "it is", ""),
                row("``--b``", "beta", "604800"),
                row("", "", "(7 days)"),
                border,
                row("``--c``", "not in the table", "1"),
            ]
        )
        table = readme_defaults(readme)
        self.assertEqual(table, {"port": "8090 (loopback)", "b": "604800 (7 days)"})
        cases = [
            ("8090", "8090 (loopback)", True),
            ("3600.0", "3600", True),
            ("604800.0", "604800 (7 days)", True),
            ("30.0", "3", False),
            ("embedded redis-server", "embedded", True),
            ("none", "anywhere", False),
            (None, "off", True),
            (None, "on", False),
        ]
        for shown, written, same in cases:
            self.assertEqual(same_default(shown, written), same, (shown, written))
