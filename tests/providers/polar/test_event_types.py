"""Every event type Polar sends is decoded or deliberately ignored, and `customer.state_changed`
is projected like a reconciliation: its snapshot ordered by its time (issue #19)."""

from __future__ import annotations

import hashlib
import json
import re
import typing
from dataclasses import replace
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from polar.base import deserialize
from polar.v2026_04.webhooks import WebhookPayload

from billhook.domain.facts import LinkFact, SubscriptionFact
from billhook.domain.records import StoredEvent
from billhook.domain.reducers import merge_subscription
from billhook.errors import DecodeError
from billhook.providers.decode import decode, understands
from billhook.providers.polar.decode import (
    POLAR_CUSTOMER_EVENTS,
    POLAR_IGNORED,
    POLAR_SUBSCRIPTION_EVENTS,
)
from billhook.providers.polar.webhook import polar_record
from billhook.testing.polar import (
    polar_customer_state,
    polar_event,
    polar_state_subscription,
    polar_subscription,
)
from billhook.testing.settings import PRODUCT_ENTERPRISE, PRODUCT_TEAM
from tests.feed import Feed

CUSTOMER = "0b6c3f9e-1d2a-4e5b-8c7d-6f5e4d3c2b1a"
SUB = "5d4c3b2a-1f0e-4d9c-8b7a-6e5d4c3b2a19"
DOCS = Path(__file__).parents[3] / "docs" / "api.md"


def _sdk_types() -> list[str]:
    """The event types polar-sdk's `v2026_04` webhook payloads name."""
    names = []
    for payload in typing.get_args(WebhookPayload):
        found = re.search(r"Literal\['([a-z_.]+)'\]", str(payload.__annotations__["type"]))
        assert found, payload
        names.append(found.group(1))
    return sorted(names)


SDK_TYPES = _sdk_types()
DECODED = POLAR_SUBSCRIPTION_EVENTS | POLAR_CUSTOMER_EVENTS


def _stored(body: bytes, seq: int = 1) -> StoredEvent:
    record = polar_record(body.decode(), f"msg_{seq}", 0)
    return StoredEvent(
        seq,
        "polar",
        record.event_id,
        record.type,
        None,
        record.occurred_at,
        "2026-11-21T12:00:00.000Z",
        record.payload,
    )


@pytest.mark.parametrize("event_type", SDK_TYPES)
def test_each_type_polar_sends_is_decoded_or_deliberately_ignored(event_type: str) -> None:
    decoded, ignored = event_type in DECODED, event_type in POLAR_IGNORED
    assert decoded != ignored, f"decide what {event_type} means (docs/api.md)"
    event = _stored(polar_event(event_type, {"id": "x"}))
    assert understands(event) == decoded
    # The decision is written down where operators read it.
    assert f"`{event_type}`" in DOCS.read_text("utf-8")


def test_no_decision_names_a_type_polar_does_not_send() -> None:
    assert (DECODED | POLAR_IGNORED) - set(SDK_TYPES) == set()


@pytest.mark.parametrize("event_type", ["subscription.cycled", "subscription.migrated"])
def test_new_subscription_events_are_snapshots(feed: Feed, event_type: str) -> None:
    sub = polar_subscription(
        id=SUB, customer_id=CUSTOMER, product_id=PRODUCT_TEAM, external_customer_id="ws_1", seats=4
    )
    data = (
        {"data": sub}
        if event_type == "subscription.cycled"
        else {"data": sub, "provider": "stripe", "provider_subscription_id": "sub_1"}
    )
    envelope = json.loads(polar_event(event_type, sub))
    envelope.update(data)
    body = json.dumps(envelope).encode()
    deserialize(json.loads(body), WebhookPayload)  # a payload the SDK accepts
    feed.polar(body)
    e = feed.entitlement("ws_1")
    assert (e.tier, e.status, e.seats) == ("team", "active", 4)


# -- customer.state_changed ---------------------------------------------------------------------


def _state(
    *entries: dict[str, object], timestamp: str = "2026-11-21T00:00:00Z", external_id: str = "ws_1"
) -> bytes:
    state = polar_customer_state(id=CUSTOMER, external_id=external_id, active_subscriptions=entries)
    return polar_event("customer.state_changed", state, timestamp=timestamp)


def test_a_state_listing_a_trialing_subscription_grants_alone(feed: Feed) -> None:
    trial = polar_state_subscription(id=SUB, status="trialing", product_id=PRODUCT_TEAM, seats=3)
    feed.polar(_state(trial))

    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.status, e.seats, e.problems) == (
        "team",
        "polar",
        "trialing",
        3,
        (),
    )
    [view] = e.subscriptions
    assert (view.fact.id, view.fact.customer, view.current_period_end) == (
        SUB,
        CUSTOMER,
        "2026-12-01T00:00:00Z",
    )


def test_a_state_decodes_to_its_link_and_one_snapshot_per_subscription() -> None:
    entries = [
        polar_state_subscription(id=SUB, product_id=PRODUCT_TEAM, seats=2),
        polar_state_subscription(
            id="6e5d4c3b-2a1f-4e0d-9c8b-7a6e5d4c3b2a",
            product_id=PRODUCT_ENTERPRISE,
            cancel_at_period_end=True,
        ),
    ]
    link, first, second = decode(_stored(_state(*entries)), "workspace_id")
    assert isinstance(link, LinkFact)
    assert (link.customer, link.workspace) == (CUSTOMER, "ws_1")
    assert isinstance(first, SubscriptionFact)
    assert isinstance(second, SubscriptionFact)
    assert (first.status, first.seats, second.status) == ("active", 2, "canceling")
    # Ordered by the event's timestamp, like a reconciliation by its fetch time.
    assert first.order.time_us == second.order.time_us == 1_795_219_200_000_000


def test_a_state_of_an_unlinked_customer_still_keeps_its_subscriptions(feed: Feed) -> None:
    entry = polar_state_subscription(
        id=SUB, product_id=PRODUCT_TEAM, metadata={"workspace_id": "ws_meta"}
    )
    state = polar_customer_state(id=CUSTOMER, active_subscriptions=[entry])
    feed.polar(polar_event("customer.state_changed", state))
    assert feed.entitlement("ws_meta").tier == "team"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda s: s.update(active_subscriptions={}),
            "customer state active_subscriptions is not an array",
        ),
        (
            lambda s: s["active_subscriptions"].append("sub"),
            "customer state active_subscriptions[1] is not an object",
        ),
        (
            lambda s: s["active_subscriptions"][0].update(status="granted"),
            "customer state active_subscriptions[0] status is unknown",
        ),
        (
            lambda s: s["active_subscriptions"][0].update(id=None),
            "customer state active_subscriptions[0] id is missing",
        ),
        (
            lambda s: s["active_subscriptions"][0].update(seats=-2),
            "customer state active_subscriptions[0] seats is out of range",
        ),
    ],
    ids=["not an array", "entry not an object", "sdk status", "no id", "seats"],
)
def test_a_malformed_state_is_refused_readably(change: typing.Any, reason: str) -> None:
    state = polar_customer_state(
        id=CUSTOMER, external_id="ws_1", active_subscriptions=[polar_state_subscription(id=SUB)]
    )
    change(state)
    with pytest.raises(DecodeError) as raised:
        decode(_stored(polar_event("customer.state_changed", state)), "workspace_id")
    assert str(raised.value) == reason


def _sub_event(event_type: str, modified_at: str, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "id": SUB,
        "customer_id": CUSTOMER,
        "product_id": PRODUCT_TEAM,
        "external_customer_id": "ws_1",
        "seats": 3,
        "modified_at": modified_at,
    }
    fields.update(changes)
    return polar_event(event_type, polar_subscription(**fields))  # type: ignore[arg-type]


# The state at 10:00, then what the subscription's own events said before and after it.
STATE = _state(
    polar_state_subscription(id=SUB, product_id=PRODUCT_ENTERPRISE, seats=9),
    timestamp="2026-11-10T10:00:00Z",
)
BEFORE = _sub_event("subscription.updated", "2026-11-10T09:00:00Z", status="past_due")
AFTER = _sub_event("subscription.canceled", "2026-11-10T11:00:00Z", cancel_at_period_end=True)


def test_a_state_replaces_older_subscription_events_and_yields_to_newer_ones(feed: Feed) -> None:
    feed.polar(STATE)
    feed.polar(BEFORE)  # older than the state: the state stands
    e = feed.entitlement("ws_1")
    assert (e.tier, e.status, e.seats) == ("enterprise", "active", 9)
    feed.polar(AFTER)  # newer than the state: it wins
    e = feed.entitlement("ws_1")
    assert (e.tier, e.status, e.seats) == ("team", "canceling", 3)


def _fold(bodies: list[bytes]) -> SubscriptionFact:
    """Deliver `bodies` in this order (the log numbers new deliveries) and fold the snapshots."""
    seqs: dict[bytes, int] = {}
    facts = []
    for body in bodies:
        seq = seqs.setdefault(body, len(seqs) + 1)
        event = replace(_stored(body, seq), event_id=hashlib.sha256(body).hexdigest())
        facts += [f for f in decode(event, "workspace_id") if isinstance(f, SubscriptionFact)]
    merged = reduce(merge_subscription, facts[1:], facts[0])
    # Which seq a delivery got is the delivery order's doing, by definition.
    return replace(merged, order=replace(merged.order, seq=0))


@given(st.permutations([STATE, BEFORE, AFTER]), st.lists(st.sampled_from([0, 1, 2]), max_size=3))
def test_states_and_subscription_events_in_any_order_give_the_same_snapshot(
    order: list[bytes], duplicates: list[int]
) -> None:
    reference = _fold([BEFORE, STATE, AFTER])
    assert (reference.status, reference.seats, reference.product) == ("canceling", 3, PRODUCT_TEAM)
    assert _fold([*order, *(order[n] for n in duplicates)]) == reference
