"""Checkout and portal sessions: the request, what is sold, seat bounds, and what is logged.

Pure builders, no I/O: the routes in `api.checkout` validate a request, then
use these (and the provider's own builders in `stripe/sessions.py` and
`polar/sessions.py`) to choose what is sold, bound the seat count, build the
provider's request, and build the log event recording who started what. The
events carry ids, tiers, counts and roles, never a URL (provider session URLs
embed a client secret or a session token).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billhook.domain.records import EventRecord
from billhook.domain.times import iso_utc
from billhook.errors import ApiError
from billhook.providers.billhook import CHECKOUT_STARTED, PORTAL_OPENED

# Who may start a checkout or open the portal for a workspace.
ROLES = ("owner", "admin")
# Billing intervals a checkout may ask for.
INTERVALS = ("month", "year")
# Providers billhook starts sessions with.
PROVIDERS = ("stripe", "polar")
# Namespace of checkout_started event ids: one event per provider session.
_STARTED_NAMESPACE = uuid.UUID("5b0e8d4e-3f5c-4d0a-9a43-6c1f2f7d8e91")


@dataclass(frozen=True)
class CheckoutRequest:
    """A validated `POST /v1/workspaces/{id}/checkout` body, with its workspace."""

    workspace: str
    provider: str
    tier: str
    interval: str
    seats: int | None
    success_url: str
    cancel_url: str
    actor_role: str


@dataclass(frozen=True)
class Offer:
    """What a checkout sells: a Stripe price or a Polar product, and its seat bounds.

    `per_seat` is False for a Polar product without a seat-based price: it is
    bought once and carries no seat count. `max_seats` None means no limit.
    """

    price: str
    per_seat: bool
    min_seats: int
    max_seats: int | None


@dataclass(frozen=True)
class Started:
    """A session a provider created: what it sells, the seats bought, its id and URL."""

    offer: Offer
    seats: int | None
    session_id: str
    url: str


def no_price(request: CheckoutRequest) -> ApiError:
    return ApiError(
        422,
        "no_price",
        f"no {request.provider} price is configured for tier {request.tier}, "
        f"billed every {request.interval}",
    )


def seats_to_buy(offer: Offer, seats: int | None) -> int | None:
    """The seat count to send: the one asked, or the offer's minimum; None when not per seat.

    Raises 422 `invalid_seats` outside the offer's bounds, or when seats are
    asked of a product not sold per seat.
    """
    if not offer.per_seat:
        if seats is not None:
            raise ApiError(
                422, "invalid_seats", f"{offer.price} is not sold per seat; leave seats out"
            )
        return None
    wanted = offer.min_seats if seats is None else seats
    too_many = offer.max_seats is not None and wanted > offer.max_seats
    if wanted < offer.min_seats or too_many:
        upper = "" if offer.max_seats is None else f" and at most {offer.max_seats}"
        raise ApiError(
            422,
            "invalid_seats",
            f"seats must be at least {offer.min_seats}{upper} for {offer.price}, got {wanted}",
        )
    return wanted


def checkout_started(request: CheckoutRequest, started: Started, now: datetime) -> EventRecord:
    """The log event for a checkout session; one per session (a retry that got the
    same session back appends nothing new)."""
    body = {
        "workspace_id": request.workspace,
        "provider": request.provider,
        "tier": request.tier,
        "interval": request.interval,
        "seats": started.seats,
        "price": started.offer.price,
        "session_id": started.session_id,
        "actor_role": request.actor_role,
    }
    event_id = uuid.uuid5(_STARTED_NAMESPACE, f"{request.provider}:{started.session_id}")
    return _event(CHECKOUT_STARTED, str(event_id), body, now)


def portal_opened(
    workspace: str, provider: str, customer: str, session_id: str, actor_role: str, now: datetime
) -> EventRecord:
    """The log event for a customer-portal session."""
    body = {
        "workspace_id": workspace,
        "provider": provider,
        "customer": customer,
        "session_id": session_id,
        "actor_role": actor_role,
    }
    return _event(PORTAL_OPENED, str(uuid.uuid4()), body, now)


def _event(event_type: str, event_id: str, body: Mapping[str, Any], now: datetime) -> EventRecord:
    return EventRecord(
        provider="billhook",
        event_id=event_id,
        type=event_type,
        livemode=None,
        occurred_at=iso_utc(now),
        payload=json.dumps(body, sort_keys=True),
    )
