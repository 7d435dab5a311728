"""Subscription facts as the store keeps them: the exact text of a compact `json` encoding."""

from __future__ import annotations

import json

import pytest

from billhook.domain.facts import Item, Order, SubscriptionFact
from billhook.projections import codec

_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def _fact(workspace: str | None, time_us: int = 1_700_000_000_000_000) -> SubscriptionFact:
    return SubscriptionFact(
        provider="stripe",
        id="sub_1",
        customer="cus_1",
        workspace=workspace,
        status="active",
        provider_status="active",
        product=None,
        items=(Item("price_team_monthly", 5, "2026-12-01T00:00:00Z"),),
        seats=None,
        cancel_at_period_end=False,
        current_period_end="2026-12-01T00:00:00Z",
        livemode=0,
        event_id="evt_1",
        order=Order(time_us, False, 1, 7),
        healthy_us=time_us,
        attention_us=(time_us + 1,),
    )


@pytest.mark.parametrize(
    "workspace",
    [
        "ws_1",
        None,
        "",
        "équipe",  # non-ASCII: `json` escapes it as \\u00e9
        "ws\u2028",
        "a\"quote'and\\backslash",
        "tab\there\nnewline\x01",
        "del\x7f",  # DEL: `json` escapes it, orjson would not
        "slash/ok<>&",
        "emoji\U0001f600",
    ],
)
def test_a_subscription_is_stored_as_json_would_write_it(workspace: str | None) -> None:
    fact = _fact(workspace)
    text = codec.dumps_subscription(fact)
    assert text == _COMPACT(json.loads(text))
    assert codec.subscription(text) == fact


def test_integers_beyond_64_bits_are_still_written() -> None:
    fact = _fact("ws_1", time_us=2**70)
    text = codec.dumps_subscription(fact)
    assert text == _COMPACT(json.loads(text))
    assert codec.subscription(text) == fact
