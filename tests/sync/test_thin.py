"""Stripe thin events (`v2.core.event`) answered from the API (SPEC §8; issue 19).

The follower (`billhook.sync.thin.ThinSync`) reads a real SQLite log and asks
the Stripe fake, served by uvicorn, through the real `stripe` package
(`StripeSource`); its snapshots are projected by the real projector and
resolved by the real resolver. Thin events are logged exactly as the receiver
logs them (`stripe_record` of the delivered body).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stripe._http_client import HTTPClient

from billhook.config import Settings
from billhook.domain.resolver import QUARANTINED, Entitlement, resolve
from billhook.log.sqlite import EventLog
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.providers import clients as providers
from billhook.providers.billhook import (
    RECONCILED,
    THIN_RESOLVED,
    THIN_UNFETCHED,
    THIN_UNFETCHED_REASON,
)
from billhook.providers.stripe.client import StripeSource
from billhook.providers.stripe.webhook import stripe_record
from billhook.runners.replay import replay
from billhook.sync.thin import FIRST_RETRY_S, Target, ThinSync
from billhook.testing.fakes import Failure
from billhook.testing.fakes.stripe_api import StripeState, stripe_fake, stripe_price, stripe_product
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import STRIPE_API_KEY, make_settings, provider_apis
from billhook.testing.stripe import (
    stripe_checkout_session,
    stripe_customer,
    stripe_event_body,
    stripe_invoice,
    stripe_subscription,
    stripe_thin_event_body,
)

# Subscriptions here stay current for as long as the suite may be run.
PERIOD_END_S = int(time.time()) + 365 * 86_400
WORKSPACE = "ws_thin"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """No sleeps inside one call's retries (billhook's 429s, stripe-python's 5xx)."""
    monkeypatch.setattr(providers, "FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(providers, "MAX_DELAY_S", 0.0)
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.0)


@dataclass
class Thin:
    """A log, a projection, the Stripe fake, and a follower with a hand-driven clock."""

    settings: Settings
    stripe: StripeState
    log: EventLog
    store: ProjectionStore
    source: StripeSource
    stack: ExitStack
    clock: list[float]

    def follower(self, *, keyed: bool = True) -> ThinSync:
        return ThinSync(self.log, self.source if keyed else None, monotonic=lambda: self.clock[0])

    def receive(self, body: bytes) -> int:
        """Log a delivery as the receiver does; its seq."""
        return self.log.append_batch([stripe_record(body.decode())])[0].seq

    def entitlement(self, workspace: str = WORKSPACE) -> Entitlement:
        catch_up(self.log, self.store)
        return resolve(
            self.store.workspace_facts(workspace), self.settings.policy, datetime.now(UTC)
        )

    def billhook(self, event_type: str) -> list[dict[str, Any]]:
        events = self.log.read(after=0, provider="billhook", type=event_type)
        return [json.loads(e.payload) for e in events]

    def fetches(self, path: str) -> int:
        return len(self.stripe.requests_to(path, "GET"))


@pytest.fixture
def thin(tmp_path: Path) -> Iterator[Thin]:
    stripe = StripeState()
    stripe.add(stripe_product(id="prod_team"), stripe_price(id="price_team_monthly"))
    stripe.add(
        stripe_customer(id="cus_1"),
        stripe_subscription(
            id="sub_1",
            customer="cus_1",
            metadata={"workspace_id": WORKSPACE},
            period_end=PERIOD_END_S,
        ),
    )
    with ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(stripe_fake(stripe)))
        api, _ = provider_apis(url, url, stripe_key=True, polar_token=False)
        settings = make_settings(tmp_path / "data", stripe=api)
        log = EventLog(settings.events_path)
        stack.callback(log.close)
        store = ProjectionStore(settings.projections_path, settings)
        stack.callback(store.close)
        source = StripeSource(STRIPE_API_KEY, url)
        yield Thin(settings, stripe, log, store, source, stack, [0.0])


def test_a_thin_subscription_event_appends_the_fetched_snapshot_and_grants(thin: Thin) -> None:
    event = stripe_thin_event_body("subscription", "sub_1", event_id="evt_thin_1")
    thin.receive(event)
    assert (
        thin.entitlement().tier == thin.settings.default_tier
    )  # logged, but a thin event states nothing

    step = thin.follower().step()

    assert (step.fetched, step.appended, step.failed) == (1, 1, [])
    [snapshot] = thin.billhook(RECONCILED)
    assert snapshot["answers"] == ["evt_thin_1"]
    assert snapshot["subscription"]["id"] == "sub_1"
    answer = thin.entitlement()
    assert (answer.tier, answer.source, answer.status, answer.seats) == (
        "team",
        "stripe",
        "active",
        5,
    )
    assert answer.problems == ()


def test_thin_events_about_one_object_are_fetched_once(thin: Thin) -> None:
    for n in range(4):
        thin.receive(stripe_thin_event_body("subscription", "sub_1", event_id=f"evt_thin_{n}"))
    thin.receive(stripe_thin_event_body("customer", "cus_1", event_id="evt_thin_cus"))

    step = thin.follower().step()

    assert step.fetched == 2
    assert thin.fetches("/v1/subscriptions/sub_1") == 1
    assert len(thin.stripe.requests_to("/v1/subscriptions", "GET")) == 1  # the customer's list
    answers = sorted(a for s in thin.billhook(RECONCILED) for a in s["answers"])
    assert answers == ["evt_thin_0", "evt_thin_1", "evt_thin_2", "evt_thin_3", "evt_thin_cus"]


def test_a_restarted_follower_fetches_only_what_no_snapshot_answers(thin: Thin) -> None:
    thin.receive(stripe_thin_event_body("subscription", "sub_1", event_id="evt_done"))
    thin.follower().step()
    thin.receive(stripe_thin_event_body("subscription", "sub_1", event_id="evt_new"))
    thin.stripe.clear_requests()

    restarted = thin.follower()  # a new process: nothing but the log to go by
    step = restarted.step()

    assert step.fetched == 1
    assert thin.fetches("/v1/subscriptions/sub_1") == 1
    assert [s["answers"] for s in thin.billhook(RECONCILED)] == [["evt_done"], ["evt_new"]]
    thin.stripe.clear_requests()
    assert ThinSync(thin.log, thin.source).step().fetched == 0
    assert thin.stripe.requests == []


def test_a_failed_fetch_is_retried_after_a_backoff_without_losing_the_event(thin: Thin) -> None:
    thin.receive(stripe_thin_event_body("subscription", "sub_1", event_id="evt_retry"))
    # stripe-python retries a 500 twice itself: three in a row fail this fetch for good.
    thin.stripe.fail_next = [Failure(500), Failure(500), Failure(500)]
    follower = thin.follower()

    first = follower.step()
    assert [(f.target, f.waiting) for f in first.failed] == [(Target("subscription", "sub_1"), 1)]
    assert "api_key" not in first.failed[0].error
    assert STRIPE_API_KEY not in first.failed[0].error
    assert thin.billhook(RECONCILED) == []

    requests = len(thin.stripe.requests)
    assert follower.step().fetched == 0  # still backing off: no request at all
    assert len(thin.stripe.requests) == requests

    thin.clock[0] += FIRST_RETRY_S
    assert follower.step().fetched == 1
    assert [s["answers"] for s in thin.billhook(RECONCILED)] == [["evt_retry"]]
    assert thin.entitlement().tier == "team"


def test_a_rate_limited_fetch_is_retried_within_the_call(thin: Thin) -> None:
    thin.receive(stripe_thin_event_body("subscription", "sub_1"))
    thin.stripe.fail_next = [Failure(429), Failure(429)]

    assert thin.follower().step().fetched == 1
    assert thin.fetches("/v1/subscriptions/sub_1") == 3


@pytest.mark.parametrize("basil", [True, False], ids=["invoice-parent", "invoice-subscription"])
def test_an_invoice_leads_to_its_subscription(thin: Thin, basil: bool) -> None:
    thin.stripe.add(stripe_invoice(id="in_1", subscription="sub_1", basil=basil))
    thin.receive(stripe_thin_event_body("invoice", "in_1", event_type="v1.invoice.paid"))

    assert thin.follower().step().fetched == 1

    assert [s["subscription"]["id"] for s in thin.billhook(RECONCILED)] == ["sub_1"]
    assert thin.entitlement().tier == "team"


def test_a_checkout_session_leads_to_its_subscription(thin: Thin) -> None:
    thin.stripe.add(stripe_checkout_session(customer="cus_1", subscription="sub_1"))
    thin.receive(
        stripe_thin_event_body(
            "checkout.session", "cs_test_sub_1", event_type="v1.checkout.session.completed"
        )
    )

    assert thin.follower().step().fetched == 1
    assert thin.fetches("/v1/checkout/sessions/cs_test_sub_1") == 1
    assert thin.entitlement().tier == "team"


def test_an_object_without_a_subscription_is_answered_once(thin: Thin) -> None:
    thin.stripe.add(stripe_customer(id="cus_none"))
    thin.receive(stripe_thin_event_body("customer", "cus_none", event_id="evt_lonely"))
    thin.receive(stripe_thin_event_body("subscription", "sub_gone", event_id="evt_gone"))

    assert thin.follower().step().fetched == 2

    resolved = thin.billhook(THIN_RESOLVED)
    assert sorted(r["answers"][0] for r in resolved) == ["evt_gone", "evt_lonely"]
    assert thin.billhook(RECONCILED) == []
    thin.stripe.clear_requests()
    assert thin.follower().step().fetched == 0  # a restart does not ask again
    assert thin.stripe.requests == []


def test_thin_events_billhook_does_not_follow_are_left_alone(thin: Thin) -> None:
    meter = stripe_thin_event_body(
        "billing.meter", "mtr_1", event_type="v1.billing.meter.error_report_triggered"
    )
    thin.receive(meter)
    thin.receive(stripe_event_body("customer.created", obj=stripe_customer(id="cus_2")))

    step = thin.follower().step()

    assert (step.fetched, step.unfetched) == (0, 0)
    assert thin.stripe.requests == []


def test_without_an_api_key_the_workspace_shows_a_problem_naming_the_key(thin: Thin) -> None:
    # The customer is linked (its checkout completed); only thin events follow.
    session = stripe_checkout_session(
        customer="cus_1", subscription="sub_1", client_reference_id=WORKSPACE
    )
    thin.receive(stripe_event_body("checkout.session.completed", obj=session))
    thin.receive(stripe_thin_event_body("customer", "cus_1", event_id="evt_no_key_1"))
    thin.receive(stripe_thin_event_body("customer", "cus_1", event_id="evt_no_key_2"))

    step = thin.follower(keyed=False).step()

    assert step.unfetched == 1
    assert thin.stripe.requests == []
    answer = thin.entitlement()
    assert answer.tier == thin.settings.default_tier  # nothing was granted
    [marker] = thin.log.read(after=0, provider="billhook", type=THIN_UNFETCHED)
    assert answer.problems == (f"{QUARANTINED}:{marker.seq}",)
    assert answer.next_action == "contact_support"
    [row] = thin.store.quarantine()
    assert row.seq == marker.seq
    assert row.error == THIN_UNFETCHED_REASON
    assert "[stripe] api_key" in row.error
    assert "STRIPE_API_KEY" in row.error
    assert json.loads(marker.payload)["answers"] == ["evt_no_key_1", "evt_no_key_2"]
    # Reported once: a later step, or a restart, adds nothing.
    assert thin.follower(keyed=False).step().unfetched == 0
    assert len(thin.billhook(THIN_UNFETCHED)) == 1


def test_a_key_set_later_fetches_what_was_reported_unfetched(thin: Thin) -> None:
    session = stripe_checkout_session(
        customer="cus_1", subscription="sub_1", client_reference_id=WORKSPACE
    )
    thin.receive(stripe_event_body("checkout.session.completed", obj=session))
    thin.receive(stripe_thin_event_body("customer", "cus_1", event_id="evt_late"))
    thin.follower(keyed=False).step()
    [marker] = thin.log.read(after=0, provider="billhook", type=THIN_UNFETCHED)
    assert thin.entitlement().problems == (f"{QUARANTINED}:{marker.seq}",)

    assert thin.follower().step().fetched == 1

    assert [s["answers"] for s in thin.billhook(RECONCILED)] == [["evt_late"]]
    answer = thin.entitlement()
    assert answer.tier == "team"
    # The snapshot answered the thin event: the missing key is no longer a problem,
    # though it was one at the time (as_of), and a replay agrees.
    assert answer.problems == ()
    assert thin.store.quarantine() == []
    then = thin.store.workspace_facts(WORKSPACE, as_of_seq=marker.seq)
    assert then.quarantined == (marker.seq,)
    before = thin.store.digest_rows()
    replay(thin.log, thin.settings, dry_run=False, now=datetime.now(UTC))
    assert thin.store.digest_rows() == before


def test_without_a_known_workspace_the_quarantine_names_the_key(thin: Thin) -> None:
    thin.receive(stripe_thin_event_body("subscription", "sub_unknown"))

    thin.follower(keyed=False).step()
    catch_up(thin.log, thin.store)

    [row] = thin.store.quarantine()
    assert row.type == THIN_UNFETCHED
    assert row.error == THIN_UNFETCHED_REASON


def test_a_replay_without_the_api_rebuilds_the_same_projection(thin: Thin) -> None:
    thin.receive(stripe_thin_event_body("subscription", "sub_1"))
    thin.follower().step()
    thin.stripe.subscriptions["sub_1"]["status"] = "past_due"
    thin.receive(stripe_thin_event_body("subscription", "sub_1"))
    thin.follower().step()
    before = thin.entitlement()
    assert (before.tier, before.status) == ("team", "past_due")
    rows = thin.store.digest_rows()
    thin.stack.close()  # the fake is stopped: replay has the log alone
    log = EventLog(thin.settings.events_path)
    try:
        changes = replay(log, thin.settings, dry_run=False, now=datetime.now(UTC))
        store = ProjectionStore(thin.settings.projections_path, thin.settings)
        try:
            assert changes == []
            assert store.digest_rows() == rows
            after = resolve(
                store.workspace_facts(WORKSPACE), thin.settings.policy, datetime.now(UTC)
            )
            assert (after.tier, after.status, after.seats) == ("team", "past_due", 5)
        finally:
            store.close()
    finally:
        log.close()


def test_a_connected_accounts_thin_event_asks_that_account(thin: Thin) -> None:
    account = thin.stripe.account("acct_1")
    account.add(
        stripe_subscription(
            id="sub_1",
            customer="cus_1",
            metadata={"workspace_id": "ws_connect"},
            items=(("price_team_monthly", 9),),
            period_end=PERIOD_END_S,
        )
    )
    thin.receive(stripe_thin_event_body("subscription", "sub_1", context="acct_1"))

    assert thin.follower().step().fetched == 1

    [request] = thin.stripe.requests_to("/v1/subscriptions/sub_1")
    assert request.headers.get("stripe-account") == "acct_1"
    [snapshot] = thin.billhook(RECONCILED)
    assert snapshot["account"] == "acct_1"
    assert snapshot["subscription"]["id"] == "sub_1"  # as Stripe sent it; the decoder scopes it
    answer = thin.entitlement("ws_connect")
    assert (answer.tier, answer.seats) == ("team", 9)
    assert [v.fact.id for v in answer.subscriptions] == ["acct_1:sub_1"]
    assert (
        thin.entitlement(WORKSPACE).tier == thin.settings.default_tier
    )  # the platform's sub_1 was not touched
