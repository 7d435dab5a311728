"""The entitlement cache: one store version read per event-loop iteration, and never a stale
answer to a read that follows a write (billhook.api.cache)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from billhook.api.cache import EntitlementCache
from billhook.config import Settings
from billhook.projections.store import ProjectionStore
from billhook.testing.stripe import stripe_subscription
from tests.feed import NOW, Feed


class CountingStore(ProjectionStore):
    """The API's own connection to the projections, counting its version reads."""

    reads = 0

    def data_version(self) -> int:
        self.reads += 1
        return super().data_version()


@pytest.fixture
def reader(settings: Settings) -> Iterator[CountingStore]:
    store = CountingStore(settings.projections_path, settings)
    yield store
    store.close()


def subscribe(feed: Feed, workspace: str) -> None:
    feed.stripe(
        "customer.subscription.created",
        stripe_subscription(id=f"sub_{workspace}", metadata={"workspace_id": workspace}),
    )


def test_one_version_read_per_loop_iteration(
    feed: Feed, reader: CountingStore, settings: Settings
) -> None:
    cache = EntitlementCache(reader, settings, lambda: NOW)

    async def main() -> list[int]:
        reads = []
        cache.get("ws_1")
        cache.get("ws_2")
        cache.get("ws_1")
        reads.append(reader.reads)
        await asyncio.sleep(0)
        cache.get("ws_1")
        reads.append(reader.reads)
        cache.get("ws_1", fresh=True)
        reads.append(reader.reads)
        return reads

    assert asyncio.run(main()) == [1, 2, 3]


def test_off_the_loop_every_call_reads_the_version(
    feed: Feed, reader: CountingStore, settings: Settings
) -> None:
    cache = EntitlementCache(reader, settings, lambda: NOW)
    cache.get("ws_1")
    cache.get("ws_1")
    assert reader.reads == 2


def test_a_commit_is_seen_by_the_next_iteration(
    feed: Feed, reader: CountingStore, settings: Settings
) -> None:
    """A commit made after this iteration read the version: later callbacks see it."""
    cache = EntitlementCache(reader, settings, lambda: NOW)

    async def main() -> tuple[str, str]:
        before = cache.get("ws_1").entitlement.tier
        subscribe(feed, "ws_1")  # another connection commits, within this iteration
        await asyncio.sleep(0)
        return before, cache.get("ws_1").entitlement.tier

    assert asyncio.run(main()) == ("solo", "team")


def test_fresh_sees_a_commit_at_once(feed: Feed, reader: CountingStore, settings: Settings) -> None:
    """A route that waited for its own write reads with `fresh`: no iteration boundary needed."""
    cache = EntitlementCache(reader, settings, lambda: NOW)

    async def main() -> str:
        cache.get("ws_1")
        subscribe(feed, "ws_1")
        return cache.get("ws_1", fresh=True).entitlement.tier

    assert asyncio.run(main()) == "team"


def test_a_callback_queued_by_another_thread_after_the_read_sees_the_commit(
    feed: Feed, reader: CountingStore, settings: Settings
) -> None:
    """The version is forgotten before anything queued after it was read runs."""
    cache = EntitlementCache(reader, settings, lambda: NOW)

    async def main() -> str:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[str] = loop.create_future()
        cache.get("ws_1")
        subscribe(feed, "ws_1")
        # As a request arriving after the commit would be queued.
        loop.call_soon_threadsafe(lambda: seen.set_result(cache.get("ws_1").entitlement.tier))
        return await seen

    assert asyncio.run(main()) == "team"
