"""Stripe thin events through the real receiver and the embedded runner (SPEC §3, §8).

billhook is `create_app` served by uvicorn, with no Redis: its embedded
projector runs the thin-event follower. A signed `v2.core.event` goes in over
HTTP; the follower asks the Stripe fake through the real `stripe` package;
the answer comes back from `GET /v1/workspaces/{id}/entitlements`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhook.api.app import create_app
from billhook.log.sqlite import EventLog
from billhook.providers.billhook import RECONCILED, THIN_UNFETCHED
from billhook.testing.fakes.stripe_api import StripeState, stripe_fake, stripe_price, stripe_product
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import READ_TOKEN, make_settings, provider_apis
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
    stripe_thin_event_body,
)

PERIOD_END_S = int(time.time()) + 365 * 86_400
WORKSPACE = "ws_thin_http"
# How long the follower may take to answer (it polls every second, and is woken at once).
ANSWER_TIMEOUT_S = 15.0

Serve = Callable[..., tuple[httpx.Client, EventLog, StripeState]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start the Stripe fake and billhook on `tmp_path`; `keyed` configures the API key."""
    with ExitStack() as stack:

        def start(*, keyed: bool = True) -> tuple[httpx.Client, EventLog, StripeState]:
            stripe = StripeState()
            stripe.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
            stripe.add(
                stripe_customer(id="cus_1"),
                stripe_subscription(
                    id="sub_1",
                    customer="cus_1",
                    status="trialing",
                    metadata={"workspace_id": WORKSPACE},
                    period_end=PERIOD_END_S,
                ),
            )
            url = stack.enter_context(serve_in_thread(stripe_fake(stripe)))
            api, _ = provider_apis(url, url, stripe_key=keyed, polar_token=False)
            settings = make_settings(tmp_path / "data", stripe=api)
            log = EventLog(settings.events_path)
            stack.callback(log.close)
            app_url = stack.enter_context(serve_in_thread(create_app(settings, log=log)))
            client = stack.enter_context(
                httpx.Client(
                    base_url=app_url, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=30
                )
            )
            return client, log, stripe

        yield start


def deliver(client: httpx.Client, body: bytes) -> int:
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    return int(response.json()["seq"])


def wait_for(client: httpx.Client, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        answer: dict[str, Any] = client.get(f"/v1/workspaces/{WORKSPACE}/entitlements").json()
        if ready(answer):
            return answer
        assert time.monotonic() < deadline, f"no answer in time: {answer}"
        time.sleep(0.05)


def test_a_thin_subscription_update_grants_through_the_embedded_runner(serve: Serve) -> None:
    client, log, stripe = serve()

    deliver(client, stripe_thin_event_body("subscription", "sub_1", event_id="evt_http_1"))

    answer = wait_for(client, lambda a: a["tier"] == "team")
    assert (answer["source"], answer["status"]) == ("stripe", "trialing")
    assert answer["seats"]["purchased"] == 5
    [snapshot] = log.read(after=0, provider="billhook", type=RECONCILED)
    assert '"evt_http_1"' in snapshot.payload
    assert len(stripe.requests_to("/v1/subscriptions/sub_1", "GET")) == 1


def test_without_an_api_key_nothing_is_granted_and_the_problem_shows(serve: Serve) -> None:
    client, log, stripe = serve(keyed=False)
    # The checkout's snapshot webhook links the customer; then only thin events arrive.
    session = stripe_checkout_session(
        customer="cus_1", subscription="sub_1", client_reference_id=WORKSPACE
    )
    deliver(client, stripe_event_body("checkout.session.completed", obj=session))
    deliver(client, stripe_thin_event_body("customer", "cus_1"))

    answer = wait_for(client, lambda a: bool(a["problems"]))

    [marker] = log.read(after=0, provider="billhook", type=THIN_UNFETCHED)
    assert answer["problems"] == [f"quarantined:{marker.seq}"]
    assert (answer["source"], answer["next_action"]) == ("default", "contact_support")
    assert stripe.requests == []
    assert log.read(after=0, provider="billhook", type=RECONCILED) == []
