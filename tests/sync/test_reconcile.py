"""`billhook reconcile` and `billhook backfill stripe|polar` on the provider fakes (SPEC §8, §9).

The CLI runs in-process through click's `CliRunner` on `worker.cli.main`,
with a real config file; it reaches the Stripe and Polar fakes (served by
uvicorn) over real HTTP through the real `stripe` and `polar-sdk` packages.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from stripe._http_client import HTTPClient

from billhook.cli.main import main
from billhook.domain.records import EventRecord
from billhook.domain.times import iso_utc
from billhook.log.sqlite import EventLog
from billhook.providers import clients as providers
from billhook.providers.billhook import RECONCILED
from billhook.providers.polar.webhook import polar_record
from billhook.providers.stripe.decode import STRIPE_PROJECTED_TYPES
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.fakes.polar_api import PolarState, polar_fake, polar_product
from billhook.testing.fakes.stripe_api import (
    StripeState,
    stripe_event,
    stripe_fake,
    stripe_price,
    stripe_product,
)
from billhook.testing.polar import polar_customer, polar_event, polar_subscription
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import (
    POLAR_ACCESS_TOKEN,
    PRODUCT_TEAM,
    STRIPE_API_KEY,
    provider_apis,
    write_config,
)
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_subscription,
)

DAY_S = 86_400
# Subscriptions here stay current for as long as the suite may be run.
PERIOD_END_S = int(time.time()) + 365 * DAY_S
PERIOD_END_ISO = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(PERIOD_END_S))
# Environment variables that would override the config a test writes.
CONFIG_ENV_PREFIXES = ("BILLHOOK_", "STRIPE_", "POLAR_")
# Slack, in seconds, when comparing a `created[gte]` the CLI computed from its own clock.
CLOCK_SLACK_S = 120


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No config from the environment, and no backoff sleeps (billhook's or stripe-python's)."""
    for name in list(os.environ):
        if name.startswith(CONFIG_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setattr(providers, "FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(providers, "MAX_DELAY_S", 0.0)
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.0)


@dataclass
class Setup:
    """A config pointing at the fakes, and the fakes' states."""

    directory: Path
    stripe: StripeState
    polar: PolarState
    stripe_url: str
    polar_url: str

    @property
    def events_path(self) -> Path:
        return self.directory / "data" / "events.db"

    def config(self, *, stripe_key: bool = True, polar_token: bool = True) -> Path:
        stripe, polar = provider_apis(
            self.stripe_url, self.polar_url, stripe_key=stripe_key, polar_token=polar_token
        )
        name = f"billhook-{int(stripe_key)}{int(polar_token)}.toml"
        return write_config(self.directory, name=name, stripe=stripe, polar=polar)

    def append(self, *records: EventRecord) -> None:
        """Events that arrived by webhook earlier (straight into the log)."""
        log = EventLog(self.events_path)
        try:
            log.append_batch(list(records))
        finally:
            log.close()

    def events(self, **filters: Any) -> list[Any]:
        log = EventLog(self.events_path)
        try:
            return log.read(**filters)
        finally:
            log.close()

    def head(self) -> int:
        log = EventLog(self.events_path)
        try:
            return log.head_seq()
        finally:
            log.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    stripe = StripeState()
    stripe.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
    polar = PolarState()
    polar.add_product(polar_product(id=PRODUCT_TEAM, seat_based=True))
    with (
        serve_in_thread(stripe_fake(stripe)) as stripe_url,
        serve_in_thread(polar_fake(polar)) as polar_url,
    ):
        yield Setup(tmp_path, stripe, polar, stripe_url, polar_url)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result: Result, message: str, *, code: int = 1) -> None:
    """A failed command: non-zero exit, one `Error:` line, no traceback, no secret."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert STRIPE_API_KEY not in result.output
    assert POLAR_ACCESS_TOKEN not in result.output


def entitlement(config: Path, workspace: str) -> dict[str, Any]:
    result = run("entitlements", workspace, "--config", str(config))
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def uid(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"billhook-tests:{kind}:{n}"))


# -- log content helpers -------------------------------------------------------------------


def checkout_record(workspace: str, customer: str, sub: str, created: int) -> EventRecord:
    session = stripe_checkout_session(
        customer=customer, subscription=sub, client_reference_id=workspace
    )
    body = stripe_event_body("checkout.session.completed", obj=session, created=created)
    return stripe_record(body.decode())


def subscription_record(sub: dict[str, Any], created: int) -> EventRecord:
    body = stripe_event_body("customer.subscription.created", obj=sub, created=created)
    return stripe_record(body.decode())


def polar_customer_record(customer_id: str, workspace: str) -> EventRecord:
    body = polar_event("customer.created", polar_customer(id=customer_id, external_id=workspace))
    return polar_record(body.decode(), f"msg_{uuid.uuid4().hex}", int(time.time()))


def polar_subscription_record(event_type: str, sub: dict[str, Any]) -> EventRecord:
    body = polar_event(event_type, sub)
    return polar_record(body.decode(), f"msg_{uuid.uuid4().hex}", int(time.time()))


def team_sub(id: str, customer: str, seats: int, **kwargs: Any) -> dict[str, Any]:
    return stripe_subscription(
        id=id,
        customer=customer,
        items=(("price_team_monthly", seats),),
        period_end=PERIOD_END_S,
        **kwargs,
    )


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_one_workspace_heals_its_drift_once(setup: Setup) -> None:
    config = setup.config()
    now = int(time.time())
    setup.stripe.add(stripe_customer(id="cus_a"), team_sub("sub_a", "cus_a", 4))
    setup.append(checkout_record("ws_a", "cus_a", "sub_a", now - 600))
    assert entitlement(config, "ws_a")["tier"] == "solo"
    head = setup.head()

    first = run("reconcile", "--workspace", "ws_a", "--config", str(config))

    assert first.exit_code == 0, first.output
    assert first.stdout == (
        "checked 1 subscription(s) in 1 workspace(s);"
        " drift healed: 1 billhook.reconciled event(s) appended\n"
    )
    (event,) = setup.events(after=head)
    assert (event.provider, event.type) == ("billhook", RECONCILED)
    healed = entitlement(config, "ws_a")
    assert (healed["tier"], healed["source"], healed["seats"]) == (
        "team",
        "stripe",
        {"purchased": 4},
    )

    second = run("reconcile", "--workspace", "ws_a", "--config", str(config))

    assert second.exit_code == 0, second.output
    assert "drift healed: 0 billhook.reconciled event(s) appended" in second.stdout
    assert setup.head() == head + 1


def test_reconcile_all_heals_every_linked_workspace(setup: Setup) -> None:
    config = setup.config()
    now = int(time.time())
    polar_customer_id = uid("customer", 1)
    setup.stripe.add(
        stripe_customer(id="cus_a"),
        team_sub("sub_a", "cus_a", 4),
        stripe_customer(id="cus_c"),
        team_sub("sub_c", "cus_c", 2, metadata={"workspace_id": "ws_c"}),
    )
    in_sync_polar = polar_subscription(
        id=uid("sub", 2),
        customer_id=uid("customer", 2),
        external_customer_id="ws_e",
        product_id=PRODUCT_TEAM,
        seats=3,
        current_period_end=PERIOD_END_ISO,
    )
    setup.polar.add_subscription(
        polar_subscription(
            id=uid("sub", 1),
            customer_id=polar_customer_id,
            external_customer_id="ws_b",
            product_id=PRODUCT_TEAM,
            seats=6,
            current_period_end=PERIOD_END_ISO,
        ),
        in_sync_polar,
    )
    setup.append(
        # ws_a: linked by checkout, its subscription events missed.
        checkout_record("ws_a", "cus_a", "sub_a", now - 600),
        # ws_b: a Polar customer whose subscription events were missed.
        polar_customer_record(polar_customer_id, "ws_b"),
        # ws_c: in sync, the webhook said what the API says.
        subscription_record(setup.stripe.subscriptions["sub_c"], now - 600),
        # ws_e: in sync on Polar too.
        polar_subscription_record("subscription.active", in_sync_polar),
        # ws_d: only an override, no provider customer: skipped by --all.
        EventRecord(
            "billhook",
            str(uuid.uuid4()),
            "billhook.override_set",
            None,
            iso_utc(datetime.now(UTC)),
            json.dumps(
                {
                    "workspace_id": "ws_d",
                    "kind": "manual_pilot",
                    "tier": "team",
                    "reason": "pilot",
                    "actor": "ops",
                }
            ),
        ),
    )
    head = setup.head()

    first = run("reconcile", "--all", "--config", str(config))

    assert first.exit_code == 0, first.output
    assert first.stdout == (
        "checked 4 subscription(s) in 5 workspace(s);"
        " drift healed: 2 billhook.reconciled event(s) appended\n"
    )
    healed = {e.event_id: json.loads(e.payload) for e in setup.events(after=head)}
    assert sorted(p["subscription"]["id"] for p in healed.values()) == sorted(
        ["sub_a", uid("sub", 1)]
    )
    for workspace, provider, seats in (("ws_a", "stripe", 4), ("ws_b", "polar", 6)):
        answer = entitlement(config, workspace)
        assert (answer["tier"], answer["source"]) == ("team", provider), workspace
        assert answer["seats"] == {"purchased": seats}

    second = run("reconcile", "--all", "--config", str(config))

    assert second.exit_code == 0, second.output
    assert "checked 4 subscription(s) in 5 workspace(s)" in second.stdout
    assert "drift healed: 0 billhook.reconciled event(s) appended" in second.stdout
    assert setup.head() == head + 2

    only_stripe = run("reconcile", "--all", "--provider", "stripe", "--config", str(config))

    assert only_stripe.exit_code == 0, only_stripe.output
    assert "checked 2 subscription(s) in 5 workspace(s)" in only_stripe.stdout


def test_reconcile_all_reports_a_failing_provider_and_heals_the_rest(setup: Setup) -> None:
    config = setup.config()
    now = int(time.time())
    polar_customer_id = uid("customer", 2)
    setup.stripe.add(stripe_customer(id="cus_a"), team_sub("sub_a", "cus_a", 4))
    setup.append(
        checkout_record("ws_a", "cus_a", "sub_a", now - 600),
        polar_customer_record(polar_customer_id, "ws_b"),
    )
    setup.polar.fail_next += [500] * providers.ATTEMPTS

    result = run("reconcile", "--all", "--config", str(config))

    assert_one_line_error(result, "Error: 1 workspace(s) could not be reconciled")
    assert "failed: ws_b: polar: PolarServerError (HTTP 500)" in result.stderr
    assert "drift healed: 1 billhook.reconciled event(s) appended" in result.stdout
    assert entitlement(config, "ws_a")["tier"] == "team"


def test_reconcile_errors_are_one_line(setup: Setup, tmp_path: Path) -> None:
    config = setup.config()
    no_keys = setup.config(stripe_key=False, polar_token=False)
    setup.append(checkout_record("ws_a", "cus_a", "sub_a", int(time.time()) - 600))

    assert_one_line_error(
        run("reconcile", "--workspace", "ws_nobody", "--config", str(config)),
        "Error: no provider customer is known for workspace ws_nobody",
    )
    assert_one_line_error(
        run("reconcile", "--workspace", "ws_a", "--config", str(no_keys)),
        "Error: stripe: no API credentials are configured",
    )
    setup.stripe.fail_next += [500] * 3  # stripe-python's own retries give up after 3 tries
    assert_one_line_error(
        run("reconcile", "--workspace", "ws_a", "--config", str(config)),
        "Error: stripe: APIError (HTTP 500)",
    )
    assert_one_line_error(
        run("reconcile", "--config", str(config)),
        "Error: give exactly one of --workspace W or --all",
        code=2,
    )
    assert_one_line_error(
        run("reconcile", "--all", "--workspace", "ws_a", "--config", str(config)),
        "Error: give exactly one of --workspace W or --all",
        code=2,
    )
    missing = tmp_path / "elsewhere.toml"
    missing.write_text(f"[billhook]\ndata_dir = {json.dumps(str(tmp_path / 'none'))}\n")
    assert_one_line_error(
        run("reconcile", "--all", "--config", str(missing)), "Error: no event log at"
    )
    assert setup.events(provider="billhook") == []


# -- backfill stripe -------------------------------------------------------------------------


def test_backfill_stripe_pages_filters_types_and_adds_nothing_the_second_time(
    setup: Setup,
) -> None:
    config = setup.config()
    now = int(time.time())
    wanted: list[str] = []
    for n in range(70):  # 140 projected events: more than one page of 100
        sub = team_sub(f"sub_{n}", f"cus_{n}", 2 + n % 3, metadata={"workspace_id": f"ws_{n}"})
        for k, kind in enumerate(
            ("customer.subscription.created", "customer.subscription.updated")
        ):
            event_id = f"evt_sub_{n}_{k}"
            created = now - 20 * DAY_S + n * 600 + k
            setup.stripe.add(stripe_event(id=event_id, type=kind, created=created, obj=sub))
            wanted.append(event_id)
    for n in range(30):  # events of types billhook does not project
        kind = ("invoice.paid", "charge.succeeded", "payment_intent.created")[n % 3]
        setup.stripe.add(stripe_event(id=f"evt_noise_{n}", type=kind, created=now - n * 60))
    # Older than Stripe's 30 days: not asked for.
    old = team_sub("sub_old", "cus_old", 1, metadata={"workspace_id": "ws_old"})
    setup.stripe.add(
        stripe_event(
            id="evt_old", type="customer.subscription.created", created=now - 40 * DAY_S, obj=old
        )
    )
    # One of them already came in by webhook.
    setup.append(stripe_record(json.dumps(setup.stripe.events["evt_sub_0_0"])))
    setup.stripe.fail_next.append(429)  # rate limited once: retried

    first = run("backfill", "stripe", "--config", str(config))

    assert first.exit_code == 0, first.output
    assert first.stdout == "fetched 140 event(s) of the last 30 day(s); appended 139 new\n"
    logged = setup.events(provider="stripe")
    assert sorted(e.event_id for e in logged) == sorted(wanted)  # no noise, nothing old
    assert [e.seq for e in logged] == list(range(1, 141))
    calls = setup.stripe.requests_to("/v1/events")
    assert [c.status for c in calls] == [429, 200, 200]
    for call in calls:
        types = [call.query[f"types[{i}]"] for i in range(len(STRIPE_PROJECTED_TYPES))]
        assert types == list(STRIPE_PROJECTED_TYPES)
        assert f"types[{len(STRIPE_PROJECTED_TYPES)}]" not in call.query
        assert call.query["limit"] == "100"
        assert abs(int(call.query["created[gte]"]) - (now - 30 * DAY_S)) <= CLOCK_SLACK_S
    assert "starting_after" not in calls[1].query
    newest_first = sorted(wanted, key=lambda e: setup.stripe.events[e]["created"], reverse=True)
    assert calls[2].query["starting_after"] == newest_first[99]
    # Appended oldest first: the updated event of a subscription follows its created event.
    assert [e.event_id for e in logged[-2:]] == ["evt_sub_69_0", "evt_sub_69_1"]
    answer = entitlement(config, "ws_5")
    assert (answer["tier"], answer["source"], answer["seats"]) == (
        "team",
        "stripe",
        {"purchased": 4},
    )

    second = run("backfill", "stripe", "--config", str(config))

    assert second.exit_code == 0, second.output
    assert second.stdout == "fetched 140 event(s) of the last 30 day(s); appended 0 new\n"
    assert setup.head() == 140


def test_backfill_stripe_since_filters_by_created(setup: Setup) -> None:
    config = setup.config()
    setup.append()  # an empty log: a deployment that has served, but received nothing yet
    now = int(time.time())
    for n, days in enumerate((1, 2, 3, 10, 12)):
        sub = team_sub(f"sub_{n}", f"cus_{n}", 1, metadata={"workspace_id": f"ws_{n}"})
        setup.stripe.add(
            stripe_event(
                id=f"evt_{n}",
                type="customer.subscription.created",
                created=now - days * DAY_S,
                obj=sub,
            )
        )

    recent = run("backfill", "stripe", "--since", "5", "--config", str(config))

    assert recent.exit_code == 0, recent.output
    assert recent.stdout == "fetched 3 event(s) of the last 5 day(s); appended 3 new\n"
    assert sorted(e.event_id for e in setup.events()) == ["evt_0", "evt_1", "evt_2"]
    (call,) = setup.stripe.requests_to("/v1/events")
    assert abs(int(call.query["created[gte]"]) - (now - 5 * DAY_S)) <= CLOCK_SLACK_S

    everything = run("backfill", "stripe", "--config", str(config))

    assert everything.exit_code == 0, everything.output
    assert everything.stdout == "fetched 5 event(s) of the last 30 day(s); appended 2 new\n"
    out_of_range = run("backfill", "stripe", "--since", "31", "--config", str(config))
    assert out_of_range.exit_code == 2
    assert "Invalid value for '--since'" in out_of_range.stderr


def test_backfill_errors_are_one_line(setup: Setup) -> None:
    no_keys = setup.config(stripe_key=False, polar_token=False)
    config = setup.config()
    missing = run("backfill", "stripe", "--config", str(config))
    assert_one_line_error(missing, f"Error: no event log at {setup.events_path}")
    assert missing.stderr.count("\n") == 1
    assert setup.stripe.requests_to("/v1/events") == []  # refused before any request
    setup.append()

    no_stripe = run("backfill", "stripe", "--config", str(no_keys))
    assert_one_line_error(
        no_stripe, "Error: no Stripe API key: set [stripe] api_key or STRIPE_API_KEY"
    )
    assert no_stripe.stderr.count("\n") == 1
    no_polar = run("backfill", "polar", "--config", str(no_keys))
    assert_one_line_error(
        no_polar, "Error: no Polar access token: set [polar] access_token or POLAR_ACCESS_TOKEN"
    )
    assert no_polar.stderr.count("\n") == 1

    setup.stripe.fail_next += [500] * 3
    down = run("backfill", "stripe", "--config", str(config))
    assert_one_line_error(down, "Error: stripe: APIError (HTTP 500)")
    assert down.stderr.splitlines()[0] == f"log: {setup.events_path}"
    assert down.stderr.count("\n") == 2

    setup.stripe.api_keys.clear()  # Stripe rejects the key (and its message names it, masked)
    rejected = run("backfill", "stripe", "--config", str(config))
    assert_one_line_error(rejected, "Error: stripe: AuthenticationError (HTTP 401)")
    assert "sk_test_" not in rejected.output
    assert setup.head() == 0


# -- backfill polar --------------------------------------------------------------------------


def test_backfill_polar_reconciles_every_subscription_once(setup: Setup) -> None:
    config = setup.config()
    setup.append(polar_customer_record(uid("customer", 999), "ws_unrelated"))
    for n in range(120):  # more than one page of 100
        setup.polar.add_subscription(
            polar_subscription(
                id=uid("sub", n),
                customer_id=uid("customer", n),
                external_customer_id=f"ws_p{n}",
                product_id=PRODUCT_TEAM,
                seats=1 + n % 4,
                current_period_end=PERIOD_END_ISO,
                created_at=f"2026-10-{1 + n % 28:02d}T00:00:{n % 60:02d}Z",
            )
        )
    head = setup.head()

    first = run("backfill", "polar", "--config", str(config))

    assert first.exit_code == 0, first.output
    assert first.stdout == "checked 120 Polar subscription(s); appended 120 reconciled event(s)\n"
    appended = setup.events(after=head)
    assert {(e.provider, e.type) for e in appended} == {("billhook", RECONCILED)}
    assert sorted(json.loads(e.payload)["subscription"]["id"] for e in appended) == sorted(
        uid("sub", n) for n in range(120)
    )
    calls = setup.polar.requests_to("/v1/subscriptions/")
    assert [(c.query["page"], c.query["limit"]) for c in calls] == [("1", "100"), ("2", "100")]
    for n in (0, 7, 119):  # linked through the customer's external_id
        answer = entitlement(config, f"ws_p{n}")
        assert (answer["tier"], answer["source"]) == ("team", "polar")
        assert answer["seats"] == {"purchased": 1 + n % 4}

    second = run("backfill", "polar", "--config", str(config))

    assert second.exit_code == 0, second.output
    assert second.stdout == "checked 120 Polar subscription(s); appended 0 reconciled event(s)\n"
    assert setup.head() == head + 120
