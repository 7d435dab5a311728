"""Provider subscription statuses, and the status billhook normalizes each to.

The table is in docs/entitlements.md.

Shared by the Stripe and Polar decoders: both providers use these names.
"""

from __future__ import annotations

from typing import Any

from billhook.domain.facts import ATTENTION_STATUSES
from billhook.errors import DecodeError

# Provider status → normalized status, before the canceling rule (docs/entitlements.md).
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


def known_status(value: object, field: str) -> str:
    """A provider's subscription status that billhook knows how to normalize."""
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not a string")
    if value not in NORMALIZED:
        raise DecodeError(f"{field} is unknown")
    return value


def normalized(provider_status: str, canceling: bool) -> str:
    status = NORMALIZED[provider_status]
    if canceling and status in ("active", "trialing"):
        return "canceling"
    return status


def attention_record(status: str, time_us: int) -> dict[str, Any]:
    """A snapshot's own attention record (see SubscriptionFact), as constructor fields."""
    if status in ATTENTION_STATUSES:
        return {"attention_us": (time_us,)}
    return {"healthy_us": time_us}
