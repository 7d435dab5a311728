"""Every status code of the entitlement API (SPEC §6), through a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from billhook.api.app import create_app
from billhook.api.schemas import entitlement_answer
from billhook.config import Settings
from billhook.domain.times import iso_seconds
from billhook.log.sqlite import EventLog
from billhook.providers.billhook import OVERRIDE_SET
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, make_settings
from billhook.testing.stripe import (
    STRIPE_PII,
    STRIPE_SECRET,
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)
from tests.contract import contract_client
from tests.feed import NOW, Feed

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Api:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def deliver(self, event_type: str, obj: dict[str, Any], created: int | None = None) -> int:
        body = stripe_event_body(event_type, obj=obj, created=created)
        response = self.client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        seq: int = response.json()["seq"]
        self.wait_for(seq)
        return seq

    def wait_for(self, seq: int) -> None:
        deadline = time.monotonic() + 10
        while self.get("ws_probe").json()["as_of_seq"] < seq:
            assert time.monotonic() < deadline, "projection did not catch up"
            time.sleep(0.01)

    def get(self, workspace: str, **params: str) -> httpx.Response:
        return self.client.get(
            f"/v1/workspaces/{workspace}/entitlements", params=params, headers=READ
        )

    def check(self, workspace: str, body: object, headers: dict[str, str] = READ) -> httpx.Response:
        return self.client.post(f"/v1/workspaces/{workspace}/check", json=body, headers=headers)


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[Api]:
    """The API over each storage backend: every test here holds on both (SPEC §4a)."""
    if request.param == "postgresql":
        storage = {"storage": {"url": request.getfixturevalue("pg_url")}}
        settings = make_settings(tmp_path / "data", sections=storage)
    with (
        serve_in_thread(create_app(settings)) as url,
        contract_client(url, timeout=10) as c,
    ):
        yield Api(c)


def _error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def test_unknown_workspace_is_on_the_default_tier(api: Api) -> None:
    body = api.get("ws_new").json()
    assert body == {
        "workspace_id": "ws_new",
        "tier": "solo",
        "source": "default",
        "status": "none",
        "attention": None,
        "next_action": "upgrade",
        "features": {
            "included": ["local_create", "package_install", "public_templates", "reads"],
            "unavailable": sorted(
                [
                    "external_imports",
                    "ai_imports",
                    "team_sharing",
                    "private_registry",
                    "approval_governance",
                    "external_update_checks",
                    "sso",
                    "scim",
                    "siem_export",
                ]
            ),
        },
        "seats": None,
        "subscriptions": [],
        "overrides": [],
        "problems": [],
        "enforcement": "observe",
        "as_of_seq": 0,
    }


def test_entitlements_as_of_and_history(api: Api) -> None:
    t0 = int(time.time()) - 600
    # A period that ends in the future: a canceling one stops granting once it has ended.
    end = t0 + 30 * 86_400
    api.deliver("customer.created", stripe_customer(metadata={"workspace_id": "ws_1"}), t0)
    created = api.deliver(
        "customer.subscription.created", stripe_subscription(period_end=end), t0 + 1
    )
    canceling = api.deliver(
        "customer.subscription.updated",
        stripe_subscription(cancel_at_period_end=True, period_end=end),
        t0 + 2,
    )
    now = api.get("ws_1").json()
    assert (now["tier"], now["source"], now["status"], now["next_action"]) == (
        "team",
        "stripe",
        "canceling",
        "resume_subscription",
    )
    assert now["seats"] == {"purchased": 5}
    assert now["subscriptions"] == [
        {
            "provider": "stripe",
            "id": "sub_1",
            "customer": "cus_1",
            "tier": "team",
            "status": "canceling",
            "price": "price_team_monthly",
            "interval": "month",
            "current_period_end": iso_seconds(datetime.fromtimestamp(end, UTC)),
            "cancel_at_period_end": True,
            "account": None,
        }
    ]
    before = api.get("ws_1", as_of=str(created - 1)).json()
    assert (before["tier"], before["status"], before["as_of_seq"]) == ("solo", "none", created - 1)
    at_create = api.get("ws_1", as_of=str(created)).json()
    # Leading zeros name the same seq, however many there are.
    assert api.get("ws_1", as_of="0" * 30 + str(created)).json() == at_create
    assert (at_create["tier"], at_create["status"], at_create["as_of_seq"]) == (
        "team",
        "active",
        created,
    )
    iso = api.get("ws_1", as_of=datetime.now(UTC).isoformat()).json()
    assert (iso["status"], iso["as_of_seq"]) == ("canceling", canceling)
    _error(api.get("ws_1", as_of="yesterday"), 400, "invalid_request")
    _error(api.get("ws_1", as_of="999999"), 400, "invalid_request")

    history = api.client.get("/v1/workspaces/ws_1/history", headers=READ).json()
    # Linking the customer changed nothing (solo, default, none): only changes are listed.
    assert [(h["seq"], h["tier"], h["source"], h["status"]) for h in history] == [
        (created, "team", "stripe", "active"),
        (canceling, "team", "stripe", "canceling"),
    ]
    assert history[0]["cause"]["type"] == "customer.subscription.created"
    assert history[0]["cause"]["provider"] == "stripe"
    assert history[0]["cause"]["event_id"].startswith("evt_")


def _set_enforcement(api: Api, mode: str) -> None:
    body = {"mode": mode, "approved_by": "cfo", "reason": "rollout"}
    response = api.client.put("/v1/admin/enforcement", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["seq"], int)


def test_check_in_every_enforcement_mode(api: Api) -> None:
    api.deliver(
        "customer.subscription.created", stripe_subscription(metadata={"workspace_id": "ws_1"})
    )
    allowed = api.check("ws_1", {"action": "ai_imports"})
    assert allowed.status_code == 200
    assert allowed.json() == {
        "workspace_id": "ws_1",
        "action": "ai_imports",
        "allowed": True,
        "decision": "allow",
        "reason": None,
        "required_tier": "team",
        "tier": "team",
        "next_action": "none",
        "enforcement": "observe",
        "as_of_seq": allowed.json()["as_of_seq"],
    }
    observed = api.check("ws_1", {"action": "sso"}).json()
    assert (observed["allowed"], observed["decision"], observed["reason"]) == (
        True,
        "would_deny",
        "tier_required",
    )
    assert observed["required_tier"] == "enterprise"

    _set_enforcement(api, "enforce")
    denied = api.check("ws_1", {"action": "sso"})
    body = _error(denied, 402, "billing_required")
    assert (body["allowed"], body["decision"], body["reason"], body["enforcement"]) == (
        False,
        "deny",
        "tier_required",
        "enforce",
    )
    assert api.check("ws_1", {"action": "ai_imports"}).json()["decision"] == "allow"

    _set_enforcement(api, "disabled")
    free = api.check("ws_1", {"action": "sso"}).json()
    assert (free["allowed"], free["decision"], free["reason"], free["enforcement"]) == (
        True,
        "allow",
        None,
        "disabled",
    )


def test_seat_gate(api: Api) -> None:
    api.deliver(
        "customer.subscription.created", stripe_subscription(metadata={"workspace_id": "ws_1"})
    )
    _set_enforcement(api, "enforce")
    assert (
        api.check("ws_1", {"action": "invite_member", "seats_in_use": 4}).json()["allowed"] is True
    )
    full = _error(
        api.check("ws_1", {"action": "invite_member", "seats_in_use": 5}), 402, "billing_required"
    )
    assert full["reason"] == "seat_limit"
    # Unlimited seats (no subscription): always allowed.
    assert (
        api.check("ws_2", {"action": "invite_member", "seats_in_use": 500}).json()["allowed"]
        is True
    )
    _error(api.check("ws_1", {"action": "invite_member"}), 400, "invalid_request")
    _error(
        api.check("ws_1", {"action": "invite_member", "seats_in_use": -1}), 400, "invalid_request"
    )


def test_billing_attention_blocks_paid_features_but_never_reads(api: Api) -> None:
    sub = stripe_subscription(status="past_due", metadata={"workspace_id": "ws_1"})
    api.deliver("customer.subscription.created", sub)
    _set_enforcement(api, "enforce")
    body = _error(api.check("ws_1", {"action": "ai_imports"}), 402, "billing_required")
    assert (body["reason"], body["next_action"], body["tier"]) == (
        "billing_attention",
        "update_payment_method",
        "team",
    )
    assert api.check("ws_1", {"action": "reads"}).json()["allowed"] is True


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ({"action": "teleport"}, "unknown_action", "teleport"),
        ({}, "invalid_request", "action"),
        ({"action": 7}, "invalid_request", "action"),
        ([1, 2], "invalid_request", "object"),
    ],
)
def test_check_bad_requests(api: Api, body: object, error: str, field: str) -> None:
    assert field in _error(api.check("ws_1", body), 400, error)["detail"]


def test_check_rejects_a_body_that_is_not_json(api: Api) -> None:
    response = api.client.post("/v1/workspaces/ws_1/check", content=b"{nope", headers=READ)
    _error(response, 400, "invalid_request")


def test_overrides_set_and_revoke(api: Api) -> None:
    body = {
        "workspace_id": "ws_1",
        "kind": "manual_pilot",
        "tier": "team",
        "expires_at": "2099-01-01T00:00:00+01:00",
        "reason": "pilot",
        "actor": "ops-1",
    }
    created = api.client.post("/v1/admin/overrides", json=body, headers=ADMIN)
    assert created.status_code == 201
    seq = created.json()["seq"]
    now = api.get("ws_1").json()
    assert (now["tier"], now["source"], now["as_of_seq"]) == ("team", "manual_pilot", seq)
    assert now["overrides"] == [
        {
            "kind": "manual_pilot",
            "tier": "team",
            "expires_at": "2098-12-31T23:00:00Z",
            "expired": False,
            "seq": seq,
        }
    ]
    revoke = {"reason": "pilot over", "actor": "ops-1"}
    path = "/v1/admin/overrides/ws_1/manual_pilot"
    revoked = api.client.request("DELETE", path, json=revoke, headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["seq"] == seq + 1
    assert api.get("ws_1").json()["source"] == "default"
    _error(api.client.request("DELETE", path, json=revoke, headers=ADMIN), 404, "not_found")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workspace_id": None}, "workspace_id"),
        ({"kind": "vip"}, "kind"),
        ({"tier": "platinum"}, "tier"),
        ({"reason": ""}, "reason"),
        ({"actor": None}, "actor"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),
    ],
)
def test_override_bad_requests_name_the_field(api: Api, change: dict[str, Any], field: str) -> None:
    body = {
        "workspace_id": "ws_1",
        "kind": "manual_pilot",
        "tier": "team",
        "reason": "r",
        "actor": "a",
    }
    body.update(change)
    response = api.client.post(
        "/v1/admin/overrides", json={k: v for k, v in body.items() if v is not None}, headers=ADMIN
    )
    assert field in _error(response, 400, "invalid_request")["detail"]


def test_enforcement_bad_requests(api: Api) -> None:
    response = api.client.put("/v1/admin/enforcement", json={"mode": "strict"}, headers=ADMIN)
    assert "mode" in _error(response, 400, "invalid_request")["detail"]
    response = api.client.put("/v1/admin/enforcement", json={"mode": "enforce"}, headers=ADMIN)
    assert "approved_by" in _error(response, 400, "invalid_request")["detail"]


def test_quarantine_lists_events_a_reducer_failed_on(api: Api) -> None:
    broken = stripe_subscription(metadata={"workspace_id": "ws_1"})
    del broken["status"]
    seq = api.deliver("customer.subscription.updated", broken)
    listed = api.client.get("/v1/admin/quarantine", headers=ADMIN).json()
    assert [(q["seq"], q["type"]) for q in listed] == [(seq, "customer.subscription.updated")]
    assert "status" in listed[0]["error"]
    # Skipped, not fatal: the next event is projected.
    api.deliver(
        "customer.subscription.created",
        stripe_subscription(id="sub_2", metadata={"workspace_id": "ws_1"}),
    )
    assert api.get("ws_1").json()["tier"] == "team"


def test_answers_never_carry_personal_data_or_secrets(api: Api) -> None:
    api.deliver("customer.created", stripe_customer(metadata={"workspace_id": "ws_1"}))
    api.deliver("customer.subscription.created", stripe_subscription())
    texts = [
        api.get("ws_1").text,
        api.client.get("/v1/workspaces/ws_1/history", headers=READ).text,
        api.check("ws_1", {"action": "sso"}).text,
        api.client.get("/metrics").text,
        api.client.get("/readyz").text,
    ]
    for text in texts:
        for secret in (*STRIPE_PII, STRIPE_SECRET, READ_TOKEN, ADMIN_TOKEN):
            assert secret not in text


def test_ops_endpoints(api: Api) -> None:
    api.deliver(
        "customer.subscription.created", stripe_subscription(metadata={"workspace_id": "ws_1"})
    )
    api.check("ws_1", {"action": "sso"})
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"log": "ok", "projections": "ok"}}
    metrics = api.client.get("/metrics").text
    assert 'billhook_webhooks_total{outcome="accepted",provider="stripe"} 1.0' in metrics
    assert 'billhook_checks_total{decision="would_deny",reason="tier_required"} 1.0' in metrics
    assert "billhook_log_head_seq 1.0" in metrics
    assert "billhook_projection_lag_events 0.0" in metrics


def test_cached_answers_follow_time_rules_and_new_events(settings: Settings) -> None:
    """Answers are cached between events, but never past an override's expiry."""
    now = [datetime(2026, 11, 21, 12, 0, tzinfo=UTC)]
    log = EventLog(settings.events_path)
    app = create_app(settings, log=log, clock=lambda: now[0])
    try:
        with serve_in_thread(app) as url, contract_client(url, timeout=10) as client:
            api = Api(client)
            body = {
                "workspace_id": "ws_1",
                "kind": "manual_pilot",
                "tier": "team",
                "expires_at": "2026-11-21T13:00:00Z",
                "reason": "pilot",
                "actor": "ops",
            }
            assert client.post("/v1/admin/overrides", json=body, headers=ADMIN).status_code == 201
            assert api.get("ws_1").json()["source"] == "manual_pilot"
            assert api.get("ws_1").json()["source"] == "manual_pilot"  # served from the cache
            now[0] = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
            expired = api.get("ws_1").json()
            assert (expired["source"], expired["overrides"][0]["expired"]) == ("default", True)
            sub = stripe_subscription(metadata={"workspace_id": "ws_1"})
            api.deliver("customer.subscription.created", sub, int(time.time()))
            assert api.get("ws_1").json()["source"] == "stripe"
    finally:
        log.close()


@pytest.mark.parametrize(
    "as_of",
    ["9223372036854775808", "9" * 5000, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-10:00"],
)
def test_as_of_out_of_range_is_a_bad_request(api: Api, as_of: str) -> None:
    """Past SQLite's integers, Python's digit limit or UTC's calendar: 400, never 500."""
    _error(api.get("ws_1", as_of=as_of), 400, "invalid_request")


@pytest.mark.parametrize(
    "expires_at",
    ["0001-01-01T00:00:00+01:00", "0147-09-02T05:50:32+00:00", "2026-11-21T12:00:00Z"],
)
def test_an_override_that_would_already_have_expired_is_refused(api: Api, expires_at: str) -> None:
    """Out of UTC's calendar, long past, or exactly now (the API's clock): 400, nothing logged."""
    body = {"workspace_id": "ws_1", "kind": "manual_pilot", "tier": "team", "reason": "r"}
    response = api.client.post(
        "/v1/admin/overrides", json={**body, "actor": "a", "expires_at": expires_at}, headers=ADMIN
    )
    assert "expires_at" in _error(response, 400, "invalid_request")["detail"]
    assert api.get("ws_1").json()["overrides"] == []


def test_override_expiry_years_before_1000_keep_four_digits(feed: Feed) -> None:
    """A year-147 expiry logged by an older version: the projector reads it back, keeps going."""
    feed.operator(
        OVERRIDE_SET,
        workspace_id="ws_1",
        kind="manual_pilot",
        tier="team",
        expires_at="0147-09-02T05:50:32Z",
        reason="r",
        actor="a",
    )
    answer = msgspec.to_builtins(entitlement_answer(feed.entitlement("ws_1"), NOW))
    assert answer["overrides"][0]["expires_at"] == "0147-09-02T05:50:32Z"
    assert (answer["source"], answer["overrides"][0]["expired"]) == ("default", True)


# Every route about one workspace, with a body it would accept.
WORKSPACE_ROUTES: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
    ("GET", "entitlements", None, READ),
    ("GET", "history", None, READ),
    ("POST", "check", {"action": "ai_imports"}, READ),
    ("POST", "refresh", None, READ),
    (
        "POST",
        "checkout",
        {
            "provider": "stripe",
            "tier": "team",
            "interval": "month",
            "seats": 1,
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/no",
            "actor_role": "owner",
        },
        READ,
    ),
    ("POST", "portal", {"return_url": "https://app.example/", "actor_role": "owner"}, READ),
]


@pytest.mark.parametrize("workspace", ["", "%20", "%20%09"], ids=["empty", "space", "blank"])
@pytest.mark.parametrize(
    ("method", "route", "body", "headers"), WORKSPACE_ROUTES, ids=[r[1] for r in WORKSPACE_ROUTES]
)
def test_an_empty_or_blank_workspace_id_is_a_bad_request(
    api: Api,
    workspace: str,
    method: str,
    route: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    """Issue 12: 400 on every route (it was a 404, as for a path no route serves); the
    token is still checked first. The contract client checks each answer is documented."""
    url = f"/v1/workspaces/{workspace}/{route}"
    answer = _error(
        api.client.request(method, url, json=body, headers=headers), 400, "invalid_request"
    )
    assert answer["detail"] == "workspace_id must not be empty or blank"
    _error(api.client.request(method, url, json=body), 401, "unauthorized")


@pytest.mark.parametrize("workspace", ["", "%20"], ids=["empty", "space"])
def test_revoking_for_an_empty_or_blank_workspace_id_is_a_bad_request(
    api: Api, workspace: str
) -> None:
    url = f"/v1/admin/overrides/{workspace}/manual_pilot"
    body = {"reason": "r", "actor": "a"}
    _error(api.client.request("DELETE", url, json=body, headers=ADMIN), 400, "invalid_request")
