"""billhook on several hosts sharing one PostgreSQL database (SPEC §4a), for real.

Two hosts, each with its own working directory and data_dir and (as root)
its own network namespace, reaching PostgreSQL (and Redis) only over a veth
pair, run `billhook serve`: (a) each with its embedded projector, the two
projectors coordinating through the checkpoint row; (b) with Redis, beside a
`billhook worker` on each host. Deliveries arrive at both receivers at once,
the same event at both at the same moment, and one receiver is SIGKILLed
mid-load and restarted. Afterwards every acked event is in the log exactly
once at the seq its answer named, both nodes answer every workspace as its
last event says, and the projection equals a rebuild of the log.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from billhook.config import Settings
from billhook.log.postgres import PostgresEventLog
from billhook.projections.backend import open_store
from billhook.projections.postgres import PROJECTIONS_SCHEMA, PgSchema
from billhook.projections.rebuild import rebuild
from billhook.testing.servers import wait_until
from billhook.testing.settings import make_settings, write_config
from billhook.testing.stripe import stripe_event_body, stripe_headers
from tests.deployment import FINALS, T0, Server, lifecycle, state
from tests.e2e.hosts import Cluster, Host, cluster, head, logged, projected, service

# Workspaces whose lifecycles the load delivers (four events each: three and an invoice).
WORKSPACES = 45
# Threads delivering the load, each workspace's events in order, alternating receivers.
SENDERS = 4
# Workspaces whose every event is delivered to both receivers at the same moment.
SAME_TIME_WORKSPACES = 4
# Workspaces delivered to the restarted receiver alone.
LATE_WORKSPACES = 3
# Acks the load must have had before the kill, and between the kill and the restart.
ACKS_BEFORE_KILL = 40
ACKS_WHILE_DOWN = 30
# Upper bound on how long one event may take to be acked by some receiver.
ACK_TIMEOUT_S = 20.0
# Upper bound on the projections catching up and both nodes answering it.
CATCH_UP_TIMEOUT_S = 20.0
# Pause before a refused delivery is tried at the other receiver.
RETRY_GAP_S = 0.02


def _events(workspace: str, final: str) -> list[bytes]:
    """`workspace`'s lifecycle, in order, with an invoice (which projections skip) in it."""
    created, past_due, last = lifecycle(workspace, final)
    invoice = {"id": f"in_{workspace}", "object": "invoice", "status": "paid"}
    noise = stripe_event_body("invoice.paid", obj=invoice, created=T0 + 1)
    return [created, noise, past_due, last]


def _final(n: int) -> str:
    return list(FINALS)[n % len(FINALS)]


def _event_id(body: bytes) -> str:
    return str(json.loads(body)["id"])


@dataclass
class Ledger:
    """What the senders were told, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # event id -> (seq its 2xx answer named, the body sent)
    acked: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    # Deliveries not acked (connection refused or cut, a 503) and tried again elsewhere.
    refused: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


class Sender(threading.Thread):
    """Delivers workspaces' events in order, each to the next receiver in turn, as a
    provider retries: until some receiver acks it."""

    def __init__(self, urls: list[str], workspaces: list[list[bytes]], ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.workspaces = workspaces
        self.ledger = ledger

    def run(self) -> None:
        clients = [httpx.Client(base_url=url, timeout=10) for url in self.urls]
        try:
            turn = 0
            for events in self.workspaces:
                for body in events:
                    self._until_acked(clients, body, turn)
                    turn += 1
        except BaseException as e:
            with self.ledger.lock:
                self.ledger.errors.append(repr(e))
        finally:
            for client in clients:
                client.close()

    def _until_acked(self, clients: list[httpx.Client], body: bytes, turn: int) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            client = clients[turn % len(clients)]
            turn += 1
            try:
                response = client.post(
                    "/webhooks/stripe", content=body, headers=stripe_headers(body)
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.is_success:
                answer = response.json()
                assert answer["status"] in ("accepted", "duplicate"), answer
                with self.ledger.lock:
                    self.ledger.acked[_event_id(body)] = (int(answer["seq"]), body)
                return
            if response is not None and response.status_code != 503:
                raise AssertionError(f"{response.status_code}: {response.text}")
            with self.ledger.lock:
                self.ledger.refused += 1
            time.sleep(RETRY_GAP_S)
        raise AssertionError(f"no receiver acked {_event_id(body)} in {ACK_TIMEOUT_S} s")


def _deliver_at_once(servers: list[Server], body: bytes) -> list[dict[str, Any]]:
    """POST `body` to every server at the same moment; their answers."""
    barrier = threading.Barrier(len(servers))
    answers: list[dict[str, Any]] = [{} for _ in servers]

    def post(n: int) -> None:
        with httpx.Client(base_url=servers[n].base_url, timeout=10) as client:
            barrier.wait(timeout=10)
            response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        answers[n] = {"code": response.status_code, **response.json()}

    threads = [threading.Thread(target=post, args=(n,)) for n in range(len(servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=ACK_TIMEOUT_S)
    return answers


def _config(host: Host, pg_url: str, redis_url: str | None) -> Path:
    return write_config(
        host.directory,
        data_dir=host.data_dir,
        redis_url=host.url(redis_url) if redis_url else None,
        sections={"storage": {"url": host.url(pg_url)}},
    )


def _mismatches(
    server: Server, expected: dict[str, tuple[str, str]], at_least: int
) -> dict[str, Any]:
    """Workspaces `server` does not (yet) answer as expected, as of `at_least` or later."""
    wrong: dict[str, Any] = {}
    with server.client() as client:
        for workspace, want in expected.items():
            answer = state(client, workspace)
            seen = (answer["tier"], answer["status"])
            if seen != want or answer["as_of_seq"] < at_least:
                wrong[workspace] = (seen, answer["as_of_seq"])
    return wrong


def _assert_every_node_answers(
    servers: list[Server], expected: dict[str, tuple[str, str]], pg_url: str
) -> None:
    last = head(pg_url)
    wait_until(
        lambda: projected(pg_url) >= last,
        CATCH_UP_TIMEOUT_S,
        f"projections to reach seq {last} (at {projected(pg_url)})",
    )
    for server in servers:
        _wait_answering(server, expected, last)


def _wait_answering(server: Server, expected: dict[str, tuple[str, str]], last: int) -> None:
    wrong: dict[str, Any] = {}

    def settled() -> bool:
        wrong.clear()
        wrong.update(_mismatches(server, expected, last))
        return not wrong

    try:
        wait_until(settled, CATCH_UP_TIMEOUT_S, f"{server.base_url} to answer seq {last}")
    except TimeoutError:
        first = dict(list(wrong.items())[:5])
        raise AssertionError(f"{server.base_url} answers {first}") from None


def _assert_matches_a_rebuild(pg_url: str, settings: Settings) -> None:
    """The live projection is row for row what one fold of the log gives: no batch was
    applied twice (the invoices count as skipped) and none was missed."""
    location = PgSchema(pg_url, PROJECTIONS_SCHEMA)
    check = PgSchema(pg_url, f"{PROJECTIONS_SCHEMA}_check")
    log = PostgresEventLog(pg_url)
    try:
        rebuild(log, check, settings)
    finally:
        log.close()
    digests = []
    for where in (location, check):
        store = open_store(where, settings)
        try:
            digests.append(store.digest_rows())
        finally:
            store.close()
    live, clean = digests
    assert live == clean
    assert {row[0] for row in live} >= {"s", "h", "c"}


def _assert_no_file_shared(hosts: list[Host]) -> None:
    """Nothing of the log or the projections is on any host's disk."""
    for host in hosts:
        assert not [p.name for p in host.directory.rglob("*.db*")], host.name


@pytest.fixture
def two_hosts(tmp_path: Path, pg_url: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    services = [service(pg_url)]
    if "redis_url" in request.fixturenames:
        services.append(service(request.getfixturevalue("redis_url")))
    with cluster(tmp_path, services) as hosts:
        for name in ("host-a", "host-b"):
            host = hosts.add_host(name)
            if host.netns:
                # Isolated for real: PostgreSQL's own address answers nothing in there.
                pg_host, pg_port = service(pg_url)
                assert not host.reaches(pg_host, pg_port)
                assert host.reaches(host.gateway, host.forwards[(pg_host, pg_port)])
        yield hosts


def _scenario(hosts: Cluster, pg_url: str, redis_url: str | None) -> None:
    a, b = hosts.hosts
    configs = [_config(host, pg_url, redis_url) for host in (a, b)]
    servers = [hosts.serve(host, config) for host, config in zip((a, b), configs, strict=True)]
    workers = []
    if redis_url is not None:
        workers = [hosts.worker(host, config) for host, config in zip((a, b), configs, strict=True)]
    expected: dict[str, tuple[str, str]] = {}

    # The same event at both receivers at the same moment: one row, both answers its seq.
    for n in range(SAME_TIME_WORKSPACES):
        workspace = f"ws_same_{n}"
        expected[workspace] = FINALS[_final(n)][2]
        for body in _events(workspace, _final(n)):
            answers = _deliver_at_once(servers, body)
            assert [answer["code"] for answer in answers] == [200, 200], answers
            assert sorted(answer["status"] for answer in answers) == ["accepted", "duplicate"]
            assert answers[0]["seq"] == answers[1]["seq"]
            assert logged(pg_url)[_event_id(body)] == [(answers[0]["seq"], body.decode())]

    # Load at both receivers; one of them is SIGKILLed mid-load and restarted.
    workspaces = {f"ws_{n}": _events(f"ws_{n}", _final(n)) for n in range(WORKSPACES)}
    expected.update({f"ws_{n}": FINALS[_final(n)][2] for n in range(WORKSPACES)})
    ledger = Ledger()
    urls = [server.base_url for server in servers]
    plan = list(workspaces.values())
    senders = [Sender(urls, plan[n::SENDERS], ledger) for n in range(SENDERS)]
    for sender in senders:
        sender.start()
    wait_until(lambda: ledger.count() >= ACKS_BEFORE_KILL, ACK_TIMEOUT_S, "acks before the kill")
    victim = servers[0]
    victim.process.send_signal(signal.SIGKILL)
    assert victim.process.wait(timeout=10) == -signal.SIGKILL
    acked_at_kill = ledger.count()
    wait_until(
        lambda: ledger.count() >= acked_at_kill + ACKS_WHILE_DOWN or ledger.errors,
        ACK_TIMEOUT_S,
        "acks while one receiver is down",
    )
    port = int(victim.base_url.rsplit(":", 1)[1])
    servers[0] = hosts.serve(a, configs[0], name="serve-restarted", port=port)
    for sender in senders:
        sender.join(timeout=ACK_TIMEOUT_S * 3)
    assert not any(sender.is_alive() for sender in senders), "the senders did not finish"
    assert ledger.errors == []
    assert acked_at_kill < ledger.count()  # the kill landed mid-load
    assert ledger.refused > 0  # and deliveries met the dead receiver

    # The restarted receiver takes deliveries of its own.
    with httpx.Client(base_url=servers[0].base_url, timeout=10) as client:
        for n in range(LATE_WORKSPACES):
            workspace = f"ws_late_{n}"
            expected[workspace] = FINALS[_final(n)][2]
            for body in _events(workspace, _final(n)):
                response = client.post(
                    "/webhooks/stripe", content=body, headers=stripe_headers(body)
                )
                assert response.status_code == 200, response.text
                assert response.json()["status"] == "accepted"
                ledger.acked[_event_id(body)] = (response.json()["seq"], body)

    # Every acked event is in the log exactly once, at the seq it was acked with, byte-exact.
    rows = logged(pg_url)
    sent = {_event_id(body) for events in workspaces.values() for body in events}
    assert sent <= set(ledger.acked)
    for event_id, (seq, body) in ledger.acked.items():
        assert rows[event_id] == [(seq, body.decode())], event_id
    all_seqs = sorted(seq for found in rows.values() for seq, _ in found)
    assert all_seqs == list(range(1, head(pg_url) + 1))

    _assert_every_node_answers(servers, expected, pg_url)
    settings = make_settings(hosts.directory / "check", sections={"storage": {"url": pg_url}})
    _assert_matches_a_rebuild(pg_url, settings)
    assert all(worker.poll() is None for worker in workers)
    _assert_no_file_shared(hosts.hosts)


def test_two_receivers_with_embedded_projectors_on_one_database(
    two_hosts: Cluster, pg_url: str
) -> None:
    """Topology (a): no Redis; both web processes project, one applies each batch."""
    _scenario(two_hosts, pg_url, None)


def test_two_receivers_and_two_workers_on_one_database_and_redis(
    two_hosts: Cluster, pg_url: str, redis_db: redis.Redis, redis_url: str
) -> None:
    """Topology (b): Redis wake-ups; a worker on each host projects."""
    _scenario(two_hosts, pg_url, redis_url)
