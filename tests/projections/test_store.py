"""A storage fault while applying a batch leaves nothing half-applied and holds no lock.

(A bug while applying one event quarantines that event: tests/projections/test_poison.py.)
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from billhook.errors import StoreUnavailable
from billhook.projections import applier
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.feed import T0, Feed


def _subscription_event(sub_id: str, workspace: str) -> str:
    sub = stripe_subscription(id=sub_id, metadata={"workspace_id": workspace})
    return stripe_event_body("customer.subscription.created", obj=sub, created=T0).decode()


def test_a_storage_fault_mid_batch_rolls_the_whole_batch_back(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed.log.append_batch(
        [stripe_record(_subscription_event(f"sub_{n}", f"ws_{n}")) for n in range(3)]
    )
    real = applier._record_history
    calls = 0

    def fail_on_the_second(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        real(*args)

    monkeypatch.setattr(applier, "_record_history", fail_on_the_second)

    with pytest.raises(StoreUnavailable):
        catch_up(feed.log, feed.store)

    # The first event's rows went with the batch: nothing half-applied.
    assert feed.store.checkpoint() == 0
    assert feed.entitlement("ws_0").tier == "solo"
    # The write lock was let go: another connection can apply the batch now.
    monkeypatch.setattr(applier, "_record_history", real)
    other = ProjectionStore(feed.settings.projections_path, feed.settings)
    try:
        assert catch_up(feed.log, other).applied == 3
    finally:
        other.close()
    assert [feed.entitlement(f"ws_{n}").tier for n in range(3)] == ["team"] * 3


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        # past SQLite's integers once in microseconds
        ("created", 10**14, "event created is outside the calendar"),
        # before year 1
        ("created", -(10**12), "event created is outside the calendar"),
        # past what the OS converts (OSError)
        (
            "current_period_end",
            10**17,
            "subscription items.data[0].current_period_end is outside the calendar",
        ),
        # 10000-01-01
        (
            "current_period_end",
            253_402_300_800,
            "subscription items.data[0].current_period_end is outside the calendar",
        ),
    ],
)
def test_a_signed_time_outside_the_calendar_is_quarantined_not_fatal(
    feed: Feed, field: str, value: int, reason: str
) -> None:
    sub = stripe_subscription(id="sub_far", metadata={"workspace_id": "ws_far"})
    created = T0
    if field == "created":
        created = value
    else:
        for item in sub["items"]["data"]:
            item["current_period_end"] = value
    body = stripe_event_body("customer.subscription.updated", obj=sub, created=created)
    feed.append(stripe_record(body.decode()))

    [quarantined] = feed.store.quarantine()
    assert quarantined.error == reason
    # The projector moves on: the next event applies.
    feed.append(stripe_record(_subscription_event("sub_next", "ws_next")))
    assert feed.entitlement("ws_next").tier == "team"
