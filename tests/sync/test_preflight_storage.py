"""check-config names the storage backend and, online, checks the PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psycopg

from billhook.log.postgres import SCHEMA_VERSION, PostgresEventLog
from billhook.sync.preflight import Check, all_checks, database_checks, offline_checks
from billhook.testing.settings import make_settings
from tests.postgres import database_url


def _lines(checks: Iterable[Check]) -> list[str]:
    return [c.line() for c in checks]


def test_offline_names_the_backend_without_the_password(tmp_path: Path) -> None:
    sqlite = _lines(offline_checks(make_settings(tmp_path / "data")))
    assert sqlite[0] == "✓ storage: SQLite files under data_dir (no [storage] url)"
    assert sqlite[1].startswith("✓ event log: ")
    url = "postgresql://billhook:s3cret@db.internal:5433/billing"
    settings = make_settings(tmp_path / "data", sections={"storage": {"url": url}})
    lines = _lines(offline_checks(settings))
    assert lines[0] == (
        "✓ storage: PostgreSQL database db.internal/billing (the log and the projections)"
    )
    assert not any("event log" in line for line in lines), "no SQLite file is involved"
    assert not any("s3cret" in line or "billhook:" in line for line in lines)


def test_online_reports_the_database_the_schema_and_synchronous_commit(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        # billhook sets it for its own sessions, whatever the database's default.
        conn.execute(f'ALTER DATABASE "{row[0]}" SET synchronous_commit = off')
    assert _lines(database_checks(pg_url))[1:] == [
        "✓ log schema: none yet: billhook serve creates it",
        "✓ synchronous_commit: on in billhook's sessions",
    ]
    PostgresEventLog(pg_url).close()
    lines = _lines(database_checks(pg_url))
    assert lines[0].startswith("✓ database: answers (PostgreSQL 1")
    assert lines[1] == f"✓ log schema: version {SCHEMA_VERSION}"


def test_online_says_when_the_database_does_not_answer(tmp_path: Path) -> None:
    url = database_url("billhook_no_such_database")
    settings = make_settings(tmp_path / "data", sections={"storage": {"url": url}})
    lines = _lines(all_checks(settings, online=True, connect=lambda s: {}))
    failing = [line for line in lines if line.startswith("✗ database")]
    assert len(failing) == 1
    assert "does not answer" in failing[0]
    assert "billhook_no_such_database" in failing[0]
