"""What the resolver needs of the configuration, and nothing else.

A narrow, secret-free view built once from the settings: the tiers in order
with their features, what each Stripe price and Polar product grants, the
mode, the grace period and the time rules' allowances. The domain never sees
the settings object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol


class Grant(Protocol):
    """What a mapped price or product grants: a tier, billed every `interval` if known."""

    @property
    def tier(self) -> str: ...

    @property
    def interval(self) -> str | None: ...


@dataclass(frozen=True)
class Policy:
    """Tiers (ordered low → high, each with the features it adds) and what grants them."""

    tiers: Mapping[str, tuple[str, ...]]
    # Stripe price id → what it grants.
    prices: Mapping[str, Grant]
    # Polar product id → what it grants.
    products: Mapping[str, Grant]
    # Whether this deployment trusts live-mode events (`mode = "live"`).
    live: bool = False
    attention_grace_hours: float = 0
    # How long a canceling subscription keeps its tier past its end, waiting for
    # the provider's closing event.
    final_event_allowance_s: float = 3600
    # How long past its period end a subscription may go without a renewal
    # before it is reported as `stale_period:<id>`.
    stale_period_hours: float = 72

    @cached_property
    def tier_rank(self) -> Mapping[str, int]:
        """Each tier's position, low to high."""
        return {tier: i for i, tier in enumerate(self.tiers)}

    @cached_property
    def default_tier(self) -> str:
        """The first tier: the free default."""
        return next(iter(self.tiers))

    @cached_property
    def features_of(self) -> Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """For each tier, (the features it includes, every other feature), each sorted."""
        everything = {f for features in self.tiers.values() for f in features}
        result: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        included: set[str] = set()
        for tier, features in self.tiers.items():
            included |= set(features)
            result[tier] = (tuple(sorted(included)), tuple(sorted(everything - included)))
        return result
