"""The benchmark's processes: redis-server, nginx, torque nodes, wrk, the floor.

Every process is started through :class:`Processes`, which stops them all
(SIGTERM, then SIGKILL) when the bench ends, fails or is interrupted.  Each
child also gets SIGTERM from the kernel if the bench itself dies, so nothing
outlives it.  Everything listens on 127.0.0.1 or a unix socket in a
temporary directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rediswire import Redis

VENV_BIN = Path(sys.executable).parent
TWISTD = str(VENV_BIN / "twistd")


def _die_with_parent() -> None:  # runs in the child, before exec
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools() -> None:
    """nginx and wrk from Debian, installed on first use (we run as root)."""
    missing = [tool for tool in ("nginx", "wrk") if not _which(tool)]
    if not missing:
        return
    packages = ["nginx-light", "wrk"]
    print(f"installing {' '.join(packages)} from Debian ...", flush=True)
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    # Debian's package may start a system nginx on port 80; the bench never
    # uses it, and leaves it alone.


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


class Processes:
    """Every child process of the bench, stopped in reverse order."""

    def __init__(self):
        self.children: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)
        self.children.append(process)
        return process

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 10.0):
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.children:
            self.children.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.children)):
            self.stop(process)


@contextlib.contextmanager
def workspace(prefix: str, keep: bool):
    """``(processes, directory)`` for one bench command: on the way out,
    whatever happened, every process is stopped and the temporary
    directory removed (or, with ``keep``, kept and named)."""
    processes = Processes()
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield processes, Path(tmp)
    finally:
        processes.stop_all()
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def write_results(kind: str, document: dict) -> Path:
    """``document`` (with the command and the cores added) as
    ``bench/results/<timestamp>-<kind>.json``: its path."""
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    out = results / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}.json"
    document = {"command": " ".join(sys.argv), **document, "cores": os.cpu_count()}
    out.write_text(json.dumps(document, indent=2))
    return out


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server on a unix socket: no persistence, no TCP."""

    def __init__(self, processes: Processes, workdir: Path, executable: str | None = None):
        from torque.embedded import find_redis_server  # the binary a node would use

        self.executable = executable or find_redis_server()
        if not self.executable:
            raise RuntimeError("no redis-server: install redis-server or torque[embedded]")
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.path = str(self.dir / "redis.sock")
        self.url = f"unix://{self.path}"
        argv = [self.executable, "--port", "0", "--unixsocket", self.path,
                "--unixsocketperm", "700", "--dir", str(self.dir), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log"]  # fmt: skip
        self.process = processes.start(argv)
        wait_until(self._answers, 30, "redis-server")
        self.version = self.client().info("server")["redis_version"]

    def _answers(self) -> bool:
        try:
            return self.client().call("PING") == "PONG"
        except OSError:
            return False

    def client(self) -> Redis:
        return Redis(self.path)


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$msec $request_uri';
    access_log {log} bench;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


class Arrival:
    __slots__ = ("at", "uri")

    def __init__(self, at: float, uri: str):
        self.at = at
        self.uri = uri


class Nginx:
    """The receiver: ``return 200``, and one log line per request
    (``$msec $request_uri``) to count and time arrivals."""

    def __init__(self, processes: Processes, workdir: Path):
        self.dir = workdir / "nginx"
        self.dir.mkdir()
        self.port = free_port()
        self.log = self.dir / "access.log"
        self.log.touch()
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, log=self.log, port=self.port))
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = processes.start([_which("nginx"), "-c", str(conf), "-p", str(self.dir)])
        wait_until(self._answers, 10, "nginx")
        self.version = subprocess.run(
            [_which("nginx"), "-v"], capture_output=True, text=True
        ).stderr.strip()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/ping", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def mark(self) -> int:
        """Where the log ends now; read arrivals after it with :meth:`since`."""
        return self.log.stat().st_size

    def since(self, offset: int, prefix: str) -> list[Arrival]:
        """Arrivals logged after ``offset`` whose URI starts with ``prefix``."""
        with self.log.open("rb") as f:
            f.seek(offset)
            data = f.read()
        # Only whole lines: nginx may be writing the last one.
        data = data[: data.rfind(b"\n") + 1]
        needle = b" " + prefix.encode()
        arrivals = []
        for line in data.splitlines():
            at, sep, uri = line.partition(b" ")
            if sep and line.startswith(needle, len(at)):
                arrivals.append(Arrival(float(at), uri.decode()))
        return arrivals

    def count(self, offset: int, prefix: str) -> int:
        with self.log.open("rb") as f:
            f.seek(offset)
            data = f.read()
        return data.count(b" " + prefix.encode())


class Node:
    """``twistd -n torque`` as a subprocess, with its own log file.

    :param api: serve the API on a free port (and wait for ``/health``);
        without it the node runs with ``--port none`` and is ready when it
        logs its start.
    """

    def __init__(
        self, processes: Processes, workdir: Path, name: str, args: list[str], api: bool = True
    ):
        self.processes = processes
        self.dir = workdir / name
        self.dir.mkdir()
        self.port = free_port() if api else None
        self.url = f"http://127.0.0.1:{self.port}" if api else None
        self.logfile = self.dir / "twistd.log"
        port = f"tcp:{self.port}:interface=127.0.0.1" if api else "none"
        argv = [TWISTD, "-n", "--pidfile=", f"--logfile={self.logfile}", "torque",
                "--port", port, *args]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = processes.start(argv, cwd=self.dir, env=env)
        self.pid = self.process.pid
        if api:
            wait_until(self._healthy, 30, f"the node {name} to answer /health ({self.logfile})")
        else:
            wait_until(self._started, 30, f"the node {name} to start ({self.logfile})")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the node exited; see {self.logfile}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _started(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the node exited; see {self.logfile}")
        return self.logfile.exists() and b"torque node: queues" in self.logfile.read_bytes()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss(self) -> int:
        """The kernel's high-water mark of the node's resident memory, bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def stop(self) -> None:
        self.processes.stop(self.process)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
