"""Stripe Connect: objects of connected accounts are keyed by (account, id) (issue #19)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhook.domain.facts import LinkFact, SubscriptionFact
from billhook.errors import DecodeError
from billhook.providers.decode import decode, subject
from billhook.providers.stripe.accounts import scoped, split
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.stripe import stripe_checkout_session
from tests.feed import T0, Feed
from tests.providers.stripe.shapes import BASIL, V2015, Sub, customer, event_body, subscription
from tests.providers.stripe.test_decode import _stored
from tests.providers.stripe.test_lifecycle import answer, deliver

# Stripe ids: letters, digits and underscores.
stripe_ids = st.from_regex(r"[a-z]{2,4}_[A-Za-z0-9]{1,24}", fullmatch=True)


@given(st.from_regex(r"acct_[A-Za-z0-9]{1,24}", fullmatch=True), stripe_ids)
def test_split_undoes_scoped(account: str, object_id: str) -> None:
    assert split(scoped(account, object_id)) == (account, object_id)


@given(stripe_ids)
def test_a_platform_id_stays_bare(object_id: str) -> None:
    assert scoped(None, object_id) == object_id
    assert split(object_id) == (None, object_id)


def test_the_convention() -> None:
    assert scoped("acct_123", "sub_456") == "acct_123:sub_456"
    assert split("acct_123:cus_789") == ("acct_123", "cus_789")
    # Only a connected account's prefix makes an id scoped.
    assert split("weird:id") == (None, "weird:id")


# -- the decoder -------------------------------------------------------------------------------


def _sub_event(account: str | None, **options: Any) -> Any:
    sub = Sub(metadata={"workspace_id": "ws_1"}, **options)
    body = event_body(
        BASIL,
        "customer.subscription.updated",
        subscription(BASIL, sub),
        created=T0,
        event_id="evt_1",
        account=account,
    )
    return _stored(body)


def test_a_connected_accounts_subscription_and_customer_are_scoped() -> None:
    fact, link = decode(_sub_event("acct_123"), "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    assert (fact.id, fact.customer) == ("acct_123:sub_1", "acct_123:cus_1")
    assert link == LinkFact("stripe", "acct_123:cus_1", "ws_1", T0 * 1_000_000, 1)
    # Prices are the platform's configuration: not scoped.
    assert [i.price for i in fact.items] == ["price_team_monthly"]


def test_a_platform_event_is_unchanged() -> None:
    fact, link = decode(_sub_event(None), "workspace_id")
    assert isinstance(fact, SubscriptionFact)
    assert isinstance(link, LinkFact)
    assert (fact.id, fact.customer, link.customer) == ("sub_1", "cus_1", "cus_1")


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        ("customer.created", customer(V2015, "cus_1", {"workspace_id": "ws_1"})),
        (
            "checkout.session.completed",
            stripe_checkout_session(customer="cus_1", client_reference_id="ws_1"),
        ),
    ],
    ids=["customer", "checkout"],
)
def test_links_of_a_connected_account_are_scoped(event_type: str, obj: dict[str, Any]) -> None:
    body = event_body(BASIL, event_type, obj, created=T0, event_id="e", account="acct_9")
    [link] = decode(_stored(body), "workspace_id")
    assert isinstance(link, LinkFact)
    assert (link.customer, link.workspace) == ("acct_9:cus_1", "ws_1")


@pytest.mark.parametrize(
    ("account", "reason"),
    [
        ("", "event account is empty"),
        (42, "event account is not a string"),
        ("cus_1", "event account is not a connected account id"),
        ("acct_1:sub_2", "event account is not a connected account id"),
    ],
)
def test_a_malformed_account_is_refused_readably(account: object, reason: str) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(_sub_event(account), "workspace_id")  # type: ignore[arg-type]
    assert str(raised.value) == reason


def test_whom_an_unreadable_connected_event_is_about_is_scoped() -> None:
    event = _sub_event("acct_123", status="bogus")
    with pytest.raises(DecodeError):
        decode(event, "workspace_id")
    about = subject(event, "workspace_id")
    assert (about.workspace, about.customer, about.subscription) == (
        "ws_1",
        "acct_123:cus_1",
        "acct_123:sub_1",
    )
    # With a malformed account, its ids could be anyone's: only its own workspace is named.
    about = subject(_sub_event("nope", status="bogus"), "workspace_id")
    assert (about.workspace, about.customer, about.subscription) == ("ws_1", None, None)


def _append(feed: Feed, body: bytes) -> int:
    return feed.append(stripe_record(body.decode()))


def test_the_same_ids_in_two_accounts_and_the_platform_never_mix(feed: Feed) -> None:
    for account, workspace, price in [
        ("acct_a", "ws_a", "price_team_monthly"),
        ("acct_b", "ws_b", "price_enterprise_yearly"),
        (None, "ws_p", "price_team_yearly"),
    ]:
        link = customer(BASIL, "cus_1", {"workspace_id": workspace})
        _append(
            feed,
            event_body(
                BASIL,
                "customer.created",
                link,
                created=T0,
                event_id=f"c_{workspace}",
                account=account,
            ),
        )
        sub = subscription(BASIL, Sub(items=((price, 2),)))
        _append(
            feed,
            event_body(
                BASIL,
                "customer.subscription.created",
                sub,
                created=T0,
                event_id=f"s_{workspace}",
                account=account,
            ),
        )

    assert [feed.entitlement(w).tier for w in ("ws_a", "ws_b", "ws_p")] == [
        "team",
        "enterprise",
        "team",
    ]
    assert feed.store.customers_of("ws_a") == {("stripe", "acct_a:cus_1")}
    assert feed.store.customers_of("ws_p") == {("stripe", "cus_1")}


# -- through HTTP ------------------------------------------------------------------------------


def _connect_deliver(
    client: httpx.Client, account: str, event_type: str, obj: dict[str, Any], created: int
) -> int:
    body = event_body(
        BASIL,
        event_type,
        obj,
        created=created,
        event_id=f"evt_{uuid.uuid4().hex[:24]}",
        account=account,
    )
    return deliver(client, body)


def test_two_accounts_with_the_same_ids_each_grant_their_own_workspace(
    client: httpx.Client,
) -> None:
    now = int(time.time())
    plans = {
        "acct_a": ("ws_a", "price_team_monthly", 2),
        "acct_b": ("ws_b", "price_enterprise_yearly", 5),
    }
    seq = 0
    for account, (workspace, price, seats) in plans.items():
        link = customer(BASIL, "cus_1", {"workspace_id": workspace})
        _connect_deliver(client, account, "customer.created", link, now - 60)
        sub = subscription(BASIL, Sub(items=((price, seats),), period_end=now + 86_400))
        seq = _connect_deliver(client, account, "customer.subscription.created", sub, now - 59)

    a, b = answer(client, "ws_a", seq), answer(client, "ws_b", seq)
    assert (a["tier"], a["seats"], b["tier"], b["seats"]) == (
        "team",
        {"purchased": 2},
        "enterprise",
        {"purchased": 5},
    )
    [sub_a], [sub_b] = a["subscriptions"], b["subscriptions"]
    assert (sub_a["id"], sub_a["customer"], sub_a["account"]) == ("sub_1", "cus_1", "acct_a")
    assert (sub_b["id"], sub_b["customer"], sub_b["account"]) == ("sub_1", "cus_1", "acct_b")

    # Account b cancels: account a's workspace keeps its tier.
    gone = subscription(
        BASIL,
        Sub(
            status="canceled",
            items=(("price_enterprise_yearly", 5),),
            period_end=now + 86_400,
            canceled_at=now - 58,
            ended_at=now - 58,
        ),
    )
    seq = _connect_deliver(client, "acct_b", "customer.subscription.deleted", gone, now - 58)
    assert answer(client, "ws_b", seq)["tier"] == "solo"
    assert answer(client, "ws_a", seq)["tier"] == "team"
