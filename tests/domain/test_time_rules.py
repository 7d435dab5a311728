"""The resolver's time rules (docs/entitlements.md): a missed final event must not
grant forever, and a period that ended long ago without a renewal is reported."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billhook.domain.facts import OverrideFact, SubscriptionFact
from billhook.domain.policy import Policy
from billhook.domain.records import StoredEvent
from billhook.domain.reducers import merge_subscription
from billhook.domain.resolver import (
    Entitlement,
    WorkspaceFacts,
    refresh_wanted,
    resolve,
    time_rule,
    view,
)
from billhook.domain.times import iso_utc, to_us
from billhook.projections.query import entitlement_at
from billhook.providers.decode import decode
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.polar import polar_event, polar_subscription
from billhook.testing.settings import PRODUCT_TEAM, make_settings
from billhook.testing.stripe import PERIOD_END, stripe_event_body, stripe_subscription
from tests.feed import T0, Feed

WS = {"workspace_id": "ws_1"}
# The default subscription's period end (PERIOD_END), as a time.
END = datetime.fromtimestamp(PERIOD_END, UTC)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
# The defaults: `final_event_allowance_s` and `stale_period_hours`.
ALLOWANCE = timedelta(seconds=3600)
STALE = timedelta(hours=72)


# -- a canceling subscription ends at its period end plus the allowance ----------------------

CANCELING: dict[str, dict[str, Any]] = {
    "cancel_at_period_end": {"cancel_at_period_end": True},
    "cancel_at": {"cancel_at": PERIOD_END},
    "trial_canceling": {"status": "trialing", "cancel_at_period_end": True},
}


@pytest.mark.parametrize("shape", sorted(CANCELING))
@pytest.mark.parametrize(
    ("at", "tier", "status", "next_action", "problems", "valid_until"),
    [
        (END - timedelta(days=9), "team", "canceling", "resume_subscription", (), END + ALLOWANCE),
        (END - US, "team", "canceling", "resume_subscription", (), END + ALLOWANCE),
        (END, "team", "canceling", "resume_subscription", (), END + ALLOWANCE),
        (END + ALLOWANCE - US, "team", "canceling", "resume_subscription", (), END + ALLOWANCE),
        (END + ALLOWANCE, "solo", "inactive", "resubscribe", ("final_event_missing:sub_1",), None),
        (END + 400 * HOUR, "solo", "inactive", "resubscribe", ("final_event_missing:sub_1",), None),
    ],
)
def test_a_canceling_subscription_grants_until_its_end_and_allowance(
    feed: Feed,
    shape: str,
    at: datetime,
    tier: str,
    status: str,
    next_action: str,
    problems: tuple[str, ...],
    valid_until: datetime | None,
) -> None:
    feed.stripe(
        "customer.subscription.updated", stripe_subscription(metadata=WS, **CANCELING[shape])
    )
    e = feed.entitlement("ws_1", at)
    assert (e.tier, e.source == "stripe", e.status, e.next_action) == (
        tier,
        tier == "team",
        status,
        next_action,
    )
    assert ("ai_imports" in e.included) is (tier == "team")
    assert e.problems == problems
    assert e.valid_until_us == (None if valid_until is None else to_us(valid_until))
    # The subscription itself still says what the provider last said.
    assert [v.fact.status for v in e.subscriptions] == ["canceling"]


@pytest.mark.parametrize(
    ("allowance_s", "granting_at", "ended_at"),
    [
        (0, END - US, END),
        (60, END + timedelta(seconds=59), END + timedelta(seconds=60)),
        (86_400, END + timedelta(hours=23, minutes=59), END + timedelta(days=1)),
    ],
)
def test_the_allowance_is_configuration(
    tmp_path: Path, allowance_s: int, granting_at: datetime, ended_at: datetime
) -> None:
    feed = Feed(make_settings(tmp_path / "data", final_event_allowance_s=allowance_s))
    try:
        sub = stripe_subscription(cancel_at_period_end=True, metadata=WS)
        feed.stripe("customer.subscription.updated", sub)
        assert feed.entitlement("ws_1", granting_at).tier == "team"
        assert feed.entitlement("ws_1", granting_at).valid_until_us == to_us(ended_at)
        ended = feed.entitlement("ws_1", ended_at)
        assert (ended.tier, ended.status, ended.problems) == (
            "solo",
            "inactive",
            ("final_event_missing:sub_1",),
        )
    finally:
        feed.close()


def test_the_closing_event_settles_it(feed: Feed) -> None:
    feed.stripe(
        "customer.subscription.updated",
        stripe_subscription(cancel_at_period_end=True, metadata=WS),
        created=T0,
    )
    feed.stripe(
        "customer.subscription.deleted",
        stripe_subscription(status="canceled", metadata=WS),
        created=PERIOD_END + 5 * 3600,
    )
    e = feed.entitlement("ws_1", END + 10 * HOUR)
    assert (e.tier, e.status, e.next_action, e.problems) == ("solo", "inactive", "resubscribe", ())


def test_resuming_before_the_end_keeps_granting_and_goes_stale_only_later(feed: Feed) -> None:
    feed.stripe(
        "customer.subscription.updated",
        stripe_subscription(cancel_at_period_end=True, metadata=WS),
        created=T0,
    )
    feed.stripe("customer.subscription.updated", stripe_subscription(metadata=WS), created=T0 + 60)
    e = feed.entitlement("ws_1", END + 2 * HOUR)
    assert (e.tier, e.status, e.problems) == ("team", "active", ())
    stale = feed.entitlement("ws_1", END + STALE)
    assert (stale.tier, stale.status, stale.problems) == ("team", "active", ("stale_period:sub_1",))


def test_an_ended_subscription_no_longer_hides_a_lower_grant(feed: Feed) -> None:
    canceling = stripe_subscription(
        id="sub_ent",
        items=(("price_enterprise_yearly", 2),),
        cancel_at_period_end=True,
        metadata=WS,
    )
    feed.stripe("customer.subscription.updated", canceling)
    renewing = stripe_subscription(
        id="sub_team", customer="cus_2", period_end=PERIOD_END + 365 * 86_400, metadata=WS
    )
    feed.stripe("customer.subscription.updated", renewing)
    before = feed.entitlement("ws_1", END)
    assert (before.tier, before.seats, before.valid_until_us) == (
        "enterprise",
        2,
        to_us(END + ALLOWANCE),
    )
    after = feed.entitlement("ws_1", END + ALLOWANCE)
    assert (after.tier, after.seats, after.status, after.next_action) == (
        "team",
        5,
        "active",
        "none",
    )
    assert after.problems == ("final_event_missing:sub_ent",)


def test_an_ended_subscription_drops_its_fail_closed_problem(feed: Feed) -> None:
    sub = stripe_subscription(items=(("price_unknown", 1),), cancel_at_period_end=True, metadata=WS)
    feed.stripe("customer.subscription.updated", sub)
    assert feed.entitlement("ws_1", END).problems == ("unknown_price:price_unknown",)
    assert feed.entitlement("ws_1", END).next_action == "contact_support"
    e = feed.entitlement("ws_1", END + ALLOWANCE)
    assert (e.problems, e.next_action) == (("final_event_missing:sub_1",), "resubscribe")


def test_polar_canceling_subscription_ends_too(feed: Feed) -> None:
    sub = polar_subscription(
        id="3d4c1b1a-0000-4000-8000-000000000001",
        product_id=PRODUCT_TEAM,
        cancel_at_period_end=True,
        metadata=WS,
        current_period_end="2026-12-01T00:00:00Z",
    )
    feed.polar(polar_event("subscription.updated", sub))
    assert feed.entitlement("ws_1", END + ALLOWANCE - US).tier == "team"
    e = feed.entitlement("ws_1", END + ALLOWANCE)
    assert (e.tier, e.status) == ("solo", "inactive")
    assert e.problems == ("final_event_missing:3d4c1b1a-0000-4000-8000-000000000001",)


# -- a period that ended long ago without a renewal is reported, not revoked ----------------


@pytest.mark.parametrize("provider_status", ["active", "trialing", "past_due", "unpaid"])
@pytest.mark.parametrize(
    ("at", "problems", "valid_until"),
    [
        (END + 2 * HOUR, (), END + STALE),
        (END + STALE - US, (), END + STALE),
        (END + STALE, ("stale_period:sub_1",), None),
        (END + timedelta(days=300), ("stale_period:sub_1",), None),
    ],
)
def test_a_stale_period_is_reported_and_keeps_its_tier(
    feed: Feed,
    provider_status: str,
    at: datetime,
    problems: tuple[str, ...],
    valid_until: datetime | None,
) -> None:
    feed.stripe(
        "customer.subscription.updated", stripe_subscription(status=provider_status, metadata=WS)
    )
    e = feed.entitlement("ws_1", at)
    assert (e.tier, e.source, e.status) == ("team", "stripe", provider_status)
    healthy = provider_status in ("active", "trialing")
    # Paid features follow the attention rules alone (grace 0 here), never the stale rule.
    assert ("ai_imports" in e.included) is healthy
    assert e.problems == problems
    # What the customer can do is unchanged: the missed event is billhook's to fetch.
    assert e.next_action == ("none" if healthy else "update_payment_method")
    assert e.valid_until_us == (None if valid_until is None else to_us(valid_until))


def test_a_renewal_clears_the_stale_period(feed: Feed) -> None:
    feed.stripe("customer.subscription.updated", stripe_subscription(metadata=WS), created=T0)
    assert feed.entitlement("ws_1", END + 4 * 24 * HOUR).problems == ("stale_period:sub_1",)
    renewed = stripe_subscription(period_end=PERIOD_END + 30 * 86_400, metadata=WS)
    feed.stripe("customer.subscription.updated", renewed, created=PERIOD_END + 60)
    e = feed.entitlement("ws_1", END + 4 * 24 * HOUR)
    assert (e.tier, e.problems) == ("team", ())
    assert e.valid_until_us == to_us(END + timedelta(days=30) + STALE)


def test_the_staleness_is_configuration(tmp_path: Path) -> None:
    feed = Feed(make_settings(tmp_path / "data", stale_period_hours=1.5))
    try:
        feed.stripe("customer.subscription.updated", stripe_subscription(metadata=WS))
        assert feed.entitlement("ws_1", END + 90 * timedelta(minutes=1) - US).problems == ()
        e = feed.entitlement("ws_1", END + 90 * timedelta(minutes=1))
        assert (e.tier, e.problems) == ("team", ("stale_period:sub_1",))
    finally:
        feed.close()


@pytest.mark.parametrize("provider_status", ["incomplete", "paused", "canceled"])
def test_a_subscription_that_grants_nothing_is_never_stale(
    feed: Feed, provider_status: str
) -> None:
    feed.stripe(
        "customer.subscription.updated", stripe_subscription(status=provider_status, metadata=WS)
    )
    e = feed.entitlement("ws_1", END + 1000 * HOUR)
    assert (e.tier, e.problems, e.valid_until_us) == ("solo", (), None)


# -- what a refresh trigger reads -----------------------------------------------------------


def test_refresh_wanted_names_the_flagged_subscriptions(feed: Feed) -> None:
    feed.stripe(
        "customer.subscription.updated",
        stripe_subscription(id="sub_c", cancel_at_period_end=True, metadata=WS),
    )
    feed.stripe(
        "customer.subscription.updated",
        stripe_subscription(id="sub_s", customer="cus_2", metadata=WS),
    )
    feed.stripe(
        "customer.subscription.updated",
        stripe_subscription(
            id="sub_ok", customer="cus_3", period_end=PERIOD_END + 86_400 * 90, metadata=WS
        ),
    )
    assert refresh_wanted(feed.entitlement("ws_1", END)) == ()
    e = feed.entitlement("ws_1", END + STALE)
    assert e.problems == ("final_event_missing:sub_c", "stale_period:sub_s")
    wanted = refresh_wanted(e)
    assert [(v.fact.provider, v.fact.customer, v.fact.id) for v in wanted] == [
        ("stripe", "cus_1", "sub_c"),
        ("stripe", "cus_2", "sub_s"),
    ]


# -- as_of answers apply the rules at the moment asked -------------------------------------


def test_as_of_applies_the_time_rules_at_that_moment(feed: Feed) -> None:
    # The log stamps events with the wall clock, so the period is placed around it.
    end = int(time.time()) - 600
    sub = stripe_subscription(cancel_at_period_end=True, period_end=end, metadata=WS)
    seq = feed.stripe("customer.subscription.updated", sub, created=end - 86_400)
    received = datetime.fromisoformat(feed.log.get(seq).received_at)  # type: ignore[union-attr]
    end_at = datetime.fromtimestamp(end, UTC)

    def at(as_of: str) -> Entitlement:
        return entitlement_at(feed.store, feed.log, feed.settings, "ws_1", as_of, received)[0]

    assert (at(str(seq)).tier, at(str(seq)).status) == ("team", "canceling")
    within = at(iso_utc(end_at + ALLOWANCE - timedelta(milliseconds=1)))
    assert (within.tier, within.problems) == ("team", ())
    ended = at(iso_utc(end_at + ALLOWANCE))
    assert (ended.tier, ended.status, ended.problems) == (
        "solo",
        "inactive",
        ("final_event_missing:sub_1",),
    )
    stale_sub = stripe_subscription(id="sub_2", customer="cus_2", period_end=end, metadata=WS)
    feed.stripe("customer.subscription.updated", stale_sub, created=end - 86_400)
    later = at(iso_utc(end_at + STALE))
    assert (later.tier, later.problems) == (
        "team",
        ("final_event_missing:sub_1", "stale_period:sub_2"),
    )


# -- properties -----------------------------------------------------------------------------

BASE = PERIOD_END
POLICY = make_settings(Path("unused")).policy
STATUSES = ["trialing", "active", "past_due", "unpaid", "incomplete", "paused", "canceled"]
TYPES = ("customer.subscription.created", "customer.subscription.updated")


def _snapshot(seq: int, spec: tuple[str, int, int, str, str, int]) -> SubscriptionFact:
    sub_id, created, rank, status, cancel, period_end = spec
    if rank == 2:
        status = "canceled"
    kind = TYPES[rank] if rank < 2 else "customer.subscription.deleted"
    prices = {"sub_a": "price_team_monthly", "sub_b": "price_enterprise_yearly"}
    sub = stripe_subscription(
        id=sub_id,
        customer=f"cus_{sub_id}",
        status=status,
        items=((prices.get(sub_id, "price_unmapped"), 3),),
        cancel_at_period_end=cancel == "period_end",
        cancel_at=period_end if cancel == "cancel_at" else None,
        period_end=period_end,
        metadata=WS,
    )
    body = stripe_event_body(kind, event_id=f"evt_{seq}", obj=sub, created=created)
    record = stripe_record(body.decode())
    event = StoredEvent(seq, "stripe", record.event_id, record.type, 0, None, "now", record.payload)
    (fact, *_) = decode(event, "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    return fact


def _facts(
    specs: list[tuple[str, int, int, str, str, int]], overrides: list[OverrideFact]
) -> WorkspaceFacts:
    by_id: dict[str, list[SubscriptionFact]] = {}
    for seq, spec in enumerate(specs, start=1):
        by_id.setdefault(spec[0], []).append(_snapshot(seq, spec))
    subscriptions = [reduce(merge_subscription, facts) for facts in by_id.values()]
    return WorkspaceFacts("ws_1", subscriptions, overrides, "observe", len(specs))


DAY = 86_400
histories = st.lists(
    st.tuples(
        st.sampled_from(["sub_a", "sub_b", "sub_c"]),  # team, enterprise, unmapped
        st.integers(min_value=BASE - 60 * DAY, max_value=BASE + 60 * DAY),  # event created
        st.sampled_from([0, 1, 1, 1, 2]),
        st.sampled_from(STATUSES),
        st.sampled_from(["no", "period_end", "cancel_at"]),
        st.integers(min_value=BASE - 40 * DAY, max_value=BASE + 40 * DAY),  # period end
    ),
    max_size=6,
)
overrides = st.lists(
    st.builds(
        lambda kind, tier, expiry: OverrideFact(
            "ws_1",
            kind,
            tier,
            None if expiry is None else iso_utc(datetime.fromtimestamp(BASE + expiry, UTC)),
            True,
            "test",
            "ops",
            1,
        ),
        st.sampled_from(["manual_pilot", "explicit_solo", "enterprise_contract"]),
        st.sampled_from(["solo", "team"]),
        st.none() | st.integers(min_value=-30 * DAY, max_value=30 * DAY),
    ),
    max_size=2,
    unique_by=lambda o: o.kind,
)
policies = st.builds(
    lambda allowance, stale, grace: replace(
        POLICY,
        final_event_allowance_s=allowance,
        stale_period_hours=stale,
        attention_grace_hours=grace,
    ),
    st.sampled_from([0, 1, 3600, 86_400]),
    st.sampled_from([0, 0.5, 72, 720]),
    st.sampled_from([0, 1, 48]),
)
# Instants around BASE, to the microsecond.
instants = st.integers(
    min_value=(BASE - 90 * DAY) * 1_000_000, max_value=(BASE + 90 * DAY) * 1_000_000
).map(lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us))


@settings(max_examples=300, deadline=None)
@given(histories, overrides, policies, instants)
def test_a_canceling_subscription_never_grants_past_its_end_and_allowance(
    specs: list[tuple[str, int, int, str, str, int]],
    overrides_: list[OverrideFact],
    policy: Policy,
    at: datetime,
) -> None:
    facts = _facts(specs, overrides_)
    e = resolve(facts, policy, at)
    for fact in facts.subscriptions:
        v = view(fact, policy)
        if fact.status != "canceling" or v.current_period_end is None:
            continue
        limit = datetime.fromisoformat(v.current_period_end) + timedelta(
            seconds=policy.final_event_allowance_s
        )
        if at < limit:
            continue
        assert time_rule(v, policy, to_us(at)).ended
        assert f"final_event_missing:{fact.id}" in e.problems
        # Whatever else grants, this subscription adds nothing to it.
        without = resolve(
            replace(facts, subscriptions=[f for f in facts.subscriptions if f is not fact]),
            policy,
            at,
        )
        assert _grant(e) == _grant(without)


def _grant(e: Entitlement) -> tuple[object, ...]:
    return (e.tier, e.source, e.seats, e.included, e.paid_blocked)


@settings(max_examples=300, deadline=None)
@given(histories, overrides, policies, instants, st.floats(min_value=0, max_value=1), st.data())
def test_valid_until_never_lies(
    specs: list[tuple[str, int, int, str, str, int]],
    overrides_: list[OverrideFact],
    policy: Policy,
    now: datetime,
    fraction: float,
    data: st.DataObject,
) -> None:
    """At any instant from `now` up to (not including) `valid_until`, the same facts
    resolve to the same answer as at `now`."""
    facts = _facts(specs, overrides_)
    e = resolve(facts, policy, now)
    now_us = to_us(now)
    if e.valid_until_us is None:
        later = [now_us + data.draw(st.integers(min_value=0, max_value=400 * DAY * 1_000_000))]
    else:
        assert e.valid_until_us > now_us
        span = e.valid_until_us - now_us
        later = [now_us + int(fraction * (span - 1)), e.valid_until_us - 1]
    for t_us in later:
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t_us)
        assert resolve(facts, policy, t) == e
