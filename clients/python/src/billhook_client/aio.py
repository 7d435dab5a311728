"""The asynchronous client: `AsyncBillhook`, with its follower as an asyncio task.

    async with AsyncBillhook("http://billhook:8000", token) as bh:
        check = await bh.check("ws_1", "ai_imports")

The follower starts with the first call (or `start()`, or `async with`) on the
running loop, and stops with `aclose()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import httpx

from billhook_client import answers
from billhook_client.answers import Outage
from billhook_client.counts import GuardCounts
from billhook_client.errors import (
    BillhookUnavailable,
    BillingRequired,
    BillingUnavailable,
    InvalidRequest,
)
from billhook_client.models import ChangePage, Check, Entitlement
from billhook_client.options import (
    FOLLOW_BACKOFF_MAX_S,
    FOLLOW_BACKOFF_S,
    FOLLOW_IDLE_S,
    FOLLOW_LIMIT,
    OnChange,
    failure_reason,
    log,
    make_options,
    notify,
)


class AsyncBillhook:
    """The async twin of `Billhook`: the same arguments, answers and errors."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        fail: str = "closed",
        last_known_max_age_s: float = 900.0,
        max_staleness_s: float = 60.0,
        follow: bool = True,
        timeout_s: float = 3.0,
        free_actions: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = make_options(
            fail, last_known_max_age_s, max_staleness_s, follow, timeout_s, free_actions
        )
        self._state = self.options.state(clock)
        self.guard_counts = GuardCounts()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=answers.headers(token),
            timeout=timeout_s,
            transport=transport,
        )
        self._follow_http = httpx.AsyncClient(
            base_url=base_url,
            headers=answers.headers(token),
            timeout=httpx.Timeout(timeout_s, read=self.options.poll_wait_s + timeout_s),
            transport=transport,
        )
        self._owns_transport = transport is None
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.cursor: str | None = None

    # -- answers ----------------------------------------------------------------------------

    async def check(self, workspace: str, action: str, seats_in_use: int | None = None) -> Check:
        """As `Billhook.check`."""
        cached = self._state.cached_check(workspace, action, seats_in_use)
        if cached is not None:
            return cached
        self.start()
        token = self._state.token(workspace)
        try:
            try:
                response = await self._http.post(
                    answers.check_path(workspace), json=answers.check_body(action, seats_in_use)
                )
            except httpx.TransportError as e:
                raise answers.outage_of(e) from None
            check = answers.check_of(response)
        except Outage as o:
            return self._state.fallback_check(workspace, action, seats_in_use, o.reason)
        self._state.store_check(token, action, seats_in_use, check)
        return check

    async def require(self, workspace: str, action: str, seats_in_use: int | None = None) -> Check:
        """As `Billhook.require`."""
        check = await self.check(workspace, action, seats_in_use)
        if check.allowed:
            return check
        if check.billing_required:
            raise BillingRequired(check)
        raise BillingUnavailable(check)

    async def entitlements(self, workspace: str) -> Entitlement:
        """As `Billhook.entitlements`."""
        cached = self._state.cached_entitlement(workspace)
        if cached is not None:
            return cached
        self.start()
        token = self._state.token(workspace)
        try:
            try:
                response = await self._http.get(answers.entitlements_path(workspace))
            except httpx.TransportError as e:
                raise answers.outage_of(e) from None
            entitlement = answers.entitlement_of(response)
        except Outage as o:
            return self._state.fallback_entitlement(workspace, o.reason)
        self._state.store_entitlement(token, entitlement)
        return entitlement

    async def changes(
        self, after: str | None = None, limit: int = 100, wait: int = 0
    ) -> ChangePage:
        """As `Billhook.changes`."""
        return await _changes(self._http, after, limit, wait)

    # -- the follower -----------------------------------------------------------------------

    @property
    def heard_at(self) -> float | None:
        return self._state.heard_at

    def start(self) -> None:
        """Start following the feed on the running loop (once; a no-op without `follow`)."""
        if self._task is None and self.options.follow and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name="billhook-follower"
            )

    async def _follow(self) -> None:
        backoff = FOLLOW_BACKOFF_S
        failing: str | None = None
        wait_s = self.options.poll_wait_s
        while True:
            try:
                page = await _changes(self._follow_http, self.cursor or "now", FOLLOW_LIMIT, wait_s)
            except InvalidRequest:
                log.warning("the change feed refused the cursor; following from the head")
                self._state.reset()
                self.cursor = None
                continue
            except Exception as e:  # billhook down or refusing: the cache goes stale
                reason = failure_reason(e)
                if reason != failing:
                    log.warning("the change feed did not answer: %s", reason)
                    failing = reason
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, FOLLOW_BACKOFF_MAX_S)
                continue
            if failing is not None:
                log.info("the change feed answers again")
                failing = None
            backoff = FOLLOW_BACKOFF_S
            caught_up = len(page.changes) < FOLLOW_LIMIT
            self._state.apply(page, caught_up)
            self.cursor = page.next
            notify(self._on_change, page.changes)
            if caught_up and wait_s == 0:
                await asyncio.sleep(FOLLOW_IDLE_S)

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._http.aclose()
        if self._owns_transport:
            await self._follow_http.aclose()

    async def __aenter__(self) -> AsyncBillhook:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _changes(http: httpx.AsyncClient, after: str | None, limit: int, wait: int) -> ChangePage:
    params = answers.changes_params(after, limit, wait)
    try:
        try:
            response = await http.get("/v1/changes", params=params)
        except httpx.TransportError as e:
            raise answers.outage_of(e) from None
        return answers.page_of(response)
    except Outage as o:
        raise BillhookUnavailable(o.reason) from None
