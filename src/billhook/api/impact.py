"""Observe-mode impact: whom enforcement blocks, or would block, and for what.

:class:`ImpactRecorder` is the `check` route's `on_decision` hook: it adds one
to in-memory counters on the event loop (no I/O there) and a thread of its own
flushes them to the impact store (`billhook.projections.impact`) every
`interval_s` and on stop. A crash loses at most the last interval's counts.
Counts older than the retention are dropped at start and whenever the day
changes.

:func:`impact_report` turns the stored counts into the report the admin route,
the CLI and the console show: per action and reason, how many workspaces and
checks were refused, and each workspace as it resolves now.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta

from billhook.api import schemas
from billhook.config import Settings
from billhook.domain.resolver import resolve
from billhook.errors import BillhookError
from billhook.projections.impact import ImpactStore
from billhook.projections.store import ProjectionStore

logger = logging.getLogger(__name__)

# How many days of counts are kept.
DEFAULT_RETENTION_DAYS = 90
# How often buffered counts are written.
FLUSH_INTERVAL_S = 1.0


class ImpactRecorder:
    """Counts checks by (day, workspace, action, reason, decision); see the module doc."""

    def __init__(
        self,
        store: ImpactStore,
        *,
        clock: Callable[[], datetime],
        retention_days: int = DEFAULT_RETENTION_DAYS,
        interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self._store = store
        self._clock = clock
        self.retention_days = retention_days
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._blocked: Counter[tuple[date, str, str, str, str]] = Counter()
        self._seen: Counter[tuple[date, str]] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned: date | None = None

    def record(self, workspace: str, action: str, decision: str, reason: str | None) -> None:
        """One check's outcome (called on the event loop: counters only)."""
        day = self._clock().date()
        with self._lock:
            self._seen[day, workspace] += 1
            if decision != "allow" and reason is not None:
                self._blocked[day, workspace, action, reason, decision] += 1

    def flush(self) -> None:
        """Write what was counted since the last flush, then drop days past retention.

        On a store error the counts are put back for the next flush."""
        with self._lock:
            blocked, self._blocked = self._blocked, Counter()
            seen, self._seen = self._seen, Counter()
        if blocked or seen:
            try:
                self._store.add(
                    [(d.isoformat(), w, a, r, dec, n) for (d, w, a, r, dec), n in blocked.items()],
                    [(d.isoformat(), w, n) for (d, w), n in seen.items()],
                )
            except BillhookError:
                with self._lock:
                    self._blocked.update(blocked)
                    self._seen.update(seen)
                raise
        today = self._clock().date()
        if self._pruned != today:
            self._store.drop_before(first_day(today, self.retention_days).isoformat())
            self._pruned = today

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="billhook-impact", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flush_logged()

    def _run(self) -> None:
        self._flush_logged()
        while not self._stop.wait(self._interval_s):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except BillhookError as e:
            logger.warning("impact counts not written yet: %s", e)


def first_day(today: date, days: int) -> date:
    """The first day of a window of `days` days ending with `today`."""
    return today - timedelta(days=days - 1)


def impact_report(
    impact: ImpactStore,
    store: ProjectionStore,
    settings: Settings,
    *,
    days: int,
    now: datetime,
) -> schemas.Impact:
    """The last `days` days (today included) of refused checks, each workspace resolved at
    `now` from `store`. Workspaces are ordered by checks, most first, then id."""
    since = first_day(now.date(), days).isoformat()
    rows = impact.blocked(since)
    per_line: dict[tuple[str, str], tuple[set[str], int]] = {}
    per_workspace: dict[str, tuple[set[str], int]] = {}
    for row in rows:
        names, checks = per_line.get((row.action, row.reason), (set(), 0))
        names.add(row.workspace)
        per_line[row.action, row.reason] = (names, checks + row.checks)
        actions, total = per_workspace.get(row.workspace, (set(), 0))
        actions.add(row.action)
        per_workspace[row.workspace] = (actions, total + row.checks)
    lines = tuple(
        schemas.ImpactLine(action, reason, len(names), checks)
        for (action, reason), (names, checks) in sorted(per_line.items())
    )
    listed: list[schemas.ImpactWorkspace] = []
    for workspace, (actions, checks) in sorted(
        per_workspace.items(), key=lambda item: (-item[1][1], item[0])
    ):
        e = resolve(store.workspace_facts(workspace), settings.policy, now)
        listed.append(
            schemas.ImpactWorkspace(
                workspace, e.tier, e.status, e.next_action, checks, tuple(sorted(actions))
            )
        )
    return schemas.Impact(days, since, enforcement_mode(store), lines, tuple(listed))


def enforcement_mode(store: ProjectionStore) -> str:
    """The enforcement mode in force (every workspace's facts carry it)."""
    return store.workspace_facts("").enforcement


def impact_lines(report: schemas.Impact) -> list[str]:
    """The report as the CLI prints it: tab-separated, a header per part."""
    out = [f"enforcement {report.enforcement}; checks refused since {report.since}"]
    out.append("action\treason\tworkspaces\tchecks")
    out += [f"{li.action}\t{li.reason}\t{li.workspaces}\t{li.checks}" for li in report.lines]
    out.append("workspace_id\ttier\tstatus\tnext_action\tchecks\tactions")
    out += [
        f"{w.workspace_id}\t{w.tier}\t{w.status}\t{w.next_action}\t{w.checks}\t{','.join(w.actions)}"
        for w in report.workspaces
    ]
    total = sum(w.checks for w in report.workspaces)
    out.append(f"{len(report.workspaces)} workspace(s), {total} check(s) refused")
    return out
