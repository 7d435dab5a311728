"""AsyncBillhook: the same cache, feed and policy, with its follower as a task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from billhook_client import AsyncBillhook
from conftest import BASE, DEFAULT_FEATURES, TEAM_FEATURES, TOKEN, Clock, FakeBillhook


async def _until(predicate: Callable[[], Any], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


async def _scenario(fake: FakeBillhook, clock: Clock) -> None:
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    transport = httpx.MockTransport(fake.async_handler)
    async with AsyncBillhook(
        BASE, TOKEN, transport=transport, clock=clock, fail="closed", max_staleness_s=10
    ) as client:
        await _until(lambda: client.heard_at is not None)
        first = await client.check("ws_1", "ai_imports")
        assert first.allowed
        assert await client.check("ws_1", "ai_imports") is first
        assert fake.count("POST", "/check") == 1
        entitlement = await client.entitlements("ws_2")
        assert entitlement.source == "default"
        fake.set_workspace("ws_1", "solo", DEFAULT_FEATURES)
        await _until(lambda: client.cursor == "c2")
        downgraded = await client.check("ws_1", "ai_imports")
        assert (downgraded.allowed, downgraded.billing_required) == (False, True)
        fake.down = "timeout"
        clock.advance(11)
        check = await client.check("ws_1", "ai_imports")
        assert (check.allowed, check.fallback, check.fallback_reason) == (False, True, "timeout")
        assert (await client.check("ws_1", "local_create")).allowed  # default tier, learned


def test_the_async_client(fake: FakeBillhook, clock: Clock) -> None:
    asyncio.run(_scenario(fake, clock))
