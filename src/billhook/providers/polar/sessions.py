"""Polar checkouts: the products configured for a tier, the offer a product's API answer
makes, and the checkout request. Pure builders, no I/O (see
:mod:`billhook.providers.sessions`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billhook.config import Settings
from billhook.providers.sessions import CheckoutRequest, Offer


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
