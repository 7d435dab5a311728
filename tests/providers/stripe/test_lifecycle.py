"""Each API version's shape, delivered signed over HTTP, grants and revokes as today's does."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest

from billhook.testing.settings import READ_TOKEN
from billhook.testing.stripe import stripe_headers
from tests.providers.stripe.shapes import (
    BASIL,
    MONTH_S,
    VERSIONS,
    Sub,
    customer,
    event_body,
    subscription,
)

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
# (tier, status, seats, next_action) after each step of the lifecycle below.
EXPECTED = [
    ("solo", "none", None, "upgrade"),
    ("team", "trialing", 3, "none"),
    ("enterprise", "active", 8, "none"),
    ("enterprise", "canceling", 8, "resume_subscription"),
    ("solo", "inactive", None, "resubscribe"),
]


def deliver(client: httpx.Client, body: bytes) -> int:
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    seq: int = response.json()["seq"]
    return seq


def answer(client: httpx.Client, workspace: str, seq: int) -> dict[str, Any]:
    """The workspace's entitlement once the projection has reached `seq`."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get(f"/v1/workspaces/{workspace}/entitlements", headers=READ)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["as_of_seq"] >= seq:
            return body
        assert time.monotonic() < deadline, "projection did not catch up"
        time.sleep(0.01)


def _state(body: dict[str, Any]) -> tuple[Any, ...]:
    seats = body["seats"]["purchased"] if body["seats"] else None
    return (body["tier"], body["status"], seats, body["next_action"])


def lifecycle(client: httpx.Client, version: str) -> list[tuple[Any, ...]]:
    """Link, create (trial), upgrade, cancel at period end, delete: the states seen."""
    now = int(time.time())
    period_end = now + MONTH_S  # the period has not ended: only events decide
    workspace = f"ws_{uuid.uuid4().hex[:8]}"
    sub = Sub(id=f"sub_{workspace}", customer=f"cus_{workspace}", period_end=period_end)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("customer.created", customer(version, sub.customer, {"workspace_id": workspace})),
        (
            "customer.subscription.created",
            subscription(
                version, replace(sub, status="trialing", items=(("price_team_monthly", 3),))
            ),
        ),
        (
            "customer.subscription.updated",
            subscription(version, replace(sub, items=(("price_enterprise_yearly", 8),))),
        ),
        (
            "customer.subscription.updated",
            subscription(
                version,
                replace(
                    sub,
                    items=(("price_enterprise_yearly", 8),),
                    cancel_at_period_end=True,
                    canceled_at=now,
                ),
            ),
        ),
        (
            "customer.subscription.deleted",
            subscription(
                version,
                replace(
                    sub,
                    status="canceled",
                    canceled_at=now,
                    ended_at=now,
                    items=(("price_enterprise_yearly", 8),),
                ),
            ),
        ),
    ]
    states = []
    for n, (event_type, obj) in enumerate(steps):
        body = event_body(
            version,
            event_type,
            obj,
            created=now - 600 + n,
            event_id=f"evt_{uuid.uuid4().hex[:24]}",
        )
        states.append(_state(answer(client, workspace, deliver(client, body))))
        if n == 2:
            [shown] = answer(client, workspace, 0)["subscriptions"]
            assert (shown["id"], shown["customer"], shown["account"]) == (
                sub.id,
                sub.customer,
                None,
            )
            assert shown["price"] == "price_enterprise_yearly"
    return states


@pytest.mark.parametrize("version", VERSIONS)
def test_a_lifecycle_in_each_shape_grants_and_revokes_as_the_current_one(
    client: httpx.Client, version: str
) -> None:
    assert lifecycle(client, version) == lifecycle(client, BASIL)
    assert lifecycle(client, version) == EXPECTED
