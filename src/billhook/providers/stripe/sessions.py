"""Stripe checkout sessions: the configured price for a tier, the Checkout Session request,
and its idempotency key. Pure builders, no I/O (see :mod:`billhook.providers.sessions`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from billhook.config import Settings
from billhook.providers.sessions import CheckoutRequest, Offer

# Prefix of the Stripe idempotency keys billhook derives (keys are at most 255 characters).
IDEMPOTENCY_PREFIX = "billhook-checkout-"


def stripe_offer(settings: Settings, tier: str, interval: str) -> Offer | None:
    """The first `[stripe.prices]` entry of `tier` and `interval`, in config order."""
    for price, mapping in settings.stripe.prices.items():
        if mapping.tier == tier and mapping.interval == interval:
            return Offer(price, True, mapping.min_seats or 1, mapping.max_seats)
    return None


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
