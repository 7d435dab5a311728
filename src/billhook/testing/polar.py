"""Polar for tests: signed webhook deliveries and realistic payloads.

Deliveries are signed with `standardwebhooks`, in either of Polar's secret
schemes (`polar_headers(..., legacy=True)` for dashboard secrets). Payloads
are shaped after polar-sdk's own `v2026_04` types: every builder returns a
complete object that `polar.base.deserialize` loads into the matching
`polar.v2026_04.outputs` dataclass (`Subscription`, `Customer`,
`CustomerState`); `tests/testing/test_polar_payloads.py` proves it for each
event type. Customers carry planted personal data (`POLAR_PII`) so privacy
tests can show it never leaves the event log.

Ids the caller doesn't pass are fixed UUIDs or UUIDv5s derived from the ids it
does pass, so every payload is deterministic.

    body = polar_event("subscription.active", polar_subscription(id=sub_id))
    client.post("/webhooks/polar", content=body, headers=polar_headers(body))
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

# A Standard Webhooks secret (Polar's "standard" scheme): whsec_ + base64 of the key.
POLAR_SECRET = "whsec_" + base64.b64encode(b"polar-standard-key-0123456789ab").decode()
# A Polar dashboard secret in the legacy scheme: the key is the string's own bytes.
POLAR_LEGACY_SECRET = "polar_whs_legacyLegacyLegacy0123456789"

API_VERSION = "2026-04"
"""The `api_version` Polar stamps on webhooks for the `2026-04` API (a free string in the SDK)."""

ORGANIZATION_ID = "1f3b6f0e-2c4d-4a51-9a8e-0d6c1b2a3e40"
DEFAULT_CUSTOMER_ID = "7c2e9d4a-5b1f-4e3a-8c6d-2f0a9b8e7d61"
DEFAULT_PRODUCT_ID = "3a8f1c2d-9e4b-4d7a-b5c6-8e1f0a2b3c72"

POLAR_EMAIL = "jane.doe@example.com"
POLAR_NAME = "Jane Doe"
POLAR_STREET = "1 Privacy Lane"
POLAR_PII = (POLAR_EMAIL, POLAR_NAME, POLAR_STREET)
"""The personal data planted in every customer; it must never leak past the event log."""

_NAMESPACE = uuid.UUID("5e0c8a3f-1d2b-4c6e-9f7a-3b4d5e6f7a80")
_PRODUCT_CREATED_AT = "2026-01-15T09:30:00Z"
_FIXED_PRICE_CENTS = {"day": 100, "week": 500, "month": 1500, "year": 15000}
_SEAT_PRICE_CENTS = {"day": 40, "week": 200, "month": 600, "year": 6000}


def _derived_id(kind: str, seed: str) -> str:
    """A stable UUID for a sub-object (`kind`) of the object with id `seed`."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{seed}"))


def _billing_address() -> dict[str, Any]:
    """An `Address` holding the planted street line."""
    return {
        "line1": POLAR_STREET,
        "line2": None,
        "postal_code": "94107",
        "city": "San Francisco",
        "state": "US-CA",
        "country": "US",
    }


def _customer_base(
    *,
    id: str,
    external_id: str | None,
    metadata: dict[str, str] | None,
    created_at: str,
    modified_at: str | None,
) -> dict[str, Any]:
    """Fields shared by every customer shape: `SubscriptionCustomer`, `Customer*Individual`."""
    return {
        "id": id,
        "created_at": created_at,
        "modified_at": modified_at,
        "metadata": dict(metadata or {}),
        "external_id": external_id,
        "email": POLAR_EMAIL,
        "email_verified": True,
        "type": "individual",
        "name": POLAR_NAME,
        "billing_name": POLAR_NAME,
        "billing_address": _billing_address(),
        "tax_id": None,
        "locale": "en",
        "organization_id": ORGANIZATION_ID,
        "default_payment_method_id": _derived_id("payment_method", id),
        "deleted_at": None,
        "first_user_event_at": None,
        "avatar_url": None,
    }


def _price(*, product_id: str, seat_based: bool, recurring_interval: str) -> dict[str, Any]:
    """A catalog `ProductPriceFixed`, or a `ProductPriceSeatBased` for seat products."""
    price: dict[str, Any] = {
        "created_at": _PRODUCT_CREATED_AT,
        "modified_at": None,
        "id": _derived_id("price", product_id),
        "source": "catalog",
        "price_currency": "usd",
        "tax_behavior": None,
        "is_archived": False,
        "product_id": product_id,
    }
    if seat_based:
        price["amount_type"] = "seat_based"
        price["seat_tiers"] = {
            "seat_tier_type": "volume",
            "tiers": [
                {
                    "min_seats": 1,
                    "max_seats": None,
                    "price_per_seat": _SEAT_PRICE_CENTS[recurring_interval],
                }
            ],
            "minimum_seats": 1,
            "maximum_seats": None,
        }
    else:
        price["amount_type"] = "fixed"
        price["price_amount"] = _FIXED_PRICE_CENTS[recurring_interval]
    return price


def _product(*, product_id: str, seat_based: bool, recurring_interval: str) -> dict[str, Any]:
    """A recurring `Product` with a single price."""
    return {
        "id": product_id,
        "created_at": _PRODUCT_CREATED_AT,
        "modified_at": None,
        "trial_interval": None,
        "trial_interval_count": None,
        "name": "Team" if seat_based else "Pro",
        "description": None,
        "visibility": "public",
        "recurring_interval": recurring_interval,
        "recurring_interval_count": 1,
        "meter_interval": None,
        "meter_interval_count": None,
        "is_recurring": True,
        "is_archived": False,
        "organization_id": ORGANIZATION_ID,
        "metadata": {},
        "is_deletable": False,
        "prices": [
            _price(
                product_id=product_id,
                seat_based=seat_based,
                recurring_interval=recurring_interval,
            )
        ],
        "benefits": [],
        "medias": [],
        "attached_custom_fields": [],
    }


def polar_subscription(
    *,
    id: str,
    status: str = "active",
    customer_id: str = DEFAULT_CUSTOMER_ID,
    product_id: str = DEFAULT_PRODUCT_ID,
    external_customer_id: str | None = None,
    customer_metadata: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
    seats: int | None = None,
    cancel_at_period_end: bool = False,
    current_period_end: str = "2026-12-01T00:00:00Z",
    created_at: str = "2026-11-01T00:00:00Z",
    modified_at: str | None = None,
    ended_at: str | None = None,
    recurring_interval: str = "month",
    current_period_start: str | None = None,
) -> dict[str, Any]:
    """A complete Polar `Subscription` (the `data` of every `subscription.*` webhook).

    The embedded `customer` has id `customer_id`, `external_id` =
    `external_customer_id`, `metadata` = `customer_metadata` and the planted
    `POLAR_PII`. A product with `seats` is seat-based (`seats` is the
    subscription's own `seats` field; Polar has no separate quantity). The
    lifecycle timestamps (`trial_*`, `canceled_at`, `ends_at`, `past_due_at`,
    `paused_at`, `started_at`) follow `status`, `cancel_at_period_end` and
    `ended_at`. `current_period_start` defaults to `created_at`.
    """
    changed_at = modified_at or created_at
    seat_based = seats is not None
    unit_cents = (_SEAT_PRICE_CENTS if seat_based else _FIXED_PRICE_CENTS)[recurring_interval]
    product = _product(
        product_id=product_id, seat_based=seat_based, recurring_interval=recurring_interval
    )
    canceled = cancel_at_period_end or status == "canceled" or ended_at is not None
    customer = _customer_base(
        id=customer_id,
        external_id=external_customer_id,
        metadata=customer_metadata,
        created_at=created_at,
        modified_at=None,
    )
    return {
        "created_at": created_at,
        "modified_at": modified_at,
        "id": id,
        "amount": unit_cents * seats if seats is not None else unit_cents,
        "currency": "usd",
        "recurring_interval": recurring_interval,
        "recurring_interval_count": 1,
        "status": status,
        "current_period_start": current_period_start or created_at,
        "current_period_end": current_period_end,
        "current_meter_period_start": None,
        "current_meter_period_end": None,
        "trial_start": created_at if status == "trialing" else None,
        "trial_end": current_period_end if status == "trialing" else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": changed_at if canceled else None,
        "started_at": None if status.startswith("incomplete") else created_at,
        "ends_at": current_period_end if cancel_at_period_end else ended_at,
        "ended_at": ended_at,
        "past_due_at": changed_at if status in ("past_due", "unpaid") else None,
        "pause_at_period_end": False,
        "paused_at": changed_at if status == "paused" else None,
        "resumes_at": None,
        "customer_id": customer_id,
        "product_id": product_id,
        "discount_id": None,
        "checkout_id": _derived_id("checkout", id),
        "seats": seats,
        "units": None,
        "customer_cancellation_reason": None,
        "customer_cancellation_comment": None,
        "metadata": dict(metadata or {}),
        "custom_field_data": {},
        "customer": customer,
        "product": product,
        "discount": None,
        "prices": product["prices"],
        "meters": [],
        "pending_update": None,
    }


def polar_customer(
    *,
    id: str,
    external_id: str | None = None,
    metadata: dict[str, str] | None = None,
    created_at: str = "2026-11-01T00:00:00Z",
    modified_at: str | None = None,
) -> dict[str, Any]:
    """A complete Polar `Customer` (`CustomerIndividual`), the `data` of `customer.*` webhooks.

    Carries the planted `POLAR_PII` as email, name, billing name and street line.
    """
    return _customer_base(
        id=id,
        external_id=external_id,
        metadata=metadata,
        created_at=created_at,
        modified_at=modified_at,
    )


def polar_state_subscription(
    *,
    id: str,
    status: str = "active",
    product_id: str = DEFAULT_PRODUCT_ID,
    metadata: dict[str, str] | None = None,
    seats: int | None = None,
    cancel_at_period_end: bool = False,
    current_period_end: str = "2026-12-01T00:00:00Z",
    created_at: str = "2026-11-01T00:00:00Z",
    recurring_interval: str = "month",
) -> dict[str, Any]:
    """One entry of `CustomerState.active_subscriptions` (a `CustomerStateSubscription`).

    Polar sends `status` "active" or "trialing" here, but polar-sdk 1.0.2 types
    the field as the license-key `Status` literal ("granted" | "disabled"), so a
    state carrying a real entry does not load through the SDK; see the tests.
    """
    unit_cents = (_SEAT_PRICE_CENTS if seats is not None else _FIXED_PRICE_CENTS)[
        recurring_interval
    ]
    return {
        "id": id,
        "created_at": created_at,
        "modified_at": None,
        "custom_field_data": {},
        "metadata": dict(metadata or {}),
        "status": status,
        "amount": unit_cents * seats if seats is not None else unit_cents,
        "currency": "usd",
        "recurring_interval": recurring_interval,
        "current_period_start": created_at,
        "current_period_end": current_period_end,
        "trial_start": created_at if status == "trialing" else None,
        "trial_end": current_period_end if status == "trialing" else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": created_at if cancel_at_period_end else None,
        "started_at": created_at,
        "ends_at": current_period_end if cancel_at_period_end else None,
        "product_id": product_id,
        "discount_id": None,
        "seats": seats,
        "units": None,
        "meters": [],
    }


def polar_customer_state(
    *,
    id: str,
    external_id: str | None = None,
    metadata: dict[str, str] | None = None,
    created_at: str = "2026-11-01T00:00:00Z",
    modified_at: str | None = None,
    active_subscriptions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A complete Polar `CustomerState` (`CustomerStateIndividual`), for `customer.state_changed`.

    The customer of `polar_customer` plus `active_subscriptions` (built with
    `polar_state_subscription`; none by default), no granted benefits and no meters.
    """
    return {
        **polar_customer(
            id=id,
            external_id=external_id,
            metadata=metadata,
            created_at=created_at,
            modified_at=modified_at,
        ),
        "active_subscriptions": [dict(s) for s in active_subscriptions],
        "granted_benefits": [],
        "active_meters": [],
    }


def polar_event(
    event_type: str, data: dict[str, Any], *, timestamp: str = "2026-11-21T00:00:00Z"
) -> bytes:
    """The JSON body of a Polar webhook delivery of `event_type` carrying `data`.

    Top-level fields are the ones every `v2026_04` payload class requires:
    `type`, `timestamp`, `api_version` and `data`.
    """
    envelope = {
        "type": event_type,
        "timestamp": timestamp,
        "api_version": API_VERSION,
        "data": data,
    }
    return json.dumps(envelope).encode()


def polar_event_body(event_type: str = "subscription.updated", **data: Any) -> bytes:
    """A minimal Polar delivery stamped now, carrying `data` (a fresh `id` when empty)."""
    return json.dumps(
        {
            "type": event_type,
            "timestamp": datetime.now(UTC).isoformat(),
            "api_version": API_VERSION,
            "data": data or {"id": str(uuid.uuid4())},
        }
    ).encode()


def polar_headers(
    body: bytes | str,
    secret: str = POLAR_SECRET,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    legacy: bool = False,
) -> dict[str, str]:
    """Standard Webhooks headers of a delivery of `body`, signed with `standardwebhooks`.

    `legacy=True` signs the way Polar does for dashboard secrets: with the
    secret string's own bytes as the key.
    """
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = timestamp if timestamp is not None else int(time.time())
    text = body.decode() if isinstance(body, bytes) else body
    signer = Webhook(secret.encode() if legacy else secret)
    signature = signer.sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), text)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
