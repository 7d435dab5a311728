"""Applying one logged event to the projection: one algorithm, two storages.

The incremental projector keeps its facts in SQLite (`projections.store`);
a replay folds the whole log in memory and writes the rows in bulk
(`projections.rebuild`). Both run :func:`apply_event` against the
:class:`Facts` port, so a replay produces exactly the rows the live projector
would have, row for row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from billhook.config import Settings
from billhook.domain.facts import EnforcementFact, Fact, LinkFact, OverrideFact, SubscriptionFact
from billhook.domain.records import EventSubject, StoredEvent
from billhook.domain.reducers import merge_link, merge_override, merge_subscription
from billhook.domain.resolver import WorkspaceFacts, resolve
from billhook.domain.times import parse_time
from billhook.errors import DecodeError, LogUnavailable, StoreUnavailable
from billhook.providers.billhook import RECONCILED
from billhook.providers.decode import decode, subject, understands

logger = logging.getLogger(__name__)
# Where no process configured logging (a CLI command catching up), quarantines stay out of
# its output rather than reaching Python's last-resort stderr handler as bare words.
logger.addHandler(logging.NullHandler())

# Longest quarantine message kept; errors are short, this bounds a pathological one.
MAX_ERROR_CHARS = 500
# Raised while applying an event but not because of it: retrying later may succeed,
# so the event is never quarantined for these.
NOT_THE_EVENTS_FAULT: tuple[type[Exception], ...] = (
    MemoryError,
    StoreUnavailable,
    LogUnavailable,
)


class Facts(Protocol):
    """The current facts of a projection, and where new versions and rows go."""

    def subscription(self, provider: str, id: str) -> SubscriptionFact | None: ...

    def put_subscription(
        self, fact: SubscriptionFact, previous: SubscriptionFact | None, seq: int
    ) -> None: ...

    def link(self, provider: str, customer: str) -> LinkFact | None: ...

    def put_link(self, fact: LinkFact, previous: LinkFact | None, seq: int) -> None: ...

    def override(self, workspace: str, kind: str) -> OverrideFact | None: ...

    def put_override(self, fact: OverrideFact, previous: OverrideFact | None, seq: int) -> None: ...

    def put_enforcement(self, fact: EnforcementFact, seq: int) -> None: ...

    def workspace_facts(self, workspace: str, seq: int) -> WorkspaceFacts:
        """For the history: quarantined events, which change no (tier, source, status),
        may be left out."""
        ...

    def last_history(self, workspace: str) -> tuple[str, str, str] | None: ...

    def add_history(
        self, workspace: str, event: StoredEvent, state: tuple[str, str, str]
    ) -> None: ...

    def quarantine(self, event: StoredEvent, error: str, subject: EventSubject) -> None: ...

    def clear_thin_quarantines(
        self, provider: str, subscription: str, customer: str | None, seq: int
    ) -> None:
        """Clear, as of `seq`, the quarantined `billhook.thin_unfetched` records about this
        subscription or customer: a snapshot of it has been fetched since."""
        ...


def apply_event(facts: Facts, event: StoredEvent, settings: Settings) -> str:
    """Apply `event`; returns `applied`, `skipped` or `quarantined`.

    A payload that does not decode is quarantined here, before anything is
    written. Any other exception propagates, possibly after `facts` took part
    of the event's changes: the caller undoes them (a SAVEPOINT in the store,
    a fresh incremental build in a rebuild) before it quarantines the event
    with :func:`unapplied_reason`, if :func:`blames_the_event` says so.
    """
    if not understands(event):
        return "skipped"
    try:
        decoded = decode(event, settings.workspace_key)
    except DecodeError as e:
        quarantine(facts, event, str(e)[:MAX_ERROR_CHARS], settings)
        return "quarantined"
    touched: set[str] = set()
    for fact in decoded:
        touched.update(_put(facts, fact, event.seq))
        if event.type == RECONCILED and isinstance(fact, SubscriptionFact):
            facts.clear_thin_quarantines(fact.provider, fact.id, fact.customer, event.seq)
    _record_history(facts, event, touched, settings)
    return "applied"


def quarantine(facts: Facts, event: StoredEvent, reason: str, settings: Settings) -> None:
    """Quarantine `event` with `reason`, and with whom it is about: a workspace's
    entitlement lists it among its problems (docs/entitlements.md)."""
    facts.quarantine(event, reason, subject(event, settings.workspace_key))


def log_quarantined(event: StoredEvent, reason: str) -> None:
    """One warning per quarantined event, once its quarantine is committed: ids and the
    reason (which names a field, never a value), nothing of the payload."""
    fields = {
        "seq": event.seq,
        "provider": event.provider,
        "type": event.type,
        "event_id": event.event_id,
        "reason": reason,
    }
    logger.warning("quarantined", extra={"fields": fields})


def blames_the_event(error: Exception) -> bool:
    """Whether `error`, raised while applying one event, is that event's doing.

    Storage-specific faults (a locked or full disk) are for the storage to
    tell apart; this only rules out what no event can cause.
    """
    return not isinstance(error, NOT_THE_EVENTS_FAULT)


def unapplied_reason(error: Exception) -> str:
    """The quarantine reason of an event whose application raised `error`.

    Names only the exception's type: its text may quote a payload value
    (docs/entitlements.md, privacy).
    """
    return f"could not be applied ({error.__class__.__name__})"


def _put(facts: Facts, fact: Fact, seq: int) -> Iterable[str]:
    """Merge `fact` into the current version; the workspaces whose answer it may change."""
    if isinstance(fact, SubscriptionFact):
        previous_sub = facts.subscription(fact.provider, fact.id)
        merged = merge_subscription(previous_sub, fact)
        if merged != previous_sub:
            facts.put_subscription(merged, previous_sub, seq)
        touched = {merged.workspace} if merged.workspace else set()
        if previous_sub is not None and previous_sub.workspace:
            touched.add(previous_sub.workspace)
        if merged.customer and not merged.workspace:
            link = facts.link(merged.provider, merged.customer)
            if link is not None:
                touched.add(link.workspace)
        return touched
    if isinstance(fact, LinkFact):
        previous_link = facts.link(fact.provider, fact.customer)
        kept = merge_link(previous_link, fact)
        if kept != previous_link:
            facts.put_link(kept, previous_link, seq)
        return {kept.workspace} | ({previous_link.workspace} if previous_link else set())
    if isinstance(fact, OverrideFact):
        previous_override = facts.override(fact.workspace, fact.kind)
        newest = merge_override(previous_override, fact)
        if newest != previous_override:
            facts.put_override(newest, previous_override, seq)
        return {fact.workspace}
    facts.put_enforcement(fact, seq)
    return ()


def _record_history(
    facts: Facts, event: StoredEvent, workspaces: set[str], settings: Settings
) -> None:
    """Append a history row for each workspace whose (tier, source, status) changed.

    A workspace with no history yet stands where an unknown one does (the
    default tier, nothing granting it): an event that leaves it there, such as
    a customer linked before any subscription, is no change.
    """
    if not workspaces:
        return
    at = parse_time(event.received_at)
    unknown = (settings.default_tier, "default", "none")
    for workspace in sorted(workspaces):
        entitlement = resolve(facts.workspace_facts(workspace, event.seq), settings.policy, at)
        state = (entitlement.tier, entitlement.source, entitlement.status)
        if (facts.last_history(workspace) or unknown) != state:
            facts.add_history(workspace, event, state)
