"""The status, tier and link rules of SPEC §5 for Polar payloads loaded by polar-sdk."""

from __future__ import annotations

import json

import pytest
from polar.base import deserialize
from polar.v2026_04.webhooks import WebhookPayload

from billhook.testing.polar import (
    polar_customer,
    polar_customer_state,
    polar_event,
    polar_subscription,
)
from billhook.testing.settings import PRODUCT_ENTERPRISE, PRODUCT_TEAM
from tests.feed import Feed

CUSTOMER = "0b6c3f9e-1d2a-4e5b-8c7d-6f5e4d3c2b1a"


def _sub(status: str = "active", **changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "id": "5d4c3b2a-1f0e-4d9c-8b7a-6e5d4c3b2a19",
        "status": status,
        "customer_id": CUSTOMER,
        "product_id": PRODUCT_TEAM,
        "external_customer_id": "ws_1",
        "seats": 3,
    }
    fields.update(changes)
    return polar_subscription(**fields)  # type: ignore[arg-type]


def _body(event_type: str, data: dict[str, object]) -> bytes:
    body = polar_event(event_type, data)
    # Every payload fed here is one polar-sdk's own types accept.
    deserialize(json.loads(body), WebhookPayload)
    return body


@pytest.mark.parametrize(
    ("event_type", "provider_status", "cancel", "status", "tier", "next_action", "attention"),
    [
        ("subscription.created", "trialing", False, "trialing", "team", "none", None),
        ("subscription.active", "active", False, "active", "team", "none", None),
        ("subscription.canceled", "active", True, "canceling", "team", "resume_subscription", None),
        ("subscription.uncanceled", "active", False, "active", "team", "none", None),
        (
            "subscription.past_due",
            "past_due",
            False,
            "past_due",
            "team",
            "update_payment_method",
            "past_due",
        ),
        (
            "subscription.updated",
            "unpaid",
            False,
            "unpaid",
            "team",
            "update_payment_method",
            "unpaid",
        ),
        (
            "subscription.created",
            "incomplete",
            False,
            "incomplete",
            "solo",
            "complete_checkout",
            "incomplete",
        ),
        ("subscription.paused", "paused", False, "paused", "solo", "resume_subscription", None),
        ("subscription.revoked", "canceled", False, "inactive", "solo", "resubscribe", None),
        (
            "subscription.updated",
            "incomplete_expired",
            False,
            "inactive",
            "solo",
            "resubscribe",
            None,
        ),
    ],
)
def test_polar_status_table(
    feed: Feed,
    event_type: str,
    provider_status: str,
    cancel: bool,
    status: str,
    tier: str,
    next_action: str,
    attention: str | None,
) -> None:
    ended = "2026-11-20T00:00:00Z" if event_type == "subscription.revoked" else None
    feed.polar(
        _body(event_type, _sub(provider_status, cancel_at_period_end=cancel, ended_at=ended))
    )
    e = feed.entitlement("ws_1")
    assert (e.status, e.tier, e.next_action, e.attention) == (status, tier, next_action, attention)
    assert e.source == ("polar" if tier == "team" else "default")
    assert e.seats == (3 if tier == "team" else None)


def test_seats_none_means_unlimited(feed: Feed) -> None:
    feed.polar(_body("subscription.active", _sub(seats=None)))
    e = feed.entitlement("ws_1")
    assert (e.tier, e.seats) == ("team", None)


def test_ordering_by_modified_at_not_arrival(feed: Feed) -> None:
    newer = _sub("active", cancel_at_period_end=True, modified_at="2026-11-10T00:00:00Z")
    older = _sub("active", modified_at="2026-11-05T00:00:00Z")
    feed.polar(_body("subscription.canceled", newer))
    feed.polar(_body("subscription.updated", older))
    assert feed.entitlement("ws_1").status == "canceling"


def test_revoked_is_never_resurrected_by_a_same_time_update(feed: Feed) -> None:
    stamp = "2026-11-10T00:00:00Z"
    feed.polar(_body("subscription.revoked", _sub("canceled", modified_at=stamp, ended_at=stamp)))
    feed.polar(_body("subscription.updated", _sub("active", modified_at=stamp)))
    assert feed.entitlement("ws_1").status == "inactive"


def test_unmapped_product_fails_closed(feed: Feed) -> None:
    feed.polar(
        _body("subscription.active", _sub(product_id="9e9e9e9e-0000-4000-8000-000000000000"))
    )
    e = feed.entitlement("ws_1")
    assert (e.tier, e.next_action) == ("solo", "contact_support")
    assert e.problems == ("unknown_price:9e9e9e9e-0000-4000-8000-000000000000",)


def test_enterprise_product(feed: Feed) -> None:
    feed.polar(_body("subscription.active", _sub(product_id=PRODUCT_ENTERPRISE, seats=None)))
    assert feed.entitlement("ws_1").tier == "enterprise"


@pytest.mark.parametrize(
    "link",
    [
        lambda: ("customer.created", polar_customer(id=CUSTOMER, external_id="ws_1")),
        lambda: (
            "customer.updated",
            polar_customer(id=CUSTOMER, metadata={"workspace_id": "ws_1"}),
        ),
        lambda: ("customer.state_changed", polar_customer_state(id=CUSTOMER, external_id="ws_1")),
    ],
)
def test_customer_link_arriving_after_the_subscription(feed: Feed, link: object) -> None:
    feed.polar(_body("subscription.active", _sub(external_customer_id=None)))
    assert feed.entitlement("ws_1").tier == "solo"
    event_type, data = link()  # type: ignore[operator]
    feed.polar(_body(event_type, data))
    assert feed.entitlement("ws_1").tier == "team"


@pytest.mark.parametrize(
    "where",
    [{"metadata": {"workspace_id": "ws_1"}}, {"customer_metadata": {"workspace_id": "ws_1"}}],
)
def test_metadata_links(feed: Feed, where: dict[str, object]) -> None:
    feed.polar(_body("subscription.active", _sub(external_customer_id=None, **where)))
    assert feed.entitlement("ws_1").tier == "team"


def test_a_time_outside_utcs_calendar_is_quarantined_not_fatal(feed: Feed) -> None:
    """Year 1 at +01:00 is before year 1 in UTC: the event is quarantined, the next applies."""
    bad = _sub(current_period_end="0001-01-01T00:00:00+01:00")
    feed.polar(polar_event("subscription.updated", bad))
    assert [q.error for q in feed.store.quarantine()] == [
        "subscription current_period_end is outside the calendar"
    ]
    feed.polar(_body("subscription.active", _sub()))
    assert feed.entitlement("ws_1").tier == "team"
