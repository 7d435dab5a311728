"""`billhook pilots classify`: every pilot workspace classified before enforcement.

A pilots file is CSV with a header row. `workspace_id` is required; with a
`classification` column each row becomes an override (`manual_pilot`,
`enterprise_contract` or `explicit_solo`, with `tier`, `expires_at` and an
optional `reason`), without one the file only asks how each workspace is
classified now. Rows are numbered as a spreadsheet shows them: the header is
row 1.

Parsing, planning and classifying are pure: parsing takes the text, planning
a look-up of the current overrides, classifying a resolved entitlement.
`import_rows` and `report_rows`, at the end, are the edges that read the
projection and append to the log; the CLI reads the file and prints.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from billhook.config import Settings
from billhook.domain.facts import OverrideFact
from billhook.domain.records import EventRecord
from billhook.domain.resolver import Entitlement, resolve
from billhook.domain.times import iso_to_us
from billhook.errors import InvalidAction
from billhook.log.backend import Log
from billhook.projections import actions as operator
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore

# The override kinds a pilots file may classify a workspace as.
CLASSIFICATIONS = ("manual_pilot", "enterprise_contract", "explicit_solo")
# Every column a pilots file may have; `workspace_id` is required.
COLUMNS = ("workspace_id", "classification", "tier", "expires_at", "reason")
# Columns that only mean something next to a classification.
IMPORT_COLUMNS = ("tier", "expires_at", "reason")
# Kinds whose tier defaults to the default tier when the cell is empty.
DEFAULT_TIER_KINDS = ("explicit_solo",)
# What a workspace nothing grants a tier to is reported as.
UNCLASSIFIED = "unclassified"
# Sources that are a provider subscription: reported as `<source>_<tier>`.
PROVIDER_SOURCES = ("stripe", "polar")
# The namespace of imported overrides' event ids (uuid5 of the decision).
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://billhook/pilots-classify")


class PilotsFileError(ValueError):
    """The pilots file is unusable; the message names the row and the column."""


@dataclass(frozen=True)
class PilotRow:
    """One row of a pilots file; `expires_at` normalized to UTC `…Z`."""

    row: int
    workspace_id: str
    classification: str | None = None
    tier: str | None = None
    expires_at: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PilotsFile:
    """The parsed file: `classifies` when it has a classification column."""

    rows: tuple[PilotRow, ...]
    classifies: bool


@dataclass(frozen=True)
class Planned:
    """An imported row and its override event; `record` is None when that
    override is already in force (nothing to append)."""

    row: PilotRow
    record: EventRecord | None


# -- parsing ----------------------------------------------------------------------------


def parse_pilots(text: str, settings: Settings, now: datetime) -> PilotsFile:
    """Parse and validate a whole pilots file before anything is written.

    Raises PilotsFileError on the first problem: no header or no
    `workspace_id` column, an unknown or repeated column, import-only columns
    without `classification`, a row longer than the header, an empty or
    repeated workspace id, an unknown classification or tier, a tier missing
    where it is required, or an `expires_at` that is not an ISO 8601 time
    with a timezone or is not in the future. Blank rows are skipped; short
    rows have empty trailing cells.
    """
    records = _records(text)
    if not records:
        raise PilotsFileError("empty file: expected a header row with a workspace_id column")
    header = _header(records[0])
    classifies = "classification" in header
    rows: list[PilotRow] = []
    seen: dict[str, int] = {}
    for number, cells in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            raise PilotsFileError(
                f"row {number}: {len(cells)} cells, but the header has {len(header)} columns"
            )
        values = {name: cell.strip() for name, cell in zip(header, cells, strict=False)}
        row = _row(number, values, classifies, settings, now)
        if row.workspace_id in seen:
            raise PilotsFileError(
                f"row {number}, column workspace_id: {row.workspace_id!r} is listed twice"
                f" (first on row {seen[row.workspace_id]})"
            )
        seen[row.workspace_id] = number
        rows.append(row)
    return PilotsFile(tuple(rows), classifies)


def _records(text: str) -> list[list[str]]:
    # strict: an unclosed quote is an error, not rows silently merged into one cell.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[list[str]] = []
    try:
        for record in reader:
            records.append(record)
    except csv.Error as e:
        raise PilotsFileError(f"row {len(records) + 1}: not valid CSV: {e}") from None
    return records


def _header(cells: Sequence[str]) -> list[str]:
    names = [cell.strip() for cell in cells]
    for position, name in enumerate(names, start=1):
        if not name:
            raise PilotsFileError(f"row 1: column {position} has no name")
        if name not in COLUMNS:
            raise PilotsFileError(
                f"row 1, column {name}: unknown column (expected {', '.join(COLUMNS)})"
            )
        if names.index(name) != position - 1:
            raise PilotsFileError(f"row 1, column {name}: appears twice")
    if "workspace_id" not in names:
        raise PilotsFileError("row 1: no workspace_id column")
    if "classification" not in names:
        for name in IMPORT_COLUMNS:
            if name in names:
                raise PilotsFileError(
                    f"row 1, column {name}: only applies with a classification column"
                )
    return names


def _row(
    number: int, values: dict[str, str], classifies: bool, settings: Settings, now: datetime
) -> PilotRow:
    where = f"row {number}, column"
    workspace = values.get("workspace_id", "")
    if not workspace:
        raise PilotsFileError(f"{where} workspace_id: empty")
    if not classifies:
        return PilotRow(number, workspace)
    kind = values.get("classification", "")
    if kind not in CLASSIFICATIONS:
        found = f"unknown classification {kind!r}" if kind else "empty"
        expected = ", ".join(CLASSIFICATIONS)
        raise PilotsFileError(f"{where} classification: {found} (expected {expected})")
    return PilotRow(
        number,
        workspace,
        kind,
        _tier(where, values.get("tier", ""), kind, settings),
        _expiry(where, values.get("expires_at", ""), now),
        values.get("reason") or None,
    )


def _tier(where: str, tier: str, kind: str, settings: Settings) -> str:
    if not tier:
        if kind in DEFAULT_TIER_KINDS:
            return settings.default_tier
        raise PilotsFileError(f"{where} tier: required for {kind}")
    if tier not in settings.tiers:
        raise PilotsFileError(
            f"{where} tier: unknown tier {tier!r} (expected one of {', '.join(settings.tiers)})"
        )
    return tier


def _expiry(where: str, raw: str, now: datetime) -> str | None:
    if not raw:
        return None
    try:
        expires_at = operator.normalize_time("expires_at", raw)
    except InvalidAction:
        raise PilotsFileError(
            f"{where} expires_at: {raw!r} is not an ISO 8601 time with a timezone"
            " (e.g. 2027-01-01T00:00:00Z)"
        ) from None
    # An override that is already over would never be in force, so a second
    # import would append it again: refuse it rather than break idempotency.
    if expires_at is not None and iso_to_us(expires_at) <= iso_to_us(now.isoformat()):
        raise PilotsFileError(f"{where} expires_at: {expires_at} is not in the future")
    return expires_at


# -- importing --------------------------------------------------------------------------


def in_force(fact: OverrideFact | None, now: datetime) -> bool:
    """Whether an override's current state grants anything at `now`."""
    if fact is None or not fact.active:
        return False
    return fact.expires_at is None or iso_to_us(fact.expires_at) > iso_to_us(now.isoformat())


def plan_import(
    rows: Sequence[PilotRow],
    current: Callable[[str, str], OverrideFact | None],
    settings: Settings,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> list[Planned]:
    """The override event for each classified row, or None where it is already in force.

    `current(workspace, kind)` is the override's current state (the
    projection's). A row is in force when that override is active, unexpired
    and has the same tier and expiry; its reason and actor do not count.
    Other kinds of override the workspace has are left as they are.

    Event ids are deterministic — a digest of the decision and of the seq of
    the override state it replaces — so two imports of the same file racing
    each other append it once (the log dedupes by id), while a re-import after
    a revoke appends it again.
    """
    planned: list[Planned] = []
    for row in rows:
        if row.classification is None:
            raise ValueError(f"row {row.row} has no classification")
        fact = current(row.workspace_id, row.classification)
        same = fact is not None and (fact.tier, fact.expires_at) == (row.tier, row.expires_at)
        if same and in_force(fact, now):
            planned.append(Planned(row, None))
            continue
        record = operator.override_set(
            settings,
            workspace_id=row.workspace_id,
            kind=row.classification,
            tier=row.tier,
            expires_at=row.expires_at,
            reason=row.reason or reason,
            actor=actor,
            now=now,
        )
        basis = fact.seq if fact is not None else 0
        planned.append(Planned(row, replace(record, event_id=event_id(row, basis))))
    return planned


def event_id(row: PilotRow, basis_seq: int) -> str:
    """The id of the override event `row` asks for, on top of the state at `basis_seq`."""
    decision = [row.workspace_id, row.classification, row.tier, row.expires_at, basis_seq]
    return f"pilots-{uuid.uuid5(EVENT_NAMESPACE, json.dumps(decision))}"


# -- reporting --------------------------------------------------------------------------


def classification(entitlement: Entitlement) -> str:
    """How a workspace is classified, from its resolved entitlement.

    A provider subscription is `<provider>_<tier>` (`stripe_team`,
    `polar_team`); an override is its kind (`manual_pilot`,
    `enterprise_contract`, `explicit_solo`, `site_owner_override`); the
    default tier with nothing granting it is `unclassified`.
    """
    if entitlement.source in PROVIDER_SOURCES:
        return f"{entitlement.source}_{entitlement.tier}"
    if entitlement.source == "default":
        return UNCLASSIFIED
    return entitlement.source


def summary(classes: Sequence[str]) -> str:
    """`3 workspace(s): 1 manual_pilot, 2 stripe_team`, counts in name order."""
    counts = {name: classes.count(name) for name in sorted(set(classes))}
    listed = ", ".join(f"{n} {name}" for name, n in counts.items())
    return f"{len(classes)} workspace(s)" + (f": {listed}" if listed else "")


# -- the edges: the log and the projection --------------------------------------------


@dataclass(frozen=True)
class Imported:
    """What importing a row did: `seq` of its event, `duplicate` when the log
    already held that very event (a concurrent import); `seq` None when its
    override was already in force."""

    row: PilotRow
    seq: int | None
    duplicate: bool = False

    @property
    def appended(self) -> bool:
        return self.seq is not None and not self.duplicate


@dataclass(frozen=True)
class Reported:
    """A row's workspace as it stands: its classification and entitlement."""

    row: PilotRow
    classification: str
    entitlement: Entitlement


def import_rows(
    log: Log,
    store: ProjectionStore,
    rows: Sequence[PilotRow],
    settings: Settings,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> list[Imported]:
    """Bring the projection up to the log head, then append every override not
    already in force in one batch (all or nothing), and project it."""
    catch_up(log, store)
    planned = plan_import(rows, store.override, settings, actor=actor, reason=reason, now=now)
    records = [p.record for p in planned if p.record is not None]
    answers = iter(log.append_batch(records) if records else [])
    result: list[Imported] = []
    for p in planned:
        if p.record is None:
            result.append(Imported(p.row, None))
        else:
            answer = next(answers)
            result.append(Imported(p.row, answer.seq, answer.duplicate))
    catch_up(log, store)
    return result


def report_rows(
    store: ProjectionStore, rows: Sequence[PilotRow], settings: Settings, now: datetime
) -> list[Reported]:
    """Each row's workspace resolved at `now` from an up-to-date `store`."""
    reported: list[Reported] = []
    for row in rows:
        entitlement = resolve(store.workspace_facts(row.workspace_id), settings.policy, now)
        reported.append(Reported(row, classification(entitlement), entitlement))
    return reported


# -- output -----------------------------------------------------------------------------


def import_lines(results: Sequence[Imported]) -> list[str]:
    """One tab-separated line per imported row, then a summary line."""
    lines: list[str] = []
    for r in results:
        if r.seq is None:
            outcome = "unchanged: in force already"
        elif r.duplicate:
            outcome = f"unchanged: in the log already (seq {r.seq})"
        else:
            outcome = f"appended seq {r.seq}"
        row = r.row
        cells = (row.workspace_id, row.classification, row.tier, row.expires_at or "-", outcome)
        lines.append("\t".join(str(c) for c in cells))
    appended = sum(r.appended for r in results)
    lines.append(f"appended {appended} override(s); {len(results) - appended} unchanged")
    return lines


def report_lines(reported: Sequence[Reported]) -> list[str]:
    """A header, one tab-separated line per workspace, then the counts."""
    lines = ["workspace_id\tclassification\ttier\tstatus"]
    for r in reported:
        cells = (r.row.workspace_id, r.classification, r.entitlement.tier, r.entitlement.status)
        lines.append("\t".join(cells))
    lines.append(summary([r.classification for r in reported]))
    return lines
