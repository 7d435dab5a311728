"""A workspace's support report: `billhook diagnose WORKSPACE` and the console's Diagnose page.

Short enough to paste into a ticket, and safe to: ids, statuses, tiers, seqs,
event types and times, problems and enforcement — never a payload, a secret, a
token or a local path (SPEC §10). It is built in one place, :func:`diagnose`,
from

- the projection: the workspace's facts resolved now (the entitlement card),
  its linked customers, its history (the events that changed it) and its
  quarantined events with their error;
- the log's event metadata (:meth:`get`: type, event id, received and
  occurred times); the payload a row carries is never read;
- the impact counts: the checks refused, or that would be, in the last
  IMPACT_DAYS days.

:func:`diagnosis_lines` renders it as text, the same lines in the CLI and the
console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from billhook.api import schemas
from billhook.api.impact import first_day
from billhook.config import Settings
from billhook.domain.resolver import resolve
from billhook.domain.times import iso_utc
from billhook.log.backend import Log
from billhook.projections.impact import ImpactStore
from billhook.projections.store import HistoryRow, ProjectionStore

# How many of the workspace's latest history events the report lists.
MAX_EVENTS = 20
# How many days of refused checks the report counts.
IMPACT_DAYS = 30
# What to do about a problem, by its prefix (the console's workspace page says the same).
FIXES = {
    "unknown_price": "map this price in [stripe.prices] or [polar.products], then billhook replay",
    "mode_mismatch": "an event of the other mode (test/live): check [billhook] mode and the"
    " webhook endpoint",
    "quarantined": "see the quarantined events below; fix the cause, then billhook replay",
}
# The fix for any other problem: a provider event was most likely missed.
DEFAULT_FIX = "billhook reconcile --workspace {workspace}"


@dataclass(frozen=True)
class EventLine:
    """One logged event about the workspace, by its metadata only.

    `change` is (tier, source, status) after it, for an event in the history;
    `error` the reducer's error, for a quarantined one.
    """

    seq: int
    provider: str
    type: str
    event_id: str
    received_at: str | None
    occurred_at: str | None
    change: tuple[str, str, str] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Refused:
    """Checks of `action` refused for `reason` (or that would be, when observing)."""

    action: str
    reason: str
    checks: int


@dataclass(frozen=True)
class Diagnosis:
    workspace_id: str
    generated_at: str
    mode: str
    log_head: int
    projection_seq: int
    entitlement: schemas.Entitlement
    customers: tuple[tuple[str, str], ...]
    events: tuple[EventLine, ...]
    events_total: int
    quarantined: tuple[EventLine, ...]
    impact_since: str
    refused: tuple[Refused, ...]


def diagnose(
    workspace: str,
    settings: Settings,
    log: Log,
    store: ProjectionStore,
    impact: ImpactStore | None,
    *,
    now: datetime,
) -> Diagnosis:
    """The report on `workspace` as it stands at `now` (the projection's latest state).

    `impact` None (no impact store at hand) reports no refused checks.
    """
    facts = store.workspace_facts(workspace)
    card = schemas.entitlement_answer(resolve(facts, settings.policy, now), now)
    history = store.history(workspace)
    shown = history[-MAX_EVENTS:]
    errors = {row.seq: row for row in store.quarantine()}
    quarantined = tuple(
        replace(_event(log, seq, q.provider, q.type, q.event_id), error=q.error)
        for seq in facts.quarantined
        if (q := errors.get(seq)) is not None
    )
    since = first_day(now.date(), IMPACT_DAYS).isoformat()
    refused = (
        tuple(
            Refused(row.action, row.reason, row.checks)
            for row in impact.blocked(since)
            if row.workspace == workspace
        )
        if impact is not None
        else ()
    )
    return Diagnosis(
        workspace_id=workspace,
        generated_at=iso_utc(now),
        mode=settings.mode,
        log_head=log.head_seq(),
        projection_seq=store.checkpoint(),
        entitlement=card,
        customers=tuple(sorted(store.customers_of(workspace))),
        events=tuple(_history_event(log, row) for row in reversed(shown)),
        events_total=len(history),
        quarantined=quarantined,
        impact_since=since,
        refused=refused,
    )


def _event(log: Log, seq: int, provider: str, type_: str, event_id: str) -> EventLine:
    """The event's metadata from the log (its payload is not used)."""
    stored = log.get(seq)
    if stored is None:  # not in this log (a projection built from another): what is known
        return EventLine(seq, provider, type_, event_id, None, None)
    return EventLine(
        seq, stored.provider, stored.type, stored.event_id, stored.received_at, stored.occurred_at
    )


def _history_event(log: Log, row: HistoryRow) -> EventLine:
    line = _event(log, row.seq, row.provider, row.type, row.event_id)
    return replace(
        line, received_at=line.received_at or row.at, change=(row.tier, row.source, row.status)
    )


def fix_for(problem: str, workspace: str) -> str:
    """What an operator does about `problem`."""
    prefix = problem.split(":", 1)[0]
    return FIXES.get(prefix, DEFAULT_FIX.format(workspace=workspace))


def diagnosis_lines(report: Diagnosis) -> list[str]:
    """The report as text: a header, then one short section per part."""
    e = report.entitlement
    w = report.workspace_id
    lag = report.log_head - report.projection_seq
    out = [
        f"workspace {w}, diagnosed at {report.generated_at}",
        f"mode {report.mode}; log head seq {report.log_head}; projection at seq"
        f" {report.projection_seq}" + (f" ({lag} behind)" if lag > 0 else " (caught up)"),
        f"entitlement: tier {e.tier}, source {e.source}, status {e.status},"
        f" attention {e.attention or 'none'}, next action {e.next_action},"
        f" seats {e.seats.purchased if e.seats else 'no limit'}, as of seq {e.as_of_seq}",
        f"features: {', '.join(e.features.included) or 'none'} included;"
        f" {', '.join(e.features.unavailable) or 'none'} unavailable",
        f"enforcement: {e.enforcement}",
    ]
    out += _section(
        f"checks refused or that would be, since {report.impact_since}",
        [f"{r.action} {r.reason}: {r.checks} check(s)" for r in report.refused],
    )
    out += _section(
        "customers", [f"{provider} {customer}" for provider, customer in report.customers]
    )
    out += _section(
        "subscriptions",
        [
            f"{s.provider} {s.id}"
            + (f" (account {s.account})" if s.account else "")
            + f" customer {s.customer or '-'}: tier {s.tier or 'unmapped'}, status {s.status},"
            f" price {s.price or '-'}, every {s.interval or '-'},"
            f" period end {s.current_period_end or '-'},"
            f" cancels at period end {'yes' if s.cancel_at_period_end else 'no'}"
            for s in e.subscriptions
        ],
    )
    out += _section(
        "overrides",
        [
            f"{o.kind} tier {o.tier}, expires {o.expires_at or 'never'}"
            + (" (expired)" if o.expired else "")
            + f", seq {o.seq}"
            for o in e.overrides
        ],
    )
    out += _section("problems", [f"{p}: {fix_for(p, w)}" for p in e.problems])
    out += _section(
        "quarantined events",
        [_event_text(q) + f": {q.error}" for q in report.quarantined],
    )
    shown = len(report.events)
    heading = f"events that changed it, latest first ({shown} of {report.events_total})"
    out += _section(heading, [_event_text(ev) for ev in report.events])
    return out


def _section(heading: str, lines: Sequence[str]) -> list[str]:
    if not lines:
        return [f"{heading}: none"]
    return [f"{heading}:", *(f"  {line}" for line in lines)]


def _event_text(ev: EventLine) -> str:
    times = f"received {ev.received_at or '-'}"
    if ev.occurred_at:
        times += f", occurred {ev.occurred_at}"
    text = f"seq {ev.seq} {ev.provider} {ev.type} {ev.event_id} ({times})"
    if ev.change is not None:
        tier, source, status = ev.change
        text += f" -> {tier}, {source}, {status}"
    return text
