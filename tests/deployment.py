"""Fixtures for worker tests: a real Redis, real `billhook` processes, signed deliveries.

Redis is the one dramatiq's own suite uses: a real server. `redis_url` takes
`BILLHOOK_TEST_REDIS_URL`, else db 15 on the local default port; when nothing
answers there it starts a throwaway `redis-server`. Without any Redis the
tests fail under CI and are skipped elsewhere. Db 0 is never used.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from billhook.config import Settings, load_settings
from billhook.log.sqlite import EventLog
from billhook.projections.rebuild import rebuild
from billhook.projections.store import ProjectionStore
from billhook.testing.servers import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    RedisServer,
    free_port,
    redis_answers,
    redis_client,
    wait_until,
)
from billhook.testing.settings import READ_TOKEN
from billhook.testing.stripe import (
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)
from tests.api.checkout_support import Shop, ShopFactory, no_backoff, start_shop
from tests.contract import contract_client
from tests.support import unavailable

# The project root: subprocesses import `worker` from here.
ROOT = Path(__file__).resolve().parents[1]
# Where tests look for Redis when BILLHOOK_TEST_REDIS_URL is unset; never db 0.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
# Upper bounds on the waits of their own, so a broken process fails a test instead of hanging it.
PROJECTED_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 60.0
# Environment variables that would override the config a test writes.
_CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
# Subscription events all start here (Stripe `created`, Unix seconds).
T0 = 1_795_000_000
# A lifecycle's last event and the (tier, status) the workspace must end in.
FINALS: dict[str, tuple[str, str, tuple[str, str]]] = {
    "active": ("customer.subscription.updated", "active", ("team", "active")),
    "past_due": ("customer.subscription.updated", "past_due", ("team", "past_due")),
    "canceled": ("customer.subscription.deleted", "canceled", ("solo", "inactive")),
}


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL (never db 0) that answers PING for the whole session."""
    url = os.environ.get("BILLHOOK_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    with redis_client(url) as client:  # parses the URL; connects on first command only
        db = int(client.connection_pool.connection_kwargs.get("db", 0))
    if db == 0:
        pytest.fail("BILLHOOK_TEST_REDIS_URL must name a Redis db other than 0 (tests flush it)")
    if redis_answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no Redis answers for the worker tests and no redis-server is on PATH")
        return
    server = RedisServer(binary, free_port(), tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server.url()
    finally:
        server.stop()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test db, flushed before (and after) each test."""
    with redis_client(redis_url) as client:
        client.flushdb()
        yield client
        client.flushdb()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server only this test uses, so it can be stopped and restarted."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on PATH")
        return
    directory = tmp_path / "own-redis"
    directory.mkdir()
    server = RedisServer(binary, free_port(), directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- a deployment: config, data dir, processes ------------------------------------------------


def settings_of(config: Path) -> Settings:
    return load_settings(config, {})


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_ENV_PREFIXES)}
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A `python -m billhook serve` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {READ_TOKEN}"}
        return contract_client(self.base_url, headers=headers, timeout=10)


def _logged(log: Path, **fields: object) -> bool:
    """Whether a JSON line of `log` carries every one of `fields`."""
    for line in log.read_text(errors="replace").splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue  # a partial last line, or a library's own text
        if isinstance(parsed, dict) and all(parsed.get(k) == v for k, v in fields.items()):
            return True
    return False


@dataclass
class Processes:
    """Starts billhook processes and kills every one still running at the end."""

    directory: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def _start(
        self, args: Sequence[str], log: Path, env: dict[str, str] | None
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        self._logs.append(out)
        process = subprocess.Popen(
            [sys.executable, "-m", "billhook", *args],
            cwd=ROOT,
            env=_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
        self.started.append(process)
        return process

    def serve(self, config: Path, *, name: str = "server", log_level: str = "warning") -> Server:
        port = free_port()
        log = self.directory / f"{name}.log"
        args = ["serve", "--config", str(config), "--port", str(port), "--log-level", log_level]
        process = self._start(args, log, None)
        server = Server(process, f"http://127.0.0.1:{port}", log)
        wait_until(lambda: _healthy(server), START_TIMEOUT_S, f"{name} to answer /healthz")
        return server

    def worker(
        self,
        config: Path,
        *,
        name: str = "worker",
        env: dict[str, str] | None = None,
        threads: int = 1,
    ) -> subprocess.Popen[bytes]:
        args = ["worker", "--config", str(config), "--threads", str(threads)]
        args += ["--log-level", "info"]
        log = self.directory / f"{name}.log"
        process = self._start(args, log, env)
        if "BILLHOOK_CRASH_AT" not in (env or {}):
            # A SIGTERM that lands while the worker still imports ends it with -15:
            # wait for its signal handlers (installed before it says "started").
            wait_until(
                lambda: _logged(log, outcome="started") or process.poll() is not None,
                START_TIMEOUT_S,
                f"{name} to start",
            )
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        for out in self._logs:
            out.close()


def _healthy(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(
            f"server exited with {server.process.returncode}:\n{server.log.read_text()[-2000:]}"
        )
    try:
        return httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def run_cli(*args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run `python -m billhook ARGS` to completion (bounded); its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "billhook", *args],
        cwd=ROOT,
        env=_env(None),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


# -- events and deliveries ------------------------------------------------------------------


def lifecycle(workspace: str, final: str) -> list[bytes]:
    """Stripe events for one subscription of `workspace`: created, past_due, then `final`."""
    sub_id, customer = f"sub_{workspace}", f"cus_{workspace}"
    metadata = {"workspace_id": workspace}
    last_type, last_status, _ = FINALS[final]
    steps = [
        ("customer.subscription.created", "active"),
        ("customer.subscription.updated", "past_due"),
        (last_type, last_status),
    ]
    return [
        stripe_event_body(
            event_type,
            obj=stripe_subscription(id=sub_id, customer=customer, status=status, metadata=metadata),
            created=T0 + n,
        )
        for n, (event_type, status) in enumerate(steps)
    ]


@dataclass(frozen=True)
class Plan:
    """Events for a set of workspaces and the (tier, status) each must end in."""

    bodies: list[bytes]
    expected: dict[str, tuple[str, str]]


def plan(prefix: str, workspaces: int, *, noise: int = 0, seed: int = 0) -> Plan:
    """Lifecycles for `workspaces` workspaces, finals in turn, events shuffled together.

    `noise` adds events projections do not use: applying one counts it as
    skipped, so applying one twice shows in the checkpoint row of a digest.
    """
    bodies: list[bytes] = []
    expected: dict[str, tuple[str, str]] = {}
    finals = list(FINALS)
    for n in range(workspaces):
        workspace, final = f"{prefix}_{n}", finals[n % len(finals)]
        bodies += lifecycle(workspace, final)
        expected[workspace] = FINALS[final][2]
    for n in range(noise):
        invoice = {"id": f"in_{prefix}_{n}", "object": "invoice", "status": "paid"}
        bodies.append(stripe_event_body("invoice.paid", obj=invoice, created=T0 + n))
    random.Random(seed).shuffle(bodies)
    return Plan(bodies, expected)


def deliver(client: httpx.Client, body: bytes) -> int:
    """POST one signed Stripe event; it must be accepted. Returns its seq."""
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "accepted", answer
    return int(answer["seq"])


def deliver_all(server: Server, bodies: Sequence[bytes], *, senders: int = 1) -> list[int]:
    """Deliver `bodies` from `senders` threads; every one must be accepted. Their seqs."""
    seqs: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def send(part: Sequence[bytes]) -> None:
        try:
            with server.client() as client:
                for body in part:
                    seq = deliver(client, body)
                    with lock:
                        seqs.append(seq)
        except BaseException as e:
            with lock:
                errors.append(e)

    threads = [
        threading.Thread(target=send, args=(bodies[n::senders],), daemon=True)
        for n in range(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CLI_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "senders did not finish"
    if errors:
        raise errors[0]
    assert len(seqs) == len(bodies)
    return seqs


def state(client: httpx.Client, workspace: str) -> dict[str, Any]:
    response = client.get(f"/v1/workspaces/{workspace}/entitlements")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def metric(server: Server, name: str) -> float:
    """The value of one unlabelled sample from the server's /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} is not in /metrics")


# -- the databases, read directly -------------------------------------------------------------


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def log_head(settings: Settings) -> int:
    conn = _read_only(settings.events_path)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


def projected_seq(settings: Settings) -> int:
    """The projection checkpoint; 0 before the store exists."""
    if not settings.projections_path.exists():
        return 0
    conn = _read_only(settings.projections_path)
    try:
        row = conn.execute("SELECT seq FROM checkpoint").fetchone()
    except sqlite3.OperationalError:
        return 0  # created but its schema not yet committed
    finally:
        conn.close()
    return int(row[0]) if row else 0


def wait_projected(settings: Settings, head: int, timeout_s: float = PROJECTED_TIMEOUT_S) -> None:
    wait_until(
        lambda: projected_seq(settings) >= head,
        timeout_s,
        f"projections to reach seq {head} (at {projected_seq(settings)})",
    )


def live_digest(settings: Settings) -> list[tuple[Any, ...]]:
    store = ProjectionStore(settings.projections_path, settings)
    try:
        return store.digest_rows()
    finally:
        store.close()


def clean_digest(settings: Settings, directory: Path) -> list[tuple[Any, ...]]:
    """The projection a from-scratch rebuild of the whole log gives."""
    log = EventLog(settings.events_path)
    target = directory / "clean.db"
    try:
        rebuild(log, target, settings)
    finally:
        log.close()
    store = ProjectionStore(target, settings)
    try:
        return store.digest_rows()
    finally:
        store.close()


def assert_states(server: Server, expected: dict[str, tuple[str, str]], head: int) -> None:
    """Every workspace answers its expected (tier, status), as of `head` or later."""
    with server.client() as client:
        seen = {}
        for workspace in expected:
            answer = state(client, workspace)
            assert answer["as_of_seq"] >= head
            seen[workspace] = (answer["tier"], answer["status"])
    assert seen == expected


# -- checkout deployments -------------------------------------------------------------------


@pytest.fixture
def shops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShopFactory]:
    """Start checkout deployments (provider fakes + billhook), with no retry sleeps."""
    no_backoff(monkeypatch)
    with ExitStack() as stack:
        yield functools.partial(start_shop, stack, tmp_path)


@pytest.fixture
def shop(shops: ShopFactory) -> Shop:
    return shops()


# Pause between two events an Arrivals thread delivers: about 50 events/s.
ARRIVAL_GAP_S = 0.02


class Arrivals(threading.Thread):
    """Delivers a first active subscription for a new workspace every ARRIVAL_GAP_S."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.acked: list[str] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.client() as client:
                n = 0
                while not self.stopping.is_set():
                    workspace = f"ws_live_{n}"
                    sub = stripe_subscription(
                        id=f"sub_live_{n}",
                        customer=f"cus_live_{n}",
                        metadata={"workspace_id": workspace},
                    )
                    body = stripe_event_body("customer.subscription.created", obj=sub, created=T0)
                    deliver(client, body)
                    self.acked.append(workspace)
                    n += 1
                    time.sleep(ARRIVAL_GAP_S)
        except BaseException as e:
            self.error = e

    def wait_for(self, count: int) -> None:
        wait_until(
            lambda: len(self.acked) >= count or self.error is not None,
            PROJECTED_TIMEOUT_S,
            f"{count} arrivals",
        )

    def finish(self) -> list[str]:
        self.stopping.set()
        self.join(timeout=PROJECTED_TIMEOUT_S)
        assert not self.is_alive(), "the sender did not stop"
        if self.error is not None:
            raise self.error
        return self.acked
