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
    healthy = previous.healthy_us
    if healthy is None or (new.healthy_us is not None and new.healthy_us > healthy):
        healthy = new.healthy_us
    attention: tuple[int, ...] = ()
    if previous.attention_us or new.attention_us:
        seen = {*previous.attention_us, *new.attention_us}
        if healthy is not None:
            # A run of past_due ends when the subscription is seen healthy after it.
            seen = {t for t in seen if t > healthy}
        attention = tuple(sorted(seen))
    if newest.healthy_us == healthy and newest.attention_us == attention:
        return newest  # the same value `replace` would build, without building it
    return replace(newest, healthy_us=healthy, attention_us=attention)


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
