"""Provider bodies for the generated log: a snap in, the EventRecord ingest would store out.

Stripe objects start from Stripe's own examples (tests/fixtures/stripe_objects.json,
through tests/stripe_payloads.py) with the fixture's nonsense values made
plausible; payment intents and charges, which the fixtures lack, are written
here after Stripe's API reference (card payments, 2025 API version). Polar
objects come from tests/polar_payloads.py (polar-sdk's `v2026_04` shapes);
orders are written here after Polar's `Order` schema. Each kind of body is a
:class:`~bench.templates.Template` built once; an event fills its holes.

Bodies go through the real `ingest.envelope.stripe_record` / `polar_record`,
so the log holds exactly the rows the webhook path would have stored.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from functools import cache
from typing import Any

from bench.lifecycles import (
    LINK_CHECKOUT,
    LINK_CUSTOMER,
    LINK_EXTERNAL_ID,
    POLAR,
    POLAR_PRODUCTS,
    STRIPE,
    STRIPE_PRICES,
    Snap,
    invoice_id,
)
from bench.templates import Template, b, hole, iso, n, obj, opt, s
from billhook.domain.records import EventRecord
from billhook.domain.times import iso_utc
from billhook.providers.envelope import polar_record, stripe_record
from tests.polar_payloads import (
    API_VERSION as POLAR_API_VERSION,
)
from tests.polar_payloads import (
    polar_customer,
    polar_customer_state,
    polar_state_subscription,
    polar_subscription,
)
from tests.stripe_payloads import stripe_checkout_session, stripe_customer, stripe_subscription
from tests.support import stripe_object

STRIPE_API_VERSION = "2025-03-31.basil"
# Polar prices in cents: per seat per month (team), per year (enterprise).
POLAR_AMOUNTS = {"month": 600, "year": 15000}
WORKSPACE_KEY = "workspace_id"

Values = dict[str, str]


# -- ids ----------------------------------------------------------------------------------


def stripe_event_id(snap: Snap) -> str:
    """The Stripe event id of `snap` (unique per subscription and event)."""
    return f"evt_1Q{snap.number:07d}{snap.n:05d}gkWq2r"


def polar_message_id(snap: Snap) -> str:
    """Polar's `webhook-id` (Standard Webhooks, Svix-style)."""
    return f"msg_2L{snap.number:07d}{snap.n:05d}hKRb0pzN4Le"


def _sub_id(index: int) -> str:
    """Stripe subscription id of subscription `index`."""
    return f"sub_1Q{index:07d}B7WZ01zgkWNy"


def _customer_id(index: int) -> str:
    """Stripe customer id of subscription `index`."""
    return f"cus_Q{index:07d}Xg1o8v"


def _payment_method(index: int) -> str:
    """Stripe payment method id of subscription `index`."""
    return f"pm_1Q{index:07d}LkT9aRzW3bPq"


def _payment_ids(snap: Snap) -> tuple[str, str]:
    """The payment intent of the current invoice, and the charge of the current attempt."""
    key = f"{snap.number:07d}{snap.cycle:04d}"
    return f"pi_3Q{key}Zx1bKq", f"ch_3Q{key}{max(snap.attempt, 1):02d}Wv8"


def _uuid(kind: int, index: int, k: int = 0) -> str:
    """A stable UUID-shaped id for object `kind` of subscription `index` (its `k`th)."""
    tail = (index * 2_654_435_761 + k * 40_503 + kind) & 0xFFFF_FFFF_FFFF
    middle = f"{k & 0xFFFF:04x}-4{index * 7919 & 0xFFF:03x}-a{k & 0xFFF:03x}"
    return f"{kind:02x}{index:06x}-{middle}-{tail:012x}"


def _polar_sub_id(index: int) -> str:
    """Polar subscription id of subscription `index`."""
    return _uuid(0x51, index)


def _polar_customer_id(index: int) -> str:
    """Polar customer id of subscription `index`."""
    return _uuid(0xC7, index)


def _email(index: int) -> str:
    """The (fake) billing email of subscription `index`."""
    return f"billing+{index:07d}@customer-{index % 997:03d}.example.com"


def _name(index: int) -> str:
    """The (fake) customer name of subscription `index`."""
    return f"Customer {index:07d}"


# -- Stripe templates -----------------------------------------------------------------------


def _stripe_event(event_type: str, data_object: dict[str, Any]) -> Template:
    """A Stripe snapshot event around `data_object`; updates carry previous_attributes."""
    event = stripe_object("event")
    data: dict[str, Any] = {"object": data_object}
    if event_type.endswith(".updated"):
        data["previous_attributes"] = hole("previous")
    event.update(
        id=hole("id"),
        type=event_type,
        created=hole("created"),
        livemode=False,
        api_version=STRIPE_API_VERSION,
        pending_webhooks=1,
        request=hole("request"),
        data=data,
    )
    return Template(event)


def _stripe_subscription_object() -> dict[str, Any]:
    """Stripe's example subscription with one item, its values holes."""
    sub = stripe_subscription(id=hole("sub"), customer=hole("cus"), status=hole("status"))
    item = sub["items"]["data"][0]
    item.update(
        id=hole("si"),
        created=hole("sub_created"),
        quantity=hole("quantity"),
        current_period_start=hole("period_start"),
        current_period_end=hole("period_end"),
    )
    item["plan"].update(
        id=hole("price"),
        amount=hole("unit_amount"),
        amount_decimal=hole("unit_amount_text"),
        billing_scheme="per_unit",
        created=1_745_000_000,
        currency="usd",
        interval=hole("interval"),
        interval_count=1,
        livemode=False,
        product=hole("product"),
        transform_usage=None,
    )
    item["price"].update(
        id=hole("price"),
        created=1_745_000_000,
        product=hole("product"),
        recurring={**item["price"]["recurring"], "interval": hole("interval")},
        transform_quantity=None,
        unit_amount=hole("unit_amount"),
        unit_amount_decimal=hole("unit_amount_text"),
    )
    sub.update(
        billing_cycle_anchor=hole("anchor"),
        billing_cycle_anchor_config=None,
        billing_schedules=[],
        cancel_at=hole("cancel_at"),
        cancel_at_period_end=hole("cancel_at_period_end"),
        canceled_at=hole("canceled_at"),
        cancellation_details=hole("cancellation"),
        created=hole("sub_created"),
        default_payment_method=hole("pm"),
        ended_at=hole("ended_at"),
        latest_invoice=hole("invoice"),
        metadata=hole("metadata"),
        next_pending_invoice_item_invoice=None,
        pause_collection=None,
        payment_settings={
            "payment_method_options": {
                "card": {"network": None, "request_three_d_secure": "automatic"}
            },
            "payment_method_types": ["card"],
            "save_default_payment_method": "on_subscription",
        },
        pending_invoice_item_interval=None,
        pending_update=None,
        start_date=hole("sub_created"),
        transfer_data=None,
        trial_end=hole("trial_end"),
        trial_start=hole("trial_start"),
    )
    return sub


def _stripe_customer_object() -> dict[str, Any]:
    """Stripe's example customer, its values holes."""
    customer = stripe_customer(id=hole("cus"))
    customer.update(
        created=hole("customer_created"),
        discount=None,
        email=hole("email"),
        invoice_prefix=hole("invoice_prefix"),
        invoice_settings={
            **customer["invoice_settings"],
            "default_payment_method": hole("customer_pm"),
        },
        metadata=hole("metadata"),
        name=hole("name"),
        next_invoice_sequence=hole("next_invoice"),
    )
    return customer


def _stripe_checkout_object() -> dict[str, Any]:
    """Stripe's example Checkout session in subscription mode, completed."""
    session = stripe_checkout_session(customer=hole("cus"), subscription=hole("sub"))
    details = session["customer_details"]
    details.update(email=hole("email"), name=hole("name"))
    session.update(
        id=hole("session"),
        amount_subtotal=hole("amount"),
        amount_total=hole("amount"),
        client_reference_id=hole("client_reference_id"),
        created=hole("session_created"),
        currency="usd",
        currency_conversion=None,
        expires_at=hole("session_expires"),
        invoice=hole("invoice"),
        metadata=hole("session_metadata"),
        payment_intent=None,
        payment_status=hole("payment_status"),
        shipping_address_collection=None,
        shipping_cost=None,
        success_url="https://app.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}",
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        url=None,
    )
    return session


def _stripe_invoice_object() -> dict[str, Any]:
    """Stripe's example invoice as a subscription invoice of one line."""
    invoice = stripe_object("invoice")
    line = invoice["lines"]["data"][0]
    line.update(
        amount=hole("amount"),
        description=hole("line_description"),
        discountable=True,
        id=hole("line"),
        invoice=hole("invoice"),
        parent={
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": hole("proration"),
                "proration_details": {"credited_items": None},
                "subscription": hole("sub"),
                "subscription_item": hole("si"),
            },
            "type": "subscription_item_details",
        },
        period={"end": hole("period_end"), "start": hole("period_start")},
        pricing={
            "price_details": {"price": hole("price"), "product": hole("product")},
            "type": "price_details",
            "unit_amount_decimal": hole("unit_amount_text"),
        },
        quantity=hole("quantity"),
        subtotal=hole("amount"),
    )
    invoice["lines"]["url"] = hole("lines_url")
    invoice.update(
        amount_due=hole("amount"),
        amount_overpaid=0,
        amount_paid=hole("amount_paid"),
        amount_remaining=hole("amount_remaining"),
        attempt_count=hole("attempt_count"),
        attempted=hole("attempted"),
        auto_advance=hole("auto_advance"),
        billing_reason=hole("billing_reason"),
        created=hole("invoice_created"),
        customer=hole("cus"),
        customer_email=hole("email"),
        customer_name=hole("name"),
        due_date=None,
        effective_at=hole("finalized_at"),
        from_invoice=None,
        hosted_invoice_url=hole("hosted_url"),
        id=hole("invoice"),
        invoice_pdf=hole("pdf_url"),
        last_finalization_error=None,
        next_payment_attempt=hole("next_attempt"),
        number=hole("number"),
        parent={
            "quote_details": None,
            "subscription_details": {"metadata": hole("sub_metadata"), "subscription": hole("sub")},
            "type": "subscription_details",
        },
        payment_settings={
            "default_mandate": None,
            "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
            "payment_method_types": None,
        },
        period_end=hole("invoice_period_end"),
        period_start=hole("invoice_period_start"),
        shipping_cost=None,
        status=hole("invoice_status"),
        status_transitions={
            "finalized_at": hole("finalized_at"),
            "marked_uncollectible_at": hole("uncollectible_at"),
            "paid_at": hole("paid_at"),
            "voided_at": None,
        },
        subtotal=hole("amount"),
        subtotal_excluding_tax=hole("amount"),
        total=hole("amount"),
        total_excluding_tax=hole("amount"),
        webhooks_delivered_at=hole("invoice_created"),
    )
    return invoice


def _card(fingerprint: str) -> dict[str, Any]:
    """The `card` of a payment method or charge (a test Visa)."""
    return {
        "brand": "visa",
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": "pass",
            "cvc_check": None,
        },
        "country": "US",
        "exp_month": 12,
        "exp_year": 2029,
        "fingerprint": fingerprint,
        "funding": "credit",
        "last4": "4242",
        "network": "visa",
        "three_d_secure": None,
        "wallet": None,
    }


_DECLINE = {
    "code": "card_declined",
    "decline_code": "insufficient_funds",
    "doc_url": "https://stripe.com/docs/error-codes/card-declined",
    "message": "Your card has insufficient funds.",
    "type": "card_error",
}


def _stripe_payment_intent_object(event_type: str) -> dict[str, Any]:
    """A card payment intent as `event_type` carries it."""
    succeeded = event_type == "payment_intent.succeeded"
    failed = event_type == "payment_intent.payment_failed"
    error: dict[str, Any] | None = None
    if failed:
        error = {
            **_DECLINE,
            "charge": hole("charge"),
            "payment_method": {
                "allow_redisplay": "always",
                "billing_details": _billing_details(),
                "card": _card(hole("fingerprint")),
                "created": hole("customer_created"),
                "customer": hole("cus"),
                "id": hole("pm"),
                "livemode": False,
                "metadata": {},
                "object": "payment_method",
                "type": "card",
            },
        }
    status = (
        "succeeded"
        if succeeded
        else "requires_payment_method"
        if failed
        else "requires_confirmation"
    )
    return {
        "id": hole("payment_intent"),
        "object": "payment_intent",
        "amount": hole("amount"),
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": hole("amount") if succeeded else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": hole("client_secret"),
        "confirmation_method": "automatic",
        "created": hole("invoice_created"),
        "currency": "usd",
        "customer": hole("cus"),
        "description": hole("payment_description"),
        "last_payment_error": error,
        "latest_charge": hole("charge") if succeeded or failed else None,
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": hole("pm") if succeeded else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": "off_session",
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def _billing_details() -> dict[str, Any]:
    """A payment method's billing details."""
    return {
        "address": {
            "city": None,
            "country": "US",
            "line1": None,
            "line2": None,
            "postal_code": "94107",
            "state": None,
        },
        "email": hole("email"),
        "name": hole("name"),
        "phone": None,
        "tax_id": None,
    }


def _stripe_charge_object(event_type: str) -> dict[str, Any]:
    """A card charge, succeeded or failed (insufficient funds)."""
    ok = event_type == "charge.succeeded"
    card = _card(hole("fingerprint"))
    card.update(
        amount_authorized=hole("amount") if ok else None,
        extended_authorization={"status": "disabled"},
        incremental_authorization={"status": "unavailable"},
        installments=None,
        mandate=None,
        multicapture={"status": "unavailable"},
        network_token={"used": False},
        overcapture={"maximum_amount_capturable": hole("amount"), "status": "unavailable"},
        regulated_status="unregulated",
    )
    outcome = {
        "advice_code": None if ok else "try_again_later",
        "network_advice_code": None,
        "network_decline_code": None if ok else "51",
        "network_status": "approved_by_network" if ok else "declined_by_network",
        "reason": None if ok else "insufficient_funds",
        "risk_level": "normal",
        "risk_score": hole("risk_score"),
        "seller_message": "Payment complete."
        if ok
        else "The bank returned the decline code `insufficient_funds`.",
        "type": "authorized" if ok else "issuer_declined",
    }
    return {
        "id": hole("charge"),
        "object": "charge",
        "amount": hole("amount"),
        "amount_captured": hole("amount") if ok else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": hole("balance_transaction") if ok else None,
        "billing_details": _billing_details(),
        "calculated_statement_descriptor": "BILLHOOK* TEAM",
        "captured": ok,
        "created": hole("charge_created"),
        "currency": "usd",
        "customer": hole("cus"),
        "description": hole("payment_description"),
        "destination": None,
        "dispute": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None if ok else _DECLINE["code"],
        "failure_message": None if ok else _DECLINE["message"],
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": outcome,
        "paid": ok,
        "payment_intent": hole("payment_intent"),
        "payment_method": hole("pm"),
        "payment_method_details": {"card": card, "type": "card"},
        "radar_options": {},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": hole("receipt_url") if ok else None,
        "refunded": False,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded" if ok else "failed",
        "transfer_data": None,
        "transfer_group": None,
    }


def _stripe_object_for(event_type: str) -> dict[str, Any]:
    """The data object of a Stripe event of `event_type`, with its holes."""
    if event_type.startswith("customer.subscription."):
        return _stripe_subscription_object()
    if event_type.startswith("customer."):
        return _stripe_customer_object()
    if event_type == "checkout.session.completed":
        return _stripe_checkout_object()
    if event_type.startswith("invoice."):
        return _stripe_invoice_object()
    if event_type.startswith("payment_intent."):
        return _stripe_payment_intent_object(event_type)
    if event_type.startswith("charge."):
        return _stripe_charge_object(event_type)
    raise ValueError(f"no Stripe object for {event_type}")


@cache
def stripe_template(event_type: str) -> Template:
    """The template of Stripe events of `event_type` (built once)."""
    return _stripe_event(event_type, _stripe_object_for(event_type))


# -- Stripe values --------------------------------------------------------------------------


def _workspace_metadata(snap: Snap) -> str:
    """Metadata naming the subscription's workspace, as a JSON text."""
    return obj({WORKSPACE_KEY: snap.sub.workspace})


def _stripe_common(snap: Snap) -> Values:
    """Holes every Stripe event of `snap`'s subscription fills alike."""
    index = snap.number
    automatic = snap.type.startswith(("invoice.", "payment_intent.", "charge.")) and snap.cycle > 0
    request = (
        '{"id": null, "idempotency_key": null}'
        if automatic
        else obj(
            {"id": f"req_{index:07d}{snap.n:04d}Xa", "idempotency_key": _uuid(0x1D, index, snap.n)}
        )
    )
    product, unit, interval = STRIPE_PRICES[snap.price]
    return {
        "id": s(stripe_event_id(snap)),
        "created": str(snap.created),
        "request": request,
        "previous": snap.previous or "{}",
        "sub": s(_sub_id(index)),
        "cus": s(_customer_id(index)),
        "si": s(f"si_Q{index:07d}Vn2h0J"),
        "pm": s(_payment_method(index)),
        "email": s(_email(index)),
        "name": s(_name(index)),
        "price": s(snap.price),
        "product": s(product),
        "unit_amount": str(unit),
        "unit_amount_text": f'"{unit}"',
        "interval": s(interval),
        "quantity": str(snap.quantity),
        "period_start": str(snap.period_start),
        "period_end": str(snap.period_end),
        "sub_created": str(snap.sub.start + 1),
        "invoice": s(invoice_id(index, snap.cycle)),
        "customer_created": str(snap.sub.start),
        "fingerprint": s(f"Fp{index:07d}qRz1"),
    }


def _stripe_subscription_values(snap: Snap) -> Values:
    """Holes of a subscription object."""
    canceled = snap.cancel_at_period_end or snap.canceled_at is not None
    metadata = _workspace_metadata(snap) if snap.sub.metadata_on_subscription else "{}"
    trialing = snap.sub.trial
    trial_end = snap.sub.start + 14 * 86_400
    return {
        "status": s(snap.status),
        "anchor": str(snap.sub.start + 1),
        "cancel_at": n(snap.period_end if snap.cancel_at_period_end else None),
        "cancel_at_period_end": b(snap.cancel_at_period_end),
        "canceled_at": n(snap.canceled_at),
        "cancellation": obj(
            {
                "comment": None,
                "feedback": None,
                "reason": "cancellation_requested" if canceled else None,
            }
        ),
        "ended_at": n(snap.ended_at),
        "metadata": metadata,
        "trial_start": n(snap.sub.start if trialing else None),
        "trial_end": n(trial_end if trialing else None),
    }


def _stripe_customer_values(snap: Snap) -> Values:
    """Holes of a customer object."""
    linked = snap.sub.link == LINK_CUSTOMER
    has_pm = snap.type != "customer.created" or snap.sub.link != LINK_CHECKOUT
    return {
        "invoice_prefix": s(f"{snap.number:07X}"[-7:] + "A"),
        "customer_pm": opt(_payment_method(snap.number) if has_pm else None),
        "metadata": _workspace_metadata(snap) if linked else "{}",
        "next_invoice": str(snap.cycle + 1),
    }


def _amount(snap: Snap) -> int:
    """What the current invoice asks: nothing in a trial, half a period for a proration."""
    if snap.status == "trialing":
        return 0
    unit = STRIPE_PRICES[snap.price][1]
    total = unit * snap.quantity
    return total // 2 if snap.reason == "subscription_update" else total


def _stripe_checkout_values(snap: Snap) -> Values:
    """Holes of a Checkout session."""
    amount = _amount(snap)
    return {
        "session": s(f"cs_test_a1{snap.number:07d}YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPq"),
        "amount": str(amount),
        "client_reference_id": s(snap.sub.workspace),
        "session_created": str(snap.sub.start - 120),
        "session_expires": str(snap.sub.start + 86_280),
        "session_metadata": "{}",
        "payment_status": s("paid" if amount else "no_payment_required"),
    }


_INVOICE_STATUS = {
    "invoice.created": "draft",
    "invoice.upcoming": "draft",
    "invoice.finalized": "open",
    "invoice.payment_failed": "open",
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.marked_uncollectible": "uncollectible",
}


def _stripe_invoice_values(snap: Snap) -> Values:
    """Holes of an invoice, its status following the event type."""
    status = _INVOICE_STATUS[snap.type]
    amount = _amount(snap)
    paid = status == "paid"
    inv = invoice_id(snap.number, snap.cycle)
    finalized = status != "draft"
    created = snap.period_start if snap.reason == "subscription_cycle" else snap.created
    upcoming = snap.type == "invoice.upcoming"
    _, unit, interval = STRIPE_PRICES[snap.price]
    metadata = _workspace_metadata(snap) if snap.sub.metadata_on_subscription else "{}"
    return {
        "amount": str(amount),
        "amount_paid": str(amount if paid else 0),
        "amount_remaining": str(0 if paid else amount),
        "attempt_count": str(snap.attempt),
        "attempted": b(snap.attempt > 0),
        "auto_advance": b(not paid and status != "uncollectible"),
        "billing_reason": s("upcoming" if upcoming else snap.reason),
        "invoice_created": str(min(created, snap.created)),
        "finalized_at": n(snap.created if finalized else None),
        "uncollectible_at": n(snap.created if status == "uncollectible" else None),
        "paid_at": n(snap.created if paid else None),
        "hosted_url": opt(
            f"https://invoice.stripe.com/i/acct_1Q0bench/test_{inv}" if finalized else None
        ),
        "pdf_url": opt(
            f"https://pay.stripe.com/invoice/acct_1Q0bench/test_{inv}/pdf" if finalized else None
        ),
        "invoice": "null" if upcoming else s(inv),
        "line": s(f"il_1Q{snap.number:07d}{snap.cycle:04d}Ln"),
        "line_description": s(f"{snap.quantity} \u00d7 Team (at ${unit / 100:.2f} / {interval})"),
        "lines_url": s(f"/v1/invoices/{inv}/lines"),
        "next_attempt": n(snap.created + 3 * 86_400 if status == "open" and snap.attempt else None),
        "number": opt(f"{snap.number:07X}A-{snap.cycle + 1:04d}" if finalized else None),
        "proration": b(snap.reason == "subscription_update"),
        "sub_metadata": metadata,
        "invoice_status": s(status),
        "invoice_period_start": str(snap.period_start),
        "invoice_period_end": str(
            snap.period_end if snap.reason != "subscription_cycle" else snap.period_start
        ),
    }


def _stripe_payment_values(snap: Snap) -> Values:
    """Holes of a payment intent or a charge."""
    pi, charge = _payment_ids(snap)
    return {
        "amount": str(_amount(snap)),
        "payment_intent": s(pi),
        "charge": s(charge),
        "client_secret": s(f"{pi}_secret_Xq{snap.cycle:04d}bW"),
        "invoice_created": str(snap.created),
        "charge_created": str(snap.created),
        "payment_description": s(
            "Subscription creation" if snap.cycle == 0 else "Subscription update"
        ),
        "balance_transaction": s(f"txn_3Q{snap.number:07d}{snap.cycle:04d}Pw"),
        "receipt_url": s(
            f"https://pay.stripe.com/receipts/invoices/CAcaFwo{snap.number:07d}{snap.cycle:04d}?s=ap"
        ),
        "risk_score": str(snap.number % 60 + 5),
    }


def _stripe_values(snap: Snap) -> Values:
    """Every hole of the Stripe event `snap` describes."""
    values = _stripe_common(snap)
    event_type = snap.type
    if event_type.startswith("customer.subscription."):
        values.update(_stripe_subscription_values(snap))
    elif event_type.startswith("customer."):
        values.update(_stripe_customer_values(snap))
    elif event_type == "checkout.session.completed":
        values.update(_stripe_checkout_values(snap))
    elif event_type.startswith("invoice."):
        values.update(_stripe_invoice_values(snap))
    else:
        values.update(_stripe_payment_values(snap))
    return values


# -- Polar templates ------------------------------------------------------------------------


def _polar_event(event_type: str, data: dict[str, Any]) -> Template:
    """A Polar webhook body around `data` (`v2026_04` envelope)."""
    return Template(
        {
            "type": event_type,
            "timestamp": hole("timestamp"),
            "api_version": POLAR_API_VERSION,
            "data": data,
        }
    )


def _polar_customer_holes(customer: dict[str, Any]) -> None:
    """Turn a Polar customer's variable fields into holes, in place."""
    customer.update(
        id=hole("cus"),
        created_at=hole("customer_created"),
        modified_at=hole("customer_modified"),
        external_id=hole("external_id"),
        metadata=hole("customer_metadata"),
        email=hole("email"),
        name=hole("name"),
        billing_name=hole("name"),
        default_payment_method_id=hole("payment_method"),
    )


def _polar_subscription_holes(sub: dict[str, Any]) -> None:
    """Turn the fields a subscription and a customer state's entry share into holes, in place."""
    sub.update(
        created_at=hole("sub_created"),
        started_at=hole("sub_created"),
        metadata=hole("metadata"),
        status=hole("status"),
        amount=hole("amount"),
        current_period_start=hole("period_start"),
        current_period_end=hole("period_end"),
        trial_start=hole("trial_start"),
        trial_end=hole("trial_end"),
        cancel_at_period_end=hole("cancel_at_period_end"),
        canceled_at=hole("canceled_at"),
        ends_at=hole("ends_at"),
        seats=hole("seats"),
    )


def _polar_subscription_object(product: str) -> dict[str, Any]:
    """A Polar subscription to `product`, its values holes."""
    seat_based = POLAR_PRODUCTS[product][2]
    interval = POLAR_PRODUCTS[product][1]
    sub = polar_subscription(
        id=hole("sub"),
        product_id=product,
        seats=1 if seat_based else None,
        recurring_interval=interval,
    )
    _polar_customer_holes(sub["customer"])
    _polar_subscription_holes(sub)
    sub.update(
        modified_at=hole("modified_at"),
        ended_at=hole("ended_at"),
        past_due_at=hole("past_due_at"),
        customer_id=hole("cus"),
        checkout_id=hole("checkout"),
        customer_cancellation_reason=hole("cancellation_reason"),
    )
    return sub


def _polar_customer_object() -> dict[str, Any]:
    """A Polar customer, its values holes."""
    customer = polar_customer(id=hole("cus"))
    _polar_customer_holes(customer)
    return customer


def _polar_state_object() -> dict[str, Any]:
    """A Polar customer state; its active subscriptions are one hole."""
    state = polar_customer_state(id=hole("cus"))
    _polar_customer_holes(state)
    state["active_subscriptions"] = hole("active_subscriptions")
    return state


@cache
def _polar_state_entry(product: str) -> Template:
    """One `active_subscriptions` entry of a customer state."""
    entry = polar_state_subscription(
        id=hole("sub"),
        product_id=product,
        seats=1 if POLAR_PRODUCTS[product][2] else None,
        recurring_interval=POLAR_PRODUCTS[product][1],
    )
    _polar_subscription_holes(entry)
    return Template(entry)


_ORDER_SUBSCRIPTION_KEYS = (
    "created_at",
    "modified_at",
    "id",
    "amount",
    "currency",
    "recurring_interval",
    "recurring_interval_count",
    "status",
    "current_period_start",
    "current_period_end",
    "trial_start",
    "trial_end",
    "cancel_at_period_end",
    "canceled_at",
    "started_at",
    "ends_at",
    "ended_at",
    "customer_id",
    "product_id",
    "discount_id",
    "checkout_id",
    "seats",
    "customer_cancellation_reason",
    "customer_cancellation_comment",
    "metadata",
)


def _polar_order_object(product: str, event_type: str) -> dict[str, Any]:
    """A Polar `Order` of the subscription's current period (`order.created` / `order.paid`)."""
    sub = _polar_subscription_object(product)
    paid = event_type == "order.paid"
    return {
        "id": hole("order"),
        "created_at": hole("order_created"),
        "modified_at": hole("order_modified"),
        "status": "paid" if paid else "pending",
        "paid": paid,
        "subtotal_amount": hole("amount"),
        "discount_amount": 0,
        "net_amount": hole("amount"),
        "tax_amount": 0,
        "total_amount": hole("amount"),
        "applied_balance_amount": 0,
        "due_amount": 0 if paid else hole("amount"),
        "refunded_amount": 0,
        "refunded_tax_amount": 0,
        "currency": "usd",
        "billing_reason": hole("billing_reason"),
        "billing_name": hole("name"),
        "billing_address": sub["customer"]["billing_address"],
        "invoice_number": hole("invoice_number"),
        "is_invoice_generated": paid,
        "customer_id": hole("cus"),
        "product_id": product,
        "discount_id": None,
        "subscription_id": hole("sub"),
        "checkout_id": hole("order_checkout"),
        "metadata": {},
        "platform_fee_amount": 0,
        "custom_field_data": {},
        "customer": sub["customer"],
        "user_id": hole("cus"),
        "product": sub["product"],
        "discount": None,
        "subscription": {key: copy.deepcopy(sub[key]) for key in _ORDER_SUBSCRIPTION_KEYS},
        "items": [
            {
                "created_at": hole("order_created"),
                "modified_at": None,
                "id": hole("order_item"),
                "label": sub["product"]["name"],
                "amount": hole("amount"),
                "tax_amount": 0,
                "proration": hole("proration"),
                "product_price_id": sub["product"]["prices"][0]["id"],
            }
        ],
        "description": sub["product"]["name"],
        "seats": hole("seats"),
    }


@cache
def polar_template(event_type: str, product: str) -> Template:
    """The template of Polar events of `event_type` about `product` (built once)."""
    if event_type.startswith("subscription."):
        data = _polar_subscription_object(product)
    elif event_type == "customer.state_changed":
        data = _polar_state_object()
    elif event_type.startswith("customer."):
        data = _polar_customer_object()
    elif event_type.startswith("order."):
        data = _polar_order_object(product, event_type)
    else:
        raise ValueError(f"no Polar object for {event_type}")
    return _polar_event(event_type, data)


# -- Polar values ---------------------------------------------------------------------------


def _polar_amount(snap: Snap) -> int:
    """What one period of the subscription costs, in cents."""
    _, interval, seat_based = POLAR_PRODUCTS[snap.price]
    unit = POLAR_AMOUNTS[interval]
    return unit * snap.quantity if seat_based else unit


def _polar_values(snap: Snap) -> Values:
    """Every hole of the Polar event `snap` describes."""
    index = snap.number
    sub = snap.sub
    seat_based = POLAR_PRODUCTS[snap.price][2]
    trialing = sub.trial
    external = sub.link == LINK_EXTERNAL_ID
    ends = snap.period_end if snap.cancel_at_period_end else snap.ended_at
    amount = _polar_amount(snap)
    values = {
        "timestamp": iso(snap.created),
        "sub": s(_polar_sub_id(index)),
        "cus": s(_polar_customer_id(index)),
        "customer_created": iso(sub.start),
        "customer_modified": iso(snap.created if snap.type == "customer.updated" else None),
        "external_id": opt(sub.workspace if external else None),
        "customer_metadata": "{}",
        "email": s(_email(index)),
        "name": s(_name(index)),
        "payment_method": s(_uuid(0x9A, index)),
        "sub_created": iso(sub.start + 2),
        "modified_at": iso(snap.created),
        "amount": str(amount),
        "status": s(snap.status),
        "period_start": iso(snap.period_start),
        "period_end": iso(snap.period_end),
        "trial_start": iso(sub.start if trialing else None),
        "trial_end": iso(sub.start + 14 * 86_400 if trialing else None),
        "cancel_at_period_end": b(snap.cancel_at_period_end),
        "canceled_at": iso(snap.canceled_at),
        "ends_at": iso(ends),
        "ended_at": iso(snap.ended_at),
        "past_due_at": iso(snap.created if snap.status == "past_due" else None),
        "checkout": s(_uuid(0xC4, index)),
        "seats": n(snap.quantity if seat_based else None),
        "metadata": "{}" if external else obj({WORKSPACE_KEY: sub.workspace}),
        "cancellation_reason": opt("too_expensive" if snap.canceled_at else None),
    }
    if snap.type.startswith("order."):
        values.update(
            order=s(_uuid(0x0D, index, snap.cycle)),
            order_item=s(_uuid(0x1E, index, snap.cycle)),
            order_created=iso(snap.created),
            order_modified=iso(snap.created if snap.type == "order.paid" else None),
            billing_reason=s(snap.reason),
            invoice_number=s(f"{index:07X}-{snap.cycle + 1:04d}"),
            order_checkout=opt(_uuid(0xC4, index) if snap.cycle == 0 else None),
            proration=b(snap.reason == "subscription_update"),
        )
    if snap.type == "customer.state_changed":
        values["active_subscriptions"] = _active_subscriptions(snap, values)
    return values


def _active_subscriptions(snap: Snap, values: Values) -> str:
    """The JSON list of a customer state's active subscriptions."""
    if snap.status in ("canceled", "unpaid", "past_due") or snap.ended_at is not None:
        return "[]"
    return "[" + _polar_state_entry(snap.price).render(values) + "]"


# -- records ------------------------------------------------------------------------------


def stripe_text(snap: Snap) -> str:
    """The body of the Stripe event `snap` describes."""
    return stripe_template(snap.type).render(_stripe_values(snap))


def polar_text(snap: Snap) -> str:
    """The body of the Polar event `snap` describes."""
    return polar_template(snap.type, snap.price).render(_polar_values(snap))


def record(snap: Snap) -> EventRecord:
    """The row ingest would store for the event `snap` describes.

    Built directly: parsing each body again, as ingest's `stripe_record` and
    `polar_record` do, would cost a third of the generator's time.
    :func:`checked_record` proves the two agree.
    """
    occurred = iso_utc(datetime.fromtimestamp(snap.created, tz=UTC))
    if snap.sub.provider == STRIPE:
        text = stripe_text(snap)
        return EventRecord(STRIPE, stripe_event_id(snap), snap.type, 0, occurred, text)
    return EventRecord(POLAR, polar_message_id(snap), snap.type, None, occurred, polar_text(snap))


def checked_record(snap: Snap) -> EventRecord:
    """:func:`record`, checked against what ingest's own envelope parsing makes of its body."""
    built = record(snap)
    if snap.sub.provider == STRIPE:
        parsed = stripe_record(built.payload)
    else:
        parsed = polar_record(built.payload, built.event_id, snap.created)
    if parsed != built:
        raise AssertionError(f"generated record differs from ingest's: {built} != {parsed}")
    return built
