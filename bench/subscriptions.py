"""Signed Stripe subscription events about workspaces, for the read-side benchmarks.

The entitlement benchmarks need events the projector turns into entitlements:
`customer.subscription.*` events whose subscription carries
`metadata.workspace_id` and a price mapped to a tier. They are built from
Stripe's own example objects (tests/fixtures/stripe_objects.json) the way
tests/stripe_payloads.py builds them, and signed by the real `stripe` package.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import stripe

from bench.deliveries import FIXTURES

# Prices of the benchmark's config, and the tier each grants.
PRICES: dict[str, tuple[str, str]] = {
    "price_team_monthly": ("team", "month"),
    "price_team_yearly": ("team", "year"),
    "price_enterprise_yearly": ("enterprise", "year"),
}
DEFAULT_TIER = "solo"
# Stripe statuses that grant the subscription's tier (SPEC §5); the others leave the default.
GRANTING = frozenset({"trialing", "active", "past_due", "unpaid"})
# A month ahead: no subscription of a run ends while the benchmark runs.
PERIOD_S = 30 * 86_400


@dataclass(frozen=True)
class SubscriptionState:
    """What one event says about a workspace's (only) subscription."""

    workspace: str
    status: str
    price: str
    quantity: int
    cancel_at_period_end: bool = False

    @property
    def subscription_id(self) -> str:
        return f"sub_{self.workspace}"

    @property
    def customer_id(self) -> str:
        return f"cus_{self.workspace}"

    @property
    def normalized_status(self) -> str:
        """The status GET entitlements shows for it (SPEC §5, normalized status)."""
        if self.status in ("active", "trialing") and self.cancel_at_period_end:
            return "canceling"
        if self.status in ("canceled", "incomplete_expired"):
            return "inactive"
        return self.status

    @property
    def tier(self) -> str:
        """The tier GET entitlements shows when this is the workspace's only subscription."""
        return PRICES[self.price][0] if self.status in GRANTING else DEFAULT_TIER


@cache
def _fixtures() -> Mapping[str, Any]:
    objects: Mapping[str, Any] = json.loads(FIXTURES.read_text(encoding="utf-8"))
    return objects


def subscription_object(state: SubscriptionState, period_end: int) -> dict[str, Any]:
    """Stripe's example subscription, made about `state` (one item, billing period on it)."""
    sub: dict[str, Any] = copy.deepcopy(dict(_fixtures()["subscription"]))
    template = sub["items"]["data"][0]
    sub_id = state.subscription_id
    item = {
        **template,
        "id": f"si_{state.workspace}",
        "subscription": sub_id,
        "quantity": state.quantity,
        "price": {**template["price"], "id": state.price},
        "plan": {**template["plan"], "id": state.price},
        "current_period_end": period_end,
        "current_period_start": period_end - PERIOD_S,
    }
    sub.update(
        id=sub_id,
        customer=state.customer_id,
        status=state.status,
        cancel_at_period_end=state.cancel_at_period_end,
        cancel_at=None,
        canceled_at=None,
        ended_at=None,
        metadata={"workspace_id": state.workspace},
        items={
            **sub["items"],
            "data": [item],
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
    )
    return sub


def event_body(
    state: SubscriptionState, *, event_id: str, event_type: str, created: int, period_end: int
) -> str:
    """The JSON body of a `customer.subscription.*` event about `state`."""
    event: dict[str, Any] = copy.deepcopy(dict(_fixtures()["event"]))
    event.update(
        id=event_id,
        type=event_type,
        created=created,
        livemode=False,
        data={"object": subscription_object(state, period_end)},
    )
    return json.dumps(event)


def signed_headers(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers of a Stripe delivery of `body`, signed now (or at `timestamp`)."""
    header = stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def period_end_from_now() -> int:
    """A period end a month from now."""
    return int(time.time()) + PERIOD_S
