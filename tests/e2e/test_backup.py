"""`billhook log backup` while webhooks arrive, restored into a fresh data dir, replayed.

docs/operations.md's backup runbook, run literally: every event acknowledged
before the backup started is in the copy with its seq and bytes, the copy is
a complete append-only log, and a replay of it answers for every one of those
workspaces.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billhook.domain.resolver import resolve
from billhook.log.sqlite import EventLog
from billhook.projections.store import ProjectionStore
from billhook.testing.settings import write_config
from tests.deployment import Arrivals, Processes, run_cli, settings_of

# Events acknowledged before the backup starts, and after it (while it runs and beyond).
BEFORE = 40
AFTER = 20


def test_a_backup_taken_under_load_restores_every_event_acked_before_it(
    tmp_path: Path, processes: Processes
) -> None:
    config = write_config(tmp_path, redis_url=None)
    server = processes.serve(config)
    backup = tmp_path / "backups" / "events.db"
    backup.parent.mkdir()

    arrivals = Arrivals(server)
    arrivals.start()
    try:
        arrivals.wait_for(BEFORE)
        acked_before = list(arrivals.acked)
        taken = run_cli("log", "backup", str(backup), "--config", str(config))
        arrivals.wait_for(len(arrivals.acked) + AFTER)
    finally:
        acked = arrivals.finish()
    assert taken.returncode == 0, taken.stderr
    assert len(acked) > len(acked_before)  # deliveries went on around the backup

    live, copy = EventLog(settings_of(config).events_path), EventLog(backup)
    try:
        head = copy.head_seq()
        assert taken.stdout.strip().endswith(f"up to seq {head} to {backup}")
        # The copy is the live log's prefix, seq for seq and byte for byte.
        assert copy.read() == live.read(limit=head)
        copied = {e.event_id for e in copy.read()}
        assert len(copied) == head
    finally:
        live.close()
        copy.close()
    checked = sqlite3.connect(backup)
    try:
        assert checked.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            checked.execute("DELETE FROM events")
    finally:
        checked.close()
    again = run_cli("log", "backup", str(backup), "--config", str(config))
    assert again.returncode == 1
    [announced, error] = again.stderr.splitlines()  # the log it read, then one line
    assert announced.startswith("log: ")
    assert error.startswith("Error: ")
    assert "exists already" in error

    # Restore into a fresh data dir, as the runbook says, and rebuild the projections.
    restored_data = tmp_path / "restored" / "data"
    restored_data.mkdir(parents=True)
    shutil.copyfile(backup, restored_data / "events.db")
    restored = write_config(tmp_path / "restored", data_dir=restored_data, redis_url=None)
    replayed = run_cli("replay", "--config", str(restored))
    assert replayed.returncode == 0, replayed.stderr

    settings = settings_of(restored)
    store = ProjectionStore(settings.projections_path, settings)
    try:
        now = datetime.now(UTC)
        tiers = {
            workspace: resolve(store.workspace_facts(workspace), settings.policy, now).tier
            for workspace in acked_before
        }
        assert store.checkpoint() == head
    finally:
        store.close()
    assert tiers == dict.fromkeys(acked_before, "team")
