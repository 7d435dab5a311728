"""Entitlement webhooks end to end (SPEC §6b): a real billhook under uvicorn sends to a real
receiving service (billhook.testing.receiver), which verifies every request with its own
Standard Webhooks library."""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.outbound.endpoints import new_secret
from billhook.outbound.store import open_outbox
from billhook.testing.receiver import Answer, Received, WebhookSink
from billhook.testing.servers import serve_in_thread, wait_until
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, make_settings
from tests.deployment import deliver, plan

SECRET = new_secret()
OTHER_SECRET = new_secret()
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WAIT_S = 30.0


def outbound(url: str, secrets: list[str], **options: Any) -> dict[str, Any]:
    """An `[outbound]` table with one endpoint at `url`, retrying fast."""
    table: dict[str, Any] = {"first_retry_s": 0.05, "max_retry_s": 0.2, "timeout_s": 1.0}
    table.update(options)
    table["endpoints"] = [{"id": "app", "url": url, "secrets": secrets}]
    return {"outbound": table}


@contextlib.contextmanager
def running(
    tmp_path: Path,
    answer: Callable[[Received], Answer] | None = None,
    *,
    secrets: tuple[str, ...] = (SECRET,),
    storage_url: str | None = None,
    **options: Any,
) -> Iterator[tuple[WebhookSink, httpx.Client, Settings]]:
    """A sink and a billhook that sends to it; yields the sink, a client of billhook, its
    settings."""
    sink = WebhookSink(secrets, answer)
    with serve_in_thread(sink.app) as sink_url:
        extra: dict[str, Any] = outbound(f"{sink_url}/hooks", list(secrets), **options)
        if storage_url is not None:
            extra["storage"] = {"url": storage_url}
        settings = make_settings(tmp_path / "data", sections=extra)
        with (
            serve_in_thread(create_app(settings)) as url,
            httpx.Client(base_url=url, headers=READ, timeout=10) as client,
        ):
            yield sink, client, settings


def feed(client: httpx.Client) -> list[dict[str, Any]]:
    """Every entitlement change of the feed, oldest first."""
    changes: list[dict[str, Any]] = []
    after = "0-0"
    while True:
        page = client.get("/v1/changes", params={"after": after, "limit": 1000}).json()
        changes += [c for c in page["changes"] if c["kind"] == "entitlement"]
        if not page["changes"]:
            return changes
        after = page["next"]


def by_workspace(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    cursors: dict[str, list[str]] = defaultdict(list)
    for item in items:
        cursors[item["workspace_id"]].append(item["cursor"])
    return dict(cursors)


def first_deliveries(sink: WebhookSink) -> list[Received]:
    """The first 2xx of each webhook-id, in arrival order."""
    seen: set[str] = set()
    firsts = []
    for received in sink.delivered():
        if received.webhook_id not in seen:
            seen.add(received.webhook_id)
            firsts.append(received)
    return firsts


def deliver_plan(client: httpx.Client, prefix: str, workspaces: int) -> list[dict[str, Any]]:
    """A lifecycle per workspace, delivered; once projected, the feed's entitlement changes."""
    head = 0
    for body in plan(prefix, workspaces).bodies:
        head = deliver(client, body)
    wait_until(
        lambda: client.get(f"/v1/workspaces/{prefix}_0/entitlements").json()["as_of_seq"] >= head,
        WAIT_S,
        "the projection to catch up",
    )
    return feed(client)


def wait_for_all(sink: WebhookSink, changes: list[dict[str, Any]]) -> None:
    wanted = {c["cursor"] for c in changes}
    sink.wait_for(lambda got: wanted <= {r.cursor for r in got}, WAIT_S)


def assert_in_order(sink: WebhookSink, changes: list[dict[str, Any]]) -> None:
    """Each workspace's changes were delivered once each, in the feed's order, as the feed
    says them."""
    firsts = first_deliveries(sink)
    assert by_workspace([r.body["data"] for r in firsts]) == by_workspace(changes)
    bodies = {c["cursor"]: c for c in changes}
    for received in firsts:
        assert received.body["type"] == "entitlement.updated"
        assert received.body["data"] == bodies[received.cursor]
        assert received.body["timestamp"] == bodies[received.cursor]["at"]
        assert received.webhook_id == f"app_{received.cursor.replace('-', '_')}"


def test_a_lifecycle_is_delivered_signed_and_in_order_per_workspace(tmp_path: Path) -> None:
    with running(tmp_path) as (sink, client, _):
        changes = deliver_plan(client, "ow", 8)
        assert len(changes) >= 8
        wait_for_all(sink, changes)
        assert_in_order(sink, changes)
        assert sink.rejected == 0
        # Nothing failed: no duplicates either.
        assert len(sink.delivered()) == len({r.webhook_id for r in sink.delivered()})


def test_an_endpoint_failing_for_a_while_gets_every_change_once_in_order(
    tmp_path: Path,
) -> None:
    failing = threading.Event()
    failing.set()

    def answer(received: Received) -> Answer:
        return Answer(500) if failing.is_set() else Answer(200)

    with running(tmp_path, answer) as (sink, client, settings):
        changes = deliver_plan(client, "of", 4)
        # Retries come (backoff of 0.05 s doubling to 0.2 s), each answered 500.
        sink_wait_attempts(sink, 6)
        assert sink.delivered() == []
        failing.clear()
        wait_for_all(sink, changes)
        assert_in_order(sink, changes)
        assert len(sink.delivered()) == len(changes)  # delivered once each
        settled(client)
        counted = metrics(client)
        assert counted[("billhook_outbound_deliveries_total", "delivered")] == len(changes)
        assert counted[("billhook_outbound_attempts_total", "5xx")] >= 6
        assert counted[("billhook_outbound_oldest_pending_seconds", "")] == 0
        outbox = open_outbox(settings)
        try:
            rows = outbox.deliveries(limit=1000)
            assert {row.status for row in rows} == {"delivered"}
            assert max(row.attempts for row in rows) >= 2
            retried = next(row for row in rows if row.attempts >= 2)
            statuses = [a.status for a in outbox.attempts(retried.id)]
            assert statuses[-1] == 200
            assert set(statuses[:-1]) == {500}
        finally:
            outbox.close()


def metrics(client: httpx.Client) -> dict[tuple[str, str], float]:
    """The outbound samples of `/metrics`, by name and outcome or result."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("billhook_outbound"):
                label = sample.labels.get("outcome") or sample.labels.get("result") or ""
                found[(sample.name, label)] = found.get((sample.name, label), 0) + sample.value
    return found


def settled(client: httpx.Client) -> None:
    """Until nothing is pending: the last answers are recorded just after the sink sent them."""
    wait_until(
        lambda: metrics(client)[("billhook_outbound_pending", "")] == 0, WAIT_S, "the records"
    )


def sink_wait_attempts(sink: WebhookSink, n: int) -> None:
    wait_until(lambda: len(sink.attempts()) >= n, WAIT_S, f"{n} attempts")


def test_410_is_final_and_frees_the_workspace_queue(tmp_path: Path) -> None:
    def answer(received: Received) -> Answer:
        return Answer(410) if received.workspace == "og_0" else Answer(200)

    with running(tmp_path, answer) as (sink, client, settings):
        changes = deliver_plan(client, "og", 2)
        gone = [c for c in changes if c["workspace_id"] == "og_0"]
        kept = [c for c in changes if c["workspace_id"] == "og_1"]
        wait_for_all(sink, kept)
        sink_wait_attempts(sink, len(changes))
        settled(client)
        outbox = open_outbox(settings)
        try:
            failed = outbox.deliveries(status="failed", limit=1000)
            # Every change of og_0 was tried once: the 410 of one does not hold the next.
            assert sorted(f"{row.seq}-{row.k}" for row in failed) == sorted(
                c["cursor"] for c in gone
            )
            assert {(row.attempts, row.last_status) for row in failed} == {(1, 410)}
        finally:
            outbox.close()
        # Marked failing beside /readyz, which stays ready: ingestion is not blocked.
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["outbound"] == {"failing_endpoints": ["app"]}


def test_a_timeout_is_retried_with_the_same_webhook_id(tmp_path: Path) -> None:
    slow: set[str] = set()

    def answer(received: Received) -> Answer:
        if received.webhook_id not in slow:
            slow.add(received.webhook_id)
            return Answer(200, delay_s=1.5)  # past timeout_s: billhook gives up waiting
        return Answer(200)

    with running(tmp_path, answer, timeout_s=0.3) as (sink, client, settings):
        changes = deliver_plan(client, "ot", 1)
        wait_for_all(sink, changes)
        settled(client)
        outbox = open_outbox(settings)
        try:
            rows = outbox.deliveries(limit=100)
            assert {row.status for row in rows} == {"delivered"}
            first = outbox.attempts(rows[-1].id)
            assert [a.error for a in first][:1] == ["timeout"]
            assert first[-1].status == 200
        finally:
            outbox.close()
        # A receiver sees the late duplicate with the id it already has.
        ids = [r.webhook_id for r in sink.delivered()]
        assert set(ids) == {f"app_{c['cursor'].replace('-', '_')}" for c in changes}


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    told: set[str] = set()

    def answer(received: Received) -> Answer:
        if received.webhook_id not in told:
            told.add(received.webhook_id)
            return Answer(429, headers={"Retry-After": "1"})
        return Answer(200)

    with running(tmp_path, answer) as (sink, client, _):
        changes = deliver_plan(client, "or", 1)
        wait_for_all(sink, changes[:1])
        attempts = [r for r in sink.attempts() if r.webhook_id == sink.delivered()[0].webhook_id]
        # The retry came after the second the endpoint asked for, not after the 0.05 s backoff.
        assert attempts[-1].timestamp - attempts[0].timestamp >= 1


def test_during_a_rotation_receivers_holding_either_secret_verify(tmp_path: Path) -> None:
    # The sink verifies every request with each of the two secrets on its own.
    with running(tmp_path, secrets=(SECRET, OTHER_SECRET)) as (sink, client, _):
        changes = deliver_plan(client, "os", 2)
        wait_for_all(sink, changes)
        assert sink.rejected == 0
        for received in sink.delivered():
            signatures = received.signature.split(" ")
            assert len(signatures) == 2
            assert all(s.startswith("v1,") for s in signatures)


def test_two_nodes_on_postgresql_deliver_each_change_once(tmp_path: Path, pg_url: str) -> None:
    """Two billhook processes' dispatchers share the outbox: a change is sent once."""
    sink = WebhookSink([SECRET])
    with serve_in_thread(sink.app) as sink_url:
        extra: dict[str, Any] = outbound(f"{sink_url}/hooks", [SECRET])
        extra["storage"] = {"url": pg_url}
        one = make_settings(tmp_path / "one", sections=extra)
        two = make_settings(tmp_path / "two", sections=extra)
        with (
            serve_in_thread(create_app(one)) as url_one,
            serve_in_thread(create_app(two)) as url_two,
            httpx.Client(base_url=url_one, headers=READ, timeout=10) as c1,
            httpx.Client(base_url=url_two, headers=READ, timeout=10) as c2,
        ):
            bodies = plan("op", 6).bodies
            head = max(deliver(c1 if n % 2 else c2, body) for n, body in enumerate(bodies))
            # Read the feed only once node one has projected every event, or a change
            # projected after the read would be delivered but missing from `changes`.
            wait_until(
                lambda: c1.get("/v1/workspaces/op_0/entitlements").json()["as_of_seq"] >= head,
                WAIT_S,
                "node one's projection to catch up",
            )
            changes = feed(c1)
            assert changes
            wait_for_all(sink, changes)
            assert_in_order(sink, changes)
            assert len(sink.delivered()) == len(changes), "a change was sent twice"
