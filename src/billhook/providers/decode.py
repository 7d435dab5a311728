"""From a logged event to the facts it states. Pure: no clock, I/O or config.

One small function per event family, chosen by a dict on the event type.
An event billhook does not understand yields no facts; a known event whose
payload is malformed raises :class:`DecodeError` and is quarantined.

Every value that becomes part of a fact is checked here (ids are bounded
non-empty strings, counts and times integers in range, flags booleans), so
whatever the projection stores can be stored. A DecodeError names the field
and what is wrong with it, never the value: quarantine reasons are shown to
operators and must not carry payload data (SPEC §10).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from billhook.config import ENFORCEMENT_MODES
from billhook.domain.facts import (
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
from billhook.domain.records import StoredEvent
from billhook.domain.times import iso_seconds, to_us
from billhook.errors import DecodeError

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
    except (orjson.JSONDecodeError, TypeError):
        raise DecodeError("payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise DecodeError("payload is not a JSON object")
    try:
        return handler(event, payload, workspace_key)
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError) as e:
        # The handlers check every field they read; should one slip through, the reason
        # still names no value (an exception's text may quote one).
        raise DecodeError(f"payload could not be read ({e.__class__.__name__})") from e


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
#
# Each takes the value and the field's name as a reason shows it ("subscription id",
# "subscription items.data[0].quantity") and raises DecodeError("<field> is <problem>").


# Longest provider id accepted (subscription, customer, price, product): real ones are well
# under 100 characters; the log's event ids have the same bound.
MAX_ID_CHARS = 255
# Longest workspace id accepted from a provider: Stripe and Polar cap metadata values at 500.
MAX_WORKSPACE_CHARS = 500
# Counts (seats, quantities) must fit SQLite's signed 64-bit INTEGER.
_COUNT_LIMIT = 2**63

# Unix seconds a provider time may take: what `datetime` can hold, a day inside either end
# so that no time zone takes it out of the calendar.
_FIRST_S = int(datetime(1, 1, 2, tzinfo=UTC).timestamp())
_LAST_S = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp())


def _present(value: object) -> bool:
    """Whether an optional field holds something: JSON null and "" mean it is absent."""
    return value is not None and value != ""


def _object(value: object, field: str) -> Mapping[str, Any]:
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, dict):
        raise DecodeError(f"{field} is not an object")
    return value


def _id(value: object, field: str, limit: int | None = MAX_ID_CHARS) -> str:
    """A required id: a non-empty string of at most `limit` characters (None: any length)."""
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not a string")
    if not value:
        raise DecodeError(f"{field} is empty")
    if limit is not None and len(value) > limit:
        raise DecodeError(f"{field} is too long")
    return value


def _optional_id(value: object, field: str) -> str | None:
    """An id that may be null; "" is malformed, as for a required id."""
    return None if value is None else _id(value, field)


def _optional_workspace(value: object, field: str) -> str | None:
    """A workspace id a merchant put in an optional field; "" means none."""
    return _id(value, field, MAX_WORKSPACE_CHARS) if _present(value) else None


def _reference(value: object, field: str) -> str | None:
    """A Stripe reference: an id, or the expanded object with its `id`; None when absent."""
    if isinstance(value, dict):
        return _id(value.get("id"), f"{field}.id")
    return _optional_id(value, field)


def _metadata_workspace(obj: Mapping[str, Any], key: str, owner: str) -> str | None:
    """The workspace `obj`'s metadata names under `key`, if any.

    Only a string names a workspace: Polar also allows numbers and booleans as
    metadata values, and those were never workspace ids.
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(key)
    if not isinstance(value, str):
        return None
    return _optional_workspace(value, f"{owner} metadata.{key}")


def _text(value: object, field: str) -> str:
    """Free text an operator wrote (a reason, a name); absent means empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not a string")
    return value


def _flag(value: object, field: str) -> bool:
    """A boolean; absent means false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise DecodeError(f"{field} is not a boolean")
    return value


def _integer(value: object, field: str) -> int:
    if value is None:
        raise DecodeError(f"{field} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{field} is not an integer")
    return value


def _count(value: object, field: str) -> int | None:
    """A quantity or seat count: absent, or a whole number SQLite can store."""
    if value is None:
        return None
    count = _integer(value, field)
    if not 0 <= count < _COUNT_LIMIT:
        raise DecodeError(f"{field} is out of range")
    return count


def _epoch_s(value: object, field: str) -> int:
    """Unix seconds, within the calendar."""
    seconds = _integer(value, field)
    if not _FIRST_S <= seconds <= _LAST_S:
        raise DecodeError(f"{field} is outside the calendar")
    return seconds


def _epoch_us(value: object, field: str) -> int:
    return _epoch_s(value, field) * 1_000_000


def _optional_epoch_iso(value: object, field: str) -> str | None:
    if value is None:
        return None
    return iso_seconds(datetime.fromtimestamp(_epoch_s(value, field), tz=UTC))


def _moment(value: object, field: str) -> datetime:
    """An ISO 8601 time (naive means UTC) that stays in the calendar once in UTC."""
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(f"{field} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)  # year 1 at +01:00 is before year 1 in UTC
    except OverflowError:
        raise DecodeError(f"{field} is outside the calendar") from None
    return moment


def _iso_us(value: object, field: str) -> int:
    return to_us(_moment(value, field))


def _optional_iso(value: object, field: str) -> str | None:
    return iso_seconds(_moment(value, field)) if _present(value) else None


def _first_time_us(*candidates: tuple[object, str]) -> int:
    """The first present one of (value, field) times, in microseconds."""
    for value, field in candidates:
        if _present(value):
            return _iso_us(value, field)
    raise DecodeError(f"{candidates[-1][1]} is missing")


def _provider_status(value: object, field: str) -> str:
    """A provider's subscription status that billhook knows how to normalize."""
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not a string")
    if value not in NORMALIZED:
        raise DecodeError(f"{field} is unknown")
    return value


def _attention_record(status: str, time_us: int) -> dict[str, Any]:
    """A snapshot's own attention record (see SubscriptionFact), as constructor fields."""
    if status in ATTENTION_STATUSES:
        return {"attention_us": (time_us,)}
    return {"healthy_us": time_us}


def _normalized(provider_status: str, canceling: bool) -> str:
    status = NORMALIZED[provider_status]
    if canceling and status in ("active", "trialing"):
        return "canceling"
    return status


# -- Stripe --------------------------------------------------------------------------------


def _stripe_object(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object a Stripe snapshot event is about (`data.object`)."""
    return _object(_object(payload.get("data"), "event data").get("object"), "event data.object")


def _stripe_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = _epoch_us(payload.get("created"), "event created")
    rank = STRIPE_SUBSCRIPTION_RANKS[event.type]
    return stripe_snapshot(_stripe_object(payload), created_us, rank, event, event.livemode, key)


def stripe_snapshot(
    sub: Mapping[str, Any],
    time_us: int,
    rank: int,
    event: StoredEvent,
    livemode: int | None,
    key: str,
) -> list[Fact]:
    """The facts a Stripe subscription object states, ordered at (`time_us`, `rank`)."""
    sub_id = _id(sub.get("id"), "subscription id")
    provider_status = _provider_status(sub.get("status"), "subscription status")
    cancel_at_period_end = _flag(
        sub.get("cancel_at_period_end"), "subscription cancel_at_period_end"
    )
    cancel_at = sub.get("cancel_at")
    if cancel_at is not None:
        _integer(cancel_at, "subscription cancel_at")
    canceling = cancel_at_period_end or cancel_at is not None
    items = _stripe_items(sub)
    workspace = _metadata_workspace(sub, key, "subscription")
    customer = _reference(sub.get("customer"), "subscription customer")
    order = Order(
        time_us=time_us,
        terminal=provider_status in STRIPE_TERMINAL,
        rank=rank,
        seq=event.seq,
    )
    status = _normalized(provider_status, canceling)
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
        current_period_end=_optional_epoch_iso(
            sub.get("current_period_end"), "subscription current_period_end"
        ),
        livemode=livemode,
        event_id=event.event_id,
        order=order,
        **_attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    if workspace and customer:
        facts.append(LinkFact("stripe", customer, workspace, order.time_us, event.seq))
    return facts


def _stripe_items(sub: Mapping[str, Any]) -> tuple[Item, ...]:
    items = sub.get("items")
    if items is None:
        return ()
    data = _object(items, "subscription items").get("data")
    if data is None:
        return ()
    if not isinstance(data, list):
        raise DecodeError("subscription items.data is not an array")
    return tuple(
        _stripe_item(item, f"subscription items.data[{n}]", sub) for n, item in enumerate(data)
    )


def _stripe_item(value: object, field: str, sub: Mapping[str, Any]) -> Item:
    item = _object(value, field)
    price = _reference(item.get("price"), f"{field}.price") or _reference(
        item.get("plan"), f"{field}.plan"
    )
    if price is None:
        raise DecodeError(f"{field}.price is missing")
    # Current API versions keep the period on each item; older ones on the subscription.
    if "current_period_end" in item:
        period_end = _optional_epoch_iso(item["current_period_end"], f"{field}.current_period_end")
    else:
        period_end = _optional_epoch_iso(
            sub.get("current_period_end"), "subscription current_period_end"
        )
    return Item(
        price=price,
        quantity=_count(item.get("quantity"), f"{field}.quantity"),
        current_period_end=period_end,
    )


def _stripe_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = _epoch_us(payload.get("created"), "event created")
    customer = _stripe_object(payload)
    customer_id = _id(customer.get("id"), "customer id")
    workspace = _metadata_workspace(customer, key, "customer")
    if workspace is None:
        return []
    return [LinkFact("stripe", customer_id, workspace, created_us, event.seq)]


def _stripe_checkout(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    created_us = _epoch_us(payload.get("created"), "event created")
    session = _stripe_object(payload)
    workspace = _optional_workspace(
        session.get("client_reference_id"), "checkout session client_reference_id"
    ) or _metadata_workspace(session, key, "checkout session")
    customer = _reference(session.get("customer"), "checkout session customer")
    if workspace is None or customer is None:
        return []
    return [LinkFact("stripe", customer, workspace, created_us, event.seq)]


# -- Polar ---------------------------------------------------------------------------------


def _polar_subscription(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    sub = _object(payload.get("data"), "event data")
    stamp_us = _first_time_us(
        (sub.get("modified_at"), "subscription modified_at"),
        (sub.get("created_at"), "subscription created_at"),
    )
    revoked = event.type == "subscription.revoked"
    return polar_snapshot(sub, stamp_us, event, key, revoked=revoked)


def polar_snapshot(
    sub: Mapping[str, Any], time_us: int, event: StoredEvent, key: str, *, revoked: bool = False
) -> list[Fact]:
    """The facts a Polar subscription object states, ordered at `time_us`."""
    sub_id = _id(sub.get("id"), "subscription id")
    provider_status = (
        "revoked" if revoked else _provider_status(sub.get("status"), "subscription status")
    )
    cancel_at_period_end = _flag(
        sub.get("cancel_at_period_end"), "subscription cancel_at_period_end"
    )
    order = Order(
        time_us=time_us,
        terminal=provider_status in POLAR_TERMINAL,
        rank=0,
        seq=event.seq,
    )
    embedded = sub.get("customer")
    customer_obj = {} if embedded is None else _object(embedded, "subscription customer")
    customer = _optional_id(sub.get("customer_id"), "subscription customer_id") or _optional_id(
        customer_obj.get("id"), "subscription customer.id"
    )
    status = _normalized(provider_status, cancel_at_period_end)
    fact = SubscriptionFact(
        provider="polar",
        id=sub_id,
        customer=customer,
        workspace=_metadata_workspace(sub, key, "subscription"),
        status=status,
        provider_status=provider_status,
        product=_optional_id(sub.get("product_id"), "subscription product_id"),
        items=(),
        seats=_count(sub.get("seats"), "subscription seats"),
        cancel_at_period_end=cancel_at_period_end,
        current_period_end=_optional_iso(
            sub.get("current_period_end"), "subscription current_period_end"
        ),
        livemode=None,
        event_id=event.event_id,
        order=order,
        **_attention_record(status, order.time_us),
    )
    facts: list[Fact] = [fact]
    linked = _polar_customer_workspace(customer_obj, key, "subscription customer") or fact.workspace
    if linked and customer:
        facts.append(LinkFact("polar", customer, linked, order.time_us, event.seq))
    return facts


def _polar_customer_workspace(customer: Mapping[str, Any], key: str, owner: str) -> str | None:
    external_id = _optional_workspace(customer.get("external_id"), f"{owner} external_id")
    return external_id or _metadata_workspace(customer, key, owner)


def _polar_customer(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    customer = _object(payload.get("data"), "event data")
    customer_id = _id(customer.get("id"), "customer id")
    workspace = _polar_customer_workspace(customer, key, "customer")
    if workspace is None:
        return []
    stamp_us = _first_time_us(
        (customer.get("modified_at"), "customer modified_at"),
        (customer.get("created_at"), "customer created_at"),
        (payload.get("timestamp"), "event timestamp"),
    )
    return [LinkFact("polar", customer_id, workspace, stamp_us, event.seq)]


# -- billhook events -------------------------------------------------------------------------
#
# Written by billhook's own API and CLI, which validated them; checked here for types only
# (no length bounds), so that a replay never quarantines an action the API accepted.


def _reconciled(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    """A subscription as a provider's API showed it, ordered by when it was fetched."""
    fetched_us = _iso_us(payload.get("fetched_at"), "reconciled fetched_at")
    sub = _object(payload.get("subscription"), "reconciled subscription")
    provider = payload.get("provider")
    if provider == "stripe":
        livemode = payload.get("livemode")
        mode = int(livemode) if isinstance(livemode, bool) else None
        return stripe_snapshot(sub, fetched_us, RECONCILED_RANK, event, mode, key)
    if provider == "polar":
        return polar_snapshot(sub, fetched_us, event, key)
    raise DecodeError("reconciled provider is unknown")


def _override(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    kind = payload.get("kind")
    if not isinstance(kind, str) or kind not in OVERRIDE_KINDS:
        raise DecodeError("override kind is unknown")
    workspace = _id(payload.get("workspace_id"), "override workspace_id", limit=None)
    active = event.type == OVERRIDE_SET
    tier = expires_at = None
    if active:
        tier = _id(payload.get("tier"), "override tier", limit=None)
        expires_at = payload.get("expires_at")
        if expires_at is not None:
            _moment(expires_at, "override expires_at")  # the resolver reads it back
    return [
        OverrideFact(
            workspace=workspace,
            kind=kind,
            tier=tier,
            expires_at=expires_at,
            active=active,
            reason=_text(payload.get("reason"), "override reason"),
            actor=_text(payload.get("actor"), "override actor"),
            seq=event.seq,
        )
    ]


def _enforcement(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    mode = payload.get("mode")
    if not isinstance(mode, str) or mode not in ENFORCEMENT_MODES:
        raise DecodeError("enforcement mode is unknown")
    approved_by = _text(payload.get("approved_by"), "enforcement approved_by")
    reason = _text(payload.get("reason"), "enforcement reason")
    return [EnforcementFact(mode, approved_by, reason, event.seq)]


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
