"""The cache: billhook's own answers, no request when cached, dropped by the changes that
touch them, distrusted when the follower has not heard from billhook for too long."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TEAM_FEATURES, Clock, FakeBillhook


def test_a_cached_check_makes_no_request(fake: FakeBillhook, make_client: Any) -> None:
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    client = make_client()
    first = client.check("ws_1", "ai_imports")
    assert (first.allowed, first.decision, first.fallback) == (True, "allow", False)
    for _ in range(50):
        assert client.check("ws_1", "ai_imports") is first
    assert fake.count("POST", "/check") == 1
    entitlement = client.entitlements("ws_1")
    assert client.entitlements("ws_1") is entitlement
    assert fake.count("GET", "/entitlements") == 1


def test_cached_answers_are_billhooks_bytes(fake: FakeBillhook, make_client: Any) -> None:
    client = make_client()
    denied = client.check("ws_1", "ai_imports")
    assert denied.billing_required
    assert denied.body == fake.handler(_check_request("ws_1", "ai_imports")).content
    assert client.check("ws_1", "ai_imports").body == denied.body


def _check_request(ws: str, action: str) -> Any:
    import httpx
    from conftest import BASE, TOKEN

    return httpx.Request(
        "POST",
        f"{BASE}/v1/workspaces/{ws}/check",
        json={"action": action},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


def test_checks_are_keyed_by_action_and_seats(fake: FakeBillhook, make_client: Any) -> None:
    fake.set_workspace("ws_1", "team", TEAM_FEATURES, seats=5)
    client = make_client()
    assert client.check("ws_1", "invite_member", 4).allowed
    assert not client.check("ws_1", "invite_member", 5).allowed
    assert client.check("ws_1", "invite_member", 4).allowed
    assert fake.count("POST", "/check") == 2


def test_an_entitlement_change_drops_only_its_workspace(
    fake: FakeBillhook, make_client: Any, eventually: Any
) -> None:
    client = make_client()
    assert not client.check("ws_1", "ai_imports").allowed
    assert not client.check("ws_2", "ai_imports").allowed
    client.entitlements("ws_1")
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    eventually(lambda: client.cached_check("ws_1", "ai_imports") is None)
    upgraded = client.check("ws_1", "ai_imports")
    assert (upgraded.allowed, upgraded.tier, upgraded.as_of_seq) == (True, "team", 1)
    assert client.entitlements("ws_1").tier == "team"
    assert client.cached_check("ws_2", "ai_imports") is not None
    assert fake.count("POST", "/check") == 3
    assert fake.count("GET", "/entitlements") == 2


@pytest.mark.parametrize("change", ["enforcement", "unknown"])
def test_an_enforcement_change_drops_everything(
    change: str, fake: FakeBillhook, make_client: Any, eventually: Any
) -> None:
    client = make_client()
    assert client.check("ws_1", "ai_imports").decision == "deny"
    assert client.check("ws_2", "reads").decision == "allow"
    if change == "enforcement":
        fake.set_enforcement("observe")
    else:
        fake.append_raw({"kind": "price_book", "workspace_id": None, "seq": 9})
    eventually(lambda: client.cached_check("ws_1", "ai_imports") is None)
    assert client.cached_check("ws_2", "reads") is None
    if change == "enforcement":
        assert client.check("ws_1", "ai_imports").decision == "would_deny"


def test_nothing_is_cached_before_the_follower_has_a_cursor(
    fake: FakeBillhook, make_client: Any
) -> None:
    fake.feed_down = True  # an answer before the follower's cursor may have missed a change
    client = make_client(follow=True, fail="closed", _wait=False)
    assert client.check("ws_1", "reads").fallback is False
    assert client.cached_check("ws_1", "reads") is None
    client.check("ws_1", "reads")
    assert fake.count("POST", "/check") == 2


def test_a_change_during_the_fetch_keeps_the_answer_out_of_the_cache(
    fake: FakeBillhook, make_client: Any, eventually: Any
) -> None:
    client = make_client()

    def upgrade_meanwhile() -> None:
        fake.on_check = None
        fake.set_workspace("ws_1", "team", TEAM_FEATURES)
        eventually(lambda: client.cursor == fake.changes[-1]["cursor"])

    fake.on_check = upgrade_meanwhile
    client.check("ws_1", "ai_imports")
    assert client.cached_check("ws_1", "ai_imports") is None
    assert client.check("ws_1", "ai_imports").allowed
    assert client.cached_check("ws_1", "ai_imports") is not None


def test_stale_cache_is_not_trusted(
    fake: FakeBillhook, make_client: Any, clock: Clock, eventually: Any
) -> None:
    client = make_client(max_staleness_s=10, fail="open")
    cached = client.check("ws_1", "ai_imports")
    fake.down = "refuse"
    heard = len(fake.requests)
    eventually(lambda: len(fake.requests) > heard + 1)  # the follower is failing now
    clock.advance(9)
    assert client.check("ws_1", "ai_imports") is cached
    clock.advance(2)
    stale = client.check("ws_1", "ai_imports")
    assert (stale.fallback, stale.fallback_reason, stale.allowed) == (True, "unreachable", True)
    fake.down = None
    eventually(lambda: client.heard_at == clock.now)
    assert client.check("ws_1", "ai_imports") is cached


def test_without_a_follower_answers_live_for_max_staleness(
    fake: FakeBillhook, make_client: Any, clock: Clock
) -> None:
    client = make_client(follow=False, max_staleness_s=5)
    first = client.check("ws_1", "reads")
    clock.advance(5)
    assert client.check("ws_1", "reads") is first
    clock.advance(0.1)
    assert client.check("ws_1", "reads") is not first
    assert fake.count("POST", "/check") == 2
    assert fake.feed_afters() == []


def test_the_follower_resumes_from_its_cursor(
    fake: FakeBillhook, make_client: Any, eventually: Any
) -> None:
    seen: list[Any] = []
    client = make_client(on_change=seen.append)
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    eventually(lambda: len(seen) == 1)
    fake.down = "refuse"
    cursor = client.cursor
    polls = len(fake.feed_afters())
    eventually(lambda: len(fake.feed_afters()) > polls + 1)
    for n in range(3):  # changes billhook makes while the client cannot reach it
        fake.set_workspace(f"ws_{n + 2}", "team", TEAM_FEATURES)
    fake.down = None
    eventually(lambda: len(seen) == 4)
    assert [c.cursor for c in seen] == ["c1", "c2", "c3", "c4"]
    assert cursor in fake.feed_afters()[polls:]
    assert "now" not in fake.feed_afters()[1:]


def test_a_refused_cursor_follows_from_the_head_again(
    fake: FakeBillhook, make_client: Any, eventually: Any
) -> None:
    client = make_client()
    client.check("ws_1", "reads")
    fake.cursor_refused = True
    eventually(lambda: fake.feed_afters().count("now") == 2)
    assert client.cached_check("ws_1", "reads") is None
    eventually(lambda: client.heard_at is not None)
    client.check("ws_1", "reads")
    assert client.cached_check("ws_1", "reads") is not None
