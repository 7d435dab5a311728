"""`POST /v1/workspaces/{id}/checkout` and `/portal`: what the providers receive, and the log.

Over real HTTP against the Stripe and Polar fakes, through the real SDKs
(`tests/api/checkout_support.py`). The guards are in
`test_checkout_guards.py`, the full round trips in `test_checkout_round_trip.py`.
"""

from __future__ import annotations

from typing import Any

import pytest

from billhook.providers.billhook import CHECKOUT_STARTED, PORTAL_OPENED
from billhook.providers.stripe.sessions import IDEMPOTENCY_PREFIX
from billhook.testing.fakes import Failure
from billhook.testing.polar import polar_subscription
from billhook.testing.settings import ADMIN_TOKEN
from billhook.testing.stripe import stripe_checkout_session, stripe_customer
from tests.api.checkout_support import (
    CANCEL,
    CHECKOUT_PATH,
    POLAR_CHECKOUT_PATH,
    POLAR_CUSTOMER,
    PORTAL_PATH,
    PRODUCT_SEATS,
    PRODUCT_UNSET,
    PRODUCT_YEARLY,
    RETURN,
    STRIPE_MIN_SEATS,
    T0,
    Shop,
    assert_no_secrets,
    subscribe_stripe,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- what the provider receives --------------------------------------------------------------


def test_stripe_checkout_is_a_subscription_session_linked_to_the_workspace(shop: Shop) -> None:
    response = shop.checkout("ws_1", seats=3)

    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) == {"provider", "session_id", "url"}
    assert answer["provider"] == "stripe"
    assert answer["session_id"].startswith("cs_test_")
    assert answer["url"] == shop.stripe.checkout_sessions[answer["session_id"]]["url"]
    [sent] = shop.stripe.requests_to(CHECKOUT_PATH, "POST")
    assert sent.form == {
        "mode": "subscription",
        "line_items[0][price]": "price_team_monthly",
        "line_items[0][quantity]": "3",
        "client_reference_id": "ws_1",
        "metadata[workspace_id]": "ws_1",
        "subscription_data[metadata][workspace_id]": "ws_1",
        "success_url": RETURN,
        "cancel_url": CANCEL,
    }
    assert sent.headers["idempotency-key"].startswith(IDEMPOTENCY_PREFIX)


def test_stripe_checkout_sells_the_price_of_the_interval_and_defaults_seats_to_the_minimum(
    shop: Shop,
) -> None:
    assert shop.checkout("ws_1", interval="year", seats=None).status_code == 201
    assert shop.checkout("ws_2", seats=None).status_code == 201

    yearly, monthly = (r.form for r in shop.stripe.requests_to(CHECKOUT_PATH, "POST"))
    assert (yearly["line_items[0][price]"], yearly["line_items[0][quantity]"]) == (
        "price_team_yearly",
        "1",
    )
    assert (monthly["line_items[0][price]"], monthly["line_items[0][quantity]"]) == (
        "price_team_monthly",
        str(STRIPE_MIN_SEATS),
    )


def test_a_retried_stripe_checkout_returns_the_same_session(shop: Shop) -> None:
    shop.stripe.fail_next.append(Failure(500))  # the first try is lost; billhook retries

    first = shop.checkout("ws_1", seats=3)
    again = shop.checkout("ws_1", seats=3)

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    assert len(shop.stripe.checkout_sessions) == 1
    posts = shop.stripe.requests_to(CHECKOUT_PATH, "POST")
    assert [p.status for p in posts] == [500, 200, 200]
    assert len({p.headers["idempotency-key"] for p in posts}) == 1
    # One session started, one event, whoever clicked twice.
    assert len(shop.billhook_events(CHECKOUT_STARTED)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"seats": 4},
        {"interval": "year"},
        {"success_url": "https://app.example/other"},
        {"cancel_url": "https://app.example/other"},
    ],
)
def test_a_different_checkout_request_gets_its_own_key_and_session(
    shop: Shop, change: dict[str, Any]
) -> None:
    first = shop.checkout("ws_1")
    other = shop.checkout("ws_1", **change)

    assert first.status_code == other.status_code == 201, (first.text, other.text)
    assert other.json()["session_id"] != first.json()["session_id"]
    keys = {p.headers["idempotency-key"] for p in shop.stripe.requests_to(CHECKOUT_PATH)}
    assert len(keys) == 2


def test_a_workspace_that_has_a_stripe_customer_buys_as_that_customer(shop: Shop) -> None:
    subscribe_stripe(shop, "ws_1", "canceled")

    assert shop.checkout("ws_1").status_code == 201

    [sent] = shop.stripe.requests_to(CHECKOUT_PATH, "POST")
    assert sent.form["customer"] == "cus_ws_1"


def test_polar_checkout_carries_the_workspace_and_the_seat_count(shop: Shop) -> None:
    response = shop.checkout("ws_1", provider="polar", seats=4)

    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["provider"] == "polar"
    assert answer["url"] == shop.polar.checkouts[answer["session_id"]]["url"]
    [sent] = shop.polar.requests_to(POLAR_CHECKOUT_PATH, "POST")
    assert sent.json == {
        "products": [PRODUCT_SEATS],
        "external_customer_id": "ws_1",
        "seats": 4,
        "success_url": RETURN,
        "return_url": CANCEL,
        "metadata": {"workspace_id": "ws_1"},
    }


def test_polar_fixed_price_checkout_sends_no_seats(shop: Shop) -> None:
    response = shop.checkout("ws_1", provider="polar", interval="year", seats=None)

    assert response.status_code == 201, response.text
    [sent] = shop.polar.requests_to(POLAR_CHECKOUT_PATH, "POST")
    assert sent.json["products"] == [PRODUCT_YEARLY]
    assert "seats" not in sent.json


def test_polar_product_without_a_configured_interval_is_matched_by_polars_own(
    shop: Shop,
) -> None:
    response = shop.checkout("ws_1", provider="polar", tier="enterprise", seats=None)

    assert response.status_code == 201, response.text
    [sent] = shop.polar.requests_to(POLAR_CHECKOUT_PATH, "POST")
    assert sent.json["products"] == [PRODUCT_UNSET]
    # Billed monthly at Polar: no yearly enterprise product to sell.
    refused = shop.checkout("ws_2", provider="polar", tier="enterprise", interval="year")
    assert (refused.status_code, refused.json()["error"]) == (422, "no_price")


def test_a_workspace_that_has_a_polar_customer_buys_as_that_customer(shop: Shop) -> None:
    sub = polar_subscription(
        id="0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a",
        status="canceled",
        customer_id=POLAR_CUSTOMER,
        external_customer_id="ws_1",
    )
    shop.polar.add_subscription(sub)
    shop.deliver_polar("subscription.canceled", sub)

    assert shop.checkout("ws_1", provider="polar").status_code == 201

    [sent] = shop.polar.requests_to(POLAR_CHECKOUT_PATH, "POST")
    assert sent.json["customer_id"] == POLAR_CUSTOMER
    assert "external_customer_id" not in sent.json


def test_portal_opens_the_linked_customers_stripe_billing_portal(shop: Shop) -> None:
    shop.deliver_stripe(
        "checkout.session.completed",
        stripe_checkout_session(customer="cus_1", subscription="sub_1", client_reference_id="ws_1"),
        created=T0,
    )
    shop.stripe.add(stripe_customer(id="cus_1"))

    response = shop.portal("ws_1", return_url="https://app.example/settings")

    assert response.status_code == 201, response.text
    assert set(response.json()) == {"url"}
    [sent] = shop.stripe.requests_to(PORTAL_PATH, "POST")
    assert sent.form == {"customer": "cus_1", "return_url": "https://app.example/settings"}
    [session] = shop.stripe.portal_sessions.values()
    assert response.json()["url"] == session["url"]


def test_portal_opens_a_polar_customer_session(shop: Shop) -> None:
    sub = polar_subscription(
        id="0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a",
        customer_id=POLAR_CUSTOMER,
        external_customer_id="ws_1",
        seats=2,
    )
    shop.polar.add_subscription(sub)
    shop.deliver_polar("subscription.active", sub)

    response = shop.portal("ws_1")

    assert response.status_code == 201, response.text
    [sent] = shop.polar.requests_to("/v1/customer-sessions/", "POST")
    assert sent.json == {"customer_id": POLAR_CUSTOMER, "return_url": CANCEL}
    [session] = shop.polar.customer_sessions.values()
    assert response.json() == {"url": session["customer_portal_url"]}


# -- the log: who started what, without URLs or tokens ------------------------------------------


def test_each_session_started_is_logged_with_ids_and_the_actors_role_only(shop: Shop) -> None:
    checkout = shop.checkout("ws_1", provider="polar", seats=4, actor_role="admin").json()
    sub = shop.polar.complete_checkout(checkout["session_id"])
    shop.deliver_polar("subscription.created", sub)
    portal = shop.portal("ws_1", actor_role="owner").json()

    [started] = shop.payloads(CHECKOUT_STARTED)
    assert started == {
        "workspace_id": "ws_1",
        "provider": "polar",
        "tier": "team",
        "interval": "month",
        "seats": 4,
        "price": PRODUCT_SEATS,
        "session_id": checkout["session_id"],
        "actor_role": "admin",
    }
    [opened] = shop.payloads(PORTAL_OPENED)
    assert opened == {
        "workspace_id": "ws_1",
        "provider": "polar",
        "customer": sub["customer_id"],
        "session_id": next(iter(shop.polar.customer_sessions)),
        "actor_role": "owner",
    }
    logged = "".join(e.payload for e in shop.log.read(after=0, provider="billhook"))
    [session] = shop.polar.customer_sessions.values()
    for secret in (checkout["url"], portal["url"], session["token"], "http"):
        assert secret not in logged
    assert_no_secrets(logged)


def test_projections_skip_session_events_without_quarantining_them(shop: Shop) -> None:
    assert shop.checkout("ws_1").status_code == 201
    shop.projected(shop.log.head_seq())

    entitlement = shop.entitlement("ws_1")
    assert (entitlement["tier"], entitlement["status"], entitlement["problems"]) == (
        "solo",
        "none",
        [],
    )
    assert shop.client.get("/v1/workspaces/ws_1/history").json() == []
    quarantine = shop.client.get("/v1/admin/quarantine", headers=ADMIN)
    assert (quarantine.status_code, quarantine.json()) == (200, [])
