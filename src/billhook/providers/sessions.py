"""Checkout and portal sessions: what billhook asks the providers for, and what it logs.

Pure builders, no I/O: the routes in `worker.checkout` validate a request,
then use these to choose what is sold, bound the seat count, build the
provider's request, and build the log event recording who started what.
The events carry ids, tiers, counts and roles, never a URL (provider session
URLs embed a client secret or a session token).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billhook.config import Settings
from billhook.domain.records import EventRecord
from billhook.domain.times import iso_utc
from billhook.errors import ApiError
from billhook.providers.decode import CHECKOUT_STARTED, PORTAL_OPENED

# Who may start a checkout or open the portal for a workspace.
ROLES = ("owner", "admin")
# Billing intervals a checkout may ask for.
INTERVALS = ("month", "year")
# Providers billhook starts sessions with.
PROVIDERS = ("stripe", "polar")
# Prefix of the Stripe idempotency keys billhook derives (keys are at most 255 characters).
IDEMPOTENCY_PREFIX = "billhook-checkout-"
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


def stripe_offer(settings: Settings, tier: str, interval: str) -> Offer | None:
    """The first `[stripe.prices]` entry of `tier` and `interval`, in config order."""
    for price, mapping in settings.stripe.prices.items():
        if mapping.tier == tier and mapping.interval == interval:
            return Offer(price, True, mapping.min_seats or 1, mapping.max_seats)
    return None


def polar_candidates(settings: Settings, tier: str, interval: str) -> list[str]:
    """`[polar.products]` of `tier` that may bill every `interval`, in config order.

    A mapping without `interval` is a candidate for any interval: Polar's API
    tells (see :func:`polar_offer`).
    """
    return [
        product
        for product, mapping in settings.polar.products.items()
        if mapping.tier == tier and mapping.interval in (None, interval)
    ]


def polar_offer(product_id: str, product: Mapping[str, Any] | None, interval: str) -> Offer | None:
    """The offer of a Polar product as its API shows it.

    None when the product is missing, archived or billed at another interval.
    Seat bounds come from its seat-based price's `seat_tiers`.
    """
    if product is None or product.get("is_archived"):
        return None
    if product.get("recurring_interval") != interval:
        return None
    prices = [p for p in product.get("prices") or [] if not p.get("is_archived")]
    seated = next((p for p in prices if p.get("amount_type") == "seat_based"), None)
    if seated is None:
        return Offer(product_id, False, 1, None)
    tiers = seated.get("seat_tiers") or {}
    return Offer(product_id, True, int(tiers.get("minimum_seats") or 1), tiers.get("maximum_seats"))


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


def stripe_checkout_params(
    request: CheckoutRequest, price: str, seats: int, customer: str | None, workspace_key: str
) -> dict[str, Any]:
    """A subscription-mode Checkout Session that links the purchase to the workspace.

    `client_reference_id` links the customer when `checkout.session.completed`
    arrives; the subscription's own metadata links it from its first event,
    whichever comes first. A workspace that already has a Stripe customer
    buys as that customer, so a second purchase never makes a second customer.
    """
    metadata = {workspace_key: request.workspace}
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": seats}],
        "client_reference_id": request.workspace,
        "metadata": metadata,
        "subscription_data": {"metadata": metadata},
        "success_url": request.success_url,
        "cancel_url": request.cancel_url,
    }
    if customer is not None:
        params["customer"] = customer
    return params


def idempotency_key(params: Mapping[str, Any]) -> str:
    """A key that is the same for the same Checkout Session request, and differs otherwise.

    Derived from everything sent (workspace, price, quantity, URLs, customer),
    so a retried identical call gets Stripe's first session back, and a
    changed request never collides with an earlier key (Stripe's 400
    `idempotency_error`).
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return IDEMPOTENCY_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def polar_checkout_body(
    request: CheckoutRequest,
    product: str,
    seats: int | None,
    customer: str | None,
    workspace_key: str,
) -> dict[str, Any]:
    """A Polar checkout of `product` whose customer and subscription carry the workspace.

    A new buyer gets `external_customer_id` = the workspace (Polar links the
    customer it creates); a workspace whose Polar customer is known buys as
    that customer. Checkout metadata is copied to the subscription.
    """
    body: dict[str, Any] = {
        "products": [product],
        "success_url": request.success_url,
        "return_url": request.cancel_url,
        "metadata": {workspace_key: request.workspace},
    }
    if customer is not None:
        body["customer_id"] = customer
    else:
        body["external_customer_id"] = request.workspace
    if seats is not None:
        body["seats"] = seats
    return body


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
