"""Logs, metrics and answers carry ids, statuses and counts only (SPEC §10).

A real `billhook serve` (JSON logs at info level) takes a whole lifecycle
whose payloads, config and requests carry known e-mails, names, addresses,
tokens and secrets: Stripe and Polar customers, a checkout, subscriptions,
a redelivery, bad signatures, admin overrides and an enforcement switch by
an e-mail actor with a reason, checks, history, a refresh, a checkout and a
portal that fail at the provider fakes, requests with a wrong token, a
header and a query string. Then every log line, the `/metrics` text and every answer is searched for
each known string: zero hits. The log is shown to hold what it should (one
line per request, webhook fields, projection batches), so the search is not
vacuous.
"""

from __future__ import annotations

import base64
import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhook.testing.fakes.polar_api import PolarState, polar_fake
from billhook.testing.fakes.stripe_api import StripeState, stripe_fake
from billhook.testing.polar import (
    DEFAULT_PRODUCT_ID,
    POLAR_PII,
    POLAR_SECRET,
    polar_customer,
    polar_event,
    polar_headers,
    polar_subscription,
)
from billhook.testing.servers import serve_in_thread, stop_process, wait_until
from billhook.testing.settings import (
    ADMIN_TOKEN,
    READ_TOKEN,
    SECRETS,
    provider_apis,
    write_config,
)
from billhook.testing.stripe import (
    STRIPE_PII,
    STRIPE_SECRET,
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)
from tests.deployment import PROJECTED_TIMEOUT_S, Processes

WRONG_STRIPE_SECRET = "whsec_privacy_wrong_stripe_Rr55Uu"
WRONG_POLAR_SECRET = "whsec_" + base64.b64encode(b"privacy-wrong-polar-key-Jj7Tt2").decode()
WRONG_TOKEN = "wrong_privacy_token_Mm4Nn3Bb2"
OPERATOR_EMAIL = "grace.operator@example.com"
OPERATOR_NAME = "Grace Hopper"
APPROVER_EMAIL = "ciso.approver@example.com"
QUERY_MARKER = "query_privacy_marker_Cc1Xx2"
HEADER_MARKER = "header_privacy_marker_Zz3Aa4"

KNOWN = (
    *STRIPE_PII,
    *POLAR_PII,
    *SECRETS,
    WRONG_STRIPE_SECRET,
    WRONG_POLAR_SECRET,
    WRONG_TOKEN,
    OPERATOR_EMAIL,
    OPERATOR_NAME,
    APPROVER_EMAIL,
    QUERY_MARKER,
    HEADER_MARKER,
)

STRIPE_WS = "ws_stripe_privacy"
POLAR_WS = "ws_polar_privacy"
T0 = 1_795_000_000


def _config(directory: Path, stripe_url: str, polar_url: str) -> Path:
    stripe, polar = provider_apis(stripe_url, polar_url)
    products = {DEFAULT_PRODUCT_ID: {"tier": "team"}}
    return write_config(directory, stripe=stripe, polar={**polar, "products": products})


@pytest.fixture
def fakes() -> Iterator[tuple[str, str]]:
    """Stripe and Polar fakes that know neither of the configured credentials (401s)."""
    with (
        serve_in_thread(stripe_fake(StripeState(api_keys=set()))) as stripe_url,
        serve_in_thread(polar_fake(PolarState(access_tokens=set()))) as polar_url,
    ):
        yield stripe_url, polar_url


class Session:
    """A client that keeps every answer and counts the requests it sent, by path."""

    def __init__(self, base_url: str) -> None:
        self.answers: list[str] = []
        self.sent: Counter[str] = Counter()
        self.client = httpx.Client(
            base_url=base_url, timeout=30, event_hooks={"response": [self._keep]}
        )

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.sent[response.request.url.path] += 1
        self.answers.append(response.text)
        self.answers += [f"{k}: {v}" for k, v in response.headers.items()]

    def stripe(self, body: bytes, secret: str = STRIPE_SECRET) -> httpx.Response:
        return self.client.post(
            "/webhooks/stripe", content=body, headers=stripe_headers(body, secret)
        )

    def polar(self, body: bytes, secret: str = POLAR_SECRET) -> httpx.Response:
        return self.client.post(
            "/webhooks/polar", content=body, headers=polar_headers(body, secret)
        )

    def read(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {READ_TOKEN}", **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.client.request(method, path, headers=headers, **kwargs)


def _lifecycle(s: Session) -> dict[str, int]:
    """Drive the whole lifecycle; the seqs of the accepted webhooks, by event type."""
    seqs: dict[str, int] = {}

    def accepted(response: httpx.Response, event_type: str) -> None:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
        seqs[event_type] = response.json()["seq"]

    stripe_meta = {"workspace_id": STRIPE_WS}
    customer = stripe_event_body(
        "customer.created", obj=stripe_customer(id="cus_p", metadata=stripe_meta), created=T0
    )
    accepted(s.stripe(customer), "customer.created")
    checkout = stripe_checkout_session(
        customer="cus_p", subscription="sub_p", client_reference_id=STRIPE_WS
    )
    accepted(
        s.stripe(stripe_event_body("checkout.session.completed", obj=checkout, created=T0 + 1)),
        "checkout.session.completed",
    )
    for n, (event_type, status) in enumerate(
        [("customer.subscription.created", "active"), ("customer.subscription.updated", "past_due")]
    ):
        sub = stripe_subscription(id="sub_p", customer="cus_p", status=status, metadata=stripe_meta)
        accepted(s.stripe(stripe_event_body(event_type, obj=sub, created=T0 + 2 + n)), event_type)
    assert s.stripe(customer).json()["status"] == "duplicate"
    assert s.stripe(customer, WRONG_STRIPE_SECRET).json()["error"] == "invalid_signature"

    polar_customer_id = "5b7e2a1c-3d4f-4e5a-9b6c-7d8e9f0a1b2c"
    accepted(
        s.polar(
            polar_event(
                "customer.created", polar_customer(id=polar_customer_id, external_id=POLAR_WS)
            )
        ),
        "polar customer.created",
    )
    polar_sub = polar_subscription(
        id="8c9d0e1f-2a3b-4c5d-8e6f-7a8b9c0d1e2f",
        customer_id=polar_customer_id,
        external_customer_id=POLAR_WS,
    )
    accepted(s.polar(polar_event("subscription.created", polar_sub)), "subscription.created")
    bad_polar = s.polar(polar_event("subscription.updated", polar_sub), WRONG_POLAR_SECRET)
    assert bad_polar.json()["error"] == "invalid_signature"

    override = {
        "workspace_id": STRIPE_WS,
        "kind": "manual_pilot",
        "tier": "enterprise",
        "expires_at": "2099-01-01T00:00:00Z",
        "reason": f"pilot agreed with {OPERATOR_NAME} ({STRIPE_PII[0]})",
        "actor": OPERATOR_EMAIL,
    }
    assert s.admin("POST", "/v1/admin/overrides", json=override).status_code == 201
    revoke = {"reason": f"ended by {OPERATOR_NAME}", "actor": OPERATOR_EMAIL}
    revoked = s.admin("DELETE", f"/v1/admin/overrides/{STRIPE_WS}/manual_pilot", json=revoke)
    assert revoked.status_code == 200
    enforce = {"mode": "enforce", "approved_by": APPROVER_EMAIL, "reason": f"{OPERATOR_NAME} ok"}
    assert s.admin("PUT", "/v1/admin/enforcement", json=enforce).status_code == 200
    assert s.admin("GET", "/v1/admin/quarantine").status_code == 200

    for workspace in (STRIPE_WS, POLAR_WS):
        assert s.read("GET", f"/v1/workspaces/{workspace}/entitlements").status_code == 200
        assert s.read("GET", f"/v1/workspaces/{workspace}/history").status_code == 200
        allowed = s.read("POST", f"/v1/workspaces/{workspace}/check", json={"action": "reads"})
        assert allowed.json()["decision"] == "allow"
    denied = s.read("POST", f"/v1/workspaces/{STRIPE_WS}/check", json={"action": "sso"})
    assert denied.status_code == 402
    as_of = s.read(
        "GET",
        f"/v1/workspaces/{STRIPE_WS}/entitlements",
        params={"as_of": "1", "utm": QUERY_MARKER},
        headers={"X-Note": HEADER_MARKER},
    )
    assert as_of.status_code == 200
    # The provider fakes know neither credential: both refreshes fail there.
    for workspace in (STRIPE_WS, POLAR_WS):
        refreshed = s.read("POST", f"/v1/workspaces/{workspace}/refresh")
        assert refreshed.status_code == 502, refreshed.text
        assert refreshed.json()["error"] == "provider_error"
    # So do a checkout for a new workspace and the portal of a linked one.
    checkout = s.read(
        "POST",
        "/v1/workspaces/ws_new_privacy/checkout",
        json={
            "provider": "stripe",
            "tier": "team",
            "interval": "month",
            "success_url": f"https://app.example/return?email={OPERATOR_EMAIL}",
            "cancel_url": "https://app.example/billing",
            "actor_role": "owner",
        },
    )
    portal = s.read(
        "POST",
        f"/v1/workspaces/{POLAR_WS}/portal",
        json={"return_url": "https://app.example/billing", "actor_role": "admin"},
    )
    for answer in (checkout, portal):
        assert (answer.status_code, answer.json()["error"]) == (502, "provider_error")
    wrong = s.client.get(
        f"/v1/workspaces/{STRIPE_WS}/entitlements",
        headers={"Authorization": f"Bearer {WRONG_TOKEN}"},
    )
    assert wrong.status_code == 401
    assert s.read("GET", "/v1/admin/quarantine").status_code == 403
    assert s.client.get("/readyz").status_code == 200
    return seqs


def test_no_log_line_metric_or_answer_carries_personal_data_tokens_or_secrets(
    tmp_path: Path, processes: Processes, fakes: tuple[str, str]
) -> None:
    config = _config(tmp_path, *fakes)
    server = processes.serve(config, log_level="info")
    session = Session(server.base_url)
    try:
        seqs = _lifecycle(session)
        head = max(seqs.values())
        wait_until(
            lambda: any(
                json.loads(line).get("msg") == "batch" and json.loads(line)["last_seq"] >= head
                for line in server.log.read_text().splitlines()
            ),
            PROJECTED_TIMEOUT_S,
            "the projection batch lines",
        )
        metrics = session.client.get("/metrics").text
    finally:
        session.client.close()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert stop_process(server.process) in (0, -signal.SIGTERM)
    text = server.log.read_text()

    # Structured: every line is one JSON object.
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    requests = [line for line in lines if line["msg"] == "request"]
    # Exactly one line per request (the start-up /healthz polls are not this session's).
    logged = Counter(line["route"] for line in requests if line["route"] != "/healthz")
    sent = sum(n for path, n in session.sent.items() if path != "/healthz")
    assert sum(logged.values()) == sent
    for line in requests:
        assert {"method", "route", "status", "latency_ms"} <= line.keys()
        assert "?" not in line["route"]
    webhooks = [line for line in requests if line["route"].startswith("/webhooks/")]
    accepted = [line for line in webhooks if line.get("outcome") == "accepted"]
    assert sorted(line["seq"] for line in accepted) == sorted(seqs.values())
    for line in accepted:
        assert line["provider"] in ("stripe", "polar")
        assert line["status"] == 200
        assert line["type"]
    outcomes = Counter((line["provider"], line["outcome"]) for line in webhooks)
    assert outcomes[("stripe", "duplicate")] == 1
    assert outcomes[("stripe", "invalid_signature")] == 1
    assert outcomes[("polar", "invalid_signature")] == 1
    routes = {line["route"] for line in requests}
    assert "/v1/workspaces/{workspace_id}/entitlements" in routes
    assert "/v1/admin/overrides/{workspace_id}/{kind}" in routes
    assert "/v1/workspaces/{workspace_id}/checkout" in routes
    batches = [line for line in lines if line["msg"] == "batch"]
    assert sum(batch["count"] for batch in batches) >= head

    # The search: not one known string anywhere.
    assert len(session.answers) > sent
    for known in KNOWN:
        assert known not in text, known
        assert known not in metrics, known
        for answer in session.answers:
            assert known not in answer, (known, answer)
