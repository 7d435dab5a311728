"""Stripe for tests: signed webhook deliveries and realistic objects.

Objects are built from Stripe's own example fixtures (`fixtures/stripe_objects.json`,
shipped with the package); deliveries are signed by the `stripe` package itself,
exactly as Stripe signs them. Personal data is planted on purpose (`STRIPE_PII`)
so privacy tests can prove it never leaves the log.

    body = stripe_event_body("customer.subscription.created", obj=stripe_subscription())
    client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import stripe

# The webhook secret test deployments trust, and the one a rotation moves to.
STRIPE_SECRET = "whsec_test_stripe_0123456789abcdef"
STRIPE_SECRET_NEXT = "whsec_test_stripe_rotated_fedcba9876543210"
# Personal data planted in customers and sessions: it must never leave the event log.
STRIPE_PII = ("ada.lovelace@example.com", "Ada Lovelace", "12 Secret Street")
# 2026-12-01T00:00:00Z
PERIOD_END = 1_796_083_200


@cache
def _stripe_objects() -> Mapping[str, Any]:
    text = (files("billhook.testing") / "fixtures" / "stripe_objects.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def stripe_object(name: str) -> dict[str, Any]:
    """A fresh deep copy of one of Stripe's example objects (`subscription`, `event`, ...)."""
    return copy.deepcopy(dict(_stripe_objects()[name]))


def stripe_event_body(
    event_type: str = "customer.subscription.updated",
    *,
    event_id: str | None = None,
    obj: Mapping[str, Any] | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
) -> bytes:
    """A Stripe event shaped like the fixture's, around a subscription by default; with
    `account`, as a Connect endpoint receives it for that connected account."""
    event = stripe_object("event")
    event.update(
        id=event_id or f"evt_{uuid.uuid4().hex[:24]}",
        type=event_type,
        created=created if created is not None else int(time.time()),
        livemode=livemode,
        data={"object": dict(obj) if obj is not None else stripe_object("subscription")},
    )
    if account is not None:
        event["account"] = account
    return json.dumps(event).encode()


def stripe_headers(
    body: bytes | str, secret: str = STRIPE_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of a Stripe delivery of `body`, signed now (or at `timestamp`) by `stripe`."""
    text = body.decode() if isinstance(body, bytes) else body
    header = stripe.WebhookSignature.generate_signature_header(
        text, secret, timestamp=timestamp if timestamp is not None else int(time.time())
    )
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def _person(obj: dict[str, Any]) -> None:
    email, name, street = STRIPE_PII
    obj["email"] = email
    obj["name"] = name
    obj["address"] = {**obj.get("address", {}), "line1": street, "city": "London", "country": "GB"}


def stripe_subscription(
    *,
    id: str = "sub_1",
    customer: str = "cus_1",
    status: str = "active",
    items: Sequence[tuple[str, int | None]] = (("price_team_monthly", 5),),
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    metadata: dict[str, str] | None = None,
    period_end: int = PERIOD_END,
    old_api: bool = False,
) -> dict[str, Any]:
    """A subscription; `old_api` puts the billing period on the subscription, not the items."""
    sub = stripe_object("subscription")
    template = sub["items"]["data"][0]
    data = []
    for n, (price, quantity) in enumerate(items):
        item = {**template, "id": f"si_{id}_{n}", "subscription": id, "quantity": quantity}
        item["price"] = {**template["price"], "id": price}
        item["plan"] = {**template["plan"], "id": price}
        if old_api:
            item.pop("current_period_end", None)
            item.pop("current_period_start", None)
        else:
            item["current_period_end"] = period_end
            item["current_period_start"] = period_end - 30 * 86_400
        data.append(item)
    sub.update(
        id=id,
        customer=customer,
        status=status,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=cancel_at,
        canceled_at=None,
        ended_at=None,
        metadata=metadata or {},
        items={**sub["items"], "data": data, "url": f"/v1/subscription_items?subscription={id}"},
    )
    if old_api:
        sub["current_period_end"] = period_end
        sub["current_period_start"] = period_end - 30 * 86_400
    return sub


def stripe_customer(*, id: str = "cus_1", metadata: dict[str, str] | None = None) -> dict[str, Any]:
    customer = stripe_object("customer")
    customer.update(id=id, metadata=metadata or {})
    _person(customer)
    return customer


def stripe_checkout_session(
    *,
    customer: str = "cus_1",
    subscription: str = "sub_1",
    client_reference_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    session = stripe_object("checkout.session")
    email, name, street = STRIPE_PII
    details = session["customer_details"]
    details.update(email=email, name=name, address={**details["address"], "line1": street})
    session.update(
        id=f"cs_test_{subscription}",
        mode="subscription",
        status="complete",
        customer=customer,
        subscription=subscription,
        client_reference_id=client_reference_id,
        metadata=metadata or {},
    )
    return session


def stripe_thin_event_body(
    object_type: str = "subscription",
    object_id: str = "sub_1",
    *,
    event_type: str | None = None,
    event_id: str | None = None,
    context: str | None = None,
    created: str = "2026-11-21T11:00:00.000Z",
    livemode: bool = False,
) -> bytes:
    """A Stripe thin event (`v2.core.event`), as an event destination delivers it.

    It names the object (`related_object`: id, type, url) and carries none of
    its fields; `created` is ISO 8601, `context` the connected account it is
    about (Connect), and `type` by default `v1.<object type>.updated`.
    """
    paths = {
        "subscription": "subscriptions",
        "customer": "customers",
        "invoice": "invoices",
        "checkout.session": "checkout/sessions",
    }
    event: dict[str, Any] = {
        "id": event_id or f"evt_test_{uuid.uuid4().hex[:24]}",
        "object": "v2.core.event",
        "type": event_type or f"v1.{object_type}.updated",
        "livemode": livemode,
        "created": created,
        "related_object": {
            "id": object_id,
            "type": object_type,
            "url": f"/v1/{paths.get(object_type, object_type)}/{object_id}",
        },
        "reason": {"type": "request", "request": {"id": "req_thin", "idempotency_key": None}},
    }
    if context is not None:
        event["context"] = context
    return json.dumps(event).encode()


def stripe_invoice(
    *, id: str = "in_1", customer: str = "cus_1", subscription: str = "sub_1", basil: bool = True
) -> dict[str, Any]:
    """An invoice billing `subscription`: named by its `parent` (from 2025-03-31.basil), or
    by its own `subscription` field (`basil=False`, older API versions)."""
    invoice = stripe_object("invoice")
    invoice.update(id=id, customer=customer, livemode=False)
    if basil:
        invoice.pop("subscription", None)
        invoice["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
        }
    else:
        invoice.update(subscription=subscription, parent=None)
    return invoice
