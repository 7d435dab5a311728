"""Polar events → facts: subscriptions and customers. Pure.

Events carry the object they are about in `data`; a subscription is ordered by
its own `modified_at` (else `created_at`). Fields are checked as
:mod:`billhook.providers.fields` describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billhook.domain.facts import Fact, LinkFact, Order, SubscriptionFact
from billhook.domain.records import EventSubject, StoredEvent
from billhook.providers.fields import (
    MAX_WORKSPACE_CHARS,
    count,
    first_time_us,
    flag,
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
        "subscription.revoked",
    }
)
POLAR_CUSTOMER_EVENTS = frozenset(
    {"customer.created", "customer.updated", "customer.state_changed"}
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
    sub_id = required_id(sub.get("id"), "subscription id")
    provider_status = (
        "revoked" if revoked else known_status(sub.get("status"), "subscription status")
    )
    cancel_at_period_end = flag(
        sub.get("cancel_at_period_end"), "subscription cancel_at_period_end"
    )
    order = Order(
        time_us=time_us,
        terminal=provider_status in POLAR_TERMINAL,
        rank=0,
        seq=event.seq,
    )
    embedded = sub.get("customer")
    customer_obj = {} if embedded is None else json_object(embedded, "subscription customer")
    customer = optional_id(sub.get("customer_id"), "subscription customer_id") or optional_id(
        customer_obj.get("id"), "subscription customer.id"
    )
    status = normalized(provider_status, cancel_at_period_end)
    fact = SubscriptionFact(
        provider="polar",
        id=sub_id,
        customer=customer,
        workspace=metadata_workspace(sub, key, "subscription"),
        status=status,
        provider_status=provider_status,
        product=optional_id(sub.get("product_id"), "subscription product_id"),
        items=(),
        seats=count(sub.get("seats"), "subscription seats"),
        cancel_at_period_end=cancel_at_period_end,
        current_period_end=optional_iso(
            sub.get("current_period_end"), "subscription current_period_end"
        ),
        livemode=None,
        event_id=event.event_id,
        order=order,
        **attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    linked = _customer_workspace(customer_obj, key, "subscription customer") or fact.workspace
    if linked and customer:
        facts.append(LinkFact("polar", customer, linked, order.time_us, event.seq))
    return facts


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
