"""A billhook stand-in behind `httpx.MockTransport`: entitlements, checks and the change feed.

It answers like billhook (docs/api.md, SPEC §6a) for what the client uses, lets a
test change a workspace or the enforcement mode (each a change on the feed), take
billhook down in each way the outage policy knows, and counts the requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

DEFAULT_FEATURES = ("reads", "local_create")
TEAM_FEATURES = (*DEFAULT_FEATURES, "ai_imports", "team_sharing")
TOKEN = "test-read-token"  # noqa: S105
BASE = "http://billhook.test"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBillhook:
    def __init__(self) -> None:
        self.tiers: dict[str, tuple[str, tuple[str, ...], int | None]] = {}
        self.enforcement = "enforce"
        self.changes: list[dict[str, Any]] = []
        self.seq = 0
        # None: up; "refuse", "timeout", or an HTTP status: how billhook fails.
        self.down: str | int | None = None
        self.requests: list[httpx.Request] = []
        self.feed_wait_cap_s = 0.05
        self.cursor_refused = False
        # The feed alone answers 503 (checks still work).
        self.feed_down = False
        self._changed = threading.Condition()
        self.on_check: Any = None

    # -- what a test does -------------------------------------------------------------------

    def set_workspace(self, ws: str, tier: str, features: tuple[str, ...], seats: int | None = 5):
        self.tiers[ws] = (tier, features, seats)
        self.seq += 1
        self._append(
            {
                "kind": "entitlement",
                "workspace_id": ws,
                "seq": self.seq,
                "at": "2026-01-01T00:00:00Z",
                "cause": {"kind": "event", "provider": "stripe", "type": "x", "event_id": "evt"},
                "tier": tier,
                "source": "default" if tier == "solo" else "stripe",
                "status": "active",
                "attention": None,
                "next_action": "none",
                "features": {"included": sorted(features)},
                "seats": None if seats is None else {"purchased": seats},
            }
        )

    def set_enforcement(self, mode: str) -> None:
        self.enforcement = mode
        self.seq += 1
        self._append(
            {
                "kind": "enforcement",
                "workspace_id": None,
                "seq": self.seq,
                "at": "2026-01-01T00:00:00Z",
                "cause": {"kind": "time"},
                "enforcement": mode,
            }
        )

    def append_raw(self, change: dict[str, Any]) -> None:
        self._append(change)

    def _append(self, change: dict[str, Any]) -> None:
        with self._changed:
            change["cursor"] = f"c{len(self.changes) + 1}"
            self.changes.append(change)
            self._changed.notify_all()

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path.endswith(suffix))

    def feed_afters(self) -> list[str | None]:
        return [r.url.params.get("after") for r in self.requests if r.url.path == "/v1/changes"]

    # -- answers ----------------------------------------------------------------------------

    def _workspace(self, ws: str) -> tuple[str, tuple[str, ...], int | None]:
        return self.tiers.get(ws, ("solo", DEFAULT_FEATURES, None))

    def _entitlement(self, ws: str) -> dict[str, Any]:
        tier, included, seats = self._workspace(ws)
        every = set(TEAM_FEATURES) | {"sso"}
        return {
            "workspace_id": ws,
            "tier": tier,
            "source": "default" if tier == "solo" else "stripe",
            "status": "none" if tier == "solo" else "active",
            "attention": None,
            "next_action": "upgrade" if tier == "solo" else "none",
            "features": {
                "included": sorted(included),
                "unavailable": sorted(every - set(included)),
            },
            "seats": None if seats is None else {"purchased": seats},
            "subscriptions": [],
            "overrides": [],
            "problems": [],
            "enforcement": self.enforcement,
            "as_of_seq": self.seq,
        }

    def _check(self, ws: str, body: dict[str, Any]) -> httpx.Response:
        action = body["action"]
        if action not in set(TEAM_FEATURES) | {"sso", "invite_member"}:
            return _json(400, {"error": "unknown_action", "detail": f"{action!r} is unknown"})
        tier, included, seats = self._workspace(ws)
        if action == "invite_member":
            permitted = seats is None or body["seats_in_use"] + 1 <= seats
        else:
            permitted = action in included
        mode = self.enforcement
        decision = "allow" if permitted or mode == "disabled" else "would_deny"
        if decision == "would_deny" and mode == "enforce":
            decision = "deny"
        answer: dict[str, Any] = {
            "workspace_id": ws,
            "action": action,
            "allowed": decision != "deny",
            "decision": decision,
            "reason": None if permitted else "tier_required",
            "required_tier": "team",
            "tier": tier,
            "next_action": "upgrade",
            "enforcement": mode,
            "as_of_seq": self.seq,
        }
        if decision == "deny":
            answer = {**answer, "error": "billing_required", "detail": "needs team"}
            return _json(402, answer)
        return _json(200, answer)

    def _page(self, request: httpx.Request) -> httpx.Response | None:
        """The feed's answer now, or None when a long poll should wait for a change."""
        after = request.url.params.get("after")
        if self.cursor_refused and after not in (None, "now"):
            self.cursor_refused = False
            return _json(400, {"error": "invalid_request", "detail": "malformed cursor"})
        limit = int(request.url.params.get("limit", "100"))
        if after == "now":
            head = self.changes[-1]["cursor"] if self.changes else "c0"
            return _json(200, {"changes": [], "next": head})
        start = 0 if after is None else int(after[1:])
        page = self.changes[start : start + limit]
        if not page and float(request.url.params.get("wait", "0")) > 0:
            return None
        return _json(200, {"changes": page, "next": page[-1]["cursor"] if page else after})

    def _failure(self) -> httpx.Response | None:
        if self.down == "refuse":
            raise httpx.ConnectError("connection refused")
        if self.down == "timeout":
            raise httpx.ReadTimeout("timed out")
        if isinstance(self.down, int):
            return _json(self.down, {"error": "unavailable", "detail": "down"})
        return None

    def _answer(self, request: httpx.Request) -> httpx.Response | None:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _json(401, {"error": "unauthorized", "detail": "missing or unknown token"})
        failed = self._failure()
        if failed is not None:
            return failed
        path = request.url.path
        if path == "/v1/changes":
            if self.feed_down:
                return _json(503, {"error": "unavailable", "detail": "down"})
            return self._page(request)
        parts = path.split("/")
        ws = parts[3]
        if parts[-1] == "entitlements":
            return _json(200, self._entitlement(ws))
        if self.on_check is not None:
            self.on_check()
        return self._check(ws, json.loads(request.content))

    def handler(self, request: httpx.Request) -> httpx.Response:
        """The sync transport's handler: a long poll waits (briefly) for a change."""
        response = self._answer(request)
        while response is None:
            with self._changed:
                self._changed.wait(self.feed_wait_cap_s)
            response = self._answer_again(request)
        return response

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        response = self._answer(request)
        while response is None:
            await asyncio.sleep(self.feed_wait_cap_s)
            response = self._answer_again(request)
        return response

    def _answer_again(self, request: httpx.Request) -> httpx.Response:
        # A long poll that waited answers what there is now (maybe nothing).
        failed = self._failure()
        if failed is not None:
            return failed
        after = request.url.params.get("after")
        start = 0 if after is None else int(after[1:])
        page = self.changes[start:]
        return _json(200, {"changes": page, "next": page[-1]["cursor"] if page else after})


def _json(status: int, body: object) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


@pytest.fixture
def fake() -> FakeBillhook:
    return FakeBillhook()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transport(fake: FakeBillhook) -> httpx.MockTransport:
    return httpx.MockTransport(fake.handler)


def eventually(predicate: Any, timeout_s: float = 5.0) -> None:
    """Wait (in real time) until `predicate()` holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def make_client(transport: httpx.MockTransport, clock: Clock) -> Iterator[Any]:
    """Billhook(...) over the fake, with the test's clock; a following client is returned
    once its follower has caught up. Every client is closed after the test."""
    from billhook_client import Billhook

    made: list[Billhook] = []

    def make(_wait: bool = True, **options: Any) -> Billhook:
        options.setdefault("clock", clock)
        client = Billhook(BASE, TOKEN, transport=transport, **options)
        made.append(client)
        if _wait and options.get("follow", True):
            eventually(lambda: client.heard_at is not None)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture(name="eventually")
def eventually_fixture() -> Any:
    return eventually
