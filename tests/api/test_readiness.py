"""Launch readiness (SPEC §6c): each gate turns from ✗ to ✓ as its evidence arrives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from billhook.api.app import create_app
from billhook.api.launch import launch_report
from billhook.api.schemas import LaunchGate, LaunchReport
from billhook.cli.main import main
from billhook.config import Settings
from billhook.projections import actions as operator
from billhook.projections.impact import SqliteImpactStore
from billhook.providers import sessions
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import (
    ADMIN_TOKEN,
    READ_TOKEN,
    STRIPE_API_KEY,
    make_settings,
    write_config,
)
from billhook.testing.stripe import stripe_subscription
from tests.contract import contract_client
from tests.feed import NOW, Feed

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TODAY = NOW.date().isoformat()
# Stripe with an API key and the default price map (team monthly and yearly, enterprise yearly).
STRIPE = {"api_key": STRIPE_API_KEY}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Feed, SqliteImpactStore]]:
    settings = make_settings(tmp_path / "data", stripe=STRIPE, polar=None)
    feed = Feed(settings)
    impact = SqliteImpactStore(settings.data_dir / "impact.db")
    yield feed, impact
    impact.close()
    feed.close()


def _report(
    feed: Feed, impact: SqliteImpactStore, settings: Settings | None = None
) -> LaunchReport:
    return launch_report(settings or feed.settings, feed.log, feed.store, impact, now=NOW)


def _gate(report: LaunchReport, name: str) -> LaunchGate:
    return next(g for g in report.gates if g.gate == name)


def _checkout(workspace: str) -> Any:
    request = sessions.CheckoutRequest(
        workspace, "stripe", "team", "month", 5, "https://app/ok", "https://app/no", "owner"
    )
    offer = sessions.Offer("price_team_monthly", True, 1, None)
    started = sessions.Started(offer, 5, "cs_test_smoke", "https://checkout.example/cs_test_smoke")
    return sessions.checkout_started(request, started, NOW)


def test_each_gate_turns_green_as_its_evidence_arrives(
    setup: tuple[Feed, SqliteImpactStore],
) -> None:
    feed, impact = setup
    first = _report(feed, impact)
    assert not first.ready
    failing = {g.gate for g in first.gates if not g.ok}
    assert failing == {"webhooks stripe", "pilots", "smoke", "enforcement"}
    assert {g.gate for g in first.gates} == failing | {"prices", "mode"}

    # Prices: a configuration without a price map fails, the mapped one passes.
    unpriced = make_settings(feed.settings.data_dir, stripe={"prices": {}}, polar=None)
    assert not _gate(_report(feed, impact, unpriced), "prices").ok
    prices = _gate(first, "prices")
    assert prices.ok
    # A tier sold yearly only is no failure (issue 15).
    assert "✓ tier enterprise: Stripe price for year only" in prices.evidence

    # Mode: a live key in test mode fails.
    live_key = make_settings(
        feed.settings.data_dir, stripe={**STRIPE, "api_key": "sk_live_" + "x" * 20}, polar=None
    )
    assert not _gate(_report(feed, impact, live_key), "mode").ok
    assert _gate(first, "mode").ok

    # Webhooks: a secret is configured, but nothing received yet; then a verified event.
    assert "no verified stripe event" in _gate(first, "webhooks stripe").detail
    sub = stripe_subscription(
        id="sub_smoke", customer="cus_smoke", metadata={"workspace_id": "ws_smoke"}
    )
    checkout_seq = feed.append(_checkout("ws_smoke"))
    smoke = _gate(_report(feed, impact), "smoke")
    assert not smoke.ok
    assert smoke.evidence == (f"ws_smoke: checkout seq {checkout_seq}",)
    active_seq = feed.stripe("customer.subscription.created", sub, event_id="evt_smoke_active")
    report = _report(feed, impact)
    webhooks = _gate(report, "webhooks stripe")
    assert webhooks.ok
    assert f"seq {active_seq}: customer.subscription.created evt_smoke_active" in webhooks.evidence
    smoke = _gate(report, "smoke")
    assert not smoke.ok
    assert "portal" in smoke.detail

    # Smoke: the portal opened after the subscription became active.
    portal_seq = feed.append(
        sessions.portal_opened("ws_smoke", "stripe", "cus_smoke", "bps_1", "owner", NOW)
    )
    smoke = _gate(_report(feed, impact), "smoke")
    assert smoke.ok
    assert smoke.evidence == (
        f"ws_smoke: checkout seq {checkout_seq}",
        f"ws_smoke: active seq {active_seq} (evt_smoke_active)",
        f"ws_smoke: portal seq {portal_seq}",
    )

    # Pilots: a workspace that checks and nothing classifies fails; an override classifies it.
    impact.add([], [(TODAY, "ws_pilot", 3), (TODAY, "ws_smoke", 2)])
    pilots = _gate(_report(feed, impact), "pilots")
    assert not pilots.ok
    assert pilots.evidence == ("ws_pilot",)
    feed.append(
        operator.override_set(
            feed.settings,
            workspace_id="ws_pilot",
            kind="manual_pilot",
            tier="team",
            expires_at=None,
            reason="design partner",
            actor="ops",
            now=NOW,
        )
    )
    assert _gate(_report(feed, impact), "pilots").ok

    # Enforcement: observe is not enforcing; the recorded approval is.
    assert _gate(_report(feed, impact), "enforcement").detail.startswith("mode observe")
    switch_seq = feed.append(
        operator.enforcement_set(
            mode="enforce", approved_by="ops-lead", reason="launch review 12", now=NOW
        )
    )
    enforcement = _gate(_report(feed, impact), "enforcement")
    assert enforcement.ok
    assert enforcement.evidence == (f"seq {switch_seq}",)
    assert "approved by ops-lead" in enforcement.detail
    assert "launch review 12" in enforcement.detail

    final = _report(feed, impact)
    assert final.ready, [g for g in final.gates if not g.ok]


def test_an_event_of_the_other_mode_fails_the_mode_gate(
    setup: tuple[Feed, SqliteImpactStore],
) -> None:
    feed, impact = setup
    seq = feed.stripe("customer.subscription.created", stripe_subscription(), livemode=True)
    mode = _gate(_report(feed, impact), "mode")
    assert not mode.ok
    assert f"stripe event seq {seq}" in mode.detail


def test_a_subscription_made_active_by_reconcile_is_not_webhook_evidence(
    setup: tuple[Feed, SqliteImpactStore],
) -> None:
    """The trail needs the provider's own webhook: billhook's reconcile is not one."""
    feed, impact = setup
    feed.append(_checkout("ws_r"))
    sub = stripe_subscription(id="sub_r", customer="cus_r", metadata={"workspace_id": "ws_r"})
    seq = feed.operator(
        "billhook.reconciled",
        provider="stripe",
        subscription=sub,
        livemode=False,
        fetched_at="2026-11-21T11:00:00Z",
    )
    assert [(h.seq, h.status) for h in feed.store.history("ws_r")] == [(seq, "active")]
    feed.append(sessions.portal_opened("ws_r", "stripe", "cus_r", "bps_r", "owner", NOW))
    smoke = _gate(_report(feed, impact), "smoke")
    assert not smoke.ok
    assert "subscription active via webhook" in smoke.detail


def test_the_admin_route_and_the_cli_report_the_same_gates(tmp_path: Path) -> None:
    config = write_config(tmp_path, stripe=STRIPE, polar=None)
    settings = make_settings(tmp_path / "data", stripe=STRIPE, polar=None)
    with serve_in_thread(create_app(settings)) as url, contract_client(url, timeout=10) as client:
        answer = client.get("/v1/admin/readiness", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        reader = {"Authorization": f"Bearer {READ_TOKEN}"}
        assert client.get("/v1/admin/readiness", headers=reader).status_code == 403
    body = answer.json()
    assert body["ready"] is False
    assert [g["gate"] for g in body["gates"]] == [
        "prices",
        "webhooks stripe",
        "mode",
        "pilots",
        "smoke",
        "enforcement",
    ]
    result = CliRunner().invoke(main, ["launch", "status", "--config", str(config), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == body
    text = CliRunner().invoke(main, ["launch", "status", "--config", str(config)])
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    assert lines[0].startswith("✓ prices: ")
    assert "✗ smoke: no checkout started in this deployment's log" in lines
    assert lines[-1] == "not ready"
    assert msgspec.json.decode(json.dumps(body), type=LaunchReport).ready is False
