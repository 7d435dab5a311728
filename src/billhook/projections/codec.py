"""Facts to JSON text and back, for the projection store's rows.

Subscriptions are the hot path (one row per subscription event), so they are
stored as a positional JSON array, which encodes and decodes several times
faster than `dataclasses.asdict`; the rare operator facts use plain objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import orjson

from billhook.domain.facts import (
    EndpointFact,
    EnforcementFact,
    Item,
    Order,
    OverrideFact,
    SubscriptionFact,
)

_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps_subscription(f: SubscriptionFact) -> str:
    fields = _subscription_fields(f)
    # orjson writes what `_compact` does for ASCII text without escapes (every real id),
    # several times faster; anything else keeps `_compact`'s exact bytes (`\uXXXX`, DEL).
    try:
        text = orjson.dumps(fields)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return _compact(fields)
    if text.isascii() and b"\\" not in text and b"\x7f" not in text:
        return text.decode()
    return _compact(fields)


def _subscription_fields(f: SubscriptionFact) -> list[object]:
    o = f.order
    return [
        f.provider,
        f.id,
        f.customer,
        f.workspace,
        f.status,
        f.provider_status,
        f.product,
        [[i.price, i.quantity, i.current_period_end] for i in f.items],
        f.seats,
        f.cancel_at_period_end,
        f.current_period_end,
        f.livemode,
        f.event_id,
        [o.time_us, o.terminal, o.rank, o.seq],
        f.healthy_us,
        list(f.attention_us),
    ]


def subscription(text: str) -> SubscriptionFact:
    fields = json.loads(text)
    (provider, id_, customer, workspace, status, provider_status, product, items, seats,
     cancel, period_end, livemode, event_id, order, healthy, attention) = fields  # fmt: skip
    return SubscriptionFact(
        provider=provider,
        id=id_,
        customer=customer,
        workspace=workspace,
        status=status,
        provider_status=provider_status,
        product=product,
        items=tuple(Item(*item) for item in items),
        seats=seats,
        cancel_at_period_end=cancel,
        current_period_end=period_end,
        livemode=livemode,
        event_id=event_id,
        order=Order(*order),
        healthy_us=healthy,
        attention_us=tuple(attention),
    )


def dumps(fact: OverrideFact | EnforcementFact | EndpointFact) -> str:
    return json.dumps(asdict(fact), separators=(",", ":"), sort_keys=True)


def override(text: str) -> OverrideFact:
    return OverrideFact(**json.loads(text))


def enforcement(text: str) -> EnforcementFact:
    return EnforcementFact(**json.loads(text))


def endpoint(text: str) -> EndpointFact:
    fields = json.loads(text)
    return EndpointFact(**{**fields, "workspaces": tuple(fields["workspaces"])})
