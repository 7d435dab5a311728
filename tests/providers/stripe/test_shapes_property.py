"""Property: one subscription's events, each in any API version's shape, delivered in any
order with any duplicates, yield the entitlement its current-shape events yield in order."""

from __future__ import annotations

from dataclasses import replace
from functools import reduce
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from billhook.domain.facts import SubscriptionFact
from billhook.domain.records import StoredEvent
from billhook.domain.reducers import merge_subscription
from billhook.domain.resolver import WorkspaceFacts, resolve
from billhook.providers.decode import decode
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.settings import make_settings
from tests.feed import NOW, T0
from tests.providers.stripe.shapes import BASIL, VERSIONS, Sub, event_body, subscription

POLICY = make_settings(Path("/nonexistent/billhook-data")).policy
TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
STATUSES = ("trialing", "active", "past_due", "unpaid", "incomplete", "paused", "canceled")
PRICES = ("price_team_monthly", "price_enterprise_yearly", "price_unmapped")


def _event(version: str, n: int, spec: tuple[int, int, str, bool, str, int]) -> StoredEvent:
    dt, rank, status, cancel, price, quantity = spec
    if rank == 2:
        status, cancel = "canceled", False  # Stripe deletes only to canceled
    sub = Sub(
        status=status,
        items=((price, quantity),),
        cancel_at_period_end=cancel,
        canceled_at=T0 + dt if cancel or status == "canceled" else None,
        ended_at=T0 + dt if status == "canceled" else None,
    )
    body = event_body(
        version, TYPES[rank], subscription(version, sub), created=T0 + dt, event_id=f"evt_{n}"
    )
    record = stripe_record(body.decode())
    return StoredEvent(0, "stripe", record.event_id, record.type, 0, None, "now", record.payload)


def _entitlement(events: list[StoredEvent]) -> Any:
    """Deliver `events` in this order (the log numbers new event ids), fold, resolve."""
    seqs: dict[str, int] = {}
    facts: list[SubscriptionFact] = []
    for event in events:
        seq = seqs.setdefault(event.event_id, len(seqs) + 1)
        [fact, *_] = decode(replace(event, seq=seq), "workspace_id")
        assert isinstance(fact, SubscriptionFact)
        facts.append(fact)
    merged = reduce(merge_subscription, facts[1:], facts[0])
    # Which seq an event got is the delivery order's doing, by definition.
    merged = replace(merged, order=replace(merged.order, seq=0))
    facts_of_ws = WorkspaceFacts("ws_1", (merged,), (), "enforce", as_of_seq=0)
    return resolve(facts_of_ws, POLICY, NOW)


specs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=5),  # seconds after T0: same-second pairs
        st.sampled_from([0, 1, 2]),
        st.sampled_from(STATUSES),
        st.booleans(),
        st.sampled_from(PRICES),
        st.integers(min_value=1, max_value=50),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda s: (s[0], s[1]),  # distinct ordering keys
)


@given(specs, st.data())
def test_any_shape_in_any_order_gives_the_same_entitlement(
    lifecycle: list[tuple[int, int, str, bool, str, int]], data: st.DataObject
) -> None:
    reference = _entitlement([_event(BASIL, n, spec) for n, spec in enumerate(lifecycle)])
    shapes = data.draw(
        st.lists(st.sampled_from(VERSIONS), min_size=len(lifecycle), max_size=len(lifecycle))
    )
    events = [_event(v, n, spec) for n, (v, spec) in enumerate(zip(shapes, lifecycle, strict=True))]
    delivered = list(data.draw(st.permutations(events)))
    for duplicate in data.draw(st.lists(st.sampled_from(events), max_size=4)):
        delivered.insert(data.draw(st.integers(0, len(delivered))), duplicate)

    got = _entitlement(delivered)

    assert got == reference
    assert got.tier in ("solo", "team", "enterprise")
