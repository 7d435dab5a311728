"""`billhook demo`, the purchase: checkout → return and refresh → portal → cancellation.

Stripe's side is played by the Stripe fake billhook ships for tests
(`billhook.testing.fakes.stripe_api`), which billhook reaches through the real
`stripe` package like the real API, so the purchase runs wherever billhook is
installed.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import httpx

from billhook.testing.fakes.stripe_api import (
    StripeState,
    stripe_fake,
    stripe_price,
    stripe_product,
)
from billhook.testing.servers import serve_in_thread

if TYPE_CHECKING:
    from billhook.cli.demo import Demo

# Where the app sends a buyer back to (never fetched: the buyer is played by the fake).
SUCCESS_URL = "https://app.example/billing/return?session={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://app.example/billing"


@dataclass(frozen=True)
class FakeStripe:
    state: StripeState
    url: str


def start_fake_stripe(stack: ExitStack, port: int = 0) -> FakeStripe:
    """Serve the Stripe fake, selling the team tier monthly, until `stack` closes; on
    loopback `port` (0: a free one).

    It accepts `billhook.testing.settings.STRIPE_API_KEY`, the key a test
    deployment is configured with.
    """
    state = StripeState()
    state.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
    return FakeStripe(state, stack.enter_context(serve_in_thread(stripe_fake(state), port=port)))


def round_trip(d: Demo, fake: FakeStripe, workspace: str = "ws_shop") -> None:
    """A purchase through billhook's routes, one table row per step."""
    body: dict[str, Any] = {
        "provider": "stripe",
        "tier": "team",
        "interval": "month",
        "seats": 3,
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        "actor_role": "owner",
    }
    started = d.post(f"/v1/workspaces/{workspace}/checkout", body)
    if started.status_code != 201:
        raise click.ClickException(
            f"the purchase's checkout answered {_said('checkout', started)}: the server must buy"
            f" through the Stripe fake at {fake.url} (STRIPE_API_BASE) with its key"
        )
    d.row("checkout: session created", workspace, _said("checkout", started))
    # The buyer pays on Stripe's page; Stripe sends the session's completion.
    session, subscription = fake.state.complete_checkout(started.json()["session_id"])
    d.stripe("checkout.session.completed", session)
    refreshed = d.post(f"/v1/workspaces/{workspace}/refresh", {})
    d.row("checkout: paid, refresh on return", workspace, _said("refresh", refreshed))
    again = d.post(f"/v1/workspaces/{workspace}/checkout", {**body, "seats": 5})
    d.row("checkout: second one refused", workspace, _said("checkout", again))
    portal = d.post(
        f"/v1/workspaces/{workspace}/portal", {"return_url": CANCEL_URL, "actor_role": "admin"}
    )
    d.row("portal: opened", workspace, _said("portal", portal))
    # In the portal the buyer cancels at period end; Stripe says so, after the refresh's fetch.
    fake.state.subscriptions[subscription["id"]]["cancel_at_period_end"] = True
    canceled = dict(fake.state.subscriptions[subscription["id"]])
    d.stripe("customer.subscription.updated", canceled, created=int(time.time()) + 1)
    d.row("portal: canceled at period end", workspace)


def _said(route: str, response: httpx.Response) -> str:
    error = response.json().get("error") if response.status_code >= 400 else None
    return f"{route}: {response.status_code}" + (f" {error}" if error else "")
