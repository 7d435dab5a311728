"""A purchase from start to cancellation, through billhook and the provider fakes.

checkout → the buyer pays on the provider's page (the fake's
`complete_checkout`) → the provider's events, delivered signed → the
entitlement → the portal → a cancellation event → `canceling`. The events
the provider sends are built from what billhook asked for, so a round trip
that ends linked proves the session carried the workspace.
"""

from __future__ import annotations

from datetime import UTC, datetime

from billhook.providers.billhook import CHECKOUT_STARTED, PORTAL_OPENED, RECONCILED
from tests.api.checkout_support import NOW_S, T0, Shop


def test_stripe_purchase_round_trip(shop: Shop) -> None:
    started = shop.checkout("ws_rt", seats=3, actor_role="owner")
    assert started.status_code == 201, started.text
    session, sub = shop.stripe.complete_checkout(started.json()["session_id"])

    # The subscription carries the workspace from its first event, whichever arrives first.
    shop.deliver_stripe("customer.subscription.created", sub, created=T0 + 1)
    assert shop.entitlement("ws_rt")["tier"] == "team"
    shop.deliver_stripe("checkout.session.completed", session, created=T0 + 1)

    bought = shop.entitlement("ws_rt")
    assert (bought["tier"], bought["source"], bought["status"]) == ("team", "stripe", "active")
    assert bought["seats"] == {"purchased": 3}
    assert [(s["id"], s["customer"]) for s in bought["subscriptions"]] == [
        (sub["id"], sub["customer"])
    ]
    # The double purchase is refused: changes go through the portal.
    again = shop.checkout("ws_rt", seats=5)
    assert (again.status_code, again.json()["error"]) == (409, "already_subscribed")

    portal = shop.portal("ws_rt", actor_role="admin")
    assert portal.status_code == 201, portal.text
    [sent] = shop.stripe.requests_to("/v1/billing_portal/sessions", "POST")
    assert sent.form["customer"] == sub["customer"]

    # In the portal the buyer cancels at period end; Stripe says so.
    shop.stripe.subscriptions[sub["id"]]["cancel_at_period_end"] = True
    canceled = dict(shop.stripe.subscriptions[sub["id"]])
    shop.deliver_stripe("customer.subscription.updated", canceled, created=T0 + 600)

    ending = shop.entitlement("ws_rt")
    assert (ending["tier"], ending["status"], ending["next_action"]) == (
        "team",
        "canceling",
        "resume_subscription",
    )
    assert ending["seats"] == {"purchased": 3}
    # The log is the history of who started what, between the provider's events.
    kinds = [(e.provider, e.type) for e in shop.log.read(after=0)]
    assert kinds == [
        ("billhook", CHECKOUT_STARTED),
        ("stripe", "customer.subscription.created"),
        ("stripe", "checkout.session.completed"),
        ("billhook", PORTAL_OPENED),
        ("stripe", "customer.subscription.updated"),
    ]
    roles = [
        p["actor_role"] for p in shop.payloads(CHECKOUT_STARTED) + shop.payloads(PORTAL_OPENED)
    ]
    assert roles == ["owner", "admin"]


def test_stripe_return_before_the_subscription_event_refreshes_from_the_api(shop: Shop) -> None:
    """The app calls refresh on return: the subscription is fetched, not waited for."""
    started = shop.checkout("ws_rt", seats=4)
    session, sub = shop.stripe.complete_checkout(started.json()["session_id"])
    shop.deliver_stripe("checkout.session.completed", session, created=T0 + 1)
    assert shop.entitlement("ws_rt")["tier"] == "solo"

    refreshed = shop.client.post("/v1/workspaces/ws_rt/refresh")

    assert refreshed.status_code == 200, refreshed.text
    answer = refreshed.json()
    assert (answer["tier"], answer["status"], answer["seats"]) == (
        "team",
        "active",
        {"purchased": 4},
    )
    assert len(shop.billhook_events(RECONCILED)) == 1
    # The subscription's own event, late, changes nothing.
    shop.deliver_stripe("customer.subscription.created", sub, created=T0 + 1)
    assert shop.entitlement("ws_rt")["seats"] == {"purchased": 4}


def test_polar_purchase_round_trip(shop: Shop) -> None:
    started = shop.checkout("ws_rt", provider="polar", seats=4, actor_role="admin")
    assert started.status_code == 201, started.text
    sub = shop.polar.complete_checkout(started.json()["session_id"])

    shop.deliver_polar("subscription.created", sub)
    shop.deliver_polar("subscription.active", sub)

    bought = shop.entitlement("ws_rt")
    assert (bought["tier"], bought["source"], bought["status"]) == ("team", "polar", "active")
    assert bought["seats"] == {"purchased": 4}
    again = shop.checkout("ws_rt", provider="polar")
    assert (again.status_code, again.json()["error"]) == (409, "already_subscribed")

    portal = shop.portal("ws_rt", actor_role="owner")
    assert portal.status_code == 201, portal.text
    [sent] = shop.polar.requests_to("/v1/customer-sessions/", "POST")
    assert sent.json["customer_id"] == sub["customer_id"]

    # In the portal the buyer cancels at period end; Polar says so.
    canceled = {**sub, "cancel_at_period_end": True, "modified_at": _iso(NOW_S - 60)}
    shop.deliver_polar("subscription.canceled", canceled)

    ending = shop.entitlement("ws_rt")
    assert (ending["tier"], ending["status"], ending["next_action"]) == (
        "team",
        "canceling",
        "resume_subscription",
    )
    assert ending["seats"] == {"purchased": 4}
    types = [e.type for e in shop.log.read(after=0)]
    assert types == [
        CHECKOUT_STARTED,
        "subscription.created",
        "subscription.active",
        PORTAL_OPENED,
        "subscription.canceled",
    ]


def test_polar_return_before_any_webhook_finds_the_purchase_by_external_id(shop: Shop) -> None:
    """Nothing links the workspace yet: refresh asks Polar by `external_customer_id`."""
    started = shop.checkout("ws_rt_polar", provider="polar", seats=2)
    sub = shop.polar.complete_checkout(started.json()["session_id"])

    refreshed = shop.client.post("/v1/workspaces/ws_rt_polar/refresh")

    assert refreshed.status_code == 200, refreshed.text
    answer = refreshed.json()
    assert (answer["tier"], answer["source"], answer["seats"]) == (
        "team",
        "polar",
        {"purchased": 2},
    )
    assert [(s["id"], s["customer"]) for s in answer["subscriptions"]] == [
        (sub["id"], sub["customer_id"])
    ]
    [asked] = shop.polar.requests_to("/v1/subscriptions/", "GET")
    assert asked.query["external_customer_id"] == "ws_rt_polar"
    # Linked now: the next refresh asks by customer and appends nothing.
    head = shop.log.head_seq()
    assert shop.client.post("/v1/workspaces/ws_rt_polar/refresh").status_code == 200
    assert shop.log.head_seq() == head


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
