"""Pure folds of facts: `merge(previous, new) -> kept`.

Each merge keeps the maximum under a total order (or the union of attention
records), so folding one entity's facts in any order, with any duplicates,
gives the same result. No clock, I/O, config or logging in here.
"""

from __future__ import annotations

from dataclasses import replace

from billhook.domain.facts import LinkFact, OverrideFact, SubscriptionFact


def merge_subscription(
    previous: SubscriptionFact | None, new: SubscriptionFact
) -> SubscriptionFact:
    """The newest snapshot of the two, carrying both snapshots' attention record."""
    if previous is None:
        return new
    newest = new if new.order > previous.order else previous
    healthy = max((t for t in (previous.healthy_us, new.healthy_us) if t is not None), default=None)
    attention = {*previous.attention_us, *new.attention_us}
    if healthy is not None:
        # A run of past_due ends when the subscription is seen healthy after it.
        attention = {t for t in attention if t > healthy}
    return replace(newest, healthy_us=healthy, attention_us=tuple(sorted(attention)))


def merge_link(previous: LinkFact | None, new: LinkFact) -> LinkFact:
    """The newest statement of which workspace a customer belongs to."""
    if previous is None:
        return new
    return new if (new.time_us, new.seq) > (previous.time_us, previous.seq) else previous


def merge_override(previous: OverrideFact | None, new: OverrideFact) -> OverrideFact:
    """Operator events are billhook's own: the log's order is their true order."""
    if previous is None or new.seq > previous.seq:
        return new
    return previous
