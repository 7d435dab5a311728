"""Stripe Connect in provider sync: refresh, reconcile and backfill ask the right account.

billhook is `create_app` served by uvicorn; Connect webhooks (`account:
"acct_…"` at the top level) come in signed over HTTP; refresh reaches the
Stripe fake through the real `stripe` package, which keeps each connected
account's objects apart and serves them only to requests carrying that
account's `Stripe-Account` header. Two accounts hold the same customer and
subscription ids on purpose.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe as stripe_sdk
from click.testing import CliRunner
from stripe._http_client import HTTPClient

from billhook.api.app import create_app
from billhook.cli.main import main
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers import clients as providers
from billhook.providers.billhook import RECONCILED
from billhook.providers.stripe.client import StripeSource
from billhook.sync.reconcile import drift, workspace_snapshots
from billhook.testing.fakes.stripe_api import (
    StripeState,
    stripe_event,
    stripe_fake,
    stripe_price,
    stripe_product,
)
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import (
    READ_TOKEN,
    STRIPE_API_KEY,
    make_settings,
    provider_apis,
    write_config,
)
from billhook.testing.stripe import (
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)

PERIOD_END_S = int(time.time()) + 365 * 86_400
# Each account's subscription sub_1 of customer cus_1 belongs to a workspace of its own.
ACCOUNTS = {"acct_A": ("ws_a", 3), "acct_B": ("ws_b", 7)}
T0 = int(time.time()) - 3600


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(providers, "MAX_DELAY_S", 0.0)
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.0)


def subscription(workspace: str, seats: int, status: str = "active") -> dict[str, Any]:
    return stripe_subscription(
        id="sub_1",
        customer="cus_1",
        status=status,
        items=(("price_team_monthly", seats),),
        metadata={"workspace_id": workspace},
        period_end=PERIOD_END_S,
    )


@dataclass
class Platform:
    settings: Settings
    stripe: StripeState
    log: EventLog
    client: httpx.Client
    url: str

    def deliver(self, obj: dict[str, Any], account: str | None, created: int = T0) -> int:
        body = stripe_event_body(
            "customer.subscription.updated", obj=obj, created=created, account=account
        )
        response = self.client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        return int(response.json()["seq"])

    def entitlement(self, workspace: str, seq: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            answer: dict[str, Any] = self.client.get(
                f"/v1/workspaces/{workspace}/entitlements"
            ).json()
            if answer["as_of_seq"] >= seq:
                return answer
            assert time.monotonic() < deadline
            time.sleep(0.02)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    state = StripeState()
    state.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
    for account, (workspace, seats) in ACCOUNTS.items():
        connected = state.account(account)
        connected.add(
            stripe_price(id="price_team_monthly"),
            stripe_customer(id="cus_1"),
            subscription(workspace, seats),
        )
    with ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(stripe_fake(state)))
        api, _ = provider_apis(url, url, stripe_key=True, polar_token=False)
        settings = make_settings(tmp_path / "data", stripe=api)
        log = EventLog(settings.events_path)
        stack.callback(log.close)
        app_url = stack.enter_context(serve_in_thread(create_app(settings, log=log)))
        client = stack.enter_context(
            httpx.Client(
                base_url=app_url, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=30
            )
        )
        yield Platform(settings, state, log, client, url)


def test_the_fake_keeps_each_accounts_objects_apart(platform: Platform) -> None:
    client = stripe_sdk.StripeClient(STRIPE_API_KEY, base_addresses={"api": platform.url})
    seats = {
        account: client.v1.subscriptions.retrieve(
            "sub_1", options={"stripe_account": account}
        ).to_dict()["items"]["data"][0]["quantity"]
        for account in ACCOUNTS
    }
    assert seats == {"acct_A": 3, "acct_B": 7}
    with pytest.raises(stripe_sdk.InvalidRequestError):  # the platform has no sub_1 itself
        client.v1.subscriptions.retrieve("sub_1")
    with pytest.raises(stripe_sdk.StripeError) as raised:  # nor an account never connected
        client.v1.subscriptions.retrieve("sub_1", options={"stripe_account": "acct_Z"})
    assert raised.value.http_status == 403


def test_two_accounts_with_the_same_ids_never_mix(platform: Platform) -> None:
    seq = 0
    for account, (workspace, seats) in ACCOUNTS.items():
        seq = platform.deliver(subscription(workspace, seats), account)

    answers = {ws: platform.entitlement(ws, seq) for ws, _ in ACCOUNTS.values()}

    assert {ws: (a["tier"], a["seats"]["purchased"]) for ws, a in answers.items()} == {
        "ws_a": ("team", 3),
        "ws_b": ("team", 7),
    }
    # Canceling one account's sub_1 leaves the other's alone.
    seq = platform.deliver(subscription("ws_a", 3, status="canceled"), "acct_A", created=T0 + 1)
    assert platform.entitlement("ws_a", seq)["source"] == "default"
    assert platform.entitlement("ws_b", seq)["tier"] == "team"


def test_refresh_asks_the_account_of_each_subscription(platform: Platform) -> None:
    for account, (workspace, seats) in ACCOUNTS.items():
        platform.deliver(subscription(workspace, seats), account)
    platform.entitlement("ws_b", platform.log.head_seq())
    # Account A's subscription falls past due; no webhook says so.
    platform.stripe.account("acct_A").subscriptions["sub_1"]["status"] = "past_due"

    response = platform.client.post("/v1/workspaces/ws_a/refresh")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "past_due"
    [listing] = platform.stripe.requests_to("/v1/subscriptions", "GET")
    assert listing.headers.get("stripe-account") == "acct_A"
    assert listing.query["customer"] == "cus_1"  # the bare id, asked of its account
    [snapshot] = [
        json.loads(e.payload)
        for e in platform.log.read(after=0, provider="billhook", type=RECONCILED)
    ]
    assert snapshot["account"] == "acct_A"
    assert (snapshot["subscription"]["id"], snapshot["subscription"]["customer"]) == (
        "sub_1",
        "cus_1",
    )
    assert platform.entitlement("ws_b")["status"] == "active"


def test_reconcile_keys_snapshots_with_scoped_ids_again(platform: Platform) -> None:
    for account, (workspace, seats) in ACCOUNTS.items():
        platform.deliver(subscription(workspace, seats), account)
    platform.stripe.account("acct_B").subscriptions["sub_1"]["items"]["data"][0]["quantity"] = 9
    store = ProjectionStore(platform.settings.projections_path, platform.settings)
    try:
        catch_up(platform.log, store)
        assert store.customers_of("ws_b") == {("stripe", "acct_B:cus_1")}
        source = StripeSource(STRIPE_API_KEY, platform.url)

        snapshots = workspace_snapshots("ws_b", store, {"stripe": source})

        assert [(p, s["id"], s["customer"]) for p, s in snapshots] == [
            ("stripe", "acct_B:sub_1", "acct_B:cus_1")
        ]
        found = drift(snapshots, store, platform.settings, datetime.now(UTC))
        assert len(found.records) == 1
        platform.log.append_batch(found.records)
        catch_up(platform.log, store)
        fact = store.subscription("stripe", "acct_B:sub_1")
        assert fact is not None
        assert fact.items[0].quantity == 9
        assert store.subscription("stripe", "sub_1") is None  # no platform row appeared
        # Nothing differs any more: a second reconcile appends nothing.
        again = workspace_snapshots("ws_b", store, {"stripe": source})
        assert drift(again, store, platform.settings, datetime.now(UTC)).records == []
    finally:
        store.close()


def test_backfill_pages_a_connected_accounts_events_with_its_account(platform: Platform) -> None:
    connected = platform.stripe.account("acct_B")
    connected.add(
        stripe_event(id="evt_b_1", created=int(time.time()) - 60, obj=subscription("ws_b", 7))
    )
    source = StripeSource(STRIPE_API_KEY, platform.url)

    events = list(source.events(0, ["customer.subscription.updated"], account="acct_B"))

    assert [(e["id"], e["account"]) for e in events] == [("evt_b_1", "acct_B")]
    assert list(source.events(0, ["customer.subscription.updated"])) == []
    [request] = platform.stripe.requests_to("/v1/events", "GET")[:1]
    assert request.headers.get("stripe-account") == "acct_B"


def test_backfill_asks_each_account_given_and_keys_its_events_by_it(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("BILLHOOK_", "STRIPE_", "POLAR_")):
            monkeypatch.delenv(name)
    now = int(time.time())
    for account, (workspace, seats) in ACCOUNTS.items():
        platform.stripe.account(account).add(
            stripe_event(id=f"evt_{account}", created=now - 60, obj=subscription(workspace, seats))
        )
    api, _ = provider_apis(platform.url, platform.url, stripe_key=True, polar_token=False)
    # The deployment's own data directory: the log the app writes is the one backfilled.
    config = write_config(tmp_path, name="backfill.toml", stripe=api)

    result = CliRunner().invoke(
        main,
        [
            "backfill",
            "stripe",
            "--account",
            "acct_A",
            "--account",
            "acct_B",
            "--config",
            str(config),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "appended 2 new" in result.output
    logged = {e.event_id: json.loads(e.payload)["account"] for e in platform.log.read(after=0)}
    assert logged == {"evt_acct_A": "acct_A", "evt_acct_B": "acct_B"}
    asked = [r.headers.get("stripe-account") for r in platform.stripe.requests_to("/v1/events")]
    assert asked == [None, "acct_A", "acct_B"]
    seq = platform.log.head_seq()
    assert platform.entitlement("ws_a", seq)["seats"]["purchased"] == 3
    assert platform.entitlement("ws_b", seq)["seats"]["purchased"] == 7
