"""The Python client against a real billhook (SPEC §6a): cached checks cost no request,
the feed keeps the cache true, each outage policy answers with billhook stopped, and the
follower resumes from its cursor when billhook is back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billhook_client import (
    Billhook,
    BillhookUnavailable,
    BillingRequired,
    BillingUnavailable,
    Change,
    EnforcementChange,
    EntitlementChange,
    UnknownChange,
)

from billhook.config import Settings
from billhook.testing.servers import wait_until
from billhook.testing.settings import READ_TOKEN
from tests.clients.server import BillhookServer, CountingTransport


def _known(change: Change) -> EntitlementChange | EnforcementChange:
    assert not isinstance(change, UnknownChange), change
    return change


class Clock:
    """The client's clock, which the test moves (billhook keeps real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The client's max staleness: its long poll is half of it (1 s), which bounds how long
# stopping billhook waits for the poll in flight.
STALENESS_S = 2.0


@pytest.fixture
def billhook(settings: Settings) -> Iterator[BillhookServer]:
    server = BillhookServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_client(
    billhook: BillhookServer, transport: CountingTransport, clock: Clock
) -> Iterator[Any]:
    made: list[Billhook] = []

    def make(**options: Any) -> Billhook:
        options.setdefault("max_staleness_s", STALENESS_S)
        client = Billhook(billhook.url, READ_TOKEN, transport=transport, clock=clock, **options)
        made.append(client)
        wait_until(lambda: client.heard_at is not None, 10, "the follower to catch up")
        return client

    yield make
    for client in made:
        client.close()


def test_a_cached_check_makes_no_request(
    billhook: BillhookServer, make_client: Any, transport: CountingTransport
) -> None:
    billhook.subscribe("ws_1")
    client = make_client()
    first = client.check("ws_1", "ai_imports")
    assert (first.allowed, first.decision, first.tier, first.fallback) == (
        True,
        "allow",
        "team",
        False,
    )
    for _ in range(100):
        assert client.check("ws_1", "ai_imports") is first
    assert transport.count("POST", "/check") == 1
    assert first.body == billhook.check("ws_1", "ai_imports").content
    entitlement = client.entitlements("ws_1")
    assert client.entitlements("ws_1") is entitlement
    assert entitlement.body == billhook.entitlements_body("ws_1")
    assert transport.count("GET", "/entitlements") == 1


def test_a_change_on_the_feed_is_reflected(
    billhook: BillhookServer, make_client: Any, transport: CountingTransport
) -> None:
    seen: list[EntitlementChange | EnforcementChange] = []
    client = make_client(on_change=lambda c: seen.append(_known(c)))
    before = client.check("ws_1", "ai_imports")
    assert (before.decision, before.tier) == ("would_deny", "solo")  # billhook starts in observe
    other = client.check("ws_2", "reads")
    seq = billhook.subscribe("ws_1")
    wait_until(lambda: client.cached_check("ws_1", "ai_imports") is None, 10, "the change")
    change = next(c for c in seen if isinstance(c, EntitlementChange))
    assert (change.workspace_id, change.tier, change.seq) == ("ws_1", "team", seq)
    assert "ai_imports" in change.included
    after = client.check("ws_1", "ai_imports")
    assert (after.decision, after.tier, after.as_of_seq) == ("allow", "team", seq)
    assert client.cached_check("ws_2", "reads") is other  # another workspace's stays
    assert transport.count("POST", "/check") == 3

    mode_seq = billhook.enforce("enforce")
    wait_until(lambda: client.cached_check("ws_2", "reads") is None, 10, "the mode change")
    assert any(isinstance(c, EnforcementChange) and c.seq == mode_seq for c in seen)
    denied = client.check("ws_2", "ai_imports")
    assert (denied.allowed, denied.decision, denied.enforcement) == (False, "deny", "enforce")
    assert denied.body == billhook.check("ws_2", "ai_imports").content


def _learn(billhook: BillhookServer, client: Billhook) -> dict[str, Any]:
    """Enforce, one paid and one free workspace, and what the client learns of them."""
    billhook.subscribe("ws_paid")
    billhook.enforce("enforce")
    head = billhook.head()
    wait_until(lambda: client.cursor == head, 10, "the follower to see both changes")
    assert client.entitlements("ws_free").enforcement == "enforce"
    return {
        "paid": client.check("ws_paid", "ai_imports"),
        "sso": client.check("ws_paid", "sso"),
        "entitlement": client.entitlements("ws_paid"),
    }


@pytest.mark.parametrize("policy", ["closed", "open", "last_known"])
def test_each_policy_with_billhook_stopped(
    policy: str, billhook: BillhookServer, make_client: Any, clock: Clock
) -> None:
    client = make_client(fail=policy, last_known_max_age_s=300)
    known = _learn(billhook, client)
    assert known["paid"].allowed
    assert known["sso"].billing_required
    billhook.stop()
    clock.now += STALENESS_S + 1  # the follower has not heard from billhook since
    paid = client.check("ws_paid", "ai_imports")
    free = client.check("ws_paid", "reads")
    never_asked = client.check("ws_paid", "team_sharing")
    for answer in (paid, free, never_asked):
        assert (answer.fallback, answer.fallback_reason) == (True, "unreachable")
    assert free.allowed  # a default-tier feature, under every policy
    if policy == "open":
        assert paid.allowed
        assert never_asked.allowed
        assert client.check("ws_paid", "sso").allowed
        assert client.entitlements("ws_paid") == known["entitlement"].as_fallback("unreachable")
    if policy == "closed":
        assert (paid.allowed, paid.decision, never_asked.allowed) == (False, "deny", False)
        with pytest.raises(BillingUnavailable):
            client.require("ws_paid", "ai_imports")
        with pytest.raises(BillhookUnavailable):
            client.entitlements("ws_paid")
    if policy == "last_known":
        assert paid == known["paid"].as_fallback("unreachable")
        assert never_asked.allowed  # from the last known features
        with pytest.raises(BillingRequired) as raised:
            client.require("ws_paid", "sso")
        assert raised.value.body == known["sso"].body
        clock.now += 300
        late = client.check("ws_paid", "ai_imports")
        assert (late.allowed, late.fallback, late.fallback_reason) == (False, True, "unreachable")
        assert client.check("ws_paid", "reads").allowed


def test_the_cache_resynchronizes_from_its_cursor(
    billhook: BillhookServer, make_client: Any, transport: CountingTransport, clock: Clock
) -> None:
    seen: list[EntitlementChange | EnforcementChange] = []
    client = make_client(on_change=lambda c: seen.append(_known(c)))
    assert not client.check("ws_2", "ai_imports").fallback
    first = billhook.subscribe("ws_1")
    wait_until(lambda: [c.seq for c in seen] == [first], 10, "the first change")
    cursor = client.cursor
    billhook.stop()
    # While the client cannot reach it, billhook (served elsewhere) changes three workspaces.
    elsewhere = BillhookServer(billhook.settings)
    url = elsewhere.start()
    try:
        missed = [billhook.subscribe(ws, url) for ws in ("ws_2", "ws_3", "ws_4")]
    finally:
        elsewhere.stop()
    clock.now += STALENESS_S + 1
    assert client.check("ws_2", "ai_imports").fallback
    billhook.start()  # back, on the same data and port
    wait_until(lambda: len(seen) >= 4, 20, "the missed changes")
    assert [c.seq for c in seen] == [first, *missed]  # each once, in order
    assert [c.workspace_id for c in seen if isinstance(c, EntitlementChange)] == [
        "ws_1",
        "ws_2",
        "ws_3",
        "ws_4",
    ]
    afters = transport.feed_afters()
    assert afters[0] == "now"
    assert "now" not in afters[1:]  # it never skipped to the head
    assert cursor in afters
    wait_until(lambda: client.heard_at == clock.now, 10, "the follower to catch up")
    check = client.check("ws_2", "ai_imports")
    assert (check.fallback, check.allowed, check.tier, check.as_of_seq) == (
        False,
        True,
        "team",
        missed[-1],
    )
