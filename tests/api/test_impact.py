"""Observe-mode impact (SPEC §6c): refused checks counted by workspace, action, reason and day."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from billhook.api.app import create_app
from billhook.api.impact import ImpactRecorder, impact_report
from billhook.cli.main import main
from billhook.config import Settings
from billhook.errors import StoreUnavailable
from billhook.log.sqlite import EventLog
from billhook.projections.impact import (
    Blocked,
    PostgresImpactStore,
    SqliteImpactStore,
    open_impact,
)
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, make_settings, write_config
from tests.contract import contract_client

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["sqlite", "postgresql"])
def impact_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteImpactStore | PostgresImpactStore]:
    store: SqliteImpactStore | PostgresImpactStore
    if request.param == "postgresql":
        store = PostgresImpactStore(request.getfixturevalue("pg_url"))
    else:
        store = SqliteImpactStore(tmp_path / "impact.db")
    yield store
    store.close()


def test_the_store_adds_counts_sums_them_and_drops_old_days(
    impact_store: SqliteImpactStore | PostgresImpactStore,
) -> None:
    impact_store.add(
        [
            ("2026-11-01", "ws_a", "sso", "tier_required", "would_deny", 2),
            ("2026-11-02", "ws_a", "sso", "tier_required", "would_deny", 3),
            ("2026-11-02", "ws_b", "seats", "seat_limit", "deny", 1),
        ],
        [("2026-11-01", "ws_a", 5), ("2026-11-02", "ws_a", 4), ("2026-11-02", "ws_c", 7)],
    )
    # A second flush of the same keys adds to them.
    impact_store.add(
        [("2026-11-02", "ws_a", "sso", "tier_required", "would_deny", 1)],
        [("2026-11-02", "ws_c", 1)],
    )
    assert impact_store.blocked("2026-11-01") == [
        Blocked("ws_a", "sso", "tier_required", 6),
        Blocked("ws_b", "seats", "seat_limit", 1),
    ]
    assert impact_store.blocked("2026-11-02") == [
        Blocked("ws_a", "sso", "tier_required", 4),
        Blocked("ws_b", "seats", "seat_limit", 1),
    ]
    assert impact_store.seen("2026-11-01") == {"ws_a": 9, "ws_c": 8}
    assert impact_store.days() == ("2026-11-01", "2026-11-02")
    impact_store.drop_before("2026-11-02")
    assert impact_store.days() == ("2026-11-02", "2026-11-02")
    assert impact_store.blocked("2000-01-01") == [
        Blocked("ws_a", "sso", "tier_required", 4),
        Blocked("ws_b", "seats", "seat_limit", 1),
    ]
    assert impact_store.seen("2000-01-01") == {"ws_a": 4, "ws_c": 8}


def test_the_store_lives_outside_the_projection(settings: Settings) -> None:
    store = open_impact(settings)
    try:
        assert isinstance(store, SqliteImpactStore)
        assert store.path == settings.data_dir / "impact.db"
        assert store.path != settings.projections_path
    finally:
        store.close()


def test_a_scripted_observe_period_counts_what_was_refused(settings: Settings) -> None:
    """Three days of checks by four workspaces: the report sums exactly the refusals."""
    store = SqliteImpactStore(settings.data_dir / "impact.db")
    clock = Clock(DAY0)
    recorder = ImpactRecorder(store, clock=clock, retention_days=90)
    script = {
        # day offset: [(workspace, action, decision, reason, times)]
        0: [
            ("ws_a", "sso", "would_deny", "tier_required", 3),
            ("ws_a", "reads", "allow", None, 10),
            ("ws_b", "sso", "would_deny", "tier_required", 1),
        ],
        1: [
            ("ws_b", "team_sharing", "would_deny", "billing_attention", 2),
            ("ws_c", "seats", "would_deny", "seat_limit", 4),
            ("ws_d", "reads", "allow", None, 5),
        ],
        2: [
            ("ws_a", "sso", "deny", "tier_required", 1),
            ("ws_c", "seats", "would_deny", "seat_limit", 1),
        ],
    }
    for offset, calls in script.items():
        clock.at = DAY0 + timedelta(days=offset)
        for workspace, action, decision, reason, times in calls:
            for _ in range(times):
                recorder.record(workspace, action, decision, reason)
        recorder.flush()
    projection = ProjectionStore(settings.projections_path, settings)
    try:
        report = impact_report(store, projection, settings, days=3, now=clock.at)
        lines = {(li.action, li.reason): (li.workspaces, li.checks) for li in report.lines}
        assert lines == {
            ("seats", "seat_limit"): (1, 5),
            ("sso", "tier_required"): (2, 5),
            ("team_sharing", "billing_attention"): (1, 2),
        }
        listed = [(w.workspace_id, w.checks, w.actions, w.tier) for w in report.workspaces]
        assert listed == [
            ("ws_c", 5, ("seats",), "solo"),
            ("ws_a", 4, ("sso",), "solo"),
            ("ws_b", 3, ("sso", "team_sharing"), "solo"),
        ]
        assert report.since == "2026-11-01"
        assert report.enforcement == settings.enforcement
        # A window of the last day only.
        last = impact_report(store, projection, settings, days=1, now=clock.at)
        assert {(li.action, li.checks) for li in last.lines} == {("seats", 1), ("sso", 1)}
        assert store.seen("2026-11-01") == {"ws_a": 14, "ws_b": 3, "ws_c": 5, "ws_d": 5}
    finally:
        projection.close()
        store.close()


def test_retention_drops_days_past_it(tmp_path: Path) -> None:
    store = SqliteImpactStore(tmp_path / "impact.db")
    clock = Clock(DAY0)
    recorder = ImpactRecorder(store, clock=clock, retention_days=3)
    for offset in range(5):
        clock.at = DAY0 + timedelta(days=offset)
        recorder.record("ws_a", "sso", "would_deny", "tier_required")
        recorder.flush()
    # Day 4 is today: days 2, 3 and 4 are kept.
    assert store.days() == ("2026-11-03", "2026-11-05")
    assert store.blocked("2000-01-01") == [Blocked("ws_a", "sso", "tier_required", 3)]
    store.close()


def test_counts_survive_a_store_failure_until_the_next_flush(tmp_path: Path) -> None:
    class Flaky(SqliteImpactStore):
        fail = True

        def add(self, blocked: object, seen: object) -> None:  # type: ignore[override]
            if self.fail:
                raise StoreUnavailable("disk full")
            super().add(blocked, seen)  # type: ignore[arg-type]

    store = Flaky(tmp_path / "impact.db")
    recorder = ImpactRecorder(store, clock=Clock(DAY0))
    recorder.record("ws_a", "sso", "would_deny", "tier_required")
    with pytest.raises(StoreUnavailable, match="disk full"):
        recorder.flush()
    store.fail = False
    recorder.record("ws_a", "sso", "would_deny", "tier_required")
    recorder.flush()
    assert store.blocked("2000-01-01") == [Blocked("ws_a", "sso", "tier_required", 2)]
    store.close()


def test_retention_must_be_a_day_at_least(tmp_path: Path) -> None:
    store = SqliteImpactStore(tmp_path / "impact.db")
    with pytest.raises(ValueError, match="retention"):
        ImpactRecorder(store, clock=Clock(DAY0), retention_days=0)
    store.close()


# -- through the HTTP API and the CLI ----------------------------------------------------------


def _checks(client: httpx.Client, calls: list[tuple[str, dict[str, object], int]]) -> None:
    for workspace, body, status in calls:
        response = client.post(f"/v1/workspaces/{workspace}/check", json=body, headers=READ)
        assert response.status_code == status, response.text


def test_the_admin_route_and_the_cli_report_checks_made_over_http(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = make_settings(tmp_path / "data")
    clock = Clock(datetime.now(UTC))
    app = create_app(settings, clock=clock)
    with serve_in_thread(app) as url, contract_client(url, timeout=10) as client:
        _checks(
            client,
            [
                ("ws_x", {"action": "sso"}, 200),
                ("ws_x", {"action": "sso"}, 200),
                ("ws_y", {"action": "team_sharing"}, 200),
                ("ws_y", {"action": "reads"}, 200),
            ],
        )
        # Counted off the event loop: visible after the next flush (about a second).
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while True:
            answer = client.get("/v1/admin/impact?days=7", headers=ADMIN)
            assert answer.status_code == 200, answer.text
            if len(answer.json()["lines"]) == 2 or datetime.now(UTC) > deadline:
                break
        body = answer.json()
        assert body["lines"] == [
            {"action": "sso", "reason": "tier_required", "workspaces": 1, "checks": 2},
            {"action": "team_sharing", "reason": "tier_required", "workspaces": 1, "checks": 1},
        ]
        assert [w["workspace_id"] for w in body["workspaces"]] == ["ws_x", "ws_y"]
        assert body["workspaces"][0] == {
            "workspace_id": "ws_x",
            "tier": "solo",
            "status": "none",
            "next_action": "upgrade",
            "checks": 2,
            "actions": ["sso"],
        }
        assert body["days"] == 7
        assert body["enforcement"] == "observe"
        # Admin scope only, and a bounded window.
        assert client.get("/v1/admin/impact", headers=READ).status_code == 403
        assert client.get("/v1/admin/impact").status_code == 401
        for days in ("0", "91", "x", "-1", "²", ""):
            refused = client.get(f"/v1/admin/impact?days={days}", headers=ADMIN)
            assert refused.status_code == 400, days
            assert refused.json()["error"] == "invalid_request"
    result = CliRunner().invoke(main, ["enforcement", "impact", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["lines"] == body["lines"]
    assert printed["days"] == 30
    text = CliRunner().invoke(main, ["enforcement", "impact", "--config", str(config)])
    assert text.exit_code == 0, text.output
    assert "sso\ttier_required\t1\t2" in text.stdout
    assert "2 workspace(s), 3 check(s) refused" in text.stdout


def test_the_projection_catches_up_before_the_cli_resolves(tmp_path: Path) -> None:
    """The CLI resolves the listed workspaces from an up-to-date projection."""
    config = write_config(tmp_path)
    settings = make_settings(tmp_path / "data")
    log = EventLog(settings.events_path)
    store = ProjectionStore(settings.projections_path, settings)
    catch_up(log, store)
    store.close()
    log.close()
    counts = SqliteImpactStore(settings.data_dir / "impact.db")
    today = datetime.now(UTC).date().isoformat()
    counts.add([(today, "ws_q", "sso", "tier_required", "would_deny", 1)], [(today, "ws_q", 1)])
    counts.close()
    result = CliRunner().invoke(main, ["enforcement", "impact", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ws_q\tsolo\tnone\tupgrade\t1\tsso" in result.stdout


def test_a_postgresql_store_opens_while_the_database_is_down() -> None:
    """Like the log, it connects on first use: the server starts, the flush fails and retries."""
    store = PostgresImpactStore("postgresql://billhook@127.0.0.1:9/nowhere", busy_timeout_s=1)
    recorder = ImpactRecorder(store, clock=Clock(DAY0))
    recorder.record("ws_a", "sso", "would_deny", "tier_required")
    with pytest.raises(StoreUnavailable, match="impact store"):
        recorder.flush()
    store.close()
