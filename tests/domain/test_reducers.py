"""Properties of the folds: delivery order and duplicates never change a projection."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from billhook.domain.facts import SubscriptionFact
from billhook.domain.records import StoredEvent
from billhook.domain.reducers import merge_subscription
from billhook.providers.decode import decode
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.stripe import stripe_event_body, stripe_subscription

T0 = 1_795_000_000
TYPES = {
    0: "customer.subscription.created",
    1: "customer.subscription.updated",
    2: "customer.subscription.deleted",
}
STATUSES = ["trialing", "active", "past_due", "unpaid", "incomplete", "paused", "canceled"]


def _event(seq: int, created: int, rank: int, status: str, quantity: int) -> StoredEvent:
    if rank == 2:
        status = "canceled"  # Stripe deletes only to canceled
    sub = stripe_subscription(status=status, items=(("price_team_monthly", quantity),))
    body = stripe_event_body(
        TYPES[rank], event_id=f"evt_{created}_{rank}", obj=sub, created=created
    )
    record = stripe_record(body.decode())
    return StoredEvent(seq, "stripe", record.event_id, record.type, 0, None, "now", record.payload)


def _snapshot(event: StoredEvent) -> SubscriptionFact:
    (fact, *_) = decode(event, "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    return fact


def _fold(events: list[StoredEvent]) -> SubscriptionFact:
    """Deliver events in this order: the log gives each new event id the next seq."""
    seqs: dict[str, int] = {}
    facts = []
    for event in events:
        seq = seqs.setdefault(event.event_id, len(seqs) + 1)
        facts.append(_snapshot(replace(event, seq=seq)))
    merged = reduce(merge_subscription, facts[1:], facts[0])
    # The seq is where the log put an event, which delivery order decides by definition.
    return replace(merged, order=replace(merged.order, seq=0))


snapshots = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=5),  # seconds after T0: plenty of same-second pairs
        st.sampled_from([0, 1, 2]),
        st.sampled_from(STATUSES),
        st.integers(min_value=1, max_value=50),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda s: (s[0], s[1]),  # distinct ordering keys
)


@given(snapshots, st.data())
def test_any_order_with_duplicates_gives_the_same_projection(
    specs: list[tuple[int, int, str, int]], data: st.DataObject
) -> None:
    events = [
        _event(i + 1, T0 + dt, rank, status, q) for i, (dt, rank, status, q) in enumerate(specs)
    ]
    reference = _fold(events)
    shuffled = data.draw(st.permutations(events))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=6))
    positions = data.draw(
        st.lists(st.integers(0, len(shuffled)), min_size=len(duplicates), max_size=len(duplicates))
    )
    delivered = list(shuffled)
    for event, at in zip(duplicates, positions, strict=True):
        delivered.insert(at, event)
    assert _fold(delivered) == reference


@given(snapshots, st.data())
def test_a_terminal_snapshot_is_never_resurrected(
    specs: list[tuple[int, int, str, int]], data: st.DataObject
) -> None:
    events = [
        _event(i + 1, T0 + dt, rank, status, q) for i, (dt, rank, status, q) in enumerate(specs)
    ]
    result = _fold(data.draw(st.permutations(events)))
    facts = [_snapshot(e) for e in events]
    terminal_times = [f.order.time_us for f in facts if f.order.terminal]
    if terminal_times:
        newer_live = [
            f for f in facts if not f.order.terminal and f.order.time_us > max(terminal_times)
        ]
        if not newer_live:
            assert result.status == "inactive"
            assert result.order.terminal


@given(st.integers(min_value=0, max_value=100), st.sampled_from(STATUSES[:-1]), st.booleans())
def test_same_second_created_then_updated_resolves_to_the_update(
    dt: int, updated_status: str, update_first: bool
) -> None:
    created = _event(1, T0 + dt, 0, "incomplete", 1)
    updated = _event(2, T0 + dt, 1, updated_status, 4)
    order = [updated, created] if update_first else [created, updated]
    result = _fold(order)
    assert result.provider_status == updated_status
    assert result.items[0].quantity == 4


def test_the_attention_record_is_order_free() -> None:
    events = [
        _event(1, T0, 0, "active", 1),
        _event(2, T0 + 10, 1, "past_due", 1),
        _event(3, T0 + 20, 1, "past_due", 1),
        _event(4, T0 + 30, 1, "active", 1),
        _event(5, T0 + 40, 1, "unpaid", 1),
    ]
    forward = _fold(events)
    backward = _fold(list(reversed(events)))
    assert forward == backward
    assert forward.attention_since_us == (T0 + 40) * 1_000_000
    assert json.loads(json.dumps(forward.attention_us)) == [(T0 + 40) * 1_000_000]
