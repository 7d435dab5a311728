from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billhook.config import Settings, parse_settings
from billhook.domain.records import EventRecord
from billhook.domain.resolver import Entitlement, resolve
from billhook.domain.times import iso_utc
from billhook.log.sqlite import EventLog
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers.envelope import polar_record, stripe_record
from tests.support import stripe_event_body

PRODUCT_TEAM = "8f1e2c1a-7d4b-4c55-9a11-3e6f0b6a2c01"
PRODUCT_ENTERPRISE = "8f1e2c1a-7d4b-4c55-9a11-3e6f0b6a2c02"
READ_TOKEN = "read-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
# The clock every projection test reads unless it says otherwise.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Stripe `created` values around NOW.
T0 = int(NOW.timestamp()) - 3600


def projection_settings(data_dir: Path, **core: Any) -> Settings:
    return parse_settings(
        {
            "billhook": {"data_dir": str(data_dir), **core},
            "stripe": {
                "webhook_secrets": ["whsec_test_stripe_0123456789abcdef"],
                "prices": {
                    "price_team_monthly": {"tier": "team", "interval": "month"},
                    "price_team_yearly": {"tier": "team", "interval": "year"},
                    "price_enterprise_yearly": {"tier": "enterprise", "interval": "year"},
                },
            },
            "polar": {
                "webhook_secrets": ["polar_whs_legacyLegacyLegacy0123456789"],
                "products": {
                    PRODUCT_TEAM: {"tier": "team", "interval": "month"},
                    PRODUCT_ENTERPRISE: {"tier": "enterprise"},
                },
            },
            "auth": {"api_tokens": [READ_TOKEN], "admin_tokens": [ADMIN_TOKEN]},
        },
        environ={},
    )


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
def settings(tmp_path: Path) -> Settings:
    return projection_settings(tmp_path / "data")


@pytest.fixture
def feed(settings: Settings) -> Iterator[Feed]:
    f = Feed(settings)
    yield f
    f.close()
