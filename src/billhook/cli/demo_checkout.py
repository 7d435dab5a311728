"""`billhook demo`, the purchase: checkout → return and refresh → portal → cancellation.

Stripe's side is played by the local Stripe fake the tests use
(`tests/fakes/stripe_api.py`), which billhook reaches through the real
`stripe` package like the real API. The fakes are not shipped in the
package: they are found next to it in a source checkout (`python -m billhook
demo`, or `billhook demo` from an editable install); anywhere else this part
is skipped with a one-line note.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from billhook.cli.demo import Demo
    from tests.fakes.stripe_api import StripeState

# The API key the fake accepts, and billhook is configured with.
FAKE_STRIPE_KEY = "sk_test_demo_fake_key"
# What the demo prints when there is no source checkout to take the fakes from.
NO_FAKES = (
    "checkout round trip: skipped (the provider fakes come with a source checkout of billhook)"
)
# Where the app sends a buyer back to (never fetched: the buyer is played by the fake).
SUCCESS_URL = "https://app.example/billing/return?session={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://app.example/billing"


@dataclass(frozen=True)
class FakeStripe:
    state: StripeState
    url: str


def start_fake_stripe(stack: ExitStack) -> FakeStripe | None:
    """Serve the Stripe fake until `stack` closes; None outside a source checkout."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "tests" / "fakes" / "__init__.py").is_file():
        return None
    if str(root) not in sys.path:
        # First, so that a stray `tests` package in site-packages cannot shadow the fakes.
        sys.path.insert(0, str(root))
    from tests.fakes.stripe_api import StripeState, stripe_fake, stripe_price, stripe_product
    from tests.support import serve_in_thread

    state = StripeState(api_keys={FAKE_STRIPE_KEY})
    state.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
    return FakeStripe(state, stack.enter_context(serve_in_thread(stripe_fake(state))))


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
