"""From a logged event to the facts it states. Pure: no clock, I/O or config.

The dispatcher: one small function per provider and event family, chosen by a
dict; the functions live with their provider (`stripe/decode.py`,
`polar/decode.py`, and `billhook.py` for billhook's own events). An event
billhook does not understand yields no facts; a known event whose payload is
malformed raises :class:`DecodeError` and is quarantined. Reasons name a
field, never a value (see :mod:`billhook.providers.fields`). Of a quarantined
event, :func:`subject` reads whom it is about, trusting none of its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from billhook.domain.facts import Fact
from billhook.domain.records import EventSubject, StoredEvent
from billhook.errors import DecodeError
from billhook.providers.billhook import (
    ENDPOINT_ADDED,
    ENDPOINT_REMOVED,
    ENFORCEMENT_SET,
    OVERRIDE_REVOKED,
    OVERRIDE_SET,
    RECONCILED,
    THIN_UNFETCHED,
    billhook_subject,
    endpoint_facts,
    enforcement_facts,
    override_facts,
    reconciled_facts,
    thin_unfetched_facts,
)
from billhook.providers.polar.decode import (
    POLAR_CUSTOMER_EVENTS,
    POLAR_CUSTOMER_STATE,
    POLAR_SUBSCRIPTION_EVENTS,
    polar_customer,
    polar_customer_state,
    polar_subject,
    polar_subscription,
)
from billhook.providers.stripe.decode import (
    STRIPE_CHECKOUT_COMPLETED,
    STRIPE_CUSTOMER_EVENTS,
    STRIPE_PROJECTED_TYPES,
    STRIPE_SUBSCRIPTION_RANKS,
    stripe_checkout,
    stripe_customer,
    stripe_subject,
    stripe_subscription,
)

# {provider: event types} projections read: the payloads a projector needs from the log.
PROJECTED_TYPES: Mapping[str, frozenset[str]] = {
    "stripe": frozenset(STRIPE_PROJECTED_TYPES),
    "polar": POLAR_SUBSCRIPTION_EVENTS | POLAR_CUSTOMER_EVENTS,
    "billhook": frozenset(
        {
            OVERRIDE_SET,
            OVERRIDE_REVOKED,
            ENFORCEMENT_SET,
            ENDPOINT_ADDED,
            ENDPOINT_REMOVED,
            RECONCILED,
            THIN_UNFETCHED,
        }
    ),
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
        # The handlers check every field they read; should one slip through, the reason is
        # still a sentence naming no value (an exception's text may quote one).
        noun = _NOUNS.get(_family(event), "event")
        raise DecodeError(f"{noun} event has a field of a shape billhook does not read") from e


def subject(event: StoredEvent, workspace_key: str) -> EventSubject:
    """Whom `event` is about, for an event that could not be applied: whatever of its
    workspace, customer and subscription is well-formed. Never raises."""
    reader = _SUBJECTS.get(event.provider) if understands(event) else None
    if reader is None:
        return EventSubject()
    try:
        payload = orjson.loads(event.payload)
    except (orjson.JSONDecodeError, TypeError):
        return EventSubject()
    return reader(event, payload, workspace_key) if isinstance(payload, dict) else EventSubject()


def understands(event: StoredEvent) -> bool:
    """Whether billhook projects events of this provider and type."""
    return (event.provider, _family(event)) in _HANDLERS


def _family(event: StoredEvent) -> str:
    if event.provider == "stripe":
        if event.type in STRIPE_SUBSCRIPTION_RANKS:
            return "subscription"
        if event.type in STRIPE_CUSTOMER_EVENTS:
            return "customer"
        if event.type == STRIPE_CHECKOUT_COMPLETED:
            return "checkout"
    elif event.provider == "polar":
        if event.type in POLAR_SUBSCRIPTION_EVENTS:
            return "subscription"
        if event.type == POLAR_CUSTOMER_STATE:
            return "customer_state"
        if event.type in POLAR_CUSTOMER_EVENTS:
            return "customer"
    elif event.provider == "billhook" and event.type in (OVERRIDE_SET, OVERRIDE_REVOKED):
        return "override"
    elif event.provider == "billhook" and event.type == ENFORCEMENT_SET:
        return "enforcement"
    elif event.provider == "billhook" and event.type in (ENDPOINT_ADDED, ENDPOINT_REMOVED):
        return "endpoint"
    elif event.provider == "billhook" and event.type == RECONCILED:
        return "reconciled"
    elif event.provider == "billhook" and event.type == THIN_UNFETCHED:
        return "thin_unfetched"
    return ""


Handler = Callable[[StoredEvent, Mapping[str, Any], str], list[Fact]]

# What a reason calls an event of each family.
_NOUNS = {
    "subscription": "subscription",
    "customer": "customer",
    "customer_state": "customer state",
    "checkout": "checkout session",
    "override": "override",
    "enforcement": "enforcement",
    "endpoint": "endpoint",
    "reconciled": "reconciled",
    "thin_unfetched": "thin event",
}

_HANDLERS: Mapping[tuple[str, str], Handler] = {
    ("stripe", "subscription"): stripe_subscription,
    ("stripe", "customer"): stripe_customer,
    ("stripe", "checkout"): stripe_checkout,
    ("polar", "subscription"): polar_subscription,
    ("polar", "customer"): polar_customer,
    ("polar", "customer_state"): polar_customer_state,
    ("billhook", "override"): override_facts,
    ("billhook", "reconciled"): reconciled_facts,
    ("billhook", "enforcement"): enforcement_facts,
    ("billhook", "endpoint"): endpoint_facts,
    ("billhook", "thin_unfetched"): thin_unfetched_facts,
}

# Per provider: whom an event is about (`subject`), read from a payload that is not trusted.
_SUBJECTS: Mapping[str, Callable[[StoredEvent, Mapping[str, Any], str], EventSubject]] = {
    "stripe": stripe_subject,
    "polar": polar_subject,
    "billhook": billhook_subject,
}
