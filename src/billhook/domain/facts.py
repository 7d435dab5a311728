"""The facts projections keep: frozen values, no behaviour but their ordering.

Facts hold what providers and operators said (prices, statuses, ids), never
what that means for a workspace: tiers, grants and features are decided at
read time by the resolver, so a fixed price map needs no replay.
"""

from __future__ import annotations

from dataclasses import dataclass

from billhook.domain.values import quick_init

# Normalized statuses that keep the tier but ask for attention (docs/entitlements.md).
ATTENTION_STATUSES = frozenset({"past_due", "unpaid"})
# Normalized statuses under which a subscription grants its tier.
GRANTING_STATUSES = frozenset({"trialing", "active", "canceling", "past_due", "unpaid"})
# Override kinds, as operators set them (docs/entitlements.md).
OVERRIDE_KINDS = ("site_owner_override", "enterprise_contract", "manual_pilot", "explicit_solo")


@quick_init
@dataclass(frozen=True, order=True)
class Order:
    """Where a snapshot stands among the snapshots of one subscription.

    Compared as a tuple: the provider's time (microseconds), then terminal
    before non-terminal at the same time (a terminal snapshot is never replaced
    by a same-time live one), then Stripe's created < updated < deleted rank,
    then the log seq. A total order, so keeping the maximum is commutative.
    """

    time_us: int
    terminal: bool
    rank: int
    seq: int


@quick_init
@dataclass(frozen=True)
class Item:
    """One Stripe subscription item: a price, its quantity and billing period."""

    price: str
    quantity: int | None
    current_period_end: str | None


@quick_init
@dataclass(frozen=True)
class SubscriptionFact:
    """The newest snapshot of one provider subscription, plus its attention record.

    `healthy_us` is the newest time it was seen out of attention and
    `attention_us` every later time it was seen in attention: kept as a set so
    that merging snapshots in any order gives the same record.
    """

    provider: str
    id: str
    customer: str | None
    workspace: str | None
    status: str
    provider_status: str
    product: str | None
    items: tuple[Item, ...]
    seats: int | None
    cancel_at_period_end: bool
    current_period_end: str | None
    livemode: int | None
    event_id: str
    order: Order
    healthy_us: int | None = None
    attention_us: tuple[int, ...] = ()

    @property
    def attention_since_us(self) -> int | None:
        """When the current run of past_due/unpaid began, if it is in one."""
        if self.status in ATTENTION_STATUSES and self.attention_us:
            return self.attention_us[0]
        return None


@quick_init
@dataclass(frozen=True)
class LinkFact:
    """A provider customer belongs to a workspace, as of `(time_us, seq)`."""

    provider: str
    customer: str
    workspace: str
    time_us: int
    seq: int


@dataclass(frozen=True)
class OverrideFact:
    """An operator's override for a workspace; `active` is False once revoked."""

    workspace: str
    kind: str
    tier: str | None
    expires_at: str | None
    active: bool
    reason: str
    actor: str
    seq: int


@dataclass(frozen=True)
class EnforcementFact:
    """The enforcement mode an operator set, who approved it and why."""

    mode: str
    approved_by: str
    reason: str
    seq: int


@dataclass(frozen=True)
class EndpointFact:
    """An outbound endpoint an operator added (SPEC §6b); `active` is False once removed.

    Its signing secrets are never here: they stay out of the log, in the outbox
    store. `workspaces` empty: changes about every workspace go to it. A removal
    names only the endpoint, so its `url` is "" and its `workspaces` empty.
    """

    endpoint_id: str
    url: str
    workspaces: tuple[str, ...]
    active: bool
    seq: int


Fact = SubscriptionFact | LinkFact | OverrideFact | EnforcementFact | EndpointFact
