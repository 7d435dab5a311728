"""What billhook refused, as the client's own errors under one root; never an httpx error."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from billhook_client import (
    Billhook,
    BillhookClientError,
    BillingRequired,
    Forbidden,
    InvalidRequest,
    Unauthorized,
    UnexpectedAnswer,
    UnknownAction,
)
from conftest import BASE, TEAM_FEATURES, FakeBillhook


def _answering(status: int, body: object) -> Billhook:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return Billhook(BASE, "t", transport=httpx.MockTransport(handler), follow=False)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"error": "unauthorized", "detail": "no token"}, Unauthorized),
        (403, {"error": "forbidden", "detail": "admin only"}, Forbidden),
        (400, {"error": "unknown_action", "detail": "'x' is unknown"}, UnknownAction),
        (400, {"error": "invalid_request", "detail": "missing field"}, InvalidRequest),
        (404, {"error": "not_found", "detail": "no route"}, UnexpectedAnswer),
        (200, b"<html>", UnexpectedAnswer),
        (200, {"allowed": True}, UnexpectedAnswer),
        (400, b"not json", InvalidRequest),
    ],
)
def test_refusals_are_the_clients_errors(
    status: int, body: object, error: type[BillhookClientError]
) -> None:
    with _answering(status, body) as client:
        with pytest.raises(error) as raised:
            client.check("ws_1", "x")
        assert isinstance(raised.value, BillhookClientError)
        if isinstance(body, dict) and "detail" in body:
            assert raised.value.detail == body["detail"]
            assert raised.value.status == status


def test_a_wrong_token_is_unauthorized(fake: FakeBillhook) -> None:
    transport = httpx.MockTransport(fake.handler)
    with Billhook(BASE, "wrong", transport=transport, follow=False) as client:
        with pytest.raises(Unauthorized):
            client.entitlements("ws_1")
        with pytest.raises(Unauthorized):
            client.changes()


def test_require_raises_billhooks_402(fake: FakeBillhook, make_client: Any) -> None:
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    client = make_client()
    assert client.require("ws_1", "ai_imports").allowed
    with pytest.raises(BillingRequired) as raised:
        client.require("ws_1", "sso")
    denial = raised.value
    assert denial.answer["error"] == "billing_required"
    assert denial.answer["action"] == "sso"
    assert denial.body == client.check("ws_1", "sso").body
    assert denial.status == 402
    assert not denial.check.fallback


def test_the_raw_feed(fake: FakeBillhook) -> None:
    fake.set_workspace("ws_1", "team", TEAM_FEATURES)
    fake.set_enforcement("observe")
    with Billhook(
        BASE, "test-read-token", transport=httpx.MockTransport(fake.handler), follow=False
    ) as client:
        page = client.changes()
        assert [c.cursor for c in page.changes] == ["c1", "c2"]
        assert page.next == "c2"
        first, second = page.changes
        assert (first.workspace_id, first.tier, first.seats, first.cause.kind) == (  # type: ignore[union-attr]
            "ws_1",
            "team",
            5,
            "event",
        )
        assert second.enforcement == "observe"  # type: ignore[union-attr]
        assert client.changes(after="c2").changes == ()
        assert client.changes(after="now").next == "c2"
        with pytest.raises(ValueError, match="limit"):
            client.changes(limit=0)
        with pytest.raises(ValueError, match="wait"):
            client.changes(wait=31)
