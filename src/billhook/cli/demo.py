"""`billhook demo`: a realistic lifecycle through the real HTTP path.

It delivers signed Stripe and Polar events exactly as the providers would,
calls the API like a downstream service, and prints the entitlement after each
step. Last, a purchase through billhook's checkout and portal routes
(`demo_checkout`), against the Stripe fake of `billhook.testing`. Deliveries
are signed and the config is built by `billhook.testing` too, as the tests do.

By default it starts a temporary server (its own data directory and secrets).
With a :class:`Target` it delivers to a running billhook instead (`make run`),
signing with the published development secrets unless told otherwise, so that
its log holds a lifecycle to read; it leaves the enforcement mode as it found
it, and buys only when told where the target's Stripe fake is to listen.
"""

from __future__ import annotations

import base64
import secrets
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx

from billhook.api.app import create_app
from billhook.cli.demo_checkout import round_trip, start_fake_stripe
from billhook.cli.devconfig import DEV_CONFIG
from billhook.config import Settings
from billhook.testing.polar import polar_event, polar_headers
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import STRIPE_API_KEY, make_settings
from billhook.testing.stripe import stripe_event_body, stripe_headers

# The Polar product the demo's subscription is for (examples/dev.toml maps it to team).
POLAR_PRODUCT = "6f1d3c2b-8a7e-4f5d-9c4b-3a2e1f0d9c8b"
# The id of the demo's first Stripe event, the same on every run so that docs can show it.
DEMO_EVENT_ID = "evt_demo_checkout_completed"
# The table: one row per step, the entitlement after it; a call's answer on a line below.
COLUMNS = ("step", "workspace", "tier", "source", "status", "attention", "next", "seats")
WIDTHS = (33, 12, 4, 12, 9, 9, 21, 0)
CALL = "  -> "
LEGEND = (
    "legend: a row is the entitlement after its step (next: next_action, seats: purchased);"
    " ->: a call, its answer"
)


@dataclass(frozen=True)
class Target:
    """A running billhook to deliver to, with the credentials it is configured with.

    `stripe_fake_port`: where the purchase's Stripe fake is to listen; the
    target must then have `STRIPE_API_BASE=http://127.0.0.1:PORT` and the
    fake's key (`billhook.testing.settings.STRIPE_API_KEY`). None: no purchase.
    """

    url: str
    stripe_secret: str
    polar_secret: str
    admin_token: str
    stripe_fake_port: int | None = None


def demo_settings(
    data_dir: Path, stripe_secret: str, polar_secret: str, admin: str, stripe_api: str
) -> Settings:
    """The demo's config; `stripe_api` is the URL of the Stripe fake to buy through."""
    stripe = {"webhook_secrets": [stripe_secret], "api_key": STRIPE_API_KEY, "api_base": stripe_api}
    polar = {"webhook_secrets": [polar_secret], "products": {POLAR_PRODUCT: {"tier": "team"}}}
    auth = {"admin_tokens": [admin]}
    return make_settings(data_dir, enforcement="observe", stripe=stripe, polar=polar, auth=auth)


def stripe_subscription(
    status: str, *, cancel_at_period_end: bool = False, quantity: int = 5
) -> dict[str, Any]:
    period_end = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
    return {
        "id": "sub_demo_1",
        "object": "subscription",
        "customer": "cus_demo_1",
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": None,
        "livemode": False,
        "metadata": {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_demo_1",
                    "object": "subscription_item",
                    "price": {
                        "id": "price_team_monthly",
                        "object": "price",
                        "recurring": {"interval": "month"},
                    },
                    "quantity": quantity,
                    "current_period_end": period_end,
                }
            ],
        },
    }


def polar_subscription(seats: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": "8c7b6a59-4d3e-4f2a-9b1c-0d9e8f7a6b5c",
        "status": "active",
        "customer_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "customer": {
            "id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            "external_id": "ws_polar",
            "metadata": {},
        },
        "product_id": POLAR_PRODUCT,
        "seats": seats,
        "cancel_at_period_end": False,
        "current_period_end": (now + timedelta(days=30)).isoformat(),
        "created_at": now.isoformat(),
        "modified_at": now.isoformat(),
        "metadata": {},
    }


@dataclass
class Demo:
    client: httpx.Client
    stripe_secret: str
    polar_secret: str
    admin: str
    echo: Callable[[str], None]
    # Seconds added to each Stripe event's `created`, and how many events were delivered.
    clock: int = 0
    delivered: int = 0

    def stripe(
        self,
        event_type: str,
        obj: dict[str, Any],
        created: int | None = None,
        event_id: str | None = None,
    ) -> None:
        # One second apart, as real lifecycle events are: Stripe orders by `created`.
        self.clock += 1
        created = created or int(time.time()) - 600 + self.clock
        body = stripe_event_body(event_type, obj=obj, created=created, event_id=event_id)
        self._deliver("stripe", body, stripe_headers(body, self.stripe_secret))

    def polar(self, event_type: str, data: dict[str, Any]) -> None:
        body = polar_event(event_type, data, timestamp=datetime.now(UTC).isoformat())
        self._deliver("polar", body, polar_headers(body, self.polar_secret))

    def _deliver(self, provider: str, body: bytes, headers: dict[str, str]) -> None:
        response = self.client.post(f"/webhooks/{provider}", content=body, headers=headers)
        _ok(response, _webhook_hint(provider, response))
        self.delivered += 1
        self._wait(response.json()["seq"])

    def _wait(self, seq: int) -> None:
        deadline = time.monotonic() + 10
        while self.entitlement("ws_probe")["as_of_seq"] < seq and time.monotonic() < deadline:
            time.sleep(0.01)

    def admin_call(self, method: str, path: str, body: dict[str, Any]) -> None:
        response = self.client.request(method, path, json=body, headers=self._auth)
        _ok(response, _token_hint(response))

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST as the app's backend would; the answer whatever its status."""
        return self.client.post(path, json=body, headers=self._auth)

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def entitlement(self, workspace: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/workspaces/{workspace}/entitlements", headers=self._auth)
        _ok(response, _token_hint(response))
        data: dict[str, Any] = response.json()
        return data

    def check(self, workspace: str, action: str, seats_in_use: int | None = None) -> str:
        body: dict[str, Any] = {"action": action}
        if seats_in_use is not None:
            body["seats_in_use"] = seats_in_use
        response = self.client.post(
            f"/v1/workspaces/{workspace}/check", json=body, headers=self._auth
        )
        if response.status_code != 402:  # a denial under enforce is an answer, not an error
            _ok(response, _token_hint(response))
        answer = response.json()
        reason = f" ({answer['reason']})" if answer.get("reason") else ""
        return f"{action}: {response.status_code} {answer['decision']}{reason}"

    def row(self, step: str, workspace: str, check: str = "") -> None:
        """The entitlement of `workspace` after `step`; `check`, the answer to a call
        made then, on a line of its own."""
        e = self.entitlement(workspace)
        seats = e["seats"]["purchased"] if e["seats"] else "-"
        cells = (step, workspace, e["tier"], e["source"], e["status"], e["attention"] or "-",
                 e["next_action"], str(seats))  # fmt: skip
        self.echo(_format(cells))
        if check:
            self.echo(CALL + check)


def _format(cells: tuple[str, ...]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, WIDTHS, strict=True)).rstrip()


def _ok(response: httpx.Response, hint: str) -> None:
    """Raise a one-line ClickException for an error answer: `hint`, else what it said."""
    if response.is_success:
        return
    request = response.request
    said = " ".join(response.text.split())[:200]
    raise click.ClickException(
        f"{request.method} {request.url.path} answered {response.status_code}: {hint or said}"
    )


def _webhook_hint(provider: str, response: httpx.Response) -> str:
    if response.status_code == 404:
        return f"the server has no {provider} webhook secret (serve {DEV_CONFIG} to try it)"
    if response.status_code == 400 and "invalid_signature" in response.text:
        return f"its {provider} webhook secret is not the one given (--{provider}-secret)"
    return ""


def _token_hint(response: httpx.Response) -> str:
    if response.status_code in (401, 403):
        return "it refused the admin token (--admin-token: one of its [auth] admin_tokens)"
    return ""


def run_demo(echo: Callable[[str], None], target: Target | None = None) -> None:
    """Drive the lifecycle and print one table row per step; at `target`, or through a
    temporary server. Raises ClickException (one line) when the target answers wrong."""
    if target is not None:
        _at_target(echo, target)
        return
    stripe_secret = "whsec_" + secrets.token_hex(16)
    polar_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    admin = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="billhook-demo-") as tmp, ExitStack() as stack:
        fake = start_fake_stripe(stack)
        settings = demo_settings(Path(tmp) / "data", stripe_secret, polar_secret, admin, fake.url)
        url = stack.enter_context(serve_in_thread(create_app(settings)))
        with httpx.Client(base_url=url, timeout=10) as client:
            d = Demo(client, stripe_secret, polar_secret, admin, echo)
            echo(f"billhook demo: a temporary server at {url}, data in {tmp}")
            _table(d)
            _lifecycle(d)
            round_trip(d, fake)


def _at_target(echo: Callable[[str], None], target: Target) -> None:
    url = target.url.rstrip("/")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            d = Demo(client, target.stripe_secret, target.polar_secret, target.admin_token, echo)
            _deliver_to(d, url, target.stripe_fake_port)
    except httpx.TransportError as e:
        raise click.ClickException(
            f"cannot reach {url} ({e.__class__.__name__}): is billhook serving there (`make run`)?"
        ) from None


def _deliver_to(d: Demo, url: str, stripe_fake_port: int | None) -> None:
    found = d.entitlement("ws_probe")["enforcement"]
    d.echo(f"billhook demo: signed Stripe and Polar test events to {url}")
    if found != "observe":
        d.admin_call("PUT", "/v1/admin/enforcement", _enforcement("observe"))
    _table(d)
    _lifecycle(d)
    if stripe_fake_port is None:
        d.echo(
            "purchase skipped: the server buys through Stripe; to play it against billhook's"
            " fake, see --stripe-fake-port"
        )
    else:
        with ExitStack() as stack:
            try:
                fake = start_fake_stripe(stack, port=stripe_fake_port)
            except RuntimeError:
                raise click.ClickException(
                    f"the Stripe fake cannot listen on port {stripe_fake_port}"
                ) from None
            # A workspace of this run's own: the server keeps earlier runs' subscriptions.
            round_trip(d, fake, workspace=f"ws_shop_{secrets.token_hex(2)}")
    d.admin_call("PUT", "/v1/admin/enforcement", _enforcement(found))
    d.echo(f"enforcement back to {found!r}, as the demo found it; {d.delivered} events delivered")
    d.echo(
        f"read them: billhook events list, billhook events show {DEMO_EVENT_ID}"
        " (--config: the server's)"
    )


def _enforcement(mode: str) -> dict[str, str]:
    return {"mode": mode, "approved_by": "billhook demo", "reason": "the demo's enforcement steps"}


def _table(d: Demo) -> None:
    d.echo(LEGEND)
    d.echo(_format(COLUMNS))


def _lifecycle(d: Demo) -> None:
    """Stripe: checkout, cancellation, a failed payment and its recovery, the end; Polar
    seats; a pilot override; then enforcement, observed and enforced."""
    d.row("before anything", "ws_stripe", d.check("ws_stripe", "ai_imports"))
    session = {
        "id": "cs_demo_1",
        "object": "checkout.session",
        "mode": "subscription",
        "client_reference_id": "ws_stripe",
        "customer": "cus_demo_1",
        "subscription": "sub_demo_1",
        "metadata": {},
    }
    d.stripe("checkout.session.completed", session, event_id=DEMO_EVENT_ID)
    d.stripe("customer.subscription.created", stripe_subscription("active"))
    d.row("stripe checkout -> active", "ws_stripe", d.check("ws_stripe", "ai_imports"))
    d.stripe(
        "customer.subscription.updated",
        stripe_subscription("active", cancel_at_period_end=True),
    )
    d.row("cancel at period end", "ws_stripe")
    d.stripe("customer.subscription.updated", stripe_subscription("past_due"))
    d.row("payment failed -> past_due", "ws_stripe", d.check("ws_stripe", "ai_imports"))
    d.stripe("customer.subscription.updated", stripe_subscription("active"))
    d.row("payment recovered", "ws_stripe", d.check("ws_stripe", "ai_imports"))
    d.stripe("customer.subscription.deleted", stripe_subscription("canceled"))
    d.row("subscription canceled", "ws_stripe", d.check("ws_stripe", "ai_imports"))

    d.polar("subscription.active", polar_subscription(seats=2))
    d.row("polar: 2 seats bought", "ws_polar", d.check("ws_polar", "invite_member", 1))
    d.row("polar: both seats in use", "ws_polar", d.check("ws_polar", "invite_member", 2))

    pilot = {"workspace_id": "ws_pilot", "kind": "manual_pilot", "tier": "team",
             "reason": "design partner", "actor": "demo"}  # fmt: skip
    d.admin_call("POST", "/v1/admin/overrides", pilot)
    d.row("pilot override", "ws_pilot", d.check("ws_pilot", "team_sharing"))

    d.row("observe: would deny", "ws_stripe", d.check("ws_stripe", "ai_imports"))
    approval = {"mode": "enforce", "approved_by": "demo", "reason": "numbers look right"}
    d.admin_call("PUT", "/v1/admin/enforcement", approval)
    d.row("enforce: 402", "ws_stripe", d.check("ws_stripe", "ai_imports"))
    d.row("enforce: seat gate", "ws_polar", d.check("ws_polar", "invite_member", 2))
    d.row("enforce: reads stay free", "ws_stripe", d.check("ws_stripe", "reads"))
