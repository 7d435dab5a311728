"""`POST /v1/workspaces/{id}/checkout` and `/portal`: what the providers receive, and every guard.

Over real HTTP against the Stripe and Polar fakes, through the real SDKs
(`tests/worker/checkout_support.py`). The full round trips are in
`test_checkout_round_trip.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from projections.decode import CHECKOUT_STARTED, PORTAL_OPENED
from tests.fakes import Failure
from tests.polar_payloads import polar_subscription
from tests.stripe_payloads import stripe_checkout_session, stripe_customer, stripe_subscription
from tests.worker.checkout_support import (
    ADMIN_TOKEN,
    CANCEL,
    PRODUCT_SEATS,
    PRODUCT_UNSET,
    PRODUCT_YEARLY,
    RETURN,
    STRIPE_MAX_SEATS,
    STRIPE_MIN_SEATS,
    T0,
    Shop,
    assert_no_secrets,
    no_backoff,
    start_shop,
)
from worker.sessions import IDEMPOTENCY_PREFIX

ShopFactory = Callable[..., Shop]
CHECKOUT_PATH = "/v1/checkout/sessions"
PORTAL_PATH = "/v1/billing_portal/sessions"
POLAR_CHECKOUT_PATH = "/v1/checkouts/"
POLAR_CUSTOMER = "6f1d2c3b-4a5e-4f60-8b7a-9c8d7e6f5a41"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    no_backoff(monkeypatch)


@pytest.fixture
def shops(tmp_path: Path) -> Iterator[ShopFactory]:
    with ExitStack() as stack:
        yield functools.partial(start_shop, stack, tmp_path)


@pytest.fixture
def shop(shops: ShopFactory) -> Shop:
    return shops()


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


# -- guards ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["member", "viewer", "billing", "OWNER"])
@pytest.mark.parametrize("route", ["checkout", "portal"])
def test_only_owners_and_admins_may_start_sessions(shop: Shop, route: str, role: str) -> None:
    response = getattr(shop, route)("ws_1", actor_role=role)

    assert response.status_code == 403
    assert response.json()["error"] == "role_not_allowed"
    assert provider_requests(shop) == 0
    assert shop.log.head_seq() == 0


@pytest.mark.parametrize("route", ["checkout", "portal"])
def test_a_missing_actor_role_is_an_invalid_request(shop: Shop, route: str) -> None:
    response = getattr(shop, route)("ws_1", actor_role=None)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "detail": "missing field: actor_role"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider", "paddle"),
        ("provider", None),
        ("tier", "gold"),
        ("interval", "week"),
        ("interval", None),
        ("seats", -1),
        ("seats", "3"),
        ("seats", True),
        ("success_url", "/billing/return"),
        ("success_url", "javascript:alert(1)"),
        ("success_url", "https://"),
        ("success_url", "https://[::1"),
        ("cancel_url", "ftp://app.example/"),
        ("cancel_url", "https://app.example/a b"),
        ("cancel_url", None),
    ],
)
def test_checkout_fields_are_validated_by_name(shop: Shop, field: str, value: Any) -> None:
    response = shop.checkout("ws_1", **{field: value})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["detail"]
    assert provider_requests(shop) == 0


@pytest.mark.parametrize("value", [None, "app.example/settings", "mailto:a@b.example", 7])
def test_portal_return_url_must_be_an_absolute_http_url(shop: Shop, value: Any) -> None:
    response = shop.portal("ws_1", return_url=value)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "return_url" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b"not json", "not valid JSON"), (b"[1]", "must be a JSON object")],
)
def test_a_body_that_is_not_a_json_object_is_an_invalid_request(
    shop: Shop, body: bytes, detail: str
) -> None:
    response = shop.client.post("/v1/workspaces/ws_1/checkout", content=body)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("route", ["checkout", "portal"])
def test_sessions_need_a_bearer_token(shop: Shop, route: str) -> None:
    response = shop.client.post(
        f"/v1/workspaces/ws_1/{route}", json={}, headers={"Authorization": "Bearer nope"}
    )

    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")


@pytest.mark.parametrize("status", ["trialing", "active", "past_due", "unpaid", "canceling"])
@pytest.mark.parametrize("provider", ["stripe", "polar"])
def test_checkout_is_refused_while_a_subscription_grants_a_tier(
    shop: Shop, status: str, provider: str
) -> None:
    if status == "canceling":
        subscribe_stripe(shop, "ws_1", "active", cancel_at_period_end=True)
    else:
        subscribe_stripe(shop, "ws_1", status)

    response = shop.checkout("ws_1", provider=provider)

    assert response.status_code == 409, response.text
    assert response.json()["error"] == "already_subscribed"
    assert "sub_ws_1" in response.json()["detail"]
    assert provider_requests(shop) == 0
    assert shop.billhook_events(CHECKOUT_STARTED) == []


@pytest.mark.parametrize("status", ["incomplete", "incomplete_expired", "canceled", "paused"])
def test_checkout_is_allowed_when_no_subscription_grants_a_tier(shop: Shop, status: str) -> None:
    subscribe_stripe(shop, "ws_1", status)

    assert shop.checkout("ws_1").status_code == 201


def test_a_subscription_of_another_workspace_does_not_block_checkout(shop: Shop) -> None:
    subscribe_stripe(shop, "ws_other", "active")

    assert shop.checkout("ws_1").status_code == 201


@pytest.mark.parametrize(
    "fields",
    [
        {"tier": "enterprise"},
        {"tier": "solo"},
        {"provider": "polar", "tier": "solo", "interval": "year"},
    ],
)
def test_checkout_without_a_configured_price_is_no_price(
    shop: Shop, fields: dict[str, Any]
) -> None:
    response = shop.checkout("ws_1", **fields)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "no_price"
    assert shop.stripe.requests_to(CHECKOUT_PATH) == []


def test_an_archived_polar_product_is_no_price(shop: Shop) -> None:
    shop.polar.products[PRODUCT_YEARLY]["is_archived"] = True

    response = shop.checkout("ws_1", provider="polar", interval="year", seats=None)

    assert (response.status_code, response.json()["error"]) == (422, "no_price")
    assert shop.polar.requests_to(POLAR_CHECKOUT_PATH) == []


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"seats": 0}, f"at least {STRIPE_MIN_SEATS} and at most {STRIPE_MAX_SEATS}"),
        ({"seats": STRIPE_MIN_SEATS - 1}, f"at least {STRIPE_MIN_SEATS}"),
        ({"seats": STRIPE_MAX_SEATS + 1}, f"got {STRIPE_MAX_SEATS + 1}"),
        ({"provider": "polar", "seats": 0}, "at least 1"),
        ({"provider": "polar", "seats": 11}, "at most 10"),
        ({"provider": "polar", "interval": "year", "seats": 2}, "not sold per seat"),
    ],
)
def test_checkout_outside_the_seat_bounds_is_invalid_seats(
    shop: Shop, fields: dict[str, Any], detail: str
) -> None:
    tiers = shop.polar.products[PRODUCT_SEATS]["prices"][0]["seat_tiers"]
    tiers["maximum_seats"] = 10

    response = shop.checkout("ws_1", **fields)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_seats"
    assert detail in response.json()["detail"]
    assert shop.stripe.requests_to(CHECKOUT_PATH) == []
    assert shop.polar.requests_to(POLAR_CHECKOUT_PATH) == []


@pytest.mark.parametrize("seats", [STRIPE_MIN_SEATS, STRIPE_MAX_SEATS])
def test_checkout_at_the_seat_bounds_is_allowed(shop: Shop, seats: int) -> None:
    assert shop.checkout("ws_1", seats=seats).status_code == 201


def test_portal_without_a_linked_customer_is_not_linked(shop: Shop) -> None:
    subscribe_stripe(shop, "ws_other", "active")

    response = shop.portal("ws_1")

    assert (response.status_code, response.json()["error"]) == (409, "not_linked")
    assert provider_requests(shop) == 0


@pytest.mark.parametrize(
    ("route", "failure"),
    [
        ("stripe", Failure(500)),
        ("stripe", Failure(401)),
        ("polar", Failure(500)),
        ("polar", Failure(429, headers={"Retry-After": "0"})),
        ("portal", Failure(500)),
    ],
)
def test_provider_failures_are_provider_error_without_secrets(
    shop: Shop, route: str, failure: Failure
) -> None:
    subscribe_stripe(shop, "ws_linked", "canceled")
    state = shop.polar if route == "polar" else shop.stripe
    state.fail_next.extend([failure] * 8)

    if route == "portal":
        response = shop.portal("ws_linked")
    else:
        response = shop.checkout("ws_1", provider=route)

    assert response.status_code == 502, response.text
    assert response.json()["error"] == "provider_error"
    assert route.replace("portal", "stripe") in response.json()["detail"]
    assert_no_secrets(response.text)
    assert shop.billhook_events(CHECKOUT_STARTED) == shop.billhook_events(PORTAL_OPENED) == []


def test_a_price_stripe_refuses_is_provider_error(shop: Shop) -> None:
    shop.stripe.prices["price_team_monthly"]["active"] = False

    response = shop.checkout("ws_1")

    assert (response.status_code, response.json()["error"]) == (502, "provider_error")
    assert "InvalidRequestError" in response.json()["detail"]


@pytest.mark.parametrize("provider", ["stripe", "polar"])
def test_without_api_credentials_sessions_are_provider_not_configured(
    shops: ShopFactory, provider: str
) -> None:
    shop = shops(configured=False)
    if provider == "stripe":
        subscribe_stripe(shop, "ws_1", "canceled")
    else:
        sub = polar_subscription(
            id="0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a",
            status="canceled",
            customer_id=POLAR_CUSTOMER,
            external_customer_id="ws_1",
        )
        shop.deliver_polar("subscription.canceled", sub)

    checkout = shop.checkout("ws_1", provider=provider)
    portal = shop.portal("ws_1")

    for response in (checkout, portal):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "provider_not_configured"
    assert provider_requests(shop) == 0
