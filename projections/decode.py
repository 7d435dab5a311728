"""From a logged event to the facts it states. Pure: no clock, I/O or config.

One small function per event family, chosen by a dict on the event type.
An event billhook does not understand yields no facts; a known event whose
payload is malformed raises :class:`DecodeError` and is quarantined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.log import StoredEvent
from ingest.settings import ENFORCEMENT_MODES
from projections.errors import DecodeError
from projections.facts import (
    ATTENTION_STATUSES,
    OVERRIDE_KINDS,
    EnforcementFact,
    Fact,
    Item,
    LinkFact,
    Order,
    OverrideFact,
    SubscriptionFact,
)
from projections.times import iso_seconds, to_us

# Stripe subscription events; the rank orders same-second events (SPEC §5).
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
# Every Stripe event type projections read (what a backfill asks the Events API for).
STRIPE_PROJECTED_TYPES = (
    *STRIPE_SUBSCRIPTION_RANKS,
    *sorted(STRIPE_CUSTOMER_EVENTS),
    "checkout.session.completed",
)
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
# Provider statuses after which a subscription never comes back.
STRIPE_TERMINAL = frozenset({"canceled", "incomplete_expired"})
POLAR_TERMINAL = frozenset({"canceled", "incomplete_expired", "revoked", "ended"})
# Provider status → normalized status, before the canceling rule (SPEC §5).
NORMALIZED = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "unpaid",
    "incomplete": "incomplete",
    "paused": "paused",
    "canceled": "inactive",
    "incomplete_expired": "inactive",
    "revoked": "inactive",
    "ended": "inactive",
}

# billhook's own operator events.
OVERRIDE_SET = "billhook.override_set"
OVERRIDE_REVOKED = "billhook.override_revoked"
ENFORCEMENT_SET = "billhook.enforcement_set"
# A subscription snapshot fetched from a provider's API (SPEC §8).
RECONCILED = "billhook.reconciled"
# A reconciled snapshot ranks like an update at the same instant.
RECONCILED_RANK = 1
# Sessions started through billhook's API: the history of who started what.
# Logged, never projected (they state no fact about a subscription).
CHECKOUT_STARTED = "billhook.checkout_started"
PORTAL_OPENED = "billhook.portal_opened"


# {provider: event types} projections read: the payloads a projector needs from the log.
PROJECTED_TYPES: Mapping[str, frozenset[str]] = {
    "stripe": frozenset(STRIPE_PROJECTED_TYPES),
    "polar": POLAR_SUBSCRIPTION_EVENTS | POLAR_CUSTOMER_EVENTS,
    "billhook": frozenset({OVERRIDE_SET, OVERRIDE_REVOKED, ENFORCEMENT_SET, RECONCILED}),
}


def decode(event: StoredEvent, workspace_key: str) -> list[Fact]:
    """The facts `event` states; [] for events billhook does not project."""
    handler = _HANDLERS.get((event.provider, _family(event)))
    if handler is None:
        return []
    try:
        payload = orjson.loads(event.payload)
        if not isinstance(payload, dict):
            raise DecodeError("payload is not a JSON object")
        return handler(event, payload, workspace_key)
    except DecodeError:
        raise
    # OverflowError: a time that leaves the calendar once converted to UTC (year 1 at +01:00).
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
        raise DecodeError(f"{e.__class__.__name__}: {e}") from e


def understands(event: StoredEvent) -> bool:
    """Whether billhook projects events of this provider and type."""
    return (event.provider, _family(event)) in _HANDLERS


def _family(event: StoredEvent) -> str:
    if event.provider == "stripe":
        if event.type in STRIPE_SUBSCRIPTION_RANKS:
            return "subscription"
        if event.type in STRIPE_CUSTOMER_EVENTS:
            return "customer"
        if event.type == "checkout.session.completed":
            return "checkout"
    elif event.provider == "polar":
        if event.type in POLAR_SUBSCRIPTION_EVENTS:
            return "subscription"
        if event.type in POLAR_CUSTOMER_EVENTS:
            return "customer"
    elif event.provider == "billhook" and event.type in (OVERRIDE_SET, OVERRIDE_REVOKED):
        return "override"
    elif event.provider == "billhook" and event.type == ENFORCEMENT_SET:
        return "enforcement"
    elif event.provider == "billhook" and event.type == RECONCILED:
        return "reconciled"
    return ""


# -- helpers -----------------------------------------------------------------------------


# Unix seconds a provider time may take: what `datetime` can hold, a day inside either end
# so that no time zone takes it out of the calendar.
_FIRST_S = int(datetime(1, 1, 2, tzinfo=UTC).timestamp())
_LAST_S = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp())


def _in_calendar(seconds: int) -> int:
    if not _FIRST_S <= seconds <= _LAST_S:
        raise DecodeError(f"time {seconds} is outside the calendar")
    return seconds


def _epoch_us(seconds: int) -> int:
    return _in_calendar(seconds) * 1_000_000


def iso_to_us(value: str) -> int:
    """Microseconds since the epoch of an ISO 8601 time (naive means UTC)."""
    return to_us(datetime.fromisoformat(value))


def _iso_from_epoch(seconds: object) -> str | None:
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        return iso_seconds(datetime.fromtimestamp(_in_calendar(seconds), tz=UTC))
    return None


def _iso(value: object) -> str | None:
    if isinstance(value, str) and value:
        return iso_seconds(datetime.fromisoformat(value))
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _metadata(obj: Mapping[str, Any], key: str) -> str | None:
    metadata = obj.get("metadata")
    return _str(metadata.get(key)) if isinstance(metadata, dict) else None


def _id_of(value: object) -> str | None:
    """Stripe fields are ids, or the expanded object with an `id`."""
    if isinstance(value, dict):
        return _str(value.get("id"))
    return _str(value)


def _attention_record(status: str, time_us: int) -> dict[str, Any]:
    """A snapshot's own attention record (see SubscriptionFact), as constructor fields."""
    if status in ATTENTION_STATUSES:
        return {"attention_us": (time_us,)}
    return {"healthy_us": time_us}


def _normalized(provider_status: str, canceling: bool) -> str:
    status = NORMALIZED.get(provider_status)
    if status is None:
        raise DecodeError(f"unknown subscription status {provider_status!r}")
    if canceling and status in ("active", "trialing"):
        return "canceling"
    return status


# -- Stripe --------------------------------------------------------------------------------


def _stripe_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created = payload["created"]
    if not isinstance(created, int):
        raise DecodeError("event has no integer `created`")
    rank = STRIPE_SUBSCRIPTION_RANKS[event.type]
    return stripe_snapshot(
        payload["data"]["object"], _epoch_us(created), rank, event, event.livemode, key
    )


def stripe_snapshot(
    sub: Mapping[str, Any],
    time_us: int,
    rank: int,
    event: StoredEvent,
    livemode: int | None,
    key: str,
) -> list[Fact]:
    """The facts a Stripe subscription object states, ordered at (`time_us`, `rank`)."""
    provider_status = sub["status"]
    cancel_at_period_end = bool(sub.get("cancel_at_period_end"))
    canceling = cancel_at_period_end or sub.get("cancel_at") is not None
    items = tuple(_stripe_item(item, sub) for item in sub.get("items", {}).get("data", []))
    workspace = _metadata(sub, key)
    customer = _id_of(sub.get("customer"))
    order = Order(
        time_us=time_us,
        terminal=provider_status in STRIPE_TERMINAL,
        rank=rank,
        seq=event.seq,
    )
    status = _normalized(provider_status, canceling)
    fact = SubscriptionFact(
        provider="stripe",
        id=sub["id"],
        customer=customer,
        workspace=workspace,
        status=status,
        provider_status=provider_status,
        product=None,
        items=items,
        seats=None,
        cancel_at_period_end=cancel_at_period_end,
        current_period_end=_iso_from_epoch(sub.get("current_period_end")),
        livemode=livemode,
        event_id=event.event_id,
        order=order,
        **_attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    if workspace and customer:
        facts.append(LinkFact("stripe", customer, workspace, order.time_us, event.seq))
    return facts


def _stripe_item(item: Mapping[str, Any], sub: Mapping[str, Any]) -> Item:
    price = _id_of(item.get("price")) or _id_of(item.get("plan"))
    if price is None:
        raise DecodeError("subscription item without a price")
    # Current API versions keep the period on each item; older ones on the subscription.
    period_end = item.get("current_period_end", sub.get("current_period_end"))
    return Item(
        price=price,
        quantity=_int(item.get("quantity")),
        current_period_end=_iso_from_epoch(period_end),
    )


def _stripe_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    customer = payload["data"]["object"]
    workspace = _metadata(customer, key)
    if workspace is None:
        return []
    return [LinkFact("stripe", customer["id"], workspace, _epoch_us(payload["created"]), event.seq)]


def _stripe_checkout(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    session = payload["data"]["object"]
    workspace = _str(session.get("client_reference_id")) or _metadata(session, key)
    customer = _id_of(session.get("customer"))
    if workspace is None or customer is None:
        return []
    return [LinkFact("stripe", customer, workspace, _epoch_us(payload["created"]), event.seq)]


# -- Polar ---------------------------------------------------------------------------------


def _polar_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    sub = payload["data"]
    stamp = sub.get("modified_at") or sub["created_at"]
    revoked = event.type == "subscription.revoked"
    return polar_snapshot(sub, iso_to_us(stamp), event, key, revoked=revoked)


def polar_snapshot(
    sub: Mapping[str, Any], time_us: int, event: StoredEvent, key: str, *, revoked: bool = False
) -> list[Fact]:
    """The facts a Polar subscription object states, ordered at `time_us`."""
    provider_status = "revoked" if revoked else sub["status"]
    cancel_at_period_end = bool(sub.get("cancel_at_period_end"))
    order = Order(
        time_us=time_us,
        terminal=provider_status in POLAR_TERMINAL,
        rank=0,
        seq=event.seq,
    )
    embedded = sub.get("customer")
    customer_obj: Mapping[str, Any] = embedded if isinstance(embedded, dict) else {}
    customer = _str(sub.get("customer_id")) or _str(customer_obj.get("id"))
    status = _normalized(provider_status, cancel_at_period_end)
    fact = SubscriptionFact(
        provider="polar",
        id=sub["id"],
        customer=customer,
        workspace=_metadata(sub, key),
        status=status,
        provider_status=provider_status,
        product=_str(sub.get("product_id")),
        items=(),
        seats=_int(sub.get("seats")),
        cancel_at_period_end=cancel_at_period_end,
        current_period_end=_iso(sub.get("current_period_end")),
        livemode=None,
        event_id=event.event_id,
        order=order,
        **_attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    linked = _polar_customer_workspace(customer_obj, key) or fact.workspace
    if linked and customer:
        facts.append(LinkFact("polar", customer, linked, order.time_us, event.seq))
    return facts


def _polar_customer_workspace(customer: Mapping[str, Any], key: str) -> str | None:
    return _str(customer.get("external_id")) or _metadata(customer, key)


def _polar_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    customer = payload["data"]
    workspace = _polar_customer_workspace(customer, key)
    if workspace is None:
        return []
    stamp = customer.get("modified_at") or customer.get("created_at") or payload["timestamp"]
    return [LinkFact("polar", customer["id"], workspace, iso_to_us(stamp), event.seq)]


# -- billhook events -------------------------------------------------------------------------


def _reconciled(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    """A subscription as a provider's API showed it, ordered by when it was fetched."""
    fetched_us = iso_to_us(payload["fetched_at"])
    sub = payload["subscription"]
    if payload["provider"] == "stripe":
        livemode = payload.get("livemode")
        mode = int(livemode) if isinstance(livemode, bool) else None
        return stripe_snapshot(sub, fetched_us, RECONCILED_RANK, event, mode, key)
    if payload["provider"] == "polar":
        return polar_snapshot(sub, fetched_us, event, key)
    raise DecodeError(f"unknown provider {payload['provider']!r}")


def _override(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    kind = payload["kind"]
    if kind not in OVERRIDE_KINDS:
        raise DecodeError(f"unknown override kind {kind!r}")
    active = event.type == OVERRIDE_SET
    return [
        OverrideFact(
            workspace=payload["workspace_id"],
            kind=kind,
            tier=payload["tier"] if active else None,
            expires_at=payload.get("expires_at") if active else None,
            active=active,
            reason=payload.get("reason", ""),
            actor=payload.get("actor", ""),
            seq=event.seq,
        )
    ]


def _enforcement(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    mode = payload["mode"]
    if mode not in ENFORCEMENT_MODES:
        raise DecodeError(f"unknown enforcement mode {mode!r}")
    return [
        EnforcementFact(mode, payload.get("approved_by", ""), payload.get("reason", ""), event.seq)
    ]


Handler = Callable[[StoredEvent, Mapping[str, Any], str], list[Fact]]

_HANDLERS: Mapping[tuple[str, str], Handler] = {
    ("stripe", "subscription"): _stripe_subscription,
    ("stripe", "customer"): _stripe_customer,
    ("stripe", "checkout"): _stripe_checkout,
    ("polar", "subscription"): _polar_subscription,
    ("polar", "customer"): _polar_customer,
    ("billhook", "override"): _override,
    ("billhook", "reconciled"): _reconciled,
    ("billhook", "enforcement"): _enforcement,
}
