"""The embedded projector outlives a storage fault (it logs it and tries again) and a bug
(the event is quarantined)."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from billhook.log.sqlite import EventLog
from billhook.projections import applier
from billhook.projections.store import ProjectionStore
from billhook.providers.stripe.webhook import stripe_record
from billhook.runners.embedded import EmbeddedProjector
from billhook.testing.settings import make_settings
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.feed import T0

# Upper bound on waiting for the projector; it retries every 0.05 s here.
WAIT_S = 10.0


def _run_until_projected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> tuple[ProjectionStore, int, int]:
    """Apply one event whose history fails twice with `failure`; (store, seq, failures)."""
    settings = make_settings(tmp_path / "data")
    log = EventLog(settings.events_path)
    store = ProjectionStore(settings.projections_path, settings)
    real = applier._record_history
    failures = 0

    def fail_twice(*args: Any) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise failure
        real(*args)

    monkeypatch.setattr(applier, "_record_history", fail_twice)
    sub = stripe_subscription(id="sub_survive", metadata={"workspace_id": "ws_survive"})
    body = stripe_event_body("customer.subscription.created", obj=sub, created=T0)
    [appended] = log.append_batch([stripe_record(body.decode())])
    projector = EmbeddedProjector(log, store, settings, interval_s=0.05)
    projector.start()
    try:
        projector.wake()
        deadline = time.monotonic() + WAIT_S
        while store.checkpoint() < appended.seq and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        projector.stop()
        log.close()
    return store, appended.seq, failures


def test_a_storage_fault_is_logged_and_the_batch_applied_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="billhook.runners.embedded"):
        store, seq, failures = _run_until_projected(
            tmp_path, monkeypatch, sqlite3.OperationalError("disk I/O error")
        )
    try:
        assert store.checkpoint() == seq
        assert failures == 2
        assert store.quarantine() == []
        assert [h.seq for h in store.history("ws_survive")] == [seq]
        fields = [getattr(r, "fields", {}) for r in caplog.records]
        assert [f["outcome"] for f in fields if "outcome" in f] == ["unavailable", "unavailable"]
    finally:
        store.close()


def test_a_bug_on_one_event_quarantines_it_and_the_projector_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="billhook.runners.embedded"):
        store, seq, failures = _run_until_projected(
            tmp_path, monkeypatch, RuntimeError("a bug that quotes jane@example.com")
        )
    try:
        assert store.checkpoint() == seq
        assert failures == 1
        [quarantined] = store.quarantine()
        assert (quarantined.seq, quarantined.error) == (seq, "could not be applied (RuntimeError)")
        assert "jane@example.com" not in caplog.text
    finally:
        store.close()
