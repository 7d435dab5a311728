"""The status, tier, next-action and precedence rules of SPEC §5, with Stripe payloads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from billhook.providers.billhook import ENFORCEMENT_SET, OVERRIDE_REVOKED, OVERRIDE_SET
from billhook.testing.settings import make_settings
from billhook.testing.stripe import stripe_checkout_session, stripe_customer, stripe_subscription
from tests.feed import NOW, T0, Feed

WS = {"workspace_id": "ws_1"}
TEAM_FEATURES = {"external_imports", "ai_imports", "team_sharing", "private_registry"}
SOLO_FEATURES = {"reads", "local_create", "package_install", "public_templates"}


@pytest.mark.parametrize(
    (
        "provider_status",
        "cancel_at_period_end",
        "cancel_at",
        "status",
        "tier",
        "next_action",
        "attention",
    ),
    [
        ("trialing", False, None, "trialing", "team", "none", None),
        ("active", False, None, "active", "team", "none", None),
        ("active", True, None, "canceling", "team", "resume_subscription", None),
        ("active", False, T0 + 86_400, "canceling", "team", "resume_subscription", None),
        ("trialing", True, None, "canceling", "team", "resume_subscription", None),
        ("past_due", False, None, "past_due", "team", "update_payment_method", "past_due"),
        ("unpaid", False, None, "unpaid", "team", "update_payment_method", "unpaid"),
        ("incomplete", False, None, "incomplete", "solo", "complete_checkout", "incomplete"),
        ("paused", False, None, "paused", "solo", "resume_subscription", None),
        ("canceled", False, None, "inactive", "solo", "resubscribe", None),
        ("incomplete_expired", False, None, "inactive", "solo", "resubscribe", None),
    ],
)
def test_stripe_status_table(
    feed: Feed,
    provider_status: str,
    cancel_at_period_end: bool,
    cancel_at: int | None,
    status: str,
    tier: str,
    next_action: str,
    attention: str | None,
) -> None:
    sub = stripe_subscription(
        status=provider_status,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=cancel_at,
        metadata=WS,
    )
    feed.stripe("customer.subscription.updated", sub)
    e = feed.entitlement("ws_1")
    assert (e.status, e.tier, e.next_action, e.attention) == (status, tier, next_action, attention)
    assert e.source == ("stripe" if tier == "team" else "default")
    assert [s.fact.status for s in e.subscriptions] == [status]
    granted = status in ("trialing", "active", "canceling")
    assert set(e.included) >= TEAM_FEATURES if granted else not TEAM_FEATURES & set(e.included)
    assert set(e.included) >= SOLO_FEATURES
    assert set(e.included) | set(e.unavailable) == SOLO_FEATURES | TEAM_FEATURES | {
        "approval_governance",
        "external_update_checks",
        "sso",
        "scim",
        "siem_export",
    }
    assert e.seats == (5 if tier == "team" else None)


def test_a_workspace_never_seen_is_on_the_default_tier(feed: Feed) -> None:
    e = feed.entitlement("ws_unknown")
    assert (e.tier, e.source, e.status, e.attention, e.next_action) == (
        "solo",
        "default",
        "none",
        None,
        "upgrade",
    )
    assert set(e.included) == SOLO_FEATURES
    assert e.seats is None


def test_period_end_read_from_items_and_from_old_api_subscriptions(feed: Feed) -> None:
    feed.stripe("customer.subscription.created", stripe_subscription(id="sub_new", metadata=WS))
    old = stripe_subscription(id="sub_old", metadata={"workspace_id": "ws_2"}, old_api=True)
    feed.stripe("customer.subscription.created", old)
    for workspace in ("ws_1", "ws_2"):
        (view,) = feed.entitlement(workspace).subscriptions
        assert view.current_period_end == "2026-12-01T00:00:00Z"
        assert (view.price, view.interval, view.tier) == ("price_team_monthly", "month", "team")


def test_multi_item_subscription_takes_the_highest_tier_and_its_seats(feed: Feed) -> None:
    items = (("price_team_monthly", 3), ("price_enterprise_yearly", 2), ("price_addon", 9))
    feed.stripe("customer.subscription.created", stripe_subscription(items=items, metadata=WS))
    e = feed.entitlement("ws_1")
    assert (e.tier, e.seats, e.problems) == ("enterprise", 2, ())
    assert e.subscriptions[0].price == "price_enterprise_yearly"
    assert {"sso", "scim", "ai_imports", "reads"} <= set(e.included)


def test_unmapped_prices_fail_closed(feed: Feed) -> None:
    items = (("price_unknown_b", 1), ("price_unknown_a", 1))
    feed.stripe("customer.subscription.created", stripe_subscription(items=items, metadata=WS))
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.next_action) == ("solo", "default", "contact_support")
    assert e.problems == ("unknown_price:price_unknown_a,price_unknown_b",)


def test_wrong_livemode_grants_nothing(feed: Feed) -> None:
    sub = stripe_subscription(metadata=WS)
    feed.stripe("customer.subscription.created", sub, event_id="evt_live_1", livemode=True)
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.next_action) == ("solo", "default", "contact_support")
    assert e.problems == ("mode_mismatch:evt_live_1",)


def test_a_link_arriving_after_the_subscription_counts(feed: Feed) -> None:
    feed.stripe("customer.subscription.created", stripe_subscription(customer="cus_9"), created=T0)
    feed.stripe(
        "customer.subscription.updated", stripe_subscription(customer="cus_9"), created=T0 + 5
    )
    assert feed.entitlement("ws_1").tier == "solo"
    checkout = stripe_checkout_session(customer="cus_9", client_reference_id="ws_1")
    feed.stripe("checkout.session.completed", checkout, created=T0 - 10)
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.status) == ("team", "stripe", "active")


@pytest.mark.parametrize(
    "link",
    [
        ("checkout.session.completed", stripe_checkout_session(customer="cus_7", metadata=WS)),
        ("customer.created", stripe_customer(id="cus_7", metadata=WS)),
        ("customer.updated", stripe_customer(id="cus_7", metadata=WS)),
    ],
)
def test_every_stripe_link_source(feed: Feed, link: tuple[str, dict[str, object]]) -> None:
    feed.stripe(link[0], dict(link[1]))
    feed.stripe("customer.subscription.created", stripe_subscription(customer="cus_7"))
    assert feed.entitlement("ws_1").tier == "team"


def test_subscription_metadata_wins_over_its_customers_link(feed: Feed) -> None:
    feed.stripe("customer.created", stripe_customer(id="cus_1", metadata={"workspace_id": "ws_a"}))
    sub = stripe_subscription(customer="cus_1", metadata={"workspace_id": "ws_b"})
    feed.stripe("customer.subscription.created", sub)
    assert feed.entitlement("ws_b").tier == "team"
    assert feed.entitlement("ws_a").tier == "solo"


# -- precedence (SPEC §5 resolution) --------------------------------------------------------


def _override(
    feed: Feed, kind: str, tier: str, expires_at: str | None = None, ws: str = "ws_1"
) -> int:
    return feed.operator(
        OVERRIDE_SET,
        workspace_id=ws,
        kind=kind,
        tier=tier,
        expires_at=expires_at,
        reason="test",
        actor="ops",
    )


def test_site_owner_override_wins_outright_whatever_its_tier(feed: Feed) -> None:
    feed.stripe("customer.subscription.created", stripe_subscription(metadata=WS))
    _override(feed, "enterprise_contract", "enterprise")
    _override(feed, "site_owner_override", "solo")
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.status, e.next_action) == (
        "solo",
        "site_owner_override",
        "active",
        "upgrade",
    )


def test_highest_tier_wins_among_overrides_and_subscriptions(feed: Feed) -> None:
    feed.stripe("customer.subscription.created", stripe_subscription(metadata=WS))
    _override(feed, "manual_pilot", "enterprise")
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source) == ("enterprise", "manual_pilot")


@pytest.mark.parametrize(
    ("kind", "winner"),
    [
        ("enterprise_contract", "enterprise_contract"),
        ("manual_pilot", "stripe"),
        ("explicit_solo", "stripe"),
    ],
)
def test_same_tier_ties_go_by_source_rank(feed: Feed, kind: str, winner: str) -> None:
    feed.stripe("customer.subscription.created", stripe_subscription(metadata=WS))
    _override(feed, kind, "team")
    assert feed.entitlement("ws_1").source == winner


def test_healthy_candidate_beats_one_in_attention(feed: Feed) -> None:
    feed.stripe(
        "customer.subscription.created", stripe_subscription(status="past_due", metadata=WS)
    )
    _override(feed, "manual_pilot", "team")
    e = feed.entitlement("ws_1")
    assert (e.source, e.status, e.attention, e.next_action) == (
        "manual_pilot",
        "active",
        None,
        "none",
    )
    assert "ai_imports" in e.included


def test_later_period_end_breaks_the_last_tie(feed: Feed) -> None:
    early = stripe_subscription(
        id="sub_early", items=(("price_team_monthly", 3),), period_end=1_796_083_200, metadata=WS
    )
    late = stripe_subscription(
        id="sub_late",
        customer="cus_2",
        items=(("price_team_yearly", 7),),
        period_end=1_798_761_600,
        metadata=WS,
    )
    for first, second in ((late, early), (early, late)):
        feed.stripe("customer.subscription.updated", first)
        feed.stripe("customer.subscription.updated", second)
        e = feed.entitlement("ws_1")
        # The seats are those of the subscription renewing later (2027-01-01).
        assert (e.tier, e.source, e.seats) == ("team", "stripe", 7)
        assert [s.current_period_end for s in e.subscriptions] == [
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ]


def test_explicit_solo_alone_is_its_source(feed: Feed) -> None:
    _override(feed, "explicit_solo", "solo")
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.status) == ("solo", "explicit_solo", "active")


def test_override_expiry_with_an_injected_clock(feed: Feed) -> None:
    _override(feed, "manual_pilot", "team", expires_at="2026-11-22T00:00:00Z")
    assert feed.entitlement("ws_1", NOW).source == "manual_pilot"
    just_before = NOW.replace(day=21, hour=23, minute=59, second=59)
    assert feed.entitlement("ws_1", just_before).tier == "team"
    at_expiry = NOW.replace(day=22, hour=0)
    e = feed.entitlement("ws_1", at_expiry)
    assert (e.tier, e.source, e.status) == ("solo", "default", "none")
    assert e.overrides[0].kind == "manual_pilot"


def test_revoking_an_override_appends_and_ends_it(feed: Feed) -> None:
    _override(feed, "enterprise_contract", "enterprise")
    feed.operator(
        OVERRIDE_REVOKED, workspace_id="ws_1", kind="enterprise_contract", reason="x", actor="ops"
    )
    e = feed.entitlement("ws_1")
    assert (e.tier, e.source, e.overrides) == ("solo", "default", ())
    assert feed.log.head_seq() == 2


def test_enforcement_set_by_an_operator_event(feed: Feed) -> None:
    assert feed.entitlement("ws_1").enforcement == "observe"
    feed.operator(ENFORCEMENT_SET, mode="enforce", approved_by="cfo", reason="rollout")
    assert feed.entitlement("ws_1").enforcement == "enforce"


def test_attention_grace_period_with_an_injected_clock(tmp_path: Path) -> None:
    feed = Feed(make_settings(tmp_path / "data", attention_grace_hours=24))
    try:
        feed.stripe("customer.subscription.created", stripe_subscription(metadata=WS), created=T0)
        feed.stripe(
            "customer.subscription.updated",
            stripe_subscription(status="past_due", metadata=WS),
            created=T0 + 60,
        )
        # A later past_due snapshot does not restart the grace period.
        feed.stripe(
            "customer.subscription.updated",
            stripe_subscription(status="past_due", metadata=WS),
            created=T0 + 7200,
        )
        began = NOW - timedelta(seconds=3600) + timedelta(seconds=60)
        within = feed.entitlement("ws_1", began + timedelta(hours=23, minutes=59))
        assert (within.tier, within.attention, within.paid_blocked) == ("team", "past_due", False)
        assert "ai_imports" in within.included
        after = feed.entitlement("ws_1", began + timedelta(hours=24))
        assert (after.tier, after.attention, after.paid_blocked) == ("team", "past_due", True)
        assert "ai_imports" not in after.included
        assert set(after.included) == SOLO_FEATURES
        # Recovery ends the run: a new past_due later starts a new grace period.
        feed.stripe(
            "customer.subscription.updated", stripe_subscription(metadata=WS), created=T0 + 9000
        )
        recovered = feed.entitlement("ws_1", began + timedelta(hours=30))
        assert (recovered.status, recovered.attention, recovered.paid_blocked) == (
            "active",
            None,
            False,
        )
    finally:
        feed.close()


def test_grace_zero_blocks_paid_features_at_once(feed: Feed) -> None:
    feed.stripe(
        "customer.subscription.created", stripe_subscription(status="past_due", metadata=WS)
    )
    e = feed.entitlement("ws_1")
    assert (e.tier, e.paid_blocked) == ("team", True)
    assert set(e.included) == SOLO_FEATURES
