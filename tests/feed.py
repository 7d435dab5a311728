"""A real log and projection store fed events directly, without HTTP, and its clock."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from billhook.config import Settings
from billhook.domain.records import EventRecord
from billhook.domain.resolver import Entitlement, resolve
from billhook.domain.times import iso_utc
from billhook.log.sqlite import EventLog
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers.polar.webhook import polar_record
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.stripe import stripe_event_body

# The clock every projection test reads unless it says otherwise.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Stripe `created` values around NOW.
T0 = int(NOW.timestamp()) - 3600


class Feed:
    """A real log and projection store, fed events directly (no HTTP)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = EventLog(settings.events_path)
        self.store = ProjectionStore(settings.projections_path, settings)

    def close(self) -> None:
        self.log.close()
        self.store.close()

    def append(self, record: EventRecord) -> int:
        seq = self.log.append_batch([record])[0].seq
        catch_up(self.log, self.store)
        return seq

    def stripe(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        created: int = T0,
        event_id: str | None = None,
        livemode: bool = False,
    ) -> int:
        body = stripe_event_body(
            event_type, event_id=event_id, obj=obj, created=created, livemode=livemode
        )
        return self.append(stripe_record(body.decode()))

    def polar(self, body: bytes, *, msg_id: str | None = None) -> int:
        return self.append(polar_record(body.decode(), msg_id or f"msg_{uuid.uuid4().hex}", 0))

    def operator(self, event_type: str, **payload: Any) -> int:
        record = EventRecord(
            "billhook", str(uuid.uuid4()), event_type, None, iso_utc(NOW), json.dumps(payload)
        )
        return self.append(record)

    def entitlement(self, workspace: str, now: datetime = NOW) -> Entitlement:
        return resolve(self.store.workspace_facts(workspace), self.settings.policy, now)


@pytest.fixture
def feed(settings: Settings) -> Iterator[Feed]:
    f = Feed(settings)
    yield f
    f.close()


def digest(store: ProjectionStore) -> str:
    """A hash of every fact, history, quarantine and checkpoint row: equal stores, equal digests."""
    return hashlib.sha256(repr(store.digest_rows()).encode()).hexdigest()
