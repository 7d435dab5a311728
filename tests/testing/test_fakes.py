"""The real `stripe` and `polar-sdk` packages work against the local fakes over real HTTP.

These tests pin both the fakes' behaviour and the SDKs' own (retries, error
classes, pagination), so a provider-sync feature tested on the fakes is
tested on what the SDKs really do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import polar
import pytest
import stripe
from polar.base import PolarRateLimitError
from polar.v2026_04 import Polar
from polar.v2026_04.errors import HTTPValidationError, ResourceNotFound
from polar.v2026_04.outputs import CustomerIndividual, Product, Subscription
from stripe._http_client import HTTPClient
from stripe.params.checkout import SessionCreateParams

from billhook.testing.fakes import Failure, decode_nested
from billhook.testing.fakes.polar_api import (
    DEFAULT_ACCESS_TOKEN,
    PolarState,
    polar_fake,
    polar_product,
)
from billhook.testing.fakes.stripe_api import (
    DEFAULT_API_KEY,
    StripeState,
    stripe_event,
    stripe_fake,
    stripe_price,
    stripe_product,
)
from billhook.testing.polar import polar_customer, polar_subscription
from billhook.testing.servers import serve_in_thread
from billhook.testing.stripe import stripe_customer, stripe_subscription

# -- shared ------------------------------------------------------------------------


def test_decode_nested_reads_stripe_and_rack_style_keys() -> None:
    pairs = [
        ("mode", "subscription"),
        ("line_items[0][price]", "price_a"),
        ("line_items[0][quantity]", "2"),
        ("line_items[1][price]", "price_b"),
        ("metadata[workspace_id]", "ws_1"),
        ("types[]", "a"),
        ("types[]", "b"),
        ("created[gte]", "10"),
    ]
    assert decode_nested(pairs) == {
        "mode": "subscription",
        "line_items": [{"price": "price_a", "quantity": "2"}, {"price": "price_b"}],
        "metadata": {"workspace_id": "ws_1"},
        "types": ["a", "b"],
        "created": {"gte": "10"},
    }


# -- Stripe ------------------------------------------------------------------------


@pytest.fixture
def stripe_state() -> StripeState:
    state = StripeState()
    state.add(
        stripe_customer(id="cus_1", metadata={"workspace_id": "ws_1"}),
        stripe_customer(id="cus_2", metadata={"workspace_id": "ws_2"}),
        stripe_product(id="prod_team"),
        stripe_price(id="price_team_monthly", interval="month"),
        stripe_price(id="price_team_yearly", interval="year", unit_amount=15000),
        stripe_price(id="price_old", active=False),
        stripe_price(id="price_live", livemode=True),
    )
    return state


@pytest.fixture
def stripe_url(stripe_state: StripeState) -> Iterator[str]:
    with serve_in_thread(stripe_fake(stripe_state)) as url:
        yield url


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """stripe-python sleeps at least `HTTPClient.INITIAL_DELAY` (0.5 s) between retries."""
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.0)


def client_for(url: str, key: str = DEFAULT_API_KEY, **kwargs: Any) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url}, **kwargs)


def test_stripe_lists_a_customers_subscriptions_across_pages(
    stripe_state: StripeState, stripe_url: str
) -> None:
    for n in range(25):
        sub = stripe_subscription(id=f"sub_{n:02d}", customer="cus_1")
        sub["created"] = 1_790_000_000 + n
        stripe_state.add(sub)
    stripe_state.add(
        stripe_subscription(id="sub_gone", customer="cus_1", status="canceled"),
        stripe_subscription(id="sub_other", customer="cus_2"),
    )
    client = client_for(stripe_url)

    page = client.v1.subscriptions.list(params={"customer": "cus_1", "limit": 10})
    assert isinstance(page.data[0], stripe.Subscription)
    ids = [s.id for s in page.auto_paging_iter()]

    assert ids == [f"sub_{n:02d}" for n in reversed(range(25))]  # newest first, no canceled
    calls = stripe_state.requests_to("/v1/subscriptions")
    assert [c.query.get("starting_after") for c in calls] == [None, "sub_15", "sub_05"]
    assert all(c.query["customer"] == "cus_1" for c in calls)

    every = client.v1.subscriptions.list(params={"customer": "cus_1", "status": "all"})
    assert "sub_gone" in [s.id for s in every.auto_paging_iter()]
    ended = client.v1.subscriptions.list(params={"status": "ended"})
    assert [s.id for s in ended.data] == ["sub_gone"]


def test_stripe_subscription_items_keep_their_price(
    stripe_url: str, stripe_state: StripeState
) -> None:
    stripe_state.add(stripe_subscription(id="sub_1", items=(("price_team_yearly", 3),)))
    sub = client_for(stripe_url).v1.subscriptions.retrieve("sub_1", params={"expand": ["customer"]})
    item = sub.items.data[0]  # stripe v16 objects are not dicts: `.items` is the field
    assert (item.price.id, item.quantity) == ("price_team_yearly", 3)
    assert isinstance(sub.customer, stripe.Customer)
    assert sub.customer.to_dict()["metadata"] == {"workspace_id": "ws_1"}


def test_stripe_retrieves_a_price_and_its_product(stripe_url: str) -> None:
    client = client_for(stripe_url)

    price = client.v1.prices.retrieve("price_team_yearly", params={"expand": ["product"]})

    assert isinstance(price, stripe.Price)
    assert (price.livemode, price.active, price.type) == (False, True, "recurring")
    assert price.recurring is not None
    assert price.recurring.interval == "year"
    assert isinstance(price.product, stripe.Product)
    assert price.product.id == "prod_team"
    assert client.v1.prices.retrieve("price_old").active is False
    recurring_monthly = client.v1.prices.list(
        params={"active": True, "recurring": {"interval": "month"}}
    )
    assert [p.id for p in recurring_monthly.data] == ["price_team_monthly"]


def test_stripe_missing_objects_and_unknown_params_are_invalid_request_errors(
    stripe_url: str,
) -> None:
    client = client_for(stripe_url)

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.prices.retrieve("price_nope")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    assert "No such price: 'price_nope'" in str(missing.value.user_message)

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.subscriptions.list(params=cast(Any, {"custmer": "cus_1"}))
    assert unknown.value.http_status == 400
    assert unknown.value.param == "custmer"


def test_stripe_modes_are_separate_like_test_and_live(
    stripe_state: StripeState, stripe_url: str
) -> None:
    stripe_state.api_keys.add("sk_live_fake")
    live = client_for(stripe_url, "sk_live_fake")

    assert live.v1.prices.retrieve("price_live").livemode is True
    with pytest.raises(stripe.InvalidRequestError) as err:
        live.v1.prices.retrieve("price_team_monthly")
    assert "a similar object exists in test mode" in str(err.value.user_message)
    assert [p.id for p in live.v1.prices.list().data] == ["price_live"]


def test_stripe_events_filtered_by_types_and_created_across_pages(
    stripe_state: StripeState, stripe_url: str
) -> None:
    kinds = ("customer.subscription.updated", "invoice.paid", "customer.subscription.deleted")
    for n in range(300):
        stripe_state.add(
            stripe_event(id=f"evt_{n:03d}", type=kinds[n % 3], created=1_790_000_000 + n)
        )
    wanted = {"customer.subscription.updated", "customer.subscription.deleted"}
    since, until = 1_790_000_020, 1_790_000_280
    client = client_for(stripe_url)

    events = client.v1.events.list(
        params={
            "types": sorted(wanted),
            "created": {"gte": since, "lt": until},
            "limit": 100,
        }
    )
    got = [e.id for e in events.auto_paging_iter()]

    expected = [
        f"evt_{n:03d}"
        for n in reversed(range(300))
        if kinds[n % 3] in wanted and since <= 1_790_000_000 + n < until
    ]
    assert got == expected  # newest first
    assert len(got) > 100  # several pages
    calls = stripe_state.requests_to("/v1/events")
    assert len(calls) == 2
    assert calls[0].query["types[0]"] == "customer.subscription.deleted"  # stripe indexes lists
    assert calls[0].query["created[gte]"] == str(since)
    assert calls[1].query["starting_after"] == expected[99]

    first = client.v1.events.list(params={"type": "invoice.*", "limit": 3})
    assert [e.type for e in first.data] == ["invoice.paid"] * 3
    assert isinstance(first.data[0], stripe.Event)
    assert first.data[0].data.object["object"] == "subscription"

    # `ending_before` pages towards newer events; auto-paging reverses each page.
    newer = client.v1.events.list(params={"ending_before": "evt_290", "limit": 4})
    assert [e.id for e in newer.data] == ["evt_294", "evt_293", "evt_292", "evt_291"]
    assert [e.id for e in newer.auto_paging_iter()] == [f"evt_{n}" for n in range(291, 300)]


def test_stripe_event_retention_hides_old_events(
    stripe_state: StripeState, stripe_url: str
) -> None:
    now = time.time()
    stripe_state.event_retention_days = 30
    stripe_state.add(
        stripe_event(id="evt_old", created=int(now - 31 * 86_400)),
        stripe_event(id="evt_new", created=int(now - 29 * 86_400)),
    )
    client = client_for(stripe_url)

    assert [e.id for e in client.v1.events.list().data] == ["evt_new"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve("evt_old")


def test_stripe_sdk_does_not_retry_a_plain_429(stripe_state: StripeState, stripe_url: str) -> None:
    client = client_for(stripe_url, max_network_retries=3)
    stripe_state.fail_next.append(Failure(429, headers={"Retry-After": "1"}))

    with pytest.raises(stripe.RateLimitError) as err:
        client.v1.prices.retrieve("price_team_monthly")

    assert err.value.http_status == 429
    assert err.value.error is not None
    assert err.value.error.code == "rate_limit"  # (`err.value.code` stays None for 429s)
    assert len(stripe_state.requests) == 1  # Retry-After is ignored
    assert client.v1.prices.retrieve("price_team_monthly").id == "price_team_monthly"


@pytest.mark.usefixtures("no_retry_sleep")
def test_stripe_sdk_retries_5xx_and_should_retry_429s(
    stripe_state: StripeState, stripe_url: str
) -> None:
    client = client_for(stripe_url, max_network_retries=2)
    stripe_state.fail_next += [500, Failure(429, headers={"Stripe-Should-Retry": "true"})]

    assert client.v1.prices.retrieve("price_team_monthly").id == "price_team_monthly"
    assert [r.status for r in stripe_state.requests] == [500, 429, 200]

    stripe_state.clear_requests()
    stripe_state.fail_next += [503, 503, 503]
    with pytest.raises(stripe.APIError) as err:
        client.v1.prices.retrieve("price_team_monthly")
    assert err.value.http_status == 503
    assert len(stripe_state.requests) == 3  # 1 + max_network_retries

    stripe_state.clear_requests()
    stripe_state.fail_next.append(Failure(500, headers={"Stripe-Should-Retry": "false"}))
    with pytest.raises(stripe.APIError):
        client.v1.prices.retrieve("price_team_monthly")
    assert len(stripe_state.requests) == 1


def test_stripe_client_does_not_retry_by_default(
    stripe_state: StripeState, stripe_url: str
) -> None:
    stripe_state.fail_next.append(500)
    with pytest.raises(stripe.APIError):
        client_for(stripe_url).v1.prices.retrieve("price_team_monthly")
    assert len(stripe_state.requests) == 1


def test_stripe_bad_or_missing_key_is_an_authentication_error(stripe_url: str) -> None:
    with pytest.raises(stripe.AuthenticationError) as err:
        client_for(stripe_url, "sk_test_wrong_key_123").v1.prices.retrieve("price_team_monthly")
    assert err.value.http_status == 401
    assert "Invalid API Key provided: sk_test_" in str(err.value.user_message)
    assert "wrong_key" not in str(err.value.user_message)  # masked like Stripe

    answer = httpx.get(f"{stripe_url}/v1/prices/price_team_monthly")
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")


def test_stripe_global_configuration_works_too(
    stripe_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe, "api_base", stripe_url)
    monkeypatch.setattr(stripe, "api_key", DEFAULT_API_KEY)

    assert stripe.Price.retrieve("price_team_monthly").unit_amount == 1500


def test_stripe_customer_search_by_metadata(stripe_url: str) -> None:
    client = client_for(stripe_url)

    found = client.v1.customers.search(params={"query": "metadata['workspace_id']:'ws_2'"})

    assert [c.id for c in found.data] == ["cus_2"]
    assert client.v1.customers.retrieve("cus_1").to_dict()["metadata"] == {"workspace_id": "ws_1"}


def test_stripe_deleted_customer_is_still_retrievable(
    stripe_state: StripeState, stripe_url: str
) -> None:
    stripe_state.delete_customer("cus_2")
    customer = client_for(stripe_url).v1.customers.retrieve("cus_2")
    assert customer.to_dict()["deleted"] is True


@pytest.mark.usefixtures("no_retry_sleep")
def test_stripe_checkout_session_honours_idempotency_keys(
    stripe_state: StripeState, stripe_url: str
) -> None:
    client = client_for(stripe_url, max_network_retries=1)
    params: SessionCreateParams = {
        "mode": "subscription",
        "customer": "cus_1",
        "client_reference_id": "ws_1",
        "line_items": [{"price": "price_team_monthly", "quantity": 3}],
        "success_url": "https://app.example/billing/return",
        "metadata": {"workspace_id": "ws_1"},
    }
    stripe_state.fail_next.append(500)

    first = client.v1.checkout.sessions.create(params, options={"idempotency_key": "ck_ws_1"})
    again = client.v1.checkout.sessions.create(params, options={"idempotency_key": "ck_ws_1"})

    assert (again.id, again.url) == (first.id, first.url)
    assert (first.amount_total, first.status, first.mode) == (4500, "open", "subscription")
    posts = stripe_state.requests_to("/v1/checkout/sessions", "POST")
    assert [p.status for p in posts] == [500, 200, 200]
    assert {p.headers["idempotency-key"] for p in posts} == {"ck_ws_1"}
    assert posts[1].form["line_items[0][price]"] == "price_team_monthly"
    assert len(stripe_state.checkout_sessions) == 1
    assert client.v1.checkout.sessions.retrieve(first.id).client_reference_id == "ws_1"

    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(
            {**params, "client_reference_id": "ws_2"},
            options={"idempotency_key": "ck_ws_1"},
        )
    with pytest.raises(stripe.InvalidRequestError) as inactive:
        client.v1.checkout.sessions.create(
            {**params, "line_items": [{"price": "price_old", "quantity": 1}]},
        )
    assert inactive.value.param == "line_items[0][price]"


def test_stripe_completed_checkout_makes_the_subscription_that_was_asked_for(
    stripe_state: StripeState, stripe_url: str
) -> None:
    client = client_for(stripe_url)
    params: SessionCreateParams = {
        "mode": "subscription",
        "client_reference_id": "ws_9",
        "line_items": [{"price": "price_team_yearly", "quantity": 7}],
        "success_url": "https://app.example/billing/return",
        "subscription_data": {"metadata": {"workspace_id": "ws_9"}},
    }
    session = client.v1.checkout.sessions.create(params)

    completed, sub = stripe_state.complete_checkout(session.id)

    assert (completed["status"], completed["subscription"]) == ("complete", sub["id"])
    assert completed["client_reference_id"] == "ws_9"
    assert "line_items_sent" not in completed
    assert sub["customer"] == completed["customer"]
    assert sub["metadata"] == {"workspace_id": "ws_9"}
    listed = client.v1.subscriptions.list({"customer": sub["customer"]}).data
    assert [(s.id, s.status) for s in listed] == [(sub["id"], "active")]
    [item] = listed[0]["items"]["data"]
    assert (item["price"]["id"], item["quantity"]) == ("price_team_yearly", 7)
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


@pytest.mark.usefixtures("no_retry_sleep")
def test_stripe_billing_portal_session(stripe_state: StripeState, stripe_url: str) -> None:
    client = client_for(stripe_url, max_network_retries=1)
    stripe_state.fail_next.append(502)

    session = client.v1.billing_portal.sessions.create(
        {"customer": "cus_1", "return_url": "https://app.example/settings"}
    )

    posts = stripe_state.requests_to("/v1/billing_portal/sessions")
    assert [p.status for p in posts] == [502, 200]
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]

    assert session.customer == "cus_1"
    assert session.url.startswith("https://billing.stripe.com/")
    assert session.return_url == "https://app.example/settings"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing_portal.sessions.create({"customer": "cus_nope"})
    assert err.value.param == "customer"


# -- Polar -------------------------------------------------------------------------

CUSTOMER_ID = "6f1d2c3b-4a5e-4f60-8b7a-9c8d7e6f5a41"
OTHER_CUSTOMER_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PRODUCT_ID = "2b3c4d5e-6f70-4a81-92b3-c4d5e6f7a8b9"


@pytest.fixture
def polar_state() -> PolarState:
    state = PolarState()
    state.add_product(polar_product(id=PRODUCT_ID, name="Team", seat_based=True))
    state.add_customer(polar_customer(id=CUSTOMER_ID, external_id="ws_1"))
    return state


@pytest.fixture
def polar_client(polar_state: PolarState) -> Iterator[Polar]:
    with (
        serve_in_thread(polar_fake(polar_state)) as url,
        Polar(DEFAULT_ACCESS_TOKEN, base_url=url) as client,
    ):
        yield client


def sub_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1, version=4))


def test_polar_lists_subscriptions_by_external_customer_across_pages(
    polar_state: PolarState, polar_client: Polar
) -> None:
    for n in range(12):
        polar_state.add_subscription(
            polar_subscription(
                id=sub_id(n),
                customer_id=CUSTOMER_ID,
                external_customer_id="ws_1",
                product_id=PRODUCT_ID,
                seats=2,
                status="canceled" if n == 0 else "active",
                created_at=f"2026-10-{n + 1:02d}T00:00:00Z",
            )
        )
    polar_state.add_subscription(
        polar_subscription(
            id=sub_id(99), customer_id=OTHER_CUSTOMER_ID, external_customer_id="ws_2"
        )
    )

    subs = list(polar_client.subscriptions.iter_list(external_customer_id="ws_1", limit=5))

    assert all(isinstance(s, Subscription) for s in subs)
    assert [s.id for s in subs] == [sub_id(n) for n in reversed(range(12))]  # -started_at
    assert (subs[0].seats, subs[0].customer.external_id) == (2, "ws_1")
    calls = polar_state.requests_to("/v1/subscriptions/")
    assert [c.query["page"] for c in calls] == ["1", "2", "3"]
    assert calls[0].query["external_customer_id"] == "ws_1"
    assert calls[0].query["sorting"] == "-started_at"
    assert calls[0].headers["polar-version"] == "2026-04"

    page = polar_client.subscriptions.list(external_customer_id="ws_1", limit=5, page=3)
    assert (page.pagination.total_count, page.pagination.max_page, len(page.items)) == (12, 3, 2)
    active = polar_client.subscriptions.list(customer_id=CUSTOMER_ID, active=True, limit=100)
    assert len(active.items) == 11
    assert polar_client.subscriptions.get(sub_id(0)).status == "canceled"


def test_polar_gets_a_product_and_a_customer(polar_client: Polar) -> None:
    product = polar_client.products.get(PRODUCT_ID)

    assert isinstance(product, Product)
    assert (product.is_recurring, product.recurring_interval) == (True, "month")
    assert product.prices[0].amount_type == "seat_based"
    customer = polar_client.customers.get_external("ws_1")
    assert isinstance(customer, CustomerIndividual)
    assert customer.id == CUSTOMER_ID
    assert [p.id for p in polar_client.products.list(is_recurring=True).items] == [PRODUCT_ID]


def test_polar_404_and_422_map_to_the_sdks_typed_errors(polar_client: Polar) -> None:
    with pytest.raises(ResourceNotFound) as missing:
        polar_client.products.get(str(uuid.uuid4()))
    assert missing.value.status_code == 404
    assert missing.value.error.detail == "Not found"

    with pytest.raises(ResourceNotFound):
        polar_client.customers.get_external("ws_nobody")

    with pytest.raises(HTTPValidationError) as invalid:
        polar_client.subscriptions.list(customer_id="not-a-uuid")
    detail = invalid.value.error.detail
    assert detail is not None
    assert detail[0].loc == ["query", "customer_id"]

    with pytest.raises(HTTPValidationError):
        polar_client.subscriptions.list(limit=101)


def test_polar_429_and_5xx_are_raised_not_retried(
    polar_state: PolarState, polar_client: Polar
) -> None:
    polar_state.fail_next += [429, Failure(429, headers={"Retry-After": "7"}), 503]

    with pytest.raises(PolarRateLimitError) as first:
        polar_client.subscriptions.list()
    with pytest.raises(PolarRateLimitError) as second:
        polar_client.subscriptions.list()
    with pytest.raises(polar.PolarServerError) as server:
        polar_client.products.get(PRODUCT_ID)

    assert (first.value.status_code, first.value.retry_after) == (429, 1)
    assert second.value.retry_after == 7
    assert server.value.status_code == 503
    assert [r.status for r in polar_state.requests] == [429, 429, 503]  # one request each
    assert polar_client.products.get(PRODUCT_ID).id == PRODUCT_ID


def test_polar_bad_token_is_a_plain_client_error(polar_state: PolarState) -> None:
    with serve_in_thread(polar_fake(polar_state)) as url:
        with (
            Polar("polar_oat_wrong", base_url=url) as client,
            pytest.raises(polar.PolarClientError) as err,
        ):
            client.subscriptions.list()
        missing = httpx.get(f"{url}/v1/subscriptions/")

    assert err.value.status_code == 401
    assert '"invalid_token"' in str(err.value.error)
    assert missing.status_code == 401
    assert missing.json() == {"error": "Unauthorized", "detail": "Unauthorized"}


def test_polar_timeout_is_a_network_error(polar_state: PolarState) -> None:
    polar_state.fail_next.append(Failure(500, delay_s=0.5))
    with (
        serve_in_thread(polar_fake(polar_state)) as url,
        Polar(DEFAULT_ACCESS_TOKEN, base_url=url, timeout=0.1) as client,
        pytest.raises(polar.PolarNetworkError),
    ):
        client.subscriptions.list()


def test_polar_checkout_and_customer_session(polar_state: PolarState, polar_client: Polar) -> None:
    checkout = polar_client.checkouts.create(
        products=[PRODUCT_ID],
        external_customer_id="ws_1",
        seats=3,
        success_url="https://app.example/billing/return",
        metadata={"workspace_id": "ws_1"},
    )

    assert (checkout.status, checkout.amount, checkout.external_customer_id) == (
        "open",
        1800,
        "ws_1",
    )
    assert checkout.url.startswith("https://sandbox.polar.sh/checkout/")
    assert polar_client.checkouts.get(checkout.id).id == checkout.id
    sent = polar_state.requests_to("/v1/checkouts/", "POST")[0].json
    assert sent["metadata"] == {"workspace_id": "ws_1"}

    session = polar_client.customer_sessions.create(
        external_customer_id="ws_1", return_url="https://app.example/settings"
    )
    assert session.customer_id == CUSTOMER_ID
    assert "customer_session_token=" in session.customer_portal_url
    with pytest.raises(HTTPValidationError):
        polar_client.checkouts.create(products=[str(uuid.uuid4())])


@pytest.mark.parametrize("known_customer", [False, True])
def test_polar_completed_checkout_makes_the_subscription_that_was_asked_for(
    polar_state: PolarState, polar_client: Polar, known_customer: bool
) -> None:
    external = "ws_1" if known_customer else "ws_new"
    checkout = polar_client.checkouts.create(
        products=[PRODUCT_ID],
        external_customer_id=external,
        seats=3,
        metadata={"workspace_id": external},
    )

    sub = polar_state.complete_checkout(checkout.id)

    assert (sub["status"], sub["seats"], sub["product_id"]) == ("active", 3, PRODUCT_ID)
    assert sub["metadata"] == {"workspace_id": external}
    assert sub["customer"]["external_id"] == external
    assert (sub["customer_id"] == CUSTOMER_ID) is known_customer
    listed = list(polar_client.subscriptions.iter_list(external_customer_id=external))
    assert [s.id for s in listed] == [sub["id"]]
    assert polar_client.checkouts.get(checkout.id).status == "succeeded"
    session = polar_client.customer_sessions.create(external_customer_id=external)
    assert session.customer_id == sub["customer_id"]


def test_polar_sdk_cannot_load_a_customer_state_with_subscriptions(
    polar_state: PolarState, polar_client: Polar
) -> None:
    """polar-sdk 1.0.2 types `active_subscriptions[].status` as a license-key status."""
    assert polar_client.customers.get_state_external("ws_1").active_subscriptions == []

    polar_state.add_subscription(
        polar_subscription(id=sub_id(1), customer_id=CUSTOMER_ID, external_customer_id="ws_1")
    )
    with pytest.raises(polar.PolarDeserializationError):
        polar_client.customers.get_state(CUSTOMER_ID)
