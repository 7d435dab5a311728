"""A store built by another projection version is rebuilt in the background and swapped."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from billhook.api.app import create_app
from billhook.log.sqlite import EventLog
from billhook.projections.store import PROJECTION_VERSION, ProjectionStore
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import READ_TOKEN, make_settings
from billhook.testing.stripe import stripe_subscription
from tests.feed import Feed


def test_an_outdated_projection_is_rebuilt_and_swapped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    feed = Feed(settings)
    feed.stripe(
        "customer.subscription.created", stripe_subscription(metadata={"workspace_id": "ws_1"})
    )
    expected = feed.store.digest_rows()
    feed.close()
    # What an older release left behind: another version, and a projection it got wrong.
    conn = sqlite3.connect(settings.projections_path)
    conn.execute("UPDATE checkpoint SET version = ?", (PROJECTION_VERSION - 1,))
    conn.execute("DELETE FROM history")
    conn.commit()
    conn.close()

    log = EventLog(settings.events_path)
    try:
        with serve_in_thread(create_app(settings, log=log)) as url:
            deadline = time.monotonic() + 10
            store = ProjectionStore(settings.projections_path, settings)
            try:
                while store.version() != PROJECTION_VERSION:
                    assert time.monotonic() < deadline, "no rebuild happened"
                    time.sleep(0.02)
                assert store.digest_rows() == expected
            finally:
                store.close()
            ready = httpx.get(f"{url}/readyz").json()
            assert "rebuilding" not in ready
            answer = httpx.get(
                f"{url}/v1/workspaces/ws_1/history",
                headers={"Authorization": f"Bearer {READ_TOKEN}"},
            ).json()
            assert [row["tier"] for row in answer] == ["team"]
    finally:
        log.close()


def test_a_version_2_store_gains_the_quarantine_columns_and_is_rebuilt(tmp_path: Path) -> None:
    """Version 3 keeps whom a quarantined event is about: a store of version 2 (no such
    columns) gains them when opened, is rebuilt, and the workspace shows the problem."""
    settings = make_settings(tmp_path / "data")
    feed = Feed(settings)
    sub = stripe_subscription(metadata={"workspace_id": "ws_1"})
    sub["status"] = {"not": "a status"}
    seq = feed.stripe("customer.subscription.created", sub)
    expected = feed.store.digest_rows()
    feed.close()
    conn = sqlite3.connect(settings.projections_path)
    conn.executescript(
        "DROP INDEX quarantine_workspace; DROP INDEX quarantine_customer;"
        " DROP INDEX quarantine_subscription;"
        " CREATE TABLE old (seq INTEGER PRIMARY KEY, provider TEXT NOT NULL,"
        " event_id TEXT NOT NULL, type TEXT NOT NULL, error TEXT NOT NULL);"
        " INSERT INTO old SELECT seq, provider, event_id, type, error FROM quarantine;"
        " DROP TABLE quarantine; ALTER TABLE old RENAME TO quarantine;"
        " UPDATE checkpoint SET version = 2;"
    )
    conn.close()

    log = EventLog(settings.events_path)
    try:
        with serve_in_thread(create_app(settings, log=log)) as url:
            deadline = time.monotonic() + 10
            store = ProjectionStore(settings.projections_path, settings)
            try:
                while store.version() != PROJECTION_VERSION:
                    assert time.monotonic() < deadline, "no rebuild happened"
                    time.sleep(0.02)
                assert store.digest_rows() == expected
            finally:
                store.close()
            answer = httpx.get(
                f"{url}/v1/workspaces/ws_1/entitlements",
                headers={"Authorization": f"Bearer {READ_TOKEN}"},
            ).json()
            assert answer["problems"] == [f"quarantined:{seq}"]
    finally:
        log.close()
