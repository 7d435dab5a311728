"""Stripe events → facts: subscriptions, customers and completed checkouts. Pure.

Snapshot events carry the object they are about in `data.object` and their
time in `created` (Unix seconds); subscription events of the same second are
ordered by rank (docs/entitlements.md). Fields are checked as :mod:`billhook.providers.fields`
describes.

A subscription's shape follows the API version its endpoint is pinned to, and
billhook reads every one Stripe has sent (docs/api.md, "Provider payloads
billhook reads"):

- from 2016-07-06, `items.data[]`, each item with its `price` (from 2020) or
  only its `plan` (2016 to 2020);
- before 2016-07-06, no `items`: one top-level `plan` and `quantity`;
- the billing period on the subscription, or from 2025-03-31.basil on, on
  each item.

An event for a connected account (`account: "acct_…"` at the top level) keys
its subscription and customer by account and id (:mod:`.accounts`).
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
    epoch_s,
    epoch_us,
    flag,
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
from billhook.providers.stripe.accounts import is_account_id, scoped

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


def event_account(payload: Mapping[str, Any]) -> str | None:
    """The connected account an event is for (its top-level `account`); None for the platform."""
    value = payload.get("account")
    if value is None:
        return None
    account = required_id(value, "event account")
    if not is_account_id(account):
        raise DecodeError("event account is not a connected account id")
    return account


def stripe_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = epoch_us(payload.get("created"), "event created")
    rank = STRIPE_SUBSCRIPTION_RANKS[event.type]
    account = event_account(payload)
    return stripe_snapshot(
        _event_object(payload), created_us, rank, event, event.livemode, key, account=account
    )


def stripe_snapshot(
    sub: Mapping[str, Any],
    time_us: int,
    rank: int,
    event: StoredEvent,
    livemode: int | None,
    key: str,
    *,
    account: str | None = None,
) -> list[Fact]:
    """The facts a Stripe subscription object states, ordered at (`time_us`, `rank`).

    With `account`, the subscription and customer ids are scoped to that
    connected account (:func:`.accounts.scoped`).
    """
    sub_id = required_id(sub.get("id"), "subscription id")
    provider_status = known_status(sub.get("status"), "subscription status")
    cancel_at_period_end = flag(
        sub.get("cancel_at_period_end"), "subscription cancel_at_period_end"
    )
    cancel_at = sub.get("cancel_at")
    if cancel_at is not None:
        epoch_s(cancel_at, "subscription cancel_at")
    canceling = cancel_at_period_end or cancel_at is not None
    period_end = optional_epoch_iso(
        sub.get("current_period_end"), "subscription current_period_end"
    )
    items = _items(sub, period_end)
    workspace = metadata_workspace(sub, key, "subscription")
    customer = _reference(sub.get("customer"), "subscription customer")
    if customer is not None:
        customer = scoped(account, customer)
    order = Order(
        time_us=time_us,
        terminal=provider_status in STRIPE_TERMINAL,
        rank=rank,
        seq=event.seq,
    )
    status = normalized(provider_status, canceling)
    fact = SubscriptionFact(
        provider="stripe",
        id=scoped(account, sub_id),
        customer=customer,
        workspace=workspace,
        status=status,
        provider_status=provider_status,
        product=None,
        items=items,
        seats=None,
        cancel_at_period_end=cancel_at_period_end,
        # From 2025-03-31.basil the period is on each item only: the latest one's end.
        current_period_end=period_end or _latest_period_end(items),
        livemode=livemode,
        event_id=event.event_id,
        order=order,
        **attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    if workspace and customer:
        facts.append(LinkFact("stripe", customer, workspace, order.time_us, event.seq))
    return facts


def _items(sub: Mapping[str, Any], period_end: str | None) -> tuple[Item, ...]:
    """The subscription's items; before 2016-07-06, its one top-level plan as an item."""
    items = sub.get("items")
    data = None if items is None else json_object(items, "subscription items").get("data")
    if data is not None and not isinstance(data, list):
        raise DecodeError("subscription items.data is not an array")
    if data:
        return tuple(
            _item(item, f"subscription items.data[{n}]", period_end) for n, item in enumerate(data)
        )
    plan = _reference(sub.get("plan"), "subscription plan")
    if plan is None:
        return ()
    quantity = count(sub.get("quantity"), "subscription quantity")
    return (Item(price=plan, quantity=quantity, current_period_end=period_end),)


def _item(value: object, field: str, period_end: str | None) -> Item:
    item = json_object(value, field)
    # Items have a `price` from 2020, only a `plan` (the same id) from 2016 to 2020.
    price = _reference(item.get("price"), f"{field}.price") or _reference(
        item.get("plan"), f"{field}.plan"
    )
    if price is None:
        raise DecodeError(f"{field}.price is missing")
    # From 2025-03-31.basil the period is on each item; before, on the subscription.
    if "current_period_end" in item:
        period_end = optional_epoch_iso(item["current_period_end"], f"{field}.current_period_end")
    return Item(
        price=price,
        quantity=count(item.get("quantity"), f"{field}.quantity"),
        current_period_end=period_end,
    )


def _latest_period_end(items: tuple[Item, ...]) -> str | None:
    # ISO 8601 in UTC with four-digit years: the text order is the time order.
    return max((i.current_period_end for i in items if i.current_period_end), default=None)


def stripe_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = epoch_us(payload.get("created"), "event created")
    account = event_account(payload)
    customer = _event_object(payload)
    customer_id = required_id(customer.get("id"), "customer id")
    workspace = metadata_workspace(customer, key, "customer")
    if workspace is None:
        return []
    return [LinkFact("stripe", scoped(account, customer_id), workspace, created_us, event.seq)]


def stripe_checkout(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = epoch_us(payload.get("created"), "event created")
    account = event_account(payload)
    session = _event_object(payload)
    workspace = optional_workspace(
        session.get("client_reference_id"), "checkout session client_reference_id"
    ) or metadata_workspace(session, key, "checkout session")
    customer = _reference(session.get("customer"), "checkout session customer")
    if workspace is None or customer is None:
        return []
    return [LinkFact("stripe", scoped(account, customer), workspace, created_us, event.seq)]


# -- whom an event that could not be applied is about ----------------------------------------


def stripe_subject(event: StoredEvent, payload: Mapping[str, Any], key: str) -> EventSubject:
    """Whom a Stripe event is about, each field read only if well-formed; never raises.

    Ids are scoped as the decoder scopes them; of an event whose `account` is
    malformed, only a workspace it names itself is read (its ids could be
    another account's).
    """
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return EventSubject()
    readable, account = readable_account(payload.get("account"))
    if event.type in STRIPE_SUBSCRIPTION_RANKS:
        return stripe_subscription_subject(obj, key, account, ids=readable)
    if event.type in STRIPE_CUSTOMER_EVENTS:
        customer = _scoped_readable(account, readable_id(obj.get("id"))) if readable else None
        return EventSubject(readable_metadata_workspace(obj, key), "stripe", customer)
    workspace = readable_id(obj.get("client_reference_id"), MAX_WORKSPACE_CHARS)
    customer = _readable_reference(obj.get("customer")) if readable else None
    subscription = _readable_reference(obj.get("subscription")) if readable else None
    return EventSubject(
        workspace or readable_metadata_workspace(obj, key),
        "stripe",
        _scoped_readable(account, customer),
        _scoped_readable(account, subscription),
    )


def stripe_subscription_subject(
    sub: Mapping[str, Any], key: str, account: str | None = None, *, ids: bool = True
) -> EventSubject:
    """Whom a Stripe subscription object is about (see :func:`stripe_subject`)."""
    if not ids:
        return EventSubject(readable_metadata_workspace(sub, key), "stripe")
    return EventSubject(
        readable_metadata_workspace(sub, key),
        "stripe",
        _scoped_readable(account, _readable_reference(sub.get("customer"))),
        _scoped_readable(account, readable_id(sub.get("id"))),
    )


def readable_account(value: object) -> tuple[bool, str | None]:
    """(whether ids can be scoped, the account): an absent account is the platform's."""
    if value is None:
        return True, None
    if isinstance(value, str) and readable_id(value) and is_account_id(value):
        return True, value
    return False, None


def _scoped_readable(account: str | None, object_id: str | None) -> str | None:
    return None if object_id is None else scoped(account, object_id)


def _readable_reference(value: object) -> str | None:
    return readable_id(value.get("id") if isinstance(value, dict) else value)
