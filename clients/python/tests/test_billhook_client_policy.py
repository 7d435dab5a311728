"""The outage policy: what each of `closed`, `open` and `last_known` answers when billhook
cannot (refused, timed out, 5xx), always marked `fallback=True` with the reason."""

from __future__ import annotations

from typing import Any

import pytest
from billhook_client import BillhookUnavailable, BillingRequired, BillingUnavailable
from conftest import TEAM_FEATURES, Clock, FakeBillhook

# How billhook fails, and the reason the answers give.
OUTAGES = [("refuse", "unreachable"), ("timeout", "timeout"), (503, "server_error:503")]


def _outage(fake: FakeBillhook, client: Any, clock: Clock, down: str | int) -> None:
    """billhook goes down and the cache stops being trusted (max_staleness_s=10)."""
    fake.down = down
    clock.advance(11)


@pytest.mark.parametrize(("down", "reason"), OUTAGES)
def test_open_allows_everything(
    down: str | int, reason: str, fake: FakeBillhook, make_client: Any, clock: Clock
) -> None:
    client = make_client(fail="open", max_staleness_s=10)
    assert client.check("ws_1", "ai_imports").decision == "deny"
    _outage(fake, client, clock, down)
    for action, seats in [("ai_imports", None), ("sso", None), ("invite_member", 99)]:
        check = client.check("ws_1", action, seats)
        assert (check.allowed, check.decision) == (True, "allow")
        assert (check.fallback, check.fallback_reason) == (True, reason)
        assert check.body == b""


@pytest.mark.parametrize(("down", "reason"), OUTAGES)
def test_closed_allows_only_the_default_tier(
    down: str | int, reason: str, fake: FakeBillhook, make_client: Any, clock: Clock
) -> None:
    fake.set_workspace("ws_paid", "team", TEAM_FEATURES)
    client = make_client(fail="closed", max_staleness_s=10)
    assert client.entitlements("ws_free").source == "default"  # teaches the default tier
    assert client.check("ws_paid", "ai_imports").allowed
    _outage(fake, client, clock, down)
    paid = client.check("ws_paid", "ai_imports")
    assert (paid.allowed, paid.decision, paid.fallback, paid.fallback_reason) == (
        False,
        "deny",
        True,
        reason,
    )
    assert not paid.billing_required
    free = client.check("ws_paid", "reads")
    assert (free.allowed, free.fallback) == (True, True)
    assert not client.check("ws_paid", "invite_member", 0).allowed
    with pytest.raises(BillingUnavailable) as raised:
        client.require("ws_paid", "ai_imports")
    assert raised.value.check.fallback_reason == reason
    with pytest.raises(BillhookUnavailable) as unavailable:
        client.entitlements("ws_paid")
    assert unavailable.value.reason == reason


def test_closed_knowing_nothing_denies_all_but_free_actions(
    fake: FakeBillhook, make_client: Any, clock: Clock
) -> None:
    fake.down = "refuse"
    client = make_client(fail="closed", follow=False, free_actions=["reads"])
    assert not client.check("ws_1", "local_create").allowed
    assert client.check("ws_1", "reads").allowed
    assert client.check("ws_1", "reads").enforcement == "enforce"


def test_closed_respects_observe(fake: FakeBillhook, make_client: Any, clock: Clock) -> None:
    fake.set_enforcement("observe")
    client = make_client(fail="closed", max_staleness_s=10)
    assert client.check("ws_1", "ai_imports").decision == "would_deny"
    _outage(fake, client, clock, "refuse")
    check = client.check("ws_1", "ai_imports")
    assert (check.allowed, check.decision, check.fallback) == (True, "would_deny", True)
    fake.down = None
    fake.set_enforcement("disabled")


@pytest.mark.parametrize(("down", "reason"), OUTAGES)
def test_last_known_then_closed(
    down: str | int, reason: str, fake: FakeBillhook, make_client: Any, clock: Clock
) -> None:
    fake.set_workspace("ws_1", "team", TEAM_FEATURES, seats=3)
    client = make_client(fail="last_known", max_staleness_s=10, last_known_max_age_s=100)
    allowed = client.check("ws_1", "ai_imports")
    denied = client.check("ws_1", "sso")
    known = client.entitlements("ws_1")
    _outage(fake, client, clock, down)
    again = client.check("ws_1", "ai_imports")
    assert again == allowed.as_fallback(reason)
    assert (again.fallback, again.fallback_reason, again.as_of_seq) == (True, reason, 1)
    # billhook's own 402, given again: still billhook's body.
    with pytest.raises(BillingRequired) as raised:
        client.require("ws_1", "sso")
    assert raised.value.body == denied.body
    assert raised.value.check.fallback
    # Not asked before: derived from the last known features and seats.
    assert client.check("ws_1", "team_sharing").allowed
    assert client.check("ws_1", "invite_member", 2).allowed
    assert not client.check("ws_1", "invite_member", 3).allowed
    assert client.entitlements("ws_1") == known.as_fallback(reason)
    clock.advance(100)  # 111 s since billhook last confirmed them
    late = client.check("ws_1", "ai_imports")
    assert (late.allowed, late.fallback, late.fallback_reason) == (False, True, reason)
    with pytest.raises(BillhookUnavailable):
        client.entitlements("ws_1")


def test_last_known_knows_the_changes_it_followed(
    fake: FakeBillhook, make_client: Any, clock: Clock, eventually: Any
) -> None:
    client = make_client(fail="last_known", max_staleness_s=10, last_known_max_age_s=100)
    assert not client.check("ws_1", "ai_imports").allowed
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    eventually(lambda: client.cached_check("ws_1", "ai_imports") is None)
    _outage(fake, client, clock, "refuse")
    check = client.check("ws_1", "ai_imports")
    assert (check.allowed, check.fallback, check.tier, check.as_of_seq) == (True, True, "team", 1)


def test_the_age_counts_from_the_last_time_billhook_confirmed(
    fake: FakeBillhook, make_client: Any, clock: Clock, eventually: Any
) -> None:
    client = make_client(fail="last_known", max_staleness_s=10, last_known_max_age_s=30)
    client.check("ws_1", "reads")
    clock.advance(25)  # the follower keeps confirming: the answer is 0 s old, not 25
    eventually(lambda: client.heard_at == clock.now)
    _outage(fake, client, clock, "refuse")
    clock.advance(18)
    assert client.check("ws_1", "reads").allowed  # 29 s
    clock.advance(2)
    assert not client.check("ws_1", "reads").allowed  # 31 s: closed, nothing free known


def test_an_unknown_policy_is_refused() -> None:
    from billhook_client import Billhook

    with pytest.raises(ValueError, match="fail must be one of"):
        Billhook("http://x", "t", fail="maybe", follow=False)
