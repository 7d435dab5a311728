"""Polar events → facts: subscriptions, customers and customer states. Pure.

Events carry the object they are about in `data`; a subscription is ordered by
its own `modified_at` (else `created_at`). A `customer.state_changed` carries
the customer with its active subscriptions: each is a snapshot ordered by the
event's `timestamp`, as a reconciliation is by its fetch time. Which event
types are read and which ignored, and why, is in docs/api.md ("Provider
payloads billhook reads"). Fields are checked as :mod:`billhook.providers.fields`
describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billhook.domain.facts import Fact, LinkFact, Order, SubscriptionFact
from billhook.domain.records import EventSubject, StoredEvent
from billhook.errors import DecodeError
from billhook.providers.fields import (
    MAX_WORKSPACE_CHARS,
    count,
    first_time_us,
    flag,
    iso_us,
    json_object,
    metadata_workspace,
    optional_id,
    optional_iso,
    optional_workspace,
    readable_id,
    readable_metadata_workspace,
    required_id,
)
from billhook.providers.statuses import attention_record, known_status, normalized

# Polar events carrying a whole `Subscription` in `data`: each is a snapshot of it.
POLAR_SUBSCRIPTION_EVENTS = frozenset(
    {
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.canceled",
        "subscription.uncanceled",
        "subscription.past_due",
        "subscription.paused",
        "subscription.resumed",
        "subscription.cycled",
        "subscription.migrated",
        "subscription.revoked",
    }
)
# The customer and its active subscriptions, for state sync.
POLAR_CUSTOMER_STATE = "customer.state_changed"
# Polar events linking a customer to a workspace (`external_id`, metadata).
POLAR_CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", POLAR_CUSTOMER_STATE})
# Polar event types logged but deliberately not projected; docs/api.md says why for each.
POLAR_IGNORED = frozenset(
    {
        # The customer's subscriptions end by their own `subscription.revoked`.
        "customer.deleted",
        # Payments and refunds: a subscription's status already says whether it is paid.
        *("order.created", "order.paid", "order.updated", "order.refunded"),
        *("refund.created", "refund.updated"),
        # A checkout ends in `subscription.created`, which carries everything it links.
        *("checkout.created", "checkout.updated", "checkout.expired"),
        # Polar's own entitlements, seats and members: billhook decides from the subscription.
        *("benefit.created", "benefit.updated"),
        *("benefit_grant.created", "benefit_grant.cycled"),
        *("benefit_grant.updated", "benefit_grant.revoked"),
        *("customer_seat.assigned", "customer_seat.claimed", "customer_seat.revoked"),
        *("member.created", "member.updated", "member.deleted"),
        # The catalog and the organization: prices are mapped in the configuration.
        *("product.created", "product.updated", "organization.updated"),
        *("discount.created", "discount.updated", "discount.deleted"),
    }
)
# Polar statuses after which a subscription never comes back.
POLAR_TERMINAL = frozenset({"canceled", "incomplete_expired", "revoked", "ended"})


def polar_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    sub = json_object(payload.get("data"), "event data")
    stamp_us = first_time_us(
        (sub.get("modified_at"), "subscription modified_at"),
        (sub.get("created_at"), "subscription created_at"),
    )
    revoked = event.type == "subscription.revoked"
    return polar_snapshot(sub, stamp_us, event, key, revoked=revoked)


def polar_snapshot(
    sub: Mapping[str, Any], time_us: int, event: StoredEvent, key: str, *, revoked: bool = False
) -> list[Fact]:
    """The facts a Polar subscription object states, ordered at `time_us`."""
    embedded = sub.get("customer")
    customer_obj = {} if embedded is None else json_object(embedded, "subscription customer")
    customer = optional_id(sub.get("customer_id"), "subscription customer_id") or optional_id(
        customer_obj.get("id"), "subscription customer.id"
    )
    fact = _subscription_fact(sub, "subscription", customer, time_us, event, key, revoked)
    facts: list[Fact] = [fact]
    linked = _customer_workspace(customer_obj, key, "subscription customer") or fact.workspace
    if linked and customer:
        facts.append(LinkFact("polar", customer, linked, time_us, event.seq))
    return facts


def _subscription_fact(
    sub: Mapping[str, Any],
    owner: str,
    customer: str | None,
    time_us: int,
    event: StoredEvent,
    key: str,
    revoked: bool = False,
) -> SubscriptionFact:
    """A Polar subscription (`owner` names it in reasons) of `customer`, ordered at `time_us`."""
    sub_id = required_id(sub.get("id"), f"{owner} id")
    provider_status = "revoked" if revoked else known_status(sub.get("status"), f"{owner} status")
    cancel_at_period_end = flag(sub.get("cancel_at_period_end"), f"{owner} cancel_at_period_end")
    order = Order(
        time_us=time_us,
        terminal=provider_status in POLAR_TERMINAL,
        rank=0,
        seq=event.seq,
    )
    status = normalized(provider_status, cancel_at_period_end)
    return SubscriptionFact(
        provider="polar",
        id=sub_id,
        customer=customer,
        workspace=metadata_workspace(sub, key, owner),
        status=status,
        provider_status=provider_status,
        product=optional_id(sub.get("product_id"), f"{owner} product_id"),
        items=(),
        seats=count(sub.get("seats"), f"{owner} seats"),
        cancel_at_period_end=cancel_at_period_end,
        current_period_end=optional_iso(
            sub.get("current_period_end"), f"{owner} current_period_end"
        ),
        livemode=None,
        event_id=event.event_id,
        order=order,
        **attention_record(status, order.time_us),
    )


def _customer_workspace(customer: Mapping[str, Any], key: str, owner: str) -> str | None:
    external_id = optional_workspace(customer.get("external_id"), f"{owner} external_id")
    return external_id or metadata_workspace(customer, key, owner)


def polar_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    customer = json_object(payload.get("data"), "event data")
    customer_id = required_id(customer.get("id"), "customer id")
    workspace = _customer_workspace(customer, key, "customer")
    if workspace is None:
        return []
    stamp_us = first_time_us(
        (customer.get("modified_at"), "customer modified_at"),
        (customer.get("created_at"), "customer created_at"),
        (payload.get("timestamp"), "event timestamp"),
    )
    return [LinkFact("polar", customer_id, workspace, stamp_us, event.seq)]


def polar_customer_state(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    """A customer's state: its link, and a snapshot of each of its active subscriptions.

    The snapshots are ordered by the event's `timestamp`, the moment the state
    was true, against the subscriptions' own events by their `modified_at`. A
    subscription missing from the list is left as its own events say: the
    state does not name it, and its own `subscription.canceled` or `.revoked`
    tells how it ended.
    """
    facts = polar_customer(event, payload, key)
    state = json_object(payload.get("data"), "event data")
    customer = required_id(state.get("id"), "customer id")
    entries = state.get("active_subscriptions")
    if entries is None:
        return facts
    if not isinstance(entries, list):
        raise DecodeError("customer state active_subscriptions is not an array")
    if not entries:
        return facts
    stamp_us = iso_us(payload.get("timestamp"), "event timestamp")
    for n, entry in enumerate(entries):
        owner = f"customer state active_subscriptions[{n}]"
        sub = json_object(entry, owner)
        facts.append(_subscription_fact(sub, owner, customer, stamp_us, event, key))
    return facts


# -- whom an event that could not be applied is about ----------------------------------------


def polar_subject(event: StoredEvent, payload: Mapping[str, Any], key: str) -> EventSubject:
    """Whom a Polar event is about, each field read only if well-formed; never raises."""
    obj = payload.get("data")
    if not isinstance(obj, dict):
        return EventSubject()
    if event.type in POLAR_SUBSCRIPTION_EVENTS:
        return polar_subscription_subject(obj, key)
    return EventSubject(_readable_customer_workspace(obj, key), "polar", readable_id(obj.get("id")))


def polar_subscription_subject(sub: Mapping[str, Any], key: str) -> EventSubject:
    """Whom a Polar subscription object is about (see :func:`polar_subject`)."""
    embedded = sub.get("customer")
    customer = embedded if isinstance(embedded, dict) else {}
    return EventSubject(
        readable_metadata_workspace(sub, key) or _readable_customer_workspace(customer, key),
        "polar",
        readable_id(sub.get("customer_id")) or readable_id(customer.get("id")),
        readable_id(sub.get("id")),
    )


def _readable_customer_workspace(customer: Mapping[str, Any], key: str) -> str | None:
    external_id = readable_id(customer.get("external_id"), MAX_WORKSPACE_CHARS)
    return external_id or readable_metadata_workspace(customer, key)
