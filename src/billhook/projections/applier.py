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
from datetime import UTC, datetime
from typing import Protocol

from billhook.config import Settings
from billhook.domain.facts import (
    EndpointFact,
    EnforcementFact,
    Fact,
    LinkFact,
    OverrideFact,
    SubscriptionFact,
)
from billhook.domain.records import EventSubject, StoredEvent
from billhook.domain.reducers import merge_link, merge_override, merge_subscription
from billhook.domain.resolver import WorkspaceFacts, resolve
from billhook.domain.times import from_us, iso_to_us, iso_utc, parse_time
from billhook.errors import DecodeError, LogUnavailable, StoreUnavailable
from billhook.projections.changes import (
    TIME_CAUSE,
    enforcement_state,
    entitlement_state,
    event_cause,
)
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

    def put_endpoint(self, fact: EndpointFact, seq: int) -> None:
        """An endpoint added (stored as it now is) or removed (`active` False: dropped)."""
        ...

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

    def enforcement_mode(self) -> str: ...

    def last_change(self, workspace: str | None) -> str | None:
        """The state of the last change about `workspace` (None: the enforcement mode)."""
        ...

    def add_change(
        self, seq: int, workspace: str | None, at: str, cause: str, state: str
    ) -> None: ...

    def set_timer(self, workspace: str, due_us: int | None) -> None:
        """When `workspace`'s answer next changes by time alone (None: only by events)."""
        ...

    def due_timers(self, until_us: int) -> list[tuple[str, int]]:
        """(workspace, due) of every timer due at or before `until_us`, soonest first."""
        ...


def apply_in_order(facts: Facts, event: StoredEvent, settings: Settings) -> str:
    """Fire the time rules due before `event` was received, then apply it: what every
    projector (live, worker, replay) does with each event, in seq order."""
    fire_timers(facts, iso_to_us(event.received_at), event.seq - 1, settings)
    return apply_event(facts, event, settings)


def fire_timers(facts: Facts, until_us: int, seq: int, settings: Settings) -> int:
    """Write the changes time alone makes by `until_us`, as of log position `seq`: for each
    workspace whose timer is due, its answer at that instant. Returns how many fired."""
    fired = 0
    # Again until none is due: a rule that fires may set the next one before `until_us`
    # too (each strictly later than the last, so this ends).
    while due := facts.due_timers(until_us):
        for workspace, due_us in due:
            fired += 1
            at = from_us(due_us)
            entitlement = resolve(facts.workspace_facts(workspace, seq), settings.policy, at)
            state = entitlement_state(entitlement)
            if state != (facts.last_change(workspace) or _unknown_state(settings)):
                facts.add_change(seq, workspace, iso_utc(at), TIME_CAUSE, state)
            later = entitlement.valid_until_us
            facts.set_timer(workspace, later if later is not None and later > due_us else None)
    return fired


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
    enforcement = any(isinstance(fact, EnforcementFact) for fact in decoded)
    mode_before = facts.enforcement_mode() if enforcement else None
    for fact in decoded:
        touched.update(_put(facts, fact, event.seq))
        if event.type == RECONCILED and isinstance(fact, SubscriptionFact):
            facts.clear_thin_quarantines(fact.provider, fact.id, fact.customer, event.seq)
            # A cleared quarantine moves the answer even when the snapshot changed nothing.
            current = facts.subscription(fact.provider, fact.id)
            touched.update(_subscription_workspaces(facts, current or fact))
    if mode_before is not None:
        _record_enforcement(facts, event, mode_before)
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
    """Merge `fact` into the current version; the workspaces whose answer it may change.

    Nothing when the merge kept the current version as it was: the facts every answer is
    resolved from are the same, and what time alone changes, the timers fire (before each
    event), so no answer, history row or timer can move.
    """
    if isinstance(fact, SubscriptionFact):
        previous_sub = facts.subscription(fact.provider, fact.id)
        merged = merge_subscription(previous_sub, fact)
        if merged == previous_sub:
            return ()
        facts.put_subscription(merged, previous_sub, seq)
        touched = _subscription_workspaces(facts, merged)
        if previous_sub is not None and previous_sub.workspace:
            touched.add(previous_sub.workspace)
        return touched
    if isinstance(fact, LinkFact):
        previous_link = facts.link(fact.provider, fact.customer)
        kept = merge_link(previous_link, fact)
        if kept == previous_link:
            return ()
        facts.put_link(kept, previous_link, seq)
        if previous_link is not None and previous_link.workspace == kept.workspace:
            # A newer statement of the same link: kept for the order of later ones, but the
            # workspace has the same subscriptions, so no answer moves.
            return ()
        return {kept.workspace} | ({previous_link.workspace} if previous_link else set())
    if isinstance(fact, OverrideFact):
        previous_override = facts.override(fact.workspace, fact.kind)
        newest = merge_override(previous_override, fact)
        if newest == previous_override:
            return ()
        facts.put_override(newest, previous_override, seq)
        return {fact.workspace}
    if isinstance(fact, EndpointFact):
        # Where changes go, not what they are: no workspace's answer moves, no change is written.
        facts.put_endpoint(fact, seq)
        return ()
    facts.put_enforcement(fact, seq)
    return ()


def _subscription_workspaces(facts: Facts, sub: SubscriptionFact) -> set[str]:
    """The workspace `sub` names, or else the one its customer is linked to."""
    if sub.workspace:
        return {sub.workspace}
    link = facts.link(sub.provider, sub.customer) if sub.customer else None
    return {link.workspace} if link is not None else set()


def _record_enforcement(facts: Facts, event: StoredEvent, before: str) -> None:
    """A change without a workspace when the enforcement mode moved."""
    mode = facts.enforcement_mode()
    if mode != before:
        facts.add_change(
            event.seq, None, event.received_at, event_cause(event), enforcement_state(mode)
        )


def _record_history(
    facts: Facts, event: StoredEvent, workspaces: set[str], settings: Settings
) -> None:
    """Append a history row for each workspace whose (tier, source, status) changed, a
    change for each whose resolved answer changed (projections.changes), and set when
    time alone will next change it.

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
        answer = entitlement_state(entitlement)
        if answer != (facts.last_change(workspace) or _unknown_state(settings)):
            facts.add_change(event.seq, workspace, event.received_at, event_cause(event), answer)
        facts.set_timer(workspace, entitlement.valid_until_us)


# Per policy (kept, so its id stays its own): the state of a workspace billhook knows
# nothing about.
_UNKNOWN: dict[int, tuple[object, str]] = {}


def _unknown_state(settings: Settings) -> str:
    """The change state of a workspace billhook knows nothing about: no change to write."""
    policy = settings.policy
    known = _UNKNOWN.get(id(policy))
    if known is not None and known[0] is policy:
        return known[1]
    empty = WorkspaceFacts(
        workspace_id="",
        subscriptions=(),
        overrides=(),
        enforcement=settings.enforcement,
        as_of_seq=0,
    )
    state = entitlement_state(resolve(empty, policy, datetime.now(UTC)))
    if len(_UNKNOWN) > 64:
        _UNKNOWN.clear()
    _UNKNOWN[id(policy)] = (policy, state)
    return state
