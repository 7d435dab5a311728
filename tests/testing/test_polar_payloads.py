"""The Polar payload builders produce bodies polar-sdk's own `v2026_04` types accept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from polar.base import PolarDeserializationError, deserialize
from polar.v2026_04 import webhooks as wh
from polar.v2026_04.outputs import (
    CustomerIndividual,
    CustomerStateIndividual,
    Product,
    ProductPriceFixed,
    ProductPriceSeatBased,
    Subscription,
    SubscriptionCustomer,
)

from billhook.testing.polar import (
    API_VERSION,
    DEFAULT_CUSTOMER_ID,
    DEFAULT_PRODUCT_ID,
    POLAR_PII,
    polar_customer,
    polar_customer_state,
    polar_event,
    polar_state_subscription,
    polar_subscription,
)

SUB_ID = "0b5e4c3d-2a1f-4e6d-9c8b-7a6f5e4d3c21"
CUSTOMER_ID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b65"
PRODUCT_ID = "4e3d2c1b-0a9f-48e7-a6d5-c4b3a2f1e0d9"

SUBSCRIPTION_EVENTS: dict[str, type[Any]] = {
    "subscription.created": wh.WebhookSubscriptionCreatedPayload,
    "subscription.active": wh.WebhookSubscriptionActivePayload,
    "subscription.updated": wh.WebhookSubscriptionUpdatedPayload,
    "subscription.canceled": wh.WebhookSubscriptionCanceledPayload,
    "subscription.uncanceled": wh.WebhookSubscriptionUncanceledPayload,
    "subscription.past_due": wh.WebhookSubscriptionPastDuePayload,
    "subscription.revoked": wh.WebhookSubscriptionRevokedPayload,
    "subscription.paused": wh.WebhookSubscriptionPausedPayload,
    "subscription.resumed": wh.WebhookSubscriptionResumedPayload,
    "subscription.cycled": wh.WebhookSubscriptionCycledPayload,
}
CUSTOMER_EVENTS: dict[str, type[Any]] = {
    "customer.created": wh.WebhookCustomerCreatedPayload,
    "customer.updated": wh.WebhookCustomerUpdatedPayload,
    "customer.deleted": wh.WebhookCustomerDeletedPayload,
}
STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)


def load(body: bytes) -> wh.WebhookPayload:
    """Load a webhook body exactly as polar-sdk's `validate_event` does after verifying it."""
    return deserialize(json.loads(body), wh.WebhookPayload)


def load_subscription(event_type: str, data: dict[str, Any]) -> Subscription:
    payload = load(polar_event(event_type, data))
    assert type(payload) is SUBSCRIPTION_EVENTS[event_type]
    assert isinstance(payload.data, Subscription)
    return payload.data


@pytest.mark.parametrize("event_type", SUBSCRIPTION_EVENTS)
def test_subscription_events_load_as_their_own_payload_class(event_type: str) -> None:
    data = polar_subscription(
        id=SUB_ID,
        customer_id=CUSTOMER_ID,
        product_id=PRODUCT_ID,
        external_customer_id="user_42",
        customer_metadata={"team": "t_7"},
        metadata={"plan": "pro"},
        seats=5,
        cancel_at_period_end=event_type == "subscription.canceled",
        modified_at="2026-11-20T12:00:00Z",
    )
    payload = load(polar_event(event_type, data, timestamp="2026-11-20T12:00:01Z"))

    assert type(payload) is SUBSCRIPTION_EVENTS[event_type]
    assert payload.type == event_type
    assert payload.timestamp == "2026-11-20T12:00:01Z"
    assert payload.api_version == API_VERSION
    sub = payload.data
    assert isinstance(sub, Subscription)
    assert sub.id == SUB_ID
    assert sub.status == "active"
    assert sub.customer_id == CUSTOMER_ID
    assert isinstance(sub.customer, SubscriptionCustomer)
    assert sub.customer.id == CUSTOMER_ID
    assert sub.customer.external_id == "user_42"
    assert sub.customer.metadata == {"team": "t_7"}
    assert sub.metadata == {"plan": "pro"}
    assert sub.seats == 5
    assert sub.product_id == PRODUCT_ID
    assert isinstance(sub.product, Product)
    assert sub.product.id == PRODUCT_ID
    assert sub.cancel_at_period_end is (event_type == "subscription.canceled")
    assert sub.modified_at == "2026-11-20T12:00:00Z"


def test_specific_payload_class_loads_too() -> None:
    data = polar_subscription(id=SUB_ID)
    body = json.loads(polar_event("subscription.updated", data))
    payload = deserialize(body, wh.WebhookSubscriptionUpdatedPayload)
    assert payload.data.id == SUB_ID


@pytest.mark.parametrize("status", STATUSES)
def test_every_subscription_status_loads(status: str) -> None:
    sub = load_subscription("subscription.updated", polar_subscription(id=SUB_ID, status=status))
    assert sub.status == status
    assert (sub.trial_start is not None) is (status == "trialing")
    assert (sub.past_due_at is not None) is (status in ("past_due", "unpaid"))
    assert (sub.started_at is None) is status.startswith("incomplete")


def test_revoked_subscription_carries_its_end() -> None:
    data = polar_subscription(id=SUB_ID, status="canceled", ended_at="2026-11-21T00:00:00Z")
    sub = load_subscription("subscription.revoked", data)
    assert sub.status == "canceled"
    assert sub.ended_at == "2026-11-21T00:00:00Z"
    assert sub.canceled_at is not None


def test_cancel_at_period_end_sets_ends_at() -> None:
    data = polar_subscription(id=SUB_ID, cancel_at_period_end=True)
    sub = load_subscription("subscription.canceled", data)
    assert sub.cancel_at_period_end is True
    assert sub.status == "active"
    assert sub.ends_at == sub.current_period_end == "2026-12-01T00:00:00Z"
    assert sub.canceled_at is not None


def test_seatless_subscription_has_a_fixed_price() -> None:
    sub = load_subscription("subscription.created", polar_subscription(id=SUB_ID))
    assert sub.seats is None
    assert sub.amount == 1500
    assert [type(p) for p in sub.prices] == [ProductPriceFixed]
    assert [type(p) for p in sub.product.prices] == [ProductPriceFixed]


def test_seat_subscription_has_a_seat_based_price() -> None:
    sub = load_subscription("subscription.created", polar_subscription(id=SUB_ID, seats=5))
    assert sub.seats == 5
    assert sub.amount == 5 * 600
    assert [type(p) for p in sub.prices] == [ProductPriceSeatBased]


@pytest.mark.parametrize("interval", ["day", "week", "month", "year"])
def test_recurring_intervals_load(interval: str) -> None:
    data = polar_subscription(id=SUB_ID, recurring_interval=interval)
    sub = load_subscription("subscription.created", data)
    assert sub.recurring_interval == interval
    assert sub.product.recurring_interval == interval


def test_subscription_defaults_are_deterministic_uuids() -> None:
    first = polar_subscription(id=SUB_ID)
    assert first == polar_subscription(id=SUB_ID)
    sub = load_subscription("subscription.created", first)
    assert sub.customer_id == DEFAULT_CUSTOMER_ID
    assert sub.product_id == DEFAULT_PRODUCT_ID
    assert sub.customer.external_id is None
    assert sub.customer.metadata == {}
    assert sub.metadata == {}


@pytest.mark.parametrize("event_type", CUSTOMER_EVENTS)
def test_customer_events_load(event_type: str) -> None:
    data = polar_customer(
        id=CUSTOMER_ID,
        external_id="user_42",
        metadata={"team": "t_7"},
        modified_at="2026-11-20T12:00:00Z",
    )
    payload = load(polar_event(event_type, data))

    assert type(payload) is CUSTOMER_EVENTS[event_type]
    customer = payload.data
    assert isinstance(customer, CustomerIndividual)
    assert customer.id == CUSTOMER_ID
    assert customer.external_id == "user_42"
    assert customer.metadata == {"team": "t_7"}
    assert customer.modified_at == "2026-11-20T12:00:00Z"


def test_customer_without_external_id_loads() -> None:
    payload = load(polar_event("customer.created", polar_customer(id=CUSTOMER_ID)))
    assert isinstance(payload, wh.WebhookCustomerCreatedPayload)
    assert payload.data.external_id is None
    assert payload.data.metadata == {}


def test_customer_state_changed_loads() -> None:
    data = polar_customer_state(id=CUSTOMER_ID, external_id="user_42", metadata={"team": "t_7"})
    payload = load(polar_event("customer.state_changed", data))

    assert isinstance(payload, wh.WebhookCustomerStateChangedPayload)
    state = payload.data
    assert isinstance(state, CustomerStateIndividual)
    assert state.id == CUSTOMER_ID
    assert state.external_id == "user_42"
    assert state.metadata == {"team": "t_7"}
    assert state.active_subscriptions == []


def test_sdk_rejects_real_customer_state_subscription_statuses() -> None:
    """polar-sdk 1.0.2 quirk: `CustomerStateSubscription.status` is typed as the
    license-key `Status` ("granted" | "disabled"), while Polar sends "active" or
    "trialing". A `customer.state_changed` with an active subscription therefore
    does not load through the SDK; when this starts failing, the SDK is fixed."""
    entry = polar_state_subscription(id=SUB_ID, product_id=PRODUCT_ID, seats=5)
    data = polar_customer_state(id=CUSTOMER_ID, active_subscriptions=[entry])
    with pytest.raises(PolarDeserializationError):
        load(polar_event("customer.state_changed", data))

    entry["status"] = "granted"  # the only values the SDK accepts
    payload = load(polar_event("customer.state_changed", data | {"active_subscriptions": [entry]}))
    assert isinstance(payload, wh.WebhookCustomerStateChangedPayload)
    (sub,) = payload.data.active_subscriptions
    assert (sub.id, sub.product_id, sub.seats) == (SUB_ID, PRODUCT_ID, 5)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("subscription.updated", polar_subscription(id=SUB_ID)),
        ("customer.updated", polar_customer(id=CUSTOMER_ID)),
        ("customer.state_changed", polar_customer_state(id=CUSTOMER_ID)),
    ],
)
def test_every_payload_plants_the_pii(event_type: str, data: dict[str, Any]) -> None:
    body = polar_event(event_type, data)
    for pii in POLAR_PII:
        assert pii.encode() in body
    payload = load(body)
    customer = payload.data.customer if isinstance(payload.data, Subscription) else payload.data
    assert isinstance(customer, SubscriptionCustomer | CustomerIndividual | CustomerStateIndividual)
    assert customer.email == "jane.doe@example.com"
    assert customer.name == "Jane Doe"
    assert customer.billing_address is not None
    assert customer.billing_address.line1 == "1 Privacy Lane"
    assert set(POLAR_PII) <= set(_strings(data))


def test_sdk_is_strict_about_missing_required_fields() -> None:
    data = polar_subscription(id=SUB_ID)
    del data["customer"]
    with pytest.raises(PolarDeserializationError):
        load(polar_event("subscription.updated", data))


def test_envelope_shape() -> None:
    body = json.loads(polar_event("subscription.created", {"id": "x"}, timestamp="T"))
    assert body == {
        "type": "subscription.created",
        "timestamp": "T",
        "api_version": "2026-04",
        "data": {"id": "x"},
    }
