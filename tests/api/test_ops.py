"""`/readyz` and `/metrics` as an operator relies on them (SPEC §6).

Readiness turns 503, naming the failing check, for each real failure — a log
whose write lock is held, a full disk, projections
trailing the log past their bound, a configured Redis that is down — and back
to 200 once the cause is gone, without waiting for traffic. The metrics an
operator alerts on move when they should.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from billhook.api.app import create_app
from billhook.api.ops import LagBounds
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.testing.polar import polar_event_body, polar_headers
from billhook.testing.servers import RedisServer, serve_in_thread, wait_until
from billhook.testing.settings import READ_TOKEN, make_settings, write_config
from billhook.testing.stripe import stripe_event_body, stripe_headers, stripe_subscription
from tests.deployment import (
    PROJECTED_TIMEOUT_S,
    Processes,
    deliver_all,
    log_head,
    plan,
    settings_of,
    wait_projected,
)
from tests.support import fill, tmpfs

# Padding that makes each event need several fresh pages of the database.
LARGE_NOTE = "n" * 16_384
# Large deliveries tried before a full disk must have refused one.
MAX_DELIVERIES_UNTIL_FULL = 50
# Big enough to start the server and take a few events, small enough to fill at once.
TMPFS_SIZE = "4m"
# A Stripe secret the server does not know: its signatures are bad.
WRONG_STRIPE_SECRET = "whsec_not_the_configured_one_0000"
WRONG_POLAR_SECRET = "whsec_" + base64.b64encode(b"not-the-configured-polar-key-00").decode()
ENTITLEMENTS_ROUTE = "/v1/workspaces/{workspace_id}/entitlements"
LATENCY = "billhook_http_request_duration_seconds"


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def served(settings: Settings) -> Iterator[httpx.Client]:
    log = EventLog(settings.events_path)
    try:
        with (
            serve_in_thread(create_app(settings, log=log)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            yield client
    finally:
        log.close()


def _ready(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _failing(client: httpx.Client, check: str) -> dict[str, Any] | None:
    """The /readyz body when it is 503 with exactly `check` failing, else None."""
    status, body = _ready(client)
    if status == 503 and body.get("failing") == [check]:
        return body
    return None


def _ready_again(client: httpx.Client) -> bool:
    status, body = _ready(client)
    return status == 200 and set(body["checks"].values()) == {"ok"} and "failing" not in body


def _sample(client: httpx.Client, name: str, **labels: str) -> float:
    """One sample of /metrics; 0 when a labelled series has not been created yet."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def _stripe_body(*, large: bool = False, workspace: str = "ws_1") -> bytes:
    metadata = {"workspace_id": workspace, **({"note": LARGE_NOTE} if large else {})}
    return stripe_event_body(
        "customer.subscription.updated", obj=stripe_subscription(metadata=metadata)
    )


def _deliver(client: httpx.Client, body: bytes, secret: str | None = None) -> httpx.Response:
    headers = stripe_headers(body) if secret is None else stripe_headers(body, secret)
    return client.post("/webhooks/stripe", content=body, headers=headers)


def _deliver_until_refused(client: httpx.Client) -> bytes:
    """Deliver large events until the log refuses one; that event's body."""
    for _ in range(MAX_DELIVERIES_UNTIL_FULL):
        body = _stripe_body(large=True)
        response = _deliver(client, body)
        if response.status_code == 503:
            assert response.json()["error"] == "log_unavailable"
            return body
        assert response.status_code == 200, response.text
    raise AssertionError(f"{MAX_DELIVERIES_UNTIL_FULL} large events all fitted in a full log")


@pytest.fixture
def on_tmpfs(tmp_path: Path) -> Iterator[tuple[Path, httpx.Client]]:
    """A server whose data dir is on a small tmpfs of its own; yields (mount point, client)."""
    with tmpfs(tmp_path / "tmpfs", TMPFS_SIZE) as mount_point:
        settings = make_settings(mount_point / "data")
        log = EventLog(settings.events_path)
        try:
            with (
                serve_in_thread(create_app(settings, log=log)) as url,
                httpx.Client(base_url=url, timeout=30) as client,
            ):
                yield mount_point, client
        finally:
            log.close()


# -- /readyz: the log ---------------------------------------------------------------------------


def test_readyz_names_the_log_while_its_write_lock_is_held(
    settings: Settings, served: httpx.Client
) -> None:
    assert _ready_again(served)
    blocker = sqlite3.connect(settings.events_path, isolation_level=None)
    try:
        # Another process holding the write lock past the probe's busy timeout.
        blocker.execute("BEGIN EXCLUSIVE")
        body = _failing(served, "log")
        assert body is not None
        assert body["status"] == "not_ready"
        assert body["checks"]["log"] == "unavailable: database is locked"
        assert body["checks"]["projections"] == "ok"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # No delivery needed: the probe sees the lock gone.
    assert _ready_again(served)
    assert _deliver(served, _stripe_body()).status_code == 200


def test_readyz_names_the_log_on_a_full_disk_until_space_returns(
    on_tmpfs: tuple[Path, httpx.Client],
) -> None:
    mount_point, client = on_tmpfs
    assert _deliver(client, _stripe_body()).status_code == 200
    assert _ready_again(client)
    filler = mount_point / "filler"
    fill(filler)

    refused = _deliver_until_refused(client)
    body = _failing(client, "log")
    assert body is not None
    assert body["checks"]["log"] == "unavailable: database or disk is full"

    filler.unlink()
    # Ready again before any provider retries: the probe's own durable write succeeds.
    assert _ready_again(client)
    retried = _deliver(client, refused)
    assert retried.status_code == 200
    assert retried.json()["status"] == "accepted"


# -- /readyz: projections and broker ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "deliveries"),
    [
        pytest.param(LagBounds(events=2, seconds=3600.0), 3, id="events"),
        pytest.param(LagBounds(events=1000, seconds=0.0), 1, id="seconds"),
    ],
)
def test_readyz_names_projections_lagging_past_their_bound_until_they_catch_up(
    tmp_path: Path, redis_db: redis.Redis, redis_url: str, bounds: LagBounds, deliveries: int
) -> None:
    # With Redis configured the web process projects nothing: no worker runs here.
    settings = make_settings(tmp_path / "data", redis_url=redis_url)
    log = EventLog(settings.events_path)
    try:
        app = create_app(settings, log=log, ready_bounds=bounds)
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            assert _ready_again(client)
            for n in range(deliveries):
                assert _deliver(client, _stripe_body(workspace=f"ws_{n}")).status_code == 200
            body = wait_until(
                lambda: _failing(client, "projections"), PROJECTED_TIMEOUT_S, "a lag past bounds"
            )
            assert body["checks"]["projections"].startswith(f"lagging by {deliveries} events (")
            assert body["checks"]["broker"] == "ok"
            assert _sample(client, "billhook_projection_lag_events") == deliveries
            assert _sample(client, "billhook_projection_lag_seconds") > 0

            # What a `billhook worker` does once it runs.
            store = ProjectionStore(settings.projections_path, settings)
            try:
                catch_up(log, store)
            finally:
                store.close()
            assert _ready_again(client)
            assert _sample(client, "billhook_projection_lag_events") == 0
            assert _sample(client, "billhook_projection_lag_seconds") == 0
            assert _sample(client, "billhook_projection_seq") == deliveries
    finally:
        log.close()


def test_readyz_names_the_broker_while_redis_is_down(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    settings = make_settings(tmp_path / "data", redis_url=own_redis.url())
    log = EventLog(settings.events_path)
    try:
        with (
            serve_in_thread(create_app(settings, log=log)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            assert _ready_again(client)
            assert _ready(client)[1]["checks"]["broker"] == "ok"
            own_redis.stop()
            body = wait_until(
                lambda: _failing(client, "broker"), PROJECTED_TIMEOUT_S, "the broker reported down"
            )
            assert body["checks"]["broker"] == "unavailable"
            own_redis.start()
            wait_until(lambda: _ready_again(client), PROJECTED_TIMEOUT_S, "the broker back")
    finally:
        log.close()


# -- /metrics -----------------------------------------------------------------------------------


def test_signature_failures_and_redeliveries_are_counted_by_provider(
    served: httpx.Client,
) -> None:
    webhooks = "billhook_webhooks_total"
    stripe_body = _stripe_body()
    assert _deliver(served, stripe_body).status_code == 200
    assert _deliver(served, stripe_body).json()["status"] == "duplicate"
    assert _deliver(served, stripe_body).json()["status"] == "duplicate"
    assert _deliver(served, _stripe_body(), WRONG_STRIPE_SECRET).status_code == 400
    polar_body = polar_event_body()
    bad = served.post(
        "/webhooks/polar", content=polar_body, headers=polar_headers(polar_body, WRONG_POLAR_SECRET)
    )
    assert bad.json()["error"] == "invalid_signature"

    assert _sample(served, webhooks, provider="stripe", outcome="accepted") == 1
    assert _sample(served, webhooks, provider="stripe", outcome="duplicate") == 2
    assert _sample(served, webhooks, provider="stripe", outcome="invalid_signature") == 1
    assert _sample(served, webhooks, provider="polar", outcome="invalid_signature") == 1
    assert _sample(served, webhooks, provider="polar", outcome="accepted") == 0


def test_request_latency_is_counted_by_route_template_method_and_status_class(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data")
    log = EventLog(settings.events_path)
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    try:
        with (
            serve_in_thread(create_app(settings, log=log)) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            for workspace in ("ws_alpha", "ws_beta", "ws_alpha"):
                got = client.get(f"/v1/workspaces/{workspace}/entitlements", headers=auth)
                assert got.status_code == 200
            assert client.get("/v1/workspaces/ws_gamma/entitlements").status_code == 401
            assert _deliver(client, _stripe_body()).status_code == 200
            assert client.get("/no/such/path").status_code == 404
            assert client.get("/v1/no/such/path", headers=auth).status_code == 404
            assert client.post("/v1/workspaces/ws_alpha/entitlements").status_code == 405

            def count(route: str, method: str, status: str) -> float:
                labels = {"route": route, "method": method, "status": status}
                return _sample(client, f"{LATENCY}_count", **labels)

            assert count(ENTITLEMENTS_ROUTE, "GET", "2xx") == 3
            assert count(ENTITLEMENTS_ROUTE, "GET", "4xx") == 1
            assert count(ENTITLEMENTS_ROUTE, "POST", "4xx") == 1
            assert count("/webhooks/stripe", "POST", "2xx") == 1
            assert count("unmatched", "GET", "4xx") == 2
            # /metrics itself: counted once its answer is sent, so the first scrape shows none.
            assert count("/metrics", "GET", "2xx") >= 1
            text = client.get("/metrics").text
            # Templates, never raw paths: no workspace id becomes a label value.
            for raw in ("ws_alpha", "ws_beta", "ws_gamma", "/no/such/path"):
                assert raw not in text
            assert f'{LATENCY}_bucket{{le="0.001",method="GET",route="{ENTITLEMENTS_ROUTE}"' in text
    finally:
        log.close()


# -- billhook worker's batch lines ----------------------------------------------------------


def test_billhook_worker_logs_one_line_per_applied_batch(
    tmp_path: Path, processes: Processes, redis_db: redis.Redis, redis_url: str
) -> None:
    config = write_config(tmp_path, redis_url=redis_url)
    settings = settings_of(config)
    server = processes.serve(config)
    worker = processes.worker(config)
    deliver_all(server, plan("ws_batch", 4).bodies)
    head = log_head(settings)
    wait_projected(settings, head)

    def read() -> list[dict[str, Any]]:
        text = (tmp_path / "worker.log").read_text()
        return [json.loads(line) for line in text.splitlines()]

    # Lines are written off the logging thread, a few milliseconds after the commit.
    wait_until(
        lambda: any(line.get("last_seq") == head for line in read()), 10, "the last batch line"
    )
    lines = read()
    # The log it uses, first, as every command that uses one says (issue 12).
    assert {"msg": "event log", "path": str(settings.events_path)}.items() <= lines[0].items()
    batches = [line for line in lines if line["msg"] == "batch"]
    assert batches
    assert batches[0]["first_seq"] == 1
    assert batches[-1]["last_seq"] == head
    assert sum(batch["count"] for batch in batches) == head
    for batch in batches:
        assert batch["logger"] == "billhook.projections.projector"
        assert batch["first_seq"] <= batch["last_seq"]
        assert batch["applied"] + batch["skipped"] + batch["quarantined"] == batch["count"]
        assert batch["latency_ms"] >= 0
    assert worker.poll() is None
