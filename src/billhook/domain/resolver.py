"""What a workspace may do right now: a pure function of facts, config and `now`.

Precedence (docs/entitlements.md): an unexpired site-owner override wins outright; else
the highest tier among unexpired overrides and granting subscriptions, ties to
the healthy candidate, then by source rank, then the later period end; else
the default tier. Fail closed: a subscription whose prices are all unmapped,
or whose event came in the wrong livemode, grants nothing and is a problem. An
event about the workspace that could not be applied (quarantined) is a problem
too: what billhook knows may be incomplete, so the next action is support's.

Two time rules guard against a provider event that never arrives: a canceling
subscription stops granting once its period end plus `final_event_allowance_s`
has passed (`final_event_missing:<id>`), and a subscription still granting long
after its period ended without a renewal is reported (`stale_period:<id>`) but
keeps its tier. Either is healed by fetching the subscription from the provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from billhook.domain.facts import (
    ATTENTION_STATUSES,
    GRANTING_STATUSES,
    OverrideFact,
    SubscriptionFact,
)
from billhook.domain.policy import Policy
from billhook.domain.times import iso_to_us, to_us
from billhook.domain.values import quick_init

# The problem a quarantined event about the workspace adds, before its seq.
QUARANTINED = "quarantined"
# The problem of a canceling subscription past its end and allowance, with no closing event.
FINAL_EVENT_MISSING = "final_event_missing"
# The problem of a granting subscription whose period ended long ago with no renewal.
STALE_PERIOD = "stale_period"
# Tie-break between candidates of the same tier and health (docs/entitlements.md, rule 2).
SOURCE_RANK = {
    "enterprise_contract": 4,
    "stripe": 3,
    "polar": 3,
    "manual_pilot": 2,
    "explicit_solo": 1,
}
SITE_OWNER = "site_owner_override"
US_PER_HOUR = 3_600_000_000
US_PER_SECOND = 1_000_000


@quick_init
@dataclass(frozen=True)
class WorkspaceFacts:
    """Everything projected about one workspace, as of `as_of_seq`; `quarantined` are
    the seqs of events about it that could not be applied."""

    workspace_id: str
    subscriptions: Sequence[SubscriptionFact]
    overrides: Sequence[OverrideFact]
    enforcement: str
    as_of_seq: int
    quarantined: Sequence[int] = ()


@quick_init
@dataclass(frozen=True)
class SubscriptionView:
    """A subscription as the API shows it, with the tier the config gives it."""

    fact: SubscriptionFact
    tier: str | None
    price: str | None
    interval: str | None
    seats: int | None
    current_period_end: str | None
    problem: str | None


@quick_init
@dataclass(frozen=True)
class Candidate:
    tier: str
    source: str
    status: str
    attention: bool
    period_end: str | None
    seats: int | None
    attention_since_us: int | None = None


@quick_init
@dataclass(frozen=True)
class Entitlement:
    workspace_id: str
    tier: str
    source: str
    status: str
    attention: str | None
    next_action: str
    included: tuple[str, ...]
    unavailable: tuple[str, ...]
    seats: int | None
    subscriptions: tuple[SubscriptionView, ...]
    overrides: tuple[OverrideFact, ...]
    problems: tuple[str, ...]
    enforcement: str
    as_of_seq: int
    # Paid features are withheld because billing needs attention past the grace period.
    paid_blocked: bool
    # The first moment at which the same facts resolve differently (an override
    # expires, a grace period ends, a time rule fires); None when only new facts
    # can change it.
    valid_until_us: int | None = None


@quick_init
@dataclass(frozen=True)
class TimeRule:
    """What the time rules say of one subscription at one instant.

    `ended`: a canceling subscription past its end and allowance, which grants
    nothing any more. `problem`: `final_event_missing:<id>` or
    `stale_period:<id>`, the sign that the provider's newer state was missed.
    `fires_at_us`: when the rule will next change its answer, if ever.
    """

    ended: bool = False
    problem: str | None = None
    fires_at_us: int | None = None


# What the time rules say of a subscription they do not concern.
NO_RULE = TimeRule()


def expired(override: OverrideFact, now_us: int) -> bool:
    """Whether `override` has an expiry and it is at or before `now_us`."""
    return override.expires_at is not None and iso_to_us(override.expires_at) <= now_us


def time_rule(view: SubscriptionView, policy: Policy, now_us: int) -> TimeRule:
    """The time rules (docs/entitlements.md) for a subscription at `now_us`.

    Only a subscription whose status grants and whose period end is known is
    concerned: if canceling, it ends at its period end plus
    `final_event_allowance_s`; otherwise it is stale from its period end plus
    `stale_period_hours`, and still grants.
    """
    fact = view.fact
    end_us = _period_end_us(view)
    if fact.status not in GRANTING_STATUSES or end_us is None:
        return NO_RULE
    if fact.status == "canceling":
        limit = end_us + int(policy.final_event_allowance_s * US_PER_SECOND)
        if now_us >= limit:
            return TimeRule(True, f"{FINAL_EVENT_MISSING}:{fact.id}")
        return TimeRule(fires_at_us=limit)
    limit = end_us + int(policy.stale_period_hours * US_PER_HOUR)
    if now_us >= limit:
        return TimeRule(problem=f"{STALE_PERIOD}:{fact.id}")
    return TimeRule(fires_at_us=limit)


def refresh_wanted(entitlement: Entitlement) -> tuple[SubscriptionView, ...]:
    """The subscriptions of `entitlement` a time rule flagged: fetching them from
    the provider (by `fact.provider`, `fact.customer`, `fact.id`) settles them."""
    flagged = {
        problem.partition(":")[2]
        for problem in entitlement.problems
        if problem.startswith((f"{FINAL_EVENT_MISSING}:", f"{STALE_PERIOD}:"))
    }
    return tuple(v for v in entitlement.subscriptions if v.fact.id in flagged)


def _period_end_us(view: SubscriptionView) -> int | None:
    """The subscription's period end: the granting item's, else the latest one known."""
    if view.current_period_end is not None:
        return iso_to_us(view.current_period_end)
    ends = [iso_to_us(i.current_period_end) for i in view.fact.items if i.current_period_end]
    return max(ends, default=None)


def view(fact: SubscriptionFact, policy: Policy) -> SubscriptionView:
    """The tier, price, seats and problem the config gives a subscription."""
    rank = policy.tier_rank
    granting = fact.status in GRANTING_STATUSES
    if fact.provider == "stripe":
        best = None
        for item in fact.items:
            mapping = policy.prices.get(item.price)
            if mapping is not None and (best is None or rank[mapping.tier] > rank[best[1].tier]):
                best = (item, mapping)
        mismatch = fact.livemode is not None and bool(fact.livemode) != policy.live
        if mismatch:
            problem = f"mode_mismatch:{fact.event_id}" if granting else None
            return SubscriptionView(fact, None, None, None, None, fact.current_period_end, problem)
        if best is None:
            unknown = ",".join(sorted({i.price for i in fact.items})) or "none"
            problem = f"unknown_price:{unknown}" if granting else None
            return SubscriptionView(fact, None, None, None, None, fact.current_period_end, problem)
        item, mapping = best
        period_end = item.current_period_end or fact.current_period_end
        return SubscriptionView(
            fact, mapping.tier, item.price, mapping.interval, item.quantity, period_end, None
        )
    product = policy.products.get(fact.product or "")
    if product is None:
        problem = f"unknown_price:{fact.product or 'none'}" if granting else None
        return SubscriptionView(
            fact, None, fact.product, None, None, fact.current_period_end, problem
        )
    return SubscriptionView(
        fact,
        product.tier,
        fact.product,
        product.interval,
        fact.seats,
        fact.current_period_end,
        None,
    )


def resolve(facts: WorkspaceFacts, policy: Policy, now: datetime) -> Entitlement:
    """The entitlement of `facts.workspace_id` at `now`."""
    now_us = to_us(now)
    rank = policy.tier_rank
    default = policy.default_tier
    subscriptions = facts.subscriptions
    views: tuple[SubscriptionView, ...]
    if len(subscriptions) == 1:  # most workspaces: nothing to sort
        views = (view(subscriptions[0], policy),)
    else:
        views = tuple(
            sorted(
                (view(f, policy) for f in subscriptions),
                key=lambda v: (v.fact.provider, v.fact.id),
            )
        )
    ruled = [(v, time_rule(v, policy, now_us)) for v in views]
    # A canceling subscription past its end and allowance is over, whatever its last
    # snapshot says: it grants nothing and its own fail-closed problem no longer applies.
    live_views = [v for v, rule in ruled if not rule.ended]
    # Sorted, so that equal candidates resolve the same whatever order facts come in.
    live_overrides = (
        sorted(
            (o for o in facts.overrides if o.active and o.tier in rank and not expired(o, now_us)),
            key=lambda o: o.kind,
        )
        if facts.overrides
        else []
    )

    site_owner = [o for o in live_overrides if o.kind == SITE_OWNER]
    candidates: list[Candidate]
    if site_owner:
        candidates = [
            Candidate(site_owner[-1].tier or default, SITE_OWNER, "active", False, None, None)
        ]
    else:
        candidates = [
            Candidate(o.tier or default, o.kind, "active", False, o.expires_at, None)
            for o in live_overrides
        ]
        candidates += [
            Candidate(
                v.tier,
                v.fact.provider,
                v.fact.status,
                v.fact.status in ATTENTION_STATUSES,
                v.current_period_end,
                v.seats,
                v.fact.attention_since_us,
            )
            for v in live_views
            if v.tier is not None and v.fact.status in GRANTING_STATUSES
        ]
    # One candidate, one subscription: most workspaces, where `max` has nothing to compare.
    winner = (
        candidates[0]
        if len(candidates) == 1
        else max(
            candidates,
            key=lambda c: (
                rank[c.tier],
                not c.attention,
                SOURCE_RANK.get(c.source, 0),
                c.period_end or "",
            ),
            default=None,
        )
    )
    latest = (
        ruled[0] if len(ruled) == 1 else max(ruled, key=lambda vr: vr[0].fact.order, default=None)
    )
    fail_closed = [v.problem for v in live_views if v.problem is not None]
    problems = tuple(
        sorted(
            [
                *fail_closed,
                *(rule.problem for _, rule in ruled if rule.problem is not None),
                *(f"{QUARANTINED}:{seq}" for seq in facts.quarantined),
            ]
        )
    )

    grace_us = int(policy.attention_grace_hours * US_PER_HOUR)
    if winner is None:
        if latest is None:
            status = "none"
        else:
            status = "inactive" if latest[1].ended else latest[0].fact.status
        tier, source, seats, paid_blocked = default, "default", None, False
        attention = status if status in ("past_due", "unpaid", "incomplete") else None
    else:
        status, tier, source, seats = winner.status, winner.tier, winner.source, winner.seats
        attention = winner.status if winner.attention else None
        since = winner.attention_since_us
        paid_blocked = winner.attention and (since is None or now_us >= since + grace_us)

    included, unavailable = policy.features_of[default if paid_blocked else tier]
    boundaries = [iso_to_us(o.expires_at) for o in live_overrides if o.expires_at is not None]
    if winner is not None and winner.attention and not paid_blocked and winner.attention_since_us:
        boundaries.append(winner.attention_since_us + grace_us)
    boundaries += [rule.fires_at_us for _, rule in ruled if rule.fires_at_us is not None]
    return Entitlement(
        workspace_id=facts.workspace_id,
        tier=tier,
        source=source,
        status=status,
        attention=attention,
        next_action=_next_action(winner, status, fail_closed, default, bool(facts.quarantined)),
        included=included,
        unavailable=unavailable,
        seats=seats,
        subscriptions=views,
        overrides=tuple(sorted((o for o in facts.overrides if o.active), key=lambda o: o.kind))
        if facts.overrides
        else (),
        problems=problems,
        enforcement=facts.enforcement,
        as_of_seq=facts.as_of_seq,
        paid_blocked=paid_blocked,
        valid_until_us=min(boundaries, default=None),
    )


def _next_action(
    winner: Candidate | None,
    status: str,
    problems: Sequence[str],
    default: str,
    quarantined: bool,
) -> str:
    if quarantined:
        # Whatever the facts say, an event about the workspace is missing from them.
        return "contact_support"
    if winner is not None:
        if winner.attention:
            return "update_payment_method"
        if winner.status == "canceling":
            return "resume_subscription"
        return "none" if winner.tier != default else "upgrade"
    if problems:
        return "contact_support"
    return {
        "incomplete": "complete_checkout",
        "paused": "resume_subscription",
        "inactive": "resubscribe",
        "past_due": "update_payment_method",
        "unpaid": "update_payment_method",
    }.get(status, "upgrade")


def required_tier(feature: str, tiers: Mapping[str, Sequence[str]]) -> str | None:
    """The lowest tier that includes `feature`, or None when no tier does."""
    for tier, features in tiers.items():
        if feature in features:
            return tier
    return None
