"""Fixtures every test can ask for: settings, a log, a real server and client; a
deployment of real processes (tests.deployment); a fed projection (tests.feed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import make_settings
from tests.contract import contract_client
from tests.deployment import own_redis, processes, redis_db, redis_url, shop, shops
from tests.feed import feed
from tests.postgres import pg_url

# Fixtures shared across the tree (pytest finds them by name in this module).
__all__ = ["feed", "own_redis", "pg_url", "processes", "redis_db", "redis_url", "shop", "shops"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def event_log(settings: Settings) -> Iterator[EventLog]:
    log = EventLog(settings.events_path)
    yield log
    log.close()


@pytest.fixture
def server(settings: Settings, event_log: EventLog) -> Iterator[str]:
    """A real uvicorn server with the test settings; yields its base URL."""
    with serve_in_thread(create_app(settings, log=event_log)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with contract_client(server, timeout=10) as c:
        yield c
