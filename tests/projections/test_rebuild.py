"""Replay equals incremental: folding the whole log at once gives the live rows."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.projections.changes import TIME_CAUSE
from billhook.projections.projector import catch_up
from billhook.projections.rebuild import rebuild
from billhook.projections.store import ProjectionStore
from billhook.providers.billhook import OVERRIDE_REVOKED, OVERRIDE_SET
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_object,
    stripe_subscription,
)
from tests.feed import NOW, T0, Feed, digest

STATUSES = ["trialing", "active", "past_due", "unpaid", "incomplete", "canceled"]


def test_a_from_scratch_fold_matches_the_live_projection(
    feed: Feed, settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(7)
    for n in range(60):
        sub_id, customer, ws = f"sub_{n % 9}", f"cus_{n % 7}", f"ws_{n % 5}"
        kind = rng.random()
        if kind < 0.6:
            sub = stripe_subscription(
                id=sub_id,
                customer=customer,
                status=rng.choice(STATUSES),
                cancel_at_period_end=rng.random() < 0.2,
                items=(("price_team_monthly", rng.randint(1, 9)),),
                metadata={"workspace_id": ws} if rng.random() < 0.5 else None,
            )
            event_type = rng.choice(
                ["customer.subscription.created", "customer.subscription.updated"]
            )
            feed.stripe(event_type, sub, created=T0 + rng.randint(0, 30))
        elif kind < 0.75:
            feed.stripe(
                "customer.updated", stripe_customer(id=customer, metadata={"workspace_id": ws})
            )
        elif kind < 0.85:
            session = stripe_checkout_session(
                customer=customer, subscription=sub_id, client_reference_id=ws
            )
            feed.stripe("checkout.session.completed", session, created=T0 + rng.randint(0, 30))
        elif kind < 0.95:
            feed.operator(
                OVERRIDE_SET,
                workspace_id=ws,
                kind="manual_pilot",
                tier="team",
                reason="r",
                actor="a",
            )
        else:
            feed.operator(
                OVERRIDE_REVOKED, workspace_id=ws, kind="manual_pilot", reason="r", actor="a"
            )
    broken = stripe_subscription(id="sub_broken")
    del broken["items"]["data"][0]["price"]
    del broken["items"]["data"][0]["plan"]
    feed.stripe("customer.subscription.updated", broken)

    rebuilt = ProjectionStore(tmp_path / "rebuilt.db", settings)
    try:
        result = catch_up(feed.log, rebuilt, batch_size=10_000)
        assert result.checkpoint == feed.log.head_seq() == 61
        assert result.quarantined == 1
        assert digest(rebuilt) == digest(feed.store)
        # Every kind of row took part: subscriptions, links, overrides, history, quarantine,
        # the change feed.
        assert {row[0] for row in rebuilt.digest_rows()} == {"s", "l", "o", "h", "q", "f", "c"}
    finally:
        rebuilt.close()


def test_re_running_a_batch_is_a_no_op(feed: Feed) -> None:
    feed.stripe(
        "customer.subscription.created", stripe_subscription(metadata={"workspace_id": "ws_1"})
    )
    before = digest(feed.store)
    again = feed.store.apply(feed.log.read())
    assert (again.applied, again.skipped, again.quarantined) == (0, 0, 0)
    assert digest(feed.store) == before


def test_projected_types_are_exactly_the_understood_ones() -> None:
    """The projector reads payloads only of PROJECTED_TYPES: they must be what decode knows."""
    from billhook.domain.records import StoredEvent
    from billhook.providers.decode import PROJECTED_TYPES, understands

    for provider, types in PROJECTED_TYPES.items():
        for event_type in types:
            assert understands(StoredEvent(1, provider, "e", event_type, None, None, "", "{}"))
    samples = ["invoice.paid", "charge.succeeded", "order.created", "benefit.created", "x"]
    for provider in ("stripe", "polar", "billhook"):
        for event_type in samples:
            assert not understands(StoredEvent(1, provider, "e", event_type, None, None, "", "{}"))


def test_a_rebuild_fires_time_rules_between_events_it_does_not_read(
    settings: Settings, tmp_path: Path
) -> None:
    """The fold skips unread events (invoices) without building them, yet fires a time rule
    due before one at the seq before it, exactly as the live projector does."""
    clock = [NOW]
    log = EventLog(settings.events_path, clock=lambda: clock[0])
    live = ProjectionStore(settings.projections_path, settings)
    progress: list[int] = []
    try:

        def append(event_type: str, obj: dict[str, object]) -> int:
            body = stripe_event_body(event_type, obj=obj, created=int(clock[0].timestamp()))
            seq = log.append_batch([stripe_record(body.decode())])[0].seq
            catch_up(log, live)
            return seq

        end = int((NOW + timedelta(hours=1)).timestamp())
        canceling = stripe_subscription(
            cancel_at_period_end=True, metadata={"workspace_id": "ws_1"}, period_end=end
        )
        append("customer.subscription.updated", canceling)
        invoices = []
        for hours in (1, 2, 3, 4):  # the allowance (1 h) after the period end passes at 2 h
            clock[0] = NOW + timedelta(hours=hours, minutes=30)
            invoices.append(append("invoice.paid", stripe_object("invoice")))
        clock[0] = NOW + timedelta(hours=5)
        append("customer.updated", stripe_customer(metadata={"workspace_id": "ws_1"}))

        rebuilt = rebuild(log, tmp_path / "rebuilt.db", settings, progress=progress.append)
        assert (rebuilt.events, rebuilt.checkpoint) == (6, 6)
        assert sum(progress) == 6
        store = ProjectionStore(tmp_path / "rebuilt.db", settings)
        try:
            assert digest(store) == digest(live)
            fired = [row for row in store.digest_rows() if row[0] == "f" and row[5] == TIME_CAUSE]
            # Due at 2 h after NOW, met by the invoice received at 2 h 30: as of the seq before.
            assert [row[1] for row in fired] == [invoices[1] - 1]
        finally:
            store.close()
    finally:
        live.close()
        log.close()
