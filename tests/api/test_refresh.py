"""`POST /v1/workspaces/{id}/refresh` over real HTTP, against the provider fakes (SPEC §6, §8).

The app is `create_app` served by uvicorn; it reaches the Stripe and Polar
fakes through the real `stripe` and `polar-sdk` packages, configured the way
an operator would (`[stripe] api_key`/`api_base`, `[polar]
access_token`/`server_url`). Webhooks go through the real receiver, signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe._http_client import HTTPClient

from billhook.api.app import create_app
from billhook.api.refresh import MAX_DETAIL_CHARS
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.providers import clients as providers
from billhook.providers.billhook import RECONCILED
from billhook.testing.fakes import Failure
from billhook.testing.fakes.polar_api import PolarState, polar_fake, polar_product
from billhook.testing.fakes.stripe_api import StripeState, stripe_fake, stripe_price, stripe_product
from billhook.testing.polar import (
    polar_customer,
    polar_subscription,
)
from billhook.testing.servers import free_port, serve_in_thread, wait_until
from billhook.testing.settings import (
    POLAR_ACCESS_TOKEN,
    PRODUCT_TEAM,
    READ_TOKEN,
    SECRETS,
    make_settings,
    provider_apis,
)
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_customer,
    stripe_subscription,
)
from tests.api.checkout_support import Shop
from tests.contract import contract_client

# Distinctive credentials, so a leak into an answer is easy to spot.
POLAR_CUSTOMER = "6f1d2c3b-4a5e-4f60-8b7a-9c8d7e6f5a41"
POLAR_SUB = "0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a"
# The app's clock: reconciled snapshots are fetched "now".
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
# Webhook `created` times, an hour before the fetch.
T0 = NOW_S - 3600
# An answer carrying a provider failure stays this short (the detail is capped).
MAX_ERROR_BODY_BYTES = MAX_DETAIL_CHARS + 100


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backoff sleeps: billhook's own (429s, Polar 5xx) and stripe-python's (5xx)."""
    monkeypatch.setattr(providers, "FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(providers, "MAX_DELAY_S", 0.0)
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.0)


def refresh_settings(
    data_dir: Path, *, stripe_url: str, polar_url: str, stripe_key: bool, polar_token: bool
) -> Settings:
    """Both provider APIs at the fakes' URLs; each credential only when asked for."""
    stripe, polar = provider_apis(
        stripe_url, polar_url, stripe_key=stripe_key, polar_token=polar_token
    )
    return make_settings(data_dir, stripe=stripe, polar=polar)


class Deployment(Shop):
    """billhook served over HTTP, talking to the Stripe and Polar fakes, asked to refresh."""

    def refresh(self, workspace: str) -> httpx.Response:
        return self.client.post(f"/v1/workspaces/{workspace}/refresh")

    def reconciled_after(self, seq: int) -> list[dict[str, Any]]:
        """The payloads of the billhook.reconciled events after `seq`."""
        events = self.log.read(after=seq, provider="billhook", type=RECONCILED)
        return [json.loads(e.payload) for e in events]


DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[DeploymentFactory]:
    """Start the fakes and billhook; `stripe_key`/`polar_token` say which APIs are configured.

    `unreachable` points both API URLs at a closed port (connection refused).
    """
    with ExitStack() as stack:

        def start(
            *, stripe_key: bool = True, polar_token: bool = True, unreachable: bool = False
        ) -> Deployment:
            stripe = StripeState()
            stripe.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
            polar = PolarState()
            polar.add_product(polar_product(id=PRODUCT_TEAM, seat_based=True))
            stripe_url = stack.enter_context(serve_in_thread(stripe_fake(stripe)))
            polar_url = stack.enter_context(serve_in_thread(polar_fake(polar)))
            if unreachable:  # both APIs configured at a port where nothing listens
                stripe_url = polar_url = f"http://127.0.0.1:{free_port()}"
            settings = refresh_settings(
                tmp_path / "data",
                stripe_url=stripe_url,
                polar_url=polar_url,
                stripe_key=stripe_key,
                polar_token=polar_token,
            )
            log = EventLog(settings.events_path)
            stack.callback(log.close)
            app = create_app(settings, log=log, clock=lambda: NOW)
            url = stack.enter_context(serve_in_thread(app))
            client = stack.enter_context(
                contract_client(url, headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=30)
            )
            return Deployment(stripe, polar, log, client)

        yield start


def link_by_checkout(dep: Deployment, workspace: str, customer: str, sub: str) -> int:
    """Only the checkout webhook arrived: the customer is linked, no subscription event."""
    session = stripe_checkout_session(
        customer=customer, subscription=sub, client_reference_id=workspace
    )
    return dep.deliver_stripe("checkout.session.completed", session, created=T0)


def link_polar_customer(dep: Deployment, workspace: str) -> int:
    """Only `customer.created` arrived: Polar's customer has `external_id` = the workspace."""
    customer = polar_customer(id=POLAR_CUSTOMER, external_id=workspace)
    return dep.deliver_polar("customer.created", customer)


def assert_safe_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """A bounded JSON error with `error` and `detail`, carrying no secret."""
    assert response.status_code == status, response.text
    assert len(response.content) <= MAX_ERROR_BODY_BYTES, response.text
    for secret in SECRETS:
        assert secret not in response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str)
    assert 0 < len(body["detail"]) <= MAX_DETAIL_CHARS
    return body


# -- healing -------------------------------------------------------------------------------


def test_refresh_heals_a_workspace_whose_subscription_events_were_all_missed(
    deploy: DeploymentFactory,
) -> None:
    dep = deploy()
    dep.stripe.add(
        stripe_customer(id="cus_heal"),
        stripe_subscription(id="sub_heal", customer="cus_heal", items=(("price_team_monthly", 7),)),
    )
    link_by_checkout(dep, "ws_heal", "cus_heal", "sub_heal")
    before = dep.entitlement("ws_heal")
    assert (before["tier"], before["source"], before["status"]) == ("solo", "default", "none")
    head = dep.log.head_seq()

    response = dep.refresh("ws_heal")

    assert response.status_code == 200, response.text
    healed = response.json()
    assert (healed["tier"], healed["source"], healed["status"]) == ("team", "stripe", "active")
    assert healed["seats"] == {"purchased": 7}
    assert [s["id"] for s in healed["subscriptions"]] == ["sub_heal"]
    assert healed["as_of_seq"] == head + 1
    assert dep.log.head_seq() == head + 1
    (snapshot,) = dep.reconciled_after(head)
    assert snapshot["provider"] == "stripe"
    assert snapshot["fetched_at"].startswith("2026-11-21T12:00:00")
    assert snapshot["subscription"]["id"] == "sub_heal"
    assert dep.entitlement("ws_heal") == healed
    (call,) = dep.stripe.requests_to("/v1/subscriptions")
    assert (call.query["customer"], call.query["status"]) == ("cus_heal", "all")

    again = dep.refresh("ws_heal")

    assert again.status_code == 200, again.text
    assert again.json() == healed
    assert dep.log.head_seq() == head + 1  # nothing differs: nothing appended
    assert len(dep.stripe.requests_to("/v1/subscriptions")) == 2


def test_polar_refresh_finds_the_customer_linked_by_external_id(
    deploy: DeploymentFactory,
) -> None:
    dep = deploy()
    dep.polar.add_subscription(
        polar_subscription(
            id=POLAR_SUB,
            customer_id=POLAR_CUSTOMER,
            external_customer_id="ws_polar",
            product_id=PRODUCT_TEAM,
            seats=3,
        )
    )
    link_polar_customer(dep, "ws_polar")
    assert dep.entitlement("ws_polar")["tier"] == "solo"
    head = dep.log.head_seq()

    response = dep.refresh("ws_polar")

    assert response.status_code == 200, response.text
    healed = response.json()
    assert (healed["tier"], healed["source"], healed["status"]) == ("team", "polar", "active")
    assert healed["seats"] == {"purchased": 3}
    (snapshot,) = dep.reconciled_after(head)
    assert (snapshot["provider"], snapshot["subscription"]["id"]) == ("polar", POLAR_SUB)
    (call,) = dep.polar.requests_to("/v1/subscriptions/")
    assert call.query["customer_id"] == POLAR_CUSTOMER

    again = dep.refresh("ws_polar")

    assert again.status_code == 200, again.text
    assert again.json() == healed
    assert dep.log.head_seq() == head + 1


def test_a_stale_status_is_healed_by_exactly_one_reconciled_event(
    deploy: DeploymentFactory,
) -> None:
    dep = deploy()
    metadata = {"workspace_id": "ws_stale"}
    sub = stripe_subscription(id="sub_stale", customer="cus_stale", metadata=metadata)
    dep.stripe.add(stripe_customer(id="cus_stale", metadata=metadata))
    dep.deliver_stripe("customer.subscription.created", sub, created=T0)
    assert dep.entitlement("ws_stale")["status"] == "active"
    # The cancellation webhook never arrived; the API knows.
    dep.stripe.add({**sub, "status": "canceled", "canceled_at": T0 + 60, "ended_at": T0 + 60})
    head = dep.log.head_seq()

    response = dep.refresh("ws_stale")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["tier"], answer["source"], answer["status"]) == ("solo", "default", "inactive")
    assert answer["next_action"] == "resubscribe"
    assert [s["status"] for s in answer["subscriptions"]] == ["inactive"]
    assert dep.log.head_seq() == head + 1
    (snapshot,) = dep.reconciled_after(head)
    assert snapshot["subscription"]["status"] == "canceled"

    assert dep.refresh("ws_stale").json() == answer
    assert dep.log.head_seq() == head + 1


def test_a_webhook_older_than_the_fetch_does_not_override_the_reconciled_snapshot(
    deploy: DeploymentFactory,
) -> None:
    dep = deploy()
    metadata = {"workspace_id": "ws_order"}
    five = stripe_subscription(
        id="sub_order", customer="cus_order", metadata=metadata, items=(("price_team_monthly", 5),)
    )
    eight = stripe_subscription(
        id="sub_order", customer="cus_order", metadata=metadata, items=(("price_team_monthly", 8),)
    )
    dep.stripe.add(stripe_customer(id="cus_order", metadata=metadata), eight)
    dep.deliver_stripe("customer.subscription.created", five, created=T0)
    assert dep.entitlement("ws_order")["seats"] == {"purchased": 5}

    assert dep.refresh("ws_order").json()["seats"] == {"purchased": 8}

    # A delayed delivery, created before the snapshot was fetched (NOW): it is logged, not applied.
    late = dep.deliver_stripe("customer.subscription.updated", five, created=NOW_S - 60)
    after_late = dep.entitlement("ws_order")
    assert after_late["as_of_seq"] >= late
    assert after_late["seats"] == {"purchased": 8}
    assert after_late["status"] == "active"
    # A change made after the fetch does apply: ordering is by time, not "reconciled wins".
    nine = stripe_subscription(
        id="sub_order", customer="cus_order", metadata=metadata, items=(("price_team_monthly", 9),)
    )
    newer = dep.deliver_stripe("customer.subscription.updated", nine, created=NOW_S + 60)
    after_newer = dep.entitlement("ws_order")
    assert after_newer["as_of_seq"] >= newer
    assert after_newer["seats"] == {"purchased": 9}


# -- retries -----------------------------------------------------------------------------


def test_stripe_rate_limit_is_retried(deploy: DeploymentFactory) -> None:
    dep = deploy()
    dep.stripe.add(
        stripe_customer(id="cus_429"),
        stripe_subscription(id="sub_429", customer="cus_429"),
    )
    link_by_checkout(dep, "ws_429", "cus_429", "sub_429")
    # A plain 429: stripe-python does not retry it itself; billhook's backoff does.
    dep.stripe.fail_next.append(429)

    response = dep.refresh("ws_429")

    assert response.status_code == 200, response.text
    assert response.json()["tier"] == "team"
    assert [r.status for r in dep.stripe.requests_to("/v1/subscriptions")] == [429, 200]


def test_polar_rate_limit_is_retried(deploy: DeploymentFactory) -> None:
    dep = deploy()
    dep.polar.add_subscription(
        polar_subscription(
            id=POLAR_SUB, customer_id=POLAR_CUSTOMER, product_id=PRODUCT_TEAM, seats=2
        )
    )
    link_polar_customer(dep, "ws_polar_429")
    dep.polar.fail_next += [429, 429]  # each with Retry-After: 1 (sleeps patched to 0)

    response = dep.refresh("ws_polar_429")

    assert response.status_code == 200, response.text
    assert response.json()["seats"] == {"purchased": 2}
    assert [r.status for r in dep.polar.requests_to("/v1/subscriptions/")] == [429, 429, 200]


# -- errors ------------------------------------------------------------------------------


def test_an_unknown_workspace_is_not_linked(deploy: DeploymentFactory) -> None:
    dep = deploy()
    head = dep.log.head_seq()

    body = assert_safe_error(dep.refresh("ws_nobody"), 409, "not_linked")

    assert "ws_nobody" in body["detail"]
    assert dep.log.head_seq() == head
    assert dep.stripe.requests == []
    # Polar was asked whether a customer with this external id bought something.
    assert [r.query["external_customer_id"] for r in dep.polar.requests] == ["ws_nobody"]
    unauthenticated = httpx.post(f"{dep.client.base_url}/v1/workspaces/ws_nobody/refresh")
    assert unauthenticated.status_code == 401


def test_a_linked_provider_without_an_api_key_is_not_configured(
    deploy: DeploymentFactory,
) -> None:
    dep = deploy(stripe_key=False, polar_token=False)
    link_by_checkout(dep, "ws_nokey", "cus_nokey", "sub_nokey")
    link_polar_customer(dep, "ws_nokey_polar")
    head = dep.log.head_seq()

    stripe_body = assert_safe_error(dep.refresh("ws_nokey"), 503, "provider_not_configured")
    polar_body = assert_safe_error(dep.refresh("ws_nokey_polar"), 503, "provider_not_configured")

    assert "stripe" in stripe_body["detail"]
    assert "polar" in polar_body["detail"]
    assert dep.log.head_seq() == head
    assert dep.stripe.requests == []
    assert dep.polar.requests == []


def test_stripe_down_is_a_bounded_502_without_secrets(deploy: DeploymentFactory) -> None:
    dep = deploy()
    dep.stripe.add(stripe_customer(id="cus_down"), stripe_subscription(id="sub_down"))
    link_by_checkout(dep, "ws_down", "cus_down", "sub_down")
    head = dep.log.head_seq()
    dep.stripe.fail_next += [500] * 10

    body = assert_safe_error(dep.refresh("ws_down"), 502, "provider_error")

    assert body["detail"].startswith("stripe:")
    assert "injected by the fake" not in body["detail"]  # no provider response text
    # stripe-python retries a 5xx itself (max_network_retries=2), then billhook gives up.
    assert [r.status for r in dep.stripe.requests_to("/v1/subscriptions")] == [500, 500, 500]
    assert dep.log.head_seq() == head
    assert dep.entitlement("ws_down")["tier"] == "solo"


def test_a_rejected_stripe_key_is_a_502_that_does_not_echo_it(deploy: DeploymentFactory) -> None:
    dep = deploy()
    link_by_checkout(dep, "ws_badkey", "cus_badkey", "sub_badkey")
    dep.stripe.api_keys.clear()  # Stripe answers 401 "Invalid API Key provided: sk_test_****"

    body = assert_safe_error(dep.refresh("ws_badkey"), 502, "provider_error")

    assert body["detail"].startswith("stripe:")
    assert "sk_test_" not in body["detail"]
    assert [r.status for r in dep.stripe.requests_to("/v1/subscriptions")] == [401]


def test_polar_down_is_a_bounded_502_without_secrets(deploy: DeploymentFactory) -> None:
    dep = deploy()
    link_polar_customer(dep, "ws_polar_down")
    head = dep.log.head_seq()
    dep.polar.fail_next += [Failure(500, body={"detail": f"boom {POLAR_ACCESS_TOKEN}"})] * 10

    body = assert_safe_error(dep.refresh("ws_polar_down"), 502, "provider_error")

    assert body["detail"].startswith("polar:")
    statuses = [r.status for r in dep.polar.requests_to("/v1/subscriptions/")]
    assert statuses == [500] * providers.ATTEMPTS  # every attempt, then a ProviderError
    assert dep.log.head_seq() == head


def test_unreachable_providers_are_a_502_after_bounded_retries(deploy: DeploymentFactory) -> None:
    dep = deploy(unreachable=True)
    link_by_checkout(dep, "ws_offline", "cus_offline", "sub_offline")
    link_polar_customer(dep, "ws_offline_polar")
    head = dep.log.head_seq()

    stripe_body = assert_safe_error(dep.refresh("ws_offline"), 502, "provider_error")
    polar_body = assert_safe_error(dep.refresh("ws_offline_polar"), 502, "provider_error")

    assert stripe_body["detail"] == (
        f"stripe: APIConnectionError after {providers.ATTEMPTS} attempts"
    )
    assert polar_body["detail"] == f"polar: PolarNetworkError after {providers.ATTEMPTS} attempts"
    assert "127.0.0.1" not in stripe_body["detail"] + polar_body["detail"]
    assert dep.log.head_seq() == head


# -- time rules ask the provider on their own ------------------------------------------------


def test_a_missed_closing_event_is_settled_by_a_background_refresh(
    deploy: DeploymentFactory,
) -> None:
    """The webhook said "canceling at period end"; the period ended more than the allowance
    ago and `customer.subscription.deleted` never came. The first read reports the missed
    event, and a refresh it starts by itself fetches the subscription, now canceled."""
    dep = deploy()
    ended = NOW_S - 2 * 3600
    canceling = stripe_subscription(
        id="sub_gone", customer="cus_gone", cancel_at_period_end=True, period_end=ended
    )
    dep.stripe.add(stripe_customer(id="cus_gone"), {**canceling, "status": "canceled"})
    link_by_checkout(dep, "ws_gone", "cus_gone", "sub_gone")
    dep.deliver_stripe("customer.subscription.updated", canceling, created=T0)
    head = dep.log.head_seq()

    first = dep.entitlement("ws_gone")

    assert first["problems"] == ["final_event_missing:sub_gone"]
    assert first["tier"] == "solo"
    settled = wait_until(
        lambda: (body := dep.entitlement("ws_gone"))["problems"] == [] and body,
        10,
        "the background refresh to append the canceled subscription",
    )
    assert settled["subscriptions"][0]["status"] == "inactive"  # canceled, as billhook says it
    (snapshot,) = dep.reconciled_after(head)
    assert snapshot["subscription"]["id"] == "sub_gone"
    # Later reads of the settled answer ask the provider no more.
    calls = len(dep.stripe.requests_to("/v1/subscriptions"))
    dep.entitlement("ws_gone")
    assert len(dep.stripe.requests_to("/v1/subscriptions")) == calls
