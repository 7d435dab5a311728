"""Every Stripe API version's subscription shape decodes to the same facts (issue #19)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billhook.domain.facts import Item, LinkFact, SubscriptionFact
from billhook.domain.records import StoredEvent
from billhook.errors import DecodeError
from billhook.providers.decode import decode, subject
from billhook.providers.stripe.webhook import stripe_record
from tests.feed import T0, Feed
from tests.providers.stripe.shapes import (
    BASIL,
    PERIOD_END,
    SINGLE_PLAN,
    V2013,
    V2015,
    V2017,
    V2018,
    V2020,
    VERSIONS,
    Sub,
    customer,
    event_body,
    subscription,
)

PERIOD_END_ISO = "2026-12-01T00:00:00Z"
ITEM_VERSIONS = [v for v in VERSIONS if v not in SINGLE_PLAN]


def _stored(body: bytes, seq: int = 1) -> StoredEvent:
    record = stripe_record(body.decode())
    return StoredEvent(
        seq,
        "stripe",
        record.event_id,
        record.type,
        record.livemode,
        record.occurred_at,
        "2026-11-21T12:00:00.000Z",
        record.payload,
    )


def _facts(
    version: str, sub: Sub, event_type: str = "customer.subscription.updated", **options: Any
) -> list[Any]:
    body = event_body(
        version, event_type, subscription(version, sub), created=T0, event_id="evt_1", **options
    )
    return decode(_stored(body), "workspace_id")


def _fact(version: str, sub: Sub, event_type: str = "customer.subscription.updated") -> Any:
    [fact, *_] = _facts(version, sub, event_type)
    assert isinstance(fact, SubscriptionFact)
    return fact


@pytest.mark.parametrize("version", VERSIONS)
def test_each_shape_reads_price_quantity_and_period(version: str) -> None:
    fact = _fact(version, Sub(items=(("price_team_monthly", 7),)))

    assert (fact.id, fact.customer, fact.status, fact.provider_status) == (
        "sub_1",
        "cus_1",
        "active",
        "active",
    )
    assert fact.items == (Item("price_team_monthly", 7, PERIOD_END_ISO),)
    assert fact.current_period_end == PERIOD_END_ISO


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("sub", "status", "terminal"),
    [
        (Sub(status="trialing"), "trialing", False),
        (Sub(cancel_at_period_end=True, canceled_at=T0), "canceling", False),
        (Sub(status="past_due"), "past_due", False),
        (Sub(status="unpaid"), "unpaid", False),
        (Sub(status="canceled", canceled_at=T0, ended_at=T0), "inactive", True),
    ],
    ids=["trialing", "cancel_at_period_end", "past_due", "unpaid", "canceled"],
)
def test_each_shape_reads_status_and_cancellation(
    version: str, sub: Sub, status: str, terminal: bool
) -> None:
    fact = _fact(version, sub)
    assert (fact.status, fact.order.terminal) == (status, terminal)
    assert fact.cancel_at_period_end == sub.cancel_at_period_end


@pytest.mark.parametrize("version", [V2020, BASIL])
def test_cancel_at_makes_a_subscription_canceling(version: str) -> None:
    assert _fact(version, Sub(cancel_at=PERIOD_END, canceled_at=T0)).status == "canceling"


@pytest.mark.parametrize("version", [V2020, BASIL])
def test_paused_collection_keeps_the_status_stripe_gives(version: str) -> None:
    paused = Sub(pause_collection={"behavior": "void", "resumes_at": None})
    assert _fact(version, paused).status == "active"


@pytest.mark.parametrize("version", ITEM_VERSIONS)
def test_shapes_with_items_read_every_item(version: str) -> None:
    sub = Sub(items=(("price_team_monthly", 2), ("price_enterprise_yearly", 9)))
    fact = _fact(version, sub)
    assert [(i.price, i.quantity) for i in fact.items] == [
        ("price_team_monthly", 2),
        ("price_enterprise_yearly", 9),
    ]


@pytest.mark.parametrize("version", [V2017, V2018])
def test_items_win_over_the_top_level_plan(version: str) -> None:
    """2016 to 2019: a one-item subscription also shows its plan on top; items are read."""
    obj = subscription(version, Sub(items=(("price_team_monthly", 2),)))
    obj["plan"]["id"] = "price_top_level"
    obj["quantity"] = 99
    body = event_body(version, "customer.subscription.updated", obj, created=T0, event_id="e")
    [fact] = decode(_stored(body), "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    assert [(i.price, i.quantity) for i in fact.items] == [("price_team_monthly", 2)]


def test_basil_takes_the_period_from_the_items_only() -> None:
    sub = Sub(items=(("price_team_monthly", 1), ("price_enterprise_yearly", 1)))
    obj = subscription(BASIL, sub)
    obj["items"]["data"][1]["current_period_end"] = PERIOD_END + 86_400
    body = event_body(BASIL, "customer.subscription.updated", obj, created=T0, event_id="e")
    [fact] = decode(_stored(body), "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    assert [i.current_period_end for i in fact.items] == [PERIOD_END_ISO, "2026-12-02T00:00:00Z"]
    assert fact.current_period_end == "2026-12-02T00:00:00Z"  # the latest item's


def test_a_2015_subscription_links_its_customer_through_its_metadata() -> None:
    facts = _facts(V2015, Sub(metadata={"workspace_id": "ws_old"}))
    assert facts[1:] == [LinkFact("stripe", "cus_1", "ws_old", T0 * 1_000_000, 1)]


def test_a_subscription_without_plan_or_items_names_no_price() -> None:
    obj = subscription(V2013, Sub())
    del obj["plan"]
    body = event_body(V2013, "customer.subscription.updated", obj, created=T0, event_id="e")
    [fact] = decode(_stored(body), "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    assert fact.items == ()


# -- malformed old shapes: readable reasons ---------------------------------------------------


def test_a_subscription_from_before_2014_without_an_id_is_refused_readably() -> None:
    """stripe-ruby-mock's 2013-06 recording: no subscription id at all."""
    obj = subscription(V2013, Sub())
    del obj["id"]
    body = event_body(V2013, "customer.subscription.updated", obj, created=T0, event_id="e")
    with pytest.raises(DecodeError, match=r"^subscription id is missing$"):
        decode(_stored(body), "workspace_id")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda o: o.update(plan="x" * 300), "subscription plan is too long"),
        (lambda o: o["plan"].update(id=None), "subscription plan.id is missing"),
        (lambda o: o.update(plan=[1]), "subscription plan is not a string"),
        (lambda o: o.update(quantity="2"), "subscription quantity is not an integer"),
        (lambda o: o.update(quantity=-1), "subscription quantity is out of range"),
        (
            lambda o: o.update(current_period_end="soon"),
            "subscription current_period_end is not an integer",
        ),
    ],
    ids=["plan too long", "plan id null", "plan array", "quantity text", "quantity < 0", "period"],
)
def test_a_malformed_top_level_plan_is_refused_readably(change: Any, reason: str) -> None:
    obj = subscription(V2015, Sub())
    change(obj)
    body = event_body(V2015, "customer.subscription.updated", obj, created=T0, event_id="e")
    with pytest.raises(DecodeError) as raised:
        decode(_stored(body), "workspace_id")
    assert str(raised.value) == reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda o: o.update(cancel_at="tomorrow"), "subscription cancel_at is not an integer"),
        (lambda o: o.update(cancel_at=10**15), "subscription cancel_at is outside the calendar"),
        (lambda o: o["items"].update(data={}), "subscription items.data is not an array"),
        (
            lambda o: o["items"]["data"][0].update(price=None, plan=None),
            "subscription items.data[0].price is missing",
        ),
    ],
    ids=["cancel_at text", "cancel_at huge", "items.data object", "item without price"],
)
def test_a_malformed_current_shape_is_refused_readably(change: Any, reason: str) -> None:
    obj = subscription(BASIL, Sub())
    change(obj)
    body = event_body(BASIL, "customer.subscription.updated", obj, created=T0, event_id="e")
    with pytest.raises(DecodeError) as raised:
        decode(_stored(body), "workspace_id")
    assert str(raised.value) == reason


# -- through the projection -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_each_shape_grants_its_tier_and_seats(feed: Feed, version: str) -> None:
    link = customer(version, "cus_1", {"workspace_id": "ws_1"})
    feed.append(
        stripe_record(
            event_body(version, "customer.created", link, created=T0, event_id="evt_c").decode()
        )
    )
    body = event_body(
        version,
        "customer.subscription.created",
        subscription(version, Sub(items=(("price_team_monthly", 4),))),
        created=T0 + 1,
        event_id="evt_s",
    )
    feed.append(stripe_record(body.decode()))

    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.status, e.seats, e.problems) == ("team", "stripe", "active", 4, ())
    [view] = e.subscriptions
    assert (view.price, view.current_period_end) == ("price_team_monthly", PERIOD_END_ISO)


@pytest.mark.parametrize("version", ITEM_VERSIONS)
def test_the_highest_tier_among_items_grants_with_its_quantity(feed: Feed, version: str) -> None:
    sub = Sub(
        items=(("price_team_monthly", 2), ("price_enterprise_yearly", 9)),
        metadata={"workspace_id": "ws_1"},
    )
    if version in (V2017, V2018):
        feed.stripe("customer.created", customer(version, "cus_1", {"workspace_id": "ws_1"}))
    body = event_body(
        version,
        "customer.subscription.created",
        subscription(version, sub),
        created=T0,
        event_id="evt_s",
    )
    feed.append(stripe_record(body.decode()))
    e = feed.entitlement("ws_1")
    assert (e.tier, e.seats) == ("enterprise", 9)


def test_an_unreadable_old_subscription_names_its_customers_workspace(feed: Feed) -> None:
    feed.stripe("customer.created", customer(V2013, "cus_1", {"workspace_id": "ws_1"}))
    obj = subscription(V2013, Sub())
    del obj["id"]
    body = event_body(V2013, "customer.subscription.updated", obj, created=T0, event_id="e")
    seq = feed.append(stripe_record(body.decode()))

    assert [q.error for q in feed.store.quarantine()] == ["subscription id is missing"]
    assert feed.entitlement("ws_1").problems == (f"quarantined:{seq}",)
    assert subject(_stored(body, seq), "workspace_id").customer == "cus_1"
    assert json.loads(body)["data"]["object"]["status"] == "active"
