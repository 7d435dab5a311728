"""Stripe events → facts: subscriptions, customers and completed checkouts. Pure.

Snapshot events carry the object they are about in `data.object` and their
time in `created` (Unix seconds); subscription events of the same second are
ordered by rank (docs/entitlements.md). Fields are checked as :mod:`billhook.providers.fields`
describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billhook.domain.facts import Fact, Item, LinkFact, Order, SubscriptionFact
from billhook.domain.records import EventSubject, StoredEvent
from billhook.errors import DecodeError
from billhook.providers.fields import (
    MAX_WORKSPACE_CHARS,
    count,
    epoch_us,
    flag,
    integer,
    json_object,
    metadata_workspace,
    optional_epoch_iso,
    optional_id,
    optional_workspace,
    readable_id,
    readable_metadata_workspace,
    required_id,
)
from billhook.providers.statuses import attention_record, known_status, normalized

# Stripe subscription events; the rank orders same-second events (docs/entitlements.md).
STRIPE_SUBSCRIPTION_RANKS = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.paused": 1,
    "customer.subscription.resumed": 1,
    "customer.subscription.trial_will_end": 1,
    "customer.subscription.pending_update_applied": 1,
    "customer.subscription.pending_update_expired": 1,
    "customer.subscription.deleted": 2,
}
STRIPE_CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})
# The event that links a checkout's customer to the workspace that started it.
STRIPE_CHECKOUT_COMPLETED = "checkout.session.completed"
# Every Stripe event type projections read (what a backfill asks the Events API for).
STRIPE_PROJECTED_TYPES = (
    *STRIPE_SUBSCRIPTION_RANKS,
    *sorted(STRIPE_CUSTOMER_EVENTS),
    STRIPE_CHECKOUT_COMPLETED,
)
# Stripe statuses after which a subscription never comes back.
STRIPE_TERMINAL = frozenset({"canceled", "incomplete_expired"})


def _reference(value: object, field: str) -> str | None:
    """A Stripe reference: an id, or the expanded object with its `id`; None when absent."""
    if isinstance(value, dict):
        return required_id(value.get("id"), f"{field}.id")
    return optional_id(value, field)


def _event_object(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object a Stripe snapshot event is about (`data.object`)."""
    return json_object(
        json_object(payload.get("data"), "event data").get("object"), "event data.object"
    )


def stripe_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = epoch_us(payload.get("created"), "event created")
    rank = STRIPE_SUBSCRIPTION_RANKS[event.type]
    return stripe_snapshot(_event_object(payload), created_us, rank, event, event.livemode, key)


def stripe_snapshot(
    sub: Mapping[str, Any],
    time_us: int,
    rank: int,
    event: StoredEvent,
    livemode: int | None,
    key: str,
) -> list[Fact]:
    """The facts a Stripe subscription object states, ordered at (`time_us`, `rank`)."""
    sub_id = required_id(sub.get("id"), "subscription id")
    provider_status = known_status(sub.get("status"), "subscription status")
    cancel_at_period_end = flag(
        sub.get("cancel_at_period_end"), "subscription cancel_at_period_end"
    )
    cancel_at = sub.get("cancel_at")
    if cancel_at is not None:
        integer(cancel_at, "subscription cancel_at")
    canceling = cancel_at_period_end or cancel_at is not None
    items = _items(sub)
    workspace = metadata_workspace(sub, key, "subscription")
    customer = _reference(sub.get("customer"), "subscription customer")
    order = Order(
        time_us=time_us,
        terminal=provider_status in STRIPE_TERMINAL,
        rank=rank,
        seq=event.seq,
    )
    status = normalized(provider_status, canceling)
    fact = SubscriptionFact(
        provider="stripe",
        id=sub_id,
        customer=customer,
        workspace=workspace,
        status=status,
        provider_status=provider_status,
        product=None,
        items=items,
        seats=None,
        cancel_at_period_end=cancel_at_period_end,
        current_period_end=optional_epoch_iso(
            sub.get("current_period_end"), "subscription current_period_end"
        ),
        livemode=livemode,
        event_id=event.event_id,
        order=order,
        **attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    if workspace and customer:
        facts.append(LinkFact("stripe", customer, workspace, order.time_us, event.seq))
    return facts


def _items(sub: Mapping[str, Any]) -> tuple[Item, ...]:
    items = sub.get("items")
    if items is None:
        return ()
    data = json_object(items, "subscription items").get("data")
    if data is None:
        return ()
    if not isinstance(data, list):
        raise DecodeError("subscription items.data is not an array")
    return tuple(_item(item, f"subscription items.data[{n}]", sub) for n, item in enumerate(data))


def _item(value: object, field: str, sub: Mapping[str, Any]) -> Item:
    item = json_object(value, field)
    price = _reference(item.get("price"), f"{field}.price") or _reference(
        item.get("plan"), f"{field}.plan"
    )
    if price is None:
        raise DecodeError(f"{field}.price is missing")
    # Current API versions keep the period on each item; older ones on the subscription.
    if "current_period_end" in item:
        period_end = optional_epoch_iso(item["current_period_end"], f"{field}.current_period_end")
    else:
        period_end = optional_epoch_iso(
            sub.get("current_period_end"), "subscription current_period_end"
        )
    return Item(
        price=price,
        quantity=count(item.get("quantity"), f"{field}.quantity"),
        current_period_end=period_end,
    )


def stripe_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = epoch_us(payload.get("created"), "event created")
    customer = _event_object(payload)
    customer_id = required_id(customer.get("id"), "customer id")
    workspace = metadata_workspace(customer, key, "customer")
    if workspace is None:
        return []
    return [LinkFact("stripe", customer_id, workspace, created_us, event.seq)]


def stripe_checkout(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = epoch_us(payload.get("created"), "event created")
    session = _event_object(payload)
    workspace = optional_workspace(
        session.get("client_reference_id"), "checkout session client_reference_id"
    ) or metadata_workspace(session, key, "checkout session")
    customer = _reference(session.get("customer"), "checkout session customer")
    if workspace is None or customer is None:
        return []
    return [LinkFact("stripe", customer, workspace, created_us, event.seq)]


# -- whom an event that could not be applied is about ----------------------------------------


def stripe_subject(event: StoredEvent, payload: Mapping[str, Any], key: str) -> EventSubject:
    """Whom a Stripe event is about, each field read only if well-formed; never raises."""
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return EventSubject()
    if event.type in STRIPE_SUBSCRIPTION_RANKS:
        return stripe_subscription_subject(obj, key)
    if event.type in STRIPE_CUSTOMER_EVENTS:
        return EventSubject(
            readable_metadata_workspace(obj, key), "stripe", readable_id(obj.get("id"))
        )
    workspace = readable_id(obj.get("client_reference_id"), MAX_WORKSPACE_CHARS)
    return EventSubject(
        workspace or readable_metadata_workspace(obj, key),
        "stripe",
        _readable_reference(obj.get("customer")),
        _readable_reference(obj.get("subscription")),
    )


def stripe_subscription_subject(sub: Mapping[str, Any], key: str) -> EventSubject:
    """Whom a Stripe subscription object is about (see :func:`stripe_subject`)."""
    return EventSubject(
        readable_metadata_workspace(sub, key),
        "stripe",
        _readable_reference(sub.get("customer")),
        readable_id(sub.get("id")),
    )


def _readable_reference(value: object) -> str | None:
    return readable_id(value.get("id") if isinstance(value, dict) else value)
