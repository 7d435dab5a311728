"""One subscription, written as Stripe sent it in each API version.

Each shape follows real payloads of its version: the 2013-08-13 and 2017
events are those stripe-ruby-mock recorded (`lib/stripe_mock/webhook_fixtures/`,
commits 03f9d3f and 5a216b3), the 2018-02-06 one adds the plan's `product`
(c9af9d3), the 2020-08-27 one is its 2022 re-recording (77aa34a), and
2025-03-31.basil is Stripe's own current example (`stripe_objects.json`).

| version | price | quantity | period | cancel_at, pause_collection |
|---|---|---|---|---|
| 2013-08-13 | top-level `plan` | top-level | subscription | absent |
| 2015-07-28 | top-level `plan` | top-level | subscription | absent |
| 2017-06-05 | `items.data[].plan` (also on top for one item) | each item | subscription | absent |
| 2018-02-06 | `items.data[].plan`, plan with `product` | each item | subscription | absent |
| 2020-08-27 | `items.data[].price` and `.plan` | each item | subscription | present |
| 2025-03-31.basil | `items.data[].price` and `.plan` | each item | each item | present |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from billhook.testing.stripe import stripe_subscription

V2013 = "2013-08-13"
V2015 = "2015-07-28"
V2017 = "2017-06-05"
V2018 = "2018-02-06"
V2020 = "2020-08-27"
BASIL = "2025-03-31.basil"
# Every shape, oldest first.
VERSIONS = (V2013, V2015, V2017, V2018, V2020, BASIL)
# Shapes with one top-level plan: a single item only.
SINGLE_PLAN = frozenset({V2013, V2015})
# 2026-12-01T00:00:00Z, as billhook.testing.stripe's PERIOD_END.
PERIOD_END = 1_796_083_200
MONTH_S = 30 * 86_400


@dataclass(frozen=True)
class Sub:
    """A subscription as billhook should read it, whatever the shape it arrives in."""

    id: str = "sub_1"
    customer: str = "cus_1"
    status: str = "active"
    items: tuple[tuple[str, int | None], ...] = (("price_team_monthly", 5),)
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    period_end: int = PERIOD_END
    metadata: dict[str, str] = field(default_factory=dict)
    pause_collection: dict[str, Any] | None = None

    @property
    def period_start(self) -> int:
        return self.period_end - MONTH_S


def _plan(version: str, price: str) -> dict[str, Any]:
    """A plan object as `version` wrote it."""
    plan: dict[str, Any] = {
        "interval": "month",
        "amount": 1500,
        "currency": "usd",
        "id": price,
        "object": "plan",
        "livemode": False,
        "interval_count": 1,
        "trial_period_days": None,
    }
    if version in (V2013, V2015, V2017):
        plan["name"] = "Team"  # a plan's name moved to its product on 2018-02-05
    else:
        plan["product"] = "prod_team"
    if version != V2013:
        plan["metadata"] = {}
        plan["statement_descriptor"] = None
    return plan


def _old_subscription(version: str, sub: Sub) -> dict[str, Any]:
    """Before 2016-07-06: one top-level plan and quantity, no items."""
    [(price, quantity)] = sub.items
    obj: dict[str, Any] = {
        "id": sub.id,
        "plan": _plan(version, price),
        "object": "subscription",
        "start": sub.period_start,
        "status": sub.status,
        "customer": sub.customer,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "current_period_start": sub.period_start,
        "current_period_end": sub.period_end,
        "ended_at": sub.ended_at,
        "trial_start": None,
        "trial_end": None,
        "canceled_at": sub.canceled_at,
        "quantity": quantity,
        "application_fee_percent": None,
    }
    if version == V2015:
        obj.update(discount=None, tax_percent=None, metadata=dict(sub.metadata))
    return obj


def _item(version: str, sub: Sub, n: int, price: str, quantity: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"si_{sub.id}_{n}",
        "object": "subscription_item",
        "created": sub.period_start,
        "plan": _plan(version, price),
        "quantity": quantity,
    }
    if version == V2018:
        item["metadata"] = {}
        item["subscription"] = sub.id
    return item


def _items_subscription(version: str, sub: Sub) -> dict[str, Any]:
    """2016-07-06 to 2020: items with a plan each, the period on the subscription."""
    single = len(sub.items) == 1
    return {
        "id": sub.id,
        "object": "subscription",
        "application_fee_percent": None,
        "billing": "charge_automatically",
        "billing_cycle_anchor": sub.period_start,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "canceled_at": sub.canceled_at,
        "created": sub.period_start,
        "current_period_end": sub.period_end,
        "current_period_start": sub.period_start,
        "customer": sub.customer,
        "days_until_due": None,
        "discount": None,
        "ended_at": sub.ended_at,
        "items": {
            "object": "list",
            "data": [
                _item(version, sub, n, price, quantity)
                for n, (price, quantity) in enumerate(sub.items)
            ],
            "has_more": False,
            "total_count": len(sub.items),
            "url": f"/v1/subscription_items?subscription={sub.id}",
        },
        "livemode": False,
        "metadata": dict(sub.metadata),
        # Until 2019 a subscription of one item also showed its plan and quantity on top.
        "plan": _plan(version, sub.items[0][0]) if single else None,
        "quantity": sub.items[0][1] if single else None,
        "start": sub.period_start,
        "status": sub.status,
        "tax_percent": None,
        "trial_end": None,
        "trial_start": None,
    }


def _v2020_subscription(sub: Sub) -> dict[str, Any]:
    """2020-08-27: items with a price and a plan, the period on the subscription."""
    obj = stripe_subscription(
        id=sub.id,
        customer=sub.customer,
        status=sub.status,
        items=sub.items,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=sub.cancel_at,
        metadata=dict(sub.metadata),
        period_end=sub.period_end,
        old_api=True,
    )
    single = len(sub.items) == 1
    obj.update(
        canceled_at=sub.canceled_at,
        ended_at=sub.ended_at,
        pause_collection=sub.pause_collection,
        plan=obj["items"]["data"][0]["plan"] if single else None,
        quantity=sub.items[0][1] if single else None,
    )
    return obj


def _basil_subscription(sub: Sub) -> dict[str, Any]:
    """2025-03-31.basil and later: the period on each item only."""
    obj = stripe_subscription(
        id=sub.id,
        customer=sub.customer,
        status=sub.status,
        items=sub.items,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=sub.cancel_at,
        metadata=dict(sub.metadata),
        period_end=sub.period_end,
    )
    obj.update(
        canceled_at=sub.canceled_at,
        ended_at=sub.ended_at,
        pause_collection=sub.pause_collection,
    )
    assert "current_period_end" not in obj
    return obj


SHAPES: dict[str, Callable[[Sub], dict[str, Any]]] = {
    V2013: lambda sub: _old_subscription(V2013, sub),
    V2015: lambda sub: _old_subscription(V2015, sub),
    V2017: lambda sub: _items_subscription(V2017, sub),
    V2018: lambda sub: _items_subscription(V2018, sub),
    V2020: _v2020_subscription,
    BASIL: _basil_subscription,
}


def subscription(version: str, sub: Sub) -> dict[str, Any]:
    """`sub` as a subscription object of API version `version`."""
    return SHAPES[version](sub)


def customer(version: str, id: str, metadata: dict[str, str]) -> dict[str, Any]:
    """A customer linked to a workspace through its metadata (every version since 2013)."""
    return {
        "id": id,
        "object": "customer",
        "created": PERIOD_END - 2 * MONTH_S,
        "livemode": False,
        "description": None,
        "metadata": dict(metadata),
        "delinquent": False,
        **({"subscriptions": {"object": "list", "data": []}} if version != BASIL else {}),
    }


def event_body(
    version: str,
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int,
    event_id: str,
    account: str | None = None,
) -> bytes:
    """The body of a delivery of `obj` as an endpoint pinned to `version` received it."""
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "created": created,
        "livemode": False,
        "type": event_type,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }
    if version == V2013:
        event["request"] = None
    elif version in (V2015,):
        event.update(api_version=version, request="req_00000000000000")
    else:
        event.update(api_version=version, request={"id": None, "idempotency_key": None})
    if account is not None:
        event["account"] = account
    return json.dumps(event).encode()
