"""The embedded projector outlives a bug: it logs the failure and tries again."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.envelope import stripe_record
from ingest.log import EventLog
from projections import applier
from projections.store import ProjectionStore
from tests.projections.conftest import T0, projection_settings
from tests.stripe_payloads import stripe_subscription
from tests.support import stripe_event_body
from worker.embedded import EmbeddedProjector

# Upper bound on waiting for the projector; it retries every 0.05 s here.
WAIT_S = 10.0


def test_the_projector_survives_a_failing_batch_and_applies_it_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = projection_settings(tmp_path / "data")
    log = EventLog(settings.events_path)
    store = ProjectionStore(settings.projections_path, settings)
    real = applier._record_history
    failures = 0

    def fail_twice(*args: Any) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RuntimeError("a bug that quotes jane@example.com")
        real(*args)

    monkeypatch.setattr(applier, "_record_history", fail_twice)
    sub = stripe_subscription(id="sub_survive", metadata={"workspace_id": "ws_survive"})
    body = stripe_event_body("customer.subscription.created", obj=sub, created=T0)
    [appended] = log.append_batch([stripe_record(body.decode())])
    projector = EmbeddedProjector(log, store, settings, interval_s=0.05)
    with caplog.at_level(logging.ERROR, logger="billhook.projector"):
        projector.start()
        try:
            projector.wake()
            deadline = time.monotonic() + WAIT_S
            while store.checkpoint() < appended.seq and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            projector.stop()
    try:
        assert store.checkpoint() == appended.seq
        assert failures == 2
        fields = [getattr(r, "fields", {}) for r in caplog.records]
        failed = [f["error"] for f in fields if f.get("outcome") == "failed"]
        assert failed == ["RuntimeError", "RuntimeError"]
        assert "jane@example.com" not in caplog.text
    finally:
        log.close()
        store.close()
