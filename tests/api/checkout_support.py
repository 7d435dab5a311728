"""A billhook deployment selling through the Stripe and Polar fakes, for the checkout tests.

`create_app` is served by uvicorn and reaches the fakes through the real
`stripe` and `polar-sdk` packages, configured as an operator would
(`[stripe] api_key`/`api_base`, `[polar] access_token`/`server_url`).
Webhooks go through the real receiver, signed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe._http_client import HTTPClient

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.domain.records import StoredEvent
from billhook.log.sqlite import EventLog
from billhook.providers import clients as providers
from billhook.testing.fakes.polar_api import PolarState, polar_fake, polar_product
from billhook.testing.fakes.stripe_api import StripeState, stripe_fake, stripe_price, stripe_product
from billhook.testing.polar import polar_event, polar_headers
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import (
    PRODUCT_TEAM,
    READ_TOKEN,
    SECRETS,
    make_settings,
    provider_apis,
)
from billhook.testing.stripe import (
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)

# Polar products: seat-based monthly team, fixed-price yearly team, and one whose
# mapping leaves the interval to Polar's API (it bills monthly).
PRODUCT_SEATS = PRODUCT_TEAM
PRODUCT_YEARLY = "3c2b1a09-8f7e-4d6c-9b5a-4e3d2c1b0a99"
PRODUCT_UNSET = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
PRODUCTS = {
    PRODUCT_SEATS: {"tier": "team", "interval": "month"},
    PRODUCT_YEARLY: {"tier": "team", "interval": "year"},
    PRODUCT_UNSET: {"tier": "enterprise"},
}
# Seat bounds of the monthly Stripe price.
STRIPE_MIN_SEATS = 2
STRIPE_MAX_SEATS = 50
# What the shop sells on Stripe: team, monthly (seats bounded) or yearly.
PRICES = {
    "price_team_monthly": {
        "tier": "team",
        "interval": "month",
        "min_seats": STRIPE_MIN_SEATS,
        "max_seats": STRIPE_MAX_SEATS,
    },
    "price_team_yearly": {"tier": "team", "interval": "year"},
}
# The app's clock, and the fakes' (the provider's objects are made an hour before).
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
T0 = NOW_S - 3600
# Bounded wait for a delivered webhook to be projected, and how often to look.
PROJECTED_TIMEOUT_S = 10.0
POLL_S = 0.02
# Provider paths the tests look for in the fakes' request logs.
CHECKOUT_PATH = "/v1/checkout/sessions"
PORTAL_PATH = "/v1/billing_portal/sessions"
POLAR_CHECKOUT_PATH = "/v1/checkouts/"
# A Polar customer already linked to a workspace.
POLAR_CUSTOMER = "6f1d2c3b-4a5e-4f60-8b7a-9c8d7e6f5a41"
RETURN = "https://app.example/billing/return?session={CHECKOUT_SESSION_ID}"
CANCEL = "https://app.example/billing"


# `shops(**options)` in tests/deployment.py: start a deployment, get its Shop.
ShopFactory = Callable[..., "Shop"]


def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """No retry sleeps: billhook's own (429s, Polar 5xx) and stripe-python's (5xx)."""
    monkeypatch.setattr(providers, "FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(providers, "MAX_DELAY_S", 0.0)
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.0)


def shop_settings(data_dir: Path, *, stripe_url: str, polar_url: str, configured: bool) -> Settings:
    """Both provider APIs at the fakes' URLs, with their credentials when `configured`."""
    stripe, polar = provider_apis(
        stripe_url, polar_url, stripe_key=configured, polar_token=configured
    )
    return make_settings(
        data_dir, stripe={**stripe, "prices": PRICES}, polar={**polar, "products": PRODUCTS}
    )


@dataclass
class Shop:
    """billhook served over HTTP, selling through the Stripe and Polar fakes."""

    stripe: StripeState
    polar: PolarState
    log: EventLog
    client: httpx.Client

    def checkout(self, workspace: str = "ws_1", **fields: Any) -> httpx.Response:
        body = {
            "provider": "stripe",
            "tier": "team",
            "interval": "month",
            "seats": 3,
            "success_url": RETURN,
            "cancel_url": CANCEL,
            "actor_role": "owner",
            **fields,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self.client.post(f"/v1/workspaces/{workspace}/checkout", json=body)

    def portal(self, workspace: str = "ws_1", **fields: Any) -> httpx.Response:
        body = {"return_url": CANCEL, "actor_role": "admin", **fields}
        body = {k: v for k, v in body.items() if v is not None}
        return self.client.post(f"/v1/workspaces/{workspace}/portal", json=body)

    def deliver_stripe(
        self, event_type: str, obj: dict[str, Any], *, created: int, event_id: str | None = None
    ) -> int:
        """Deliver a signed Stripe event (accepted: a new one); its seq, once projected."""
        body = stripe_event_body(event_type, obj=obj, created=created, event_id=event_id)
        response = self.client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
        return self.projected(int(response.json()["seq"]))

    def deliver_polar(self, event_type: str, data: dict[str, Any]) -> int:
        body = polar_event(event_type, data)
        response = self.client.post("/webhooks/polar", content=body, headers=polar_headers(body))
        assert response.status_code == 200, response.text
        return self.projected(int(response.json()["seq"]))

    def projected(self, seq: int) -> int:
        """Wait (bounded) until the API answers as of `seq`: projection follows the ack."""
        deadline = time.monotonic() + PROJECTED_TIMEOUT_S
        while self.entitlement("ws_any")["as_of_seq"] < seq:
            assert time.monotonic() < deadline, f"seq {seq} was not projected in time"
            time.sleep(POLL_S)
        return seq

    def entitlement(self, workspace: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/workspaces/{workspace}/entitlements")
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def billhook_events(self, event_type: str) -> list[StoredEvent]:
        return self.log.read(after=0, provider="billhook", type=event_type)

    def payloads(self, event_type: str) -> list[dict[str, Any]]:
        return [json.loads(e.payload) for e in self.billhook_events(event_type)]


def start_shop(stack: ExitStack, tmp_path: Path, *, configured: bool = True) -> Shop:
    """Start both fakes and billhook; `configured=False` leaves out both API credentials."""
    stripe = StripeState(clock=lambda: T0)
    stripe.add(
        stripe_product(id="prod_team"),
        stripe_price(id="price_team_monthly"),
        stripe_price(id="price_team_yearly", interval="year", unit_amount=15000),
    )
    polar = PolarState(clock=lambda: T0)
    polar.add_product(
        polar_product(id=PRODUCT_SEATS, seat_based=True),
        polar_product(id=PRODUCT_YEARLY, recurring_interval="year"),
        polar_product(id=PRODUCT_UNSET, name="Enterprise"),
    )
    stripe_url = stack.enter_context(serve_in_thread(stripe_fake(stripe)))
    polar_url = stack.enter_context(serve_in_thread(polar_fake(polar)))
    settings = shop_settings(
        tmp_path / "data", stripe_url=stripe_url, polar_url=polar_url, configured=configured
    )
    log = EventLog(settings.events_path)
    stack.callback(log.close)
    url = stack.enter_context(serve_in_thread(create_app(settings, log=log, clock=lambda: NOW)))
    client = stack.enter_context(
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=30)
    )
    return Shop(stripe, polar, log, client)


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def provider_requests(shop: Shop) -> int:
    return len(shop.stripe.requests) + len(shop.polar.requests)


def subscribe_stripe(shop: Shop, workspace: str, status: str, **fields: Any) -> None:
    """A subscription event of `workspace` arrived; Stripe knows its customer."""
    shop.stripe.add(stripe_customer(id=f"cus_{workspace}"))
    sub = stripe_subscription(
        id=f"sub_{workspace}",
        customer=f"cus_{workspace}",
        status=status,
        metadata={"workspace_id": workspace},
        **fields,
    )
    shop.deliver_stripe("customer.subscription.created", sub, created=T0)
