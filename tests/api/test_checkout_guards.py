"""`POST /v1/workspaces/{id}/checkout` and `/portal`: every guard and error, each on its own.

Over real HTTP against the Stripe and Polar fakes, through the real SDKs
(`tests/api/checkout_support.py`). A refused request reaches no provider
and appends nothing to the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from billhook.providers.billhook import CHECKOUT_STARTED, PORTAL_OPENED
from billhook.testing.fakes import Failure
from billhook.testing.polar import polar_subscription
from tests.api.checkout_support import (
    CHECKOUT_PATH,
    POLAR_CHECKOUT_PATH,
    POLAR_CUSTOMER,
    PRODUCT_SEATS,
    PRODUCT_YEARLY,
    STRIPE_MAX_SEATS,
    STRIPE_MIN_SEATS,
    Shop,
    ShopFactory,
    assert_no_secrets,
    provider_requests,
    start_shop,
    subscribe_stripe,
)


@pytest.fixture(scope="module")
def idle_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """One deployment shared by the refusals that reach no provider and write nothing."""
    with ExitStack() as stack:
        yield start_shop(stack, tmp_path_factory.mktemp("idle"))


@pytest.mark.parametrize("role", ["member", "viewer", "billing", "OWNER"])
@pytest.mark.parametrize("route", ["checkout", "portal"])
def test_only_owners_and_admins_may_start_sessions(idle_shop: Shop, route: str, role: str) -> None:
    response = getattr(idle_shop, route)("ws_1", actor_role=role)

    assert response.status_code == 403
    assert response.json()["error"] == "role_not_allowed"
    assert provider_requests(idle_shop) == 0
    assert idle_shop.log.head_seq() == 0


@pytest.mark.parametrize("route", ["checkout", "portal"])
def test_a_missing_actor_role_is_an_invalid_request(idle_shop: Shop, route: str) -> None:
    response = getattr(idle_shop, route)("ws_1", actor_role=None)

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
def test_checkout_fields_are_validated_by_name(idle_shop: Shop, field: str, value: Any) -> None:
    response = idle_shop.checkout("ws_1", **{field: value})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["detail"]
    assert provider_requests(idle_shop) == 0


@pytest.mark.parametrize("value", [None, "app.example/settings", "mailto:a@b.example", 7])
def test_portal_return_url_must_be_an_absolute_http_url(idle_shop: Shop, value: Any) -> None:
    response = idle_shop.portal("ws_1", return_url=value)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "return_url" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [(b"not json", "not valid JSON"), (b"[1]", "must be a JSON object")],
)
def test_a_body_that_is_not_a_json_object_is_an_invalid_request(
    idle_shop: Shop, body: bytes, detail: str
) -> None:
    response = idle_shop.client.post("/v1/workspaces/ws_1/checkout", content=body)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("route", ["checkout", "portal"])
def test_sessions_need_a_bearer_token(idle_shop: Shop, route: str) -> None:
    response = idle_shop.client.post(
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
    idle_shop: Shop, fields: dict[str, Any]
) -> None:
    response = idle_shop.checkout("ws_1", **fields)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "no_price"
    assert provider_requests(idle_shop) == 0


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
