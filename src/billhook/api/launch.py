"""Launch readiness: the gates before enforcement blocks anyone, each with its evidence.

One :class:`~billhook.api.schemas.LaunchGate` per gate, ✓ or ✗, whose detail
and evidence carry ids, seqs, tiers and counts, never a payload or a secret:

- `prices`: check-config's offline price lines (tiers, mapped prices and
  products, each paid tier's intervals);
- `webhooks <provider>`, for each provider in use: its secrets are well-formed
  and this deployment's log holds a verified event from it (the receiver
  appends only verified deliveries);
- `mode`: the API key or server agrees with `[billhook] mode`, and so does the
  first received event's livemode;
- `pilots`: no workspace that made a check in the impact window resolves
  unclassified (never subscribed, no override) — `billhook pilots classify`;
- `smoke`: for some workspace, a checkout started → a subscription active via
  a provider webhook → a portal opened, in this order in the log;
- `enforcement`: the mode in force is `enforce`, with who approved it and why.

The payloads of billhook's own checkout and portal events are read for their
workspace id; provider payloads are never read here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from billhook.api import schemas
from billhook.api.impact import DEFAULT_RETENTION_DAYS, enforcement_mode, first_day
from billhook.config import Settings
from billhook.domain.records import StoredEvent
from billhook.domain.resolver import resolve
from billhook.log.backend import Log
from billhook.projections.impact import ImpactStore
from billhook.projections.store import ProjectionStore
from billhook.providers.billhook import CHECKOUT_STARTED, ENFORCEMENT_SET, PORTAL_OPENED
from billhook.sync.preflight import Check, offline_checks, polar_in_use, stripe_in_use

# Check-config line names that are about prices.
PRICE_CHECKS = ("tiers", "stripe prices", "polar products")
# Check-config line names that say whether credentials agree with the mode.
MODE_CHECKS = ("stripe api key", "polar server")
# Statuses of a subscription that count as "active" for the smoke trail.
ACTIVE = ("active", "trialing")
# How many workspace ids a failing gate lists at most.
MAX_LISTED = 20


def _gate(name: str, ok: bool, detail: str, evidence: Sequence[str] = ()) -> schemas.LaunchGate:
    return schemas.LaunchGate(name, ok, detail, tuple(evidence))


def launch_report(
    settings: Settings,
    log: Log,
    store: ProjectionStore,
    impact: ImpactStore,
    *,
    now: datetime,
    window_days: int = DEFAULT_RETENTION_DAYS,
) -> schemas.LaunchReport:
    """Every gate as it stands now; `ready` when each passes."""
    checks = list(offline_checks(settings))
    gates = [
        prices_gate(checks),
        *webhook_gates(settings, checks, log),
        mode_gate(settings, checks, log),
        pilots_gate(settings, store, impact, now=now, window_days=window_days),
        smoke_gate(log, store),
        enforcement_gate(log, store),
    ]
    return schemas.LaunchReport(all(g.ok for g in gates), tuple(gates))


def prices_gate(checks: Sequence[Check]) -> schemas.LaunchGate:
    lines = [c for c in checks if c.name in PRICE_CHECKS or c.name.startswith("tier ")]
    failed = [c for c in lines if not c.ok]
    if failed:
        return _gate(
            "prices", False, f"{len(failed)} price check(s) fail", [c.line() for c in failed]
        )
    tiers = sum(c.name.startswith("tier ") for c in lines)
    detail = f"{tiers} paid tier(s) checked offline (billhook check-config --online looks them up)"
    return _gate("prices", True, detail, [c.line() for c in lines])


def webhook_gates(
    settings: Settings, checks: Sequence[Check], log: Log
) -> Iterator[schemas.LaunchGate]:
    in_use = {"stripe": stripe_in_use(settings), "polar": polar_in_use(settings)}
    if not any(in_use.values()):
        yield _gate("webhooks", False, "neither Stripe nor Polar is configured")
        return
    for provider, used in in_use.items():
        if not used:
            continue
        name = f"webhooks {provider}"
        secret = next(c for c in checks if c.name == f"{provider} webhook secrets")
        first = log.read(provider=provider, limit=1)
        evidence = [secret.line()]
        if first:
            event = first[0]
            evidence.append(f"seq {event.seq}: {event.type} {event.event_id}")
        if not secret.ok:
            yield _gate(name, False, f"secrets: {secret.detail}", evidence)
        elif not first:
            yield _gate(name, False, f"no verified {provider} event in the log yet", evidence)
        else:
            yield _gate(name, True, "secrets configured; verified events received", evidence)


def mode_gate(settings: Settings, checks: Sequence[Check], log: Log) -> schemas.LaunchGate:
    lines = [c for c in checks if c.name in MODE_CHECKS]
    evidence = [c.line() for c in lines]
    wrong: list[str] = [c.name for c in lines if not c.ok]
    live = settings.mode == "live"
    for provider in ("stripe", "polar"):
        first = log.read(provider=provider, limit=1)
        if first and first[0].livemode is not None:
            event = first[0]
            agrees = bool(event.livemode) == live
            evidence.append(f"seq {event.seq}: livemode {bool(event.livemode)}".lower())
            if not agrees:
                wrong.append(f"{provider} event seq {event.seq}")
    if wrong:
        detail = f"mode {settings.mode!r} disagrees with: {', '.join(wrong)}"
        return _gate("mode", False, detail, evidence)
    return _gate("mode", True, f"everything agrees with mode {settings.mode!r}", evidence)


def pilots_gate(
    settings: Settings,
    store: ProjectionStore,
    impact: ImpactStore,
    *,
    now: datetime,
    window_days: int,
) -> schemas.LaunchGate:
    since = first_day(now.date(), window_days).isoformat()
    active = impact.seen(since)
    if not active:
        detail = f"no workspace made a check since {since}: nothing to tell classified or not"
        return _gate("pilots", False, detail)
    unclassified = []
    for workspace in sorted(active):
        e = resolve(store.workspace_facts(workspace), settings.policy, now)
        if e.source == "default" and e.status == "none":
            unclassified.append(workspace)
    if unclassified:
        listed = unclassified[:MAX_LISTED]
        more = len(unclassified) - len(listed)
        detail = (
            f"{len(unclassified)} of {len(active)} active workspace(s) unclassified"
            " (billhook pilots classify)" + (f"; {more} more not listed" if more else "")
        )
        return _gate("pilots", False, detail, listed)
    detail = (
        f"each of {len(active)} active workspace(s) has a subscription, a history or an override"
    )
    return _gate("pilots", True, detail)


def _workspace_of(event: StoredEvent) -> tuple[str | None, str | None]:
    """(workspace, provider) named by billhook's own checkout or portal event."""
    try:
        body: Any = json.loads(event.payload)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    workspace, provider = body.get("workspace_id"), body.get("provider")
    return (
        workspace if isinstance(workspace, str) else None,
        provider if isinstance(provider, str) else None,
    )


def smoke_gate(log: Log, store: ProjectionStore) -> schemas.LaunchGate:
    checkouts = log.read(provider="billhook", type=CHECKOUT_STARTED)
    if not checkouts:
        return _gate("smoke", False, "no checkout started in this deployment's log")
    portals: dict[str, list[int]] = {}
    for event in log.read(provider="billhook", type=PORTAL_OPENED):
        workspace, _ = _workspace_of(event)
        if workspace is not None:
            portals.setdefault(workspace, []).append(event.seq)
    best: list[str] = []
    for checkout in reversed(checkouts):
        workspace, provider = _workspace_of(checkout)
        if workspace is None:
            continue
        trail = [f"{workspace}: checkout seq {checkout.seq}"]
        active = next(
            (
                row
                for row in store.history(workspace)
                if row.seq > checkout.seq and row.provider == provider and row.status in ACTIVE
            ),
            None,
        )
        if active is not None:
            trail.append(f"{workspace}: {active.status} seq {active.seq} ({active.event_id})")
            portal = next((s for s in portals.get(workspace, ()) if s > active.seq), None)
            if portal is not None:
                trail.append(f"{workspace}: portal seq {portal}")
                return _gate("smoke", True, "checkout → webhook → portal", trail)
        if len(trail) > len(best):
            best = trail
    missing = "a portal opened after it" if len(best) == 2 else "a subscription active via webhook"
    return _gate("smoke", False, f"trail incomplete: no {missing}", best)


def enforcement_gate(log: Log, store: ProjectionStore) -> schemas.LaunchGate:
    mode = enforcement_mode(store)
    switches = log.read(provider="billhook", type=ENFORCEMENT_SET)
    if mode != "enforce":
        return _gate("enforcement", False, f"mode {mode}: nothing is blocked yet")
    if not switches:
        return _gate(
            "enforcement", False, "mode enforce from the config, with no recorded approval"
        )
    last = switches[-1]
    body: Any = json.loads(last.payload)
    approval = f"approved by {body.get('approved_by')} at {last.received_at}: {body.get('reason')}"
    return _gate("enforcement", True, f"mode enforce, {approval}", [f"seq {last.seq}"])


def report_lines(report: schemas.LaunchReport) -> list[str]:
    """`✓ gate: detail` per gate, its evidence indented, then the verdict."""
    out: list[str] = []
    for gate in report.gates:
        out.append(f"{'✓' if gate.ok else '✗'} {gate.gate}: {gate.detail}")
        out += [f"    {line}" for line in gate.evidence]
    out.append("ready to enforce" if report.ready else "not ready")
    return out
