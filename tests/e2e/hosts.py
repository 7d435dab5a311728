"""Several billhook hosts on one machine: each in a network namespace of its own.

A `Host` has its own working directory and data_dir, and (as root, with
`ip` and `socat`) its own network namespace joined to this one by a veth
pair. Inside it, 127.0.0.1:5432 answers nothing: the host reaches PostgreSQL
and Redis only through the veth pair, at the addresses `Host.url` rewrites
their URLs to (a `socat` on this side forwards each to the real server). The
test reaches the host's `billhook serve` at `Host.address`.

Without namespaces (not root, no `ip` or `socat`) the test fails under CI; on
a laptop the hosts share the loopback and keep only their directories apart.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from bench.harness import BenchError, ensure_tool
from billhook.testing.servers import START_TIMEOUT_S, STOP_TIMEOUT_S, free_port, wait_until
from tests.deployment import Server, _healthy, _logged
from tests.support import unavailable

# Environment variables that would override the config a test writes.
_CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
# The port every namespaced `billhook serve` listens on (each namespace has its own ports).
NAMESPACED_PORT = 8000
# Where veth pairs take their /30 subnets from.
SUBNETS = "10.213.0.0/16"
# Schema and tables of the PostgreSQL log and projections, read directly by the tests.
EVENTS = "billhook.events"
CHECKPOINT = "billhook_projections.checkpoint"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=10)


def namespaces_available() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("socat", "socat")):
        try:
            ensure_tool(tool, package)  # apt-get installs it on a machine that lacks it
        except BenchError:
            return f"{tool} is not on PATH and apt-get could not install {package}"
    return None


def _addresses_in_use() -> str:
    return subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout


@dataclass
class Host:
    """One host: a directory, maybe a network namespace, the processes it runs."""

    name: str
    directory: Path
    # Where the test reaches this host's servers.
    address: str
    # This host's network namespace; None when hosts share the loopback.
    netns: str | None = None
    # The other end of the veth pair: where the host reaches services of the test machine.
    gateway: str = "127.0.0.1"
    # (service host, port) -> port on `gateway` that forwards to it.
    forwards: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def url(self, url: str) -> str:
        """`url` (PostgreSQL or Redis) as this host must spell it to reach that service."""
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or _default_port(parts.scheme))
        if self.netns is None:
            return url
        netloc = f"{self.gateway}:{self.forwards[key]}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        return urlunsplit(parts._replace(netloc=netloc))

    def command(self, args: Sequence[str]) -> list[str]:
        """`args` run inside this host's namespace."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, *args]

    def reaches(self, host: str, port: int) -> bool:
        """Whether a TCP connection from inside this host to `host:port` succeeds."""
        probe = (
            "import socket, sys\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"sys.exit(s.connect_ex(({host!r}, {port})))\n"
        )
        done = subprocess.run(self.command([sys.executable, "-c", probe]), timeout=10, check=False)
        return done.returncode == 0


def _default_port(scheme: str) -> int:
    return {"postgresql": 5432, "postgres": 5432, "redis": 6379}[scheme]


@dataclass
class Cluster:
    """Hosts and the processes started on them; everything is undone by :meth:`close`."""

    directory: Path
    # (service host, port) of every service the hosts must reach.
    services: list[tuple[str, int]]
    hosts: list[Host] = field(default_factory=list)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _forwarders: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _links: list[str] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    namespaced: bool = True

    def add_host(self, name: str) -> Host:
        directory = self.directory / name
        directory.mkdir()
        if not self.namespaced:
            host = Host(name, directory, "127.0.0.1")
        else:
            host = self._namespaced_host(name, directory)
        self.hosts.append(host)
        return host

    def _namespaced_host(self, name: str, directory: Path) -> Host:
        n = len(self.hosts)
        tag = f"bh{os.getpid() % 100_000}{n}"
        netns, outside, inside = f"{tag}ns", f"{tag}h", f"{tag}n"
        gateway, address = self._free_subnet()
        _run("ip", "netns", "add", netns)
        self._namespaces.append(netns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self._links.append(outside)
        _run("ip", "link", "set", inside, "netns", netns)
        _run("ip", "addr", "add", f"{gateway}/30", "dev", outside)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "netns", "exec", netns, "ip", "addr", "add", f"{address}/30", "dev", inside)
        _run("ip", "netns", "exec", netns, "ip", "link", "set", inside, "up")
        _run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        host = Host(name, directory, address, netns, gateway)
        for service_host, service_port in self.services:
            port = service_port  # free on `gateway`: nothing else listens on that address
            self._forwarders.append(
                subprocess.Popen(
                    [
                        "socat",
                        f"TCP-LISTEN:{port},bind={gateway},reuseaddr,fork",
                        f"TCP:{service_host}:{service_port}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            host.forwards[(service_host, service_port)] = port
            listening = functools.partial(_listening, gateway, port)
            wait_until(listening, START_TIMEOUT_S, f"socat on {gateway}:{port}")
        return host

    def _free_subnet(self) -> tuple[str, str]:
        """Two addresses of a /30 in SUBNETS that no interface of this machine uses."""
        in_use = _addresses_in_use()
        rng = random.Random()
        for _ in range(100):
            third, fourth = rng.randrange(256), rng.randrange(64) * 4
            base = f"10.213.{third}."
            gateway, address = f"{base}{fourth + 1}", f"{base}{fourth + 2}"
            if f" {gateway}/" not in in_use and f" {address}/" not in in_use:
                return gateway, address
        raise AssertionError(f"no free /30 in {SUBNETS}")

    def start(self, host: Host, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Run `python -m billhook ARGS` on `host`, its output in `log`."""
        out = log.open("ab")
        self._logs.append(out)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_ENV_PREFIXES)}
        process = subprocess.Popen(
            host.command([sys.executable, "-m", "billhook", *args]),
            cwd=host.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
        self.started.append(process)
        return process

    def serve(
        self, host: Host, config: Path, *, name: str = "serve", port: int | None = None
    ) -> Server:
        """`billhook serve` on `host` (at `port`, default a free one), once it answers /healthz."""
        if port is None:
            port = NAMESPACED_PORT if host.netns else free_port()
        log = host.directory / f"{name}.log"
        args = ["serve", "--config", str(config), "--host", host.address, "--port", str(port)]
        process = self.start(host, [*args, "--log-level", "warning"], log)
        server = Server(process, f"http://{host.address}:{port}", log)
        wait_until(lambda: _healthy(server), START_TIMEOUT_S, f"{host.name}'s {name}")
        return server

    def worker(self, host: Host, config: Path, *, name: str = "worker") -> subprocess.Popen[bytes]:
        """`billhook worker` on `host`, once its signal handlers are in place."""
        log = host.directory / f"{name}.log"
        args = ["worker", "--config", str(config), "--threads", "1", "--log-level", "info"]
        process = self.start(host, args, log)
        wait_until(
            lambda: _logged(log, outcome="started") or process.poll() is not None,
            START_TIMEOUT_S,
            f"{host.name}'s {name} to start",
        )
        assert process.poll() is None, log.read_text()[-2000:]
        return process

    def close(self) -> None:
        for process in [*self.started, *self._forwarders]:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        for out in self._logs:
            out.close()
        for netns in self._namespaces:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        for link in self._links:
            # Usually gone with its peer's namespace; deleting it again is harmless.
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


def _listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


@contextmanager
def cluster(directory: Path, services: list[tuple[str, int]]) -> Iterator[Cluster]:
    """A :class:`Cluster` whose hosts reach `services`; namespaced wherever possible."""
    why_not = namespaces_available()
    if why_not is not None and os.environ.get("CI"):
        pytest.fail(f"several hosts need network namespaces: {why_not}")
    hosts = Cluster(directory, services, namespaced=why_not is None)
    try:
        yield hosts
    finally:
        hosts.close()


def service(url: str) -> tuple[str, int]:
    """(host, port) of a PostgreSQL or Redis URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or _default_port(parts.scheme)


# -- the PostgreSQL log and projections, read directly --------------------------------------


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        unavailable(f"PostgreSQL is not reachable: {e}")
        raise


def logged(url: str) -> dict[str, list[tuple[int, str]]]:
    """Every Stripe event id of the log and its (seq, payload) rows."""
    with connect(url) as conn:
        rows = conn.execute(
            f"SELECT event_id, seq, payload FROM {EVENTS} WHERE provider = 'stripe' ORDER BY seq"
        ).fetchall()
    found: dict[str, list[tuple[int, str]]] = {}
    for event_id, seq, payload in rows:
        found.setdefault(str(event_id), []).append((int(str(seq)), str(payload)))
    return found


def head(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {EVENTS}").fetchone()
    return int(str(row[0])) if row else 0


def projected(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT seq FROM {CHECKPOINT}").fetchone()
    return int(str(row[0])) if row else 0


def answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False
