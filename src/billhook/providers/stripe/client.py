"""Stripe's API as billhook reads it, through the `stripe` package: subscriptions, events,
prices, and checkout and billing-portal sessions.

Failures are retried and translated by :func:`billhook.providers.clients.with_retries`.
Ids of Stripe Connect objects are scoped by their account (`acct_1:sub_2`,
:mod:`billhook.providers.stripe.accounts`): a call about one asks that account
(`stripe_account=`) for the bare id, and what comes back is scoped again, so a
snapshot keys the same projection rows as the account's webhooks.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import stripe

from billhook.providers.clients import PAGE_SIZE, ProviderError, with_retries
from billhook.providers.stripe.accounts import scoped, split

T = TypeVar("T")

# Seconds one Stripe request may take (Polar's SDK defaults to 5).
STRIPE_TIMEOUT_S = 10


class StripeSource:
    provider = "stripe"

    def __init__(
        self, api_key: str, api_base: str = "", sleep: Callable[[float], None] = time.sleep
    ) -> None:
        options: dict[str, Any] = {"base_addresses": {"api": api_base}} if api_base else {}
        # stripe retries connection errors, 5xx and 409 itself; 429 is retried below.
        # Its default 80 s timeout times every retry would hold a refresh for minutes.
        http_client = stripe.new_default_http_client(timeout=STRIPE_TIMEOUT_S)
        self._client = stripe.StripeClient(
            api_key, max_network_retries=2, http_client=http_client, **options
        )
        self._sleep = sleep

    def _call(self, call: Callable[[], T]) -> T:
        return with_retries(
            call,
            provider="stripe",
            transient=(stripe.RateLimitError, stripe.APIConnectionError),
            failure=stripe.StripeError,
            retry_after=lambda e: None,
            sleep=self._sleep,
        )

    def subscriptions(self, customer: str) -> list[dict[str, Any]]:
        account, bare = split(customer)

        def fetch() -> list[dict[str, Any]]:
            params: Any = {"customer": bare, "status": "all", "limit": PAGE_SIZE}
            page = self._client.v1.subscriptions.list(params=params, options=_on(account))
            return [_scoped_subscription(account, sub.to_dict()) for sub in page.auto_paging_iter()]

        return self._call(fetch)

    def subscription(self, subscription: str) -> dict[str, Any] | None:
        """The subscription (scoped like `subscription`), or None when Stripe has none."""
        account, bare = split(subscription)

        def fetch() -> dict[str, Any] | None:
            found = _missing_is_none(
                lambda: self._client.v1.subscriptions.retrieve(bare, options=_on(account))
            )
            return None if found is None else _scoped_subscription(account, found.to_dict())

        return self._call(fetch)

    def invoice_subscription(self, invoice: str) -> str | None:
        """The id of the subscription `invoice` bills (scoped like it), or None."""
        account, bare = split(invoice)

        def fetch() -> str | None:
            found = _missing_is_none(
                lambda: self._client.v1.invoices.retrieve(bare, options=_on(account))
            )
            if found is None:
                return None
            data = found.to_dict()
            # Before 2025-03-31.basil the invoice names it; from then on, its parent does.
            parent = data.get("parent") or {}
            details = parent.get("subscription_details") or {}
            sub_id = _id_of(data.get("subscription")) or _id_of(details.get("subscription"))
            return None if sub_id is None else scoped(account, sub_id)

        return self._call(fetch)

    def session_subscription(self, session: str) -> str | None:
        """The id of the subscription a Checkout Session started (scoped like it), or None."""
        account, bare = split(session)

        def fetch() -> str | None:
            found = _missing_is_none(
                lambda: self._client.v1.checkout.sessions.retrieve(bare, options=_on(account))
            )
            sub_id = None if found is None else _id_of(found.to_dict().get("subscription"))
            return None if sub_id is None else scoped(account, sub_id)

        return self._call(fetch)

    def events(
        self, since: int, types: list[str], account: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Events created at or after `since` (Unix seconds) of `types`, newest first.

        With `account`, the connected account's events, each with `account` set
        as Stripe's Connect webhooks carry it (so it decodes into scoped ids).
        """
        params: Any = {"created": {"gte": since}, "types": types, "limit": PAGE_SIZE}
        while True:
            page = self._call(
                functools.partial(self._client.v1.events.list, params=params, options=_on(account))
            )
            for event in page.data:
                found = event.to_dict()
                yield found if account is None else {**found, "account": account}
            if not page.has_more or not page.data:
                return
            params = {**params, "starting_after": page.data[-1].id}

    def checkout_session(self, params: Mapping[str, Any], idempotency_key: str) -> tuple[str, str]:
        """Create a Checkout Session from `params`: (its id, its URL).

        Stripe answers a repeated `idempotency_key` with the session it first
        created, so a retried identical request returns the same session.
        """

        def create() -> tuple[str, str]:
            # The params are built from checked settings and request fields, not typed.
            sent: Any = dict(params)
            options: Any = {"idempotency_key": idempotency_key}
            session = self._client.v1.checkout.sessions.create(sent, options=options)
            if not session.url:  # only embedded or custom UI sessions come without one
                raise ProviderError("stripe: the checkout session has no hosted URL")
            return session.id, session.url

        return self._call(create)

    def portal_session(self, customer: str, return_url: str) -> tuple[str, str]:
        """Create a billing portal session for `customer`: (its id, its URL)."""

        def create() -> tuple[str, str]:
            params: Any = {"customer": customer, "return_url": return_url}
            session = self._client.v1.billing_portal.sessions.create(params)
            return session.id, session.url

        return self._call(create)

    def close(self) -> None:
        """Nothing to release: stripe's HTTP client is shared and closes with the process."""

    def price(self, price_id: str) -> dict[str, Any] | None:
        """The price, or None when Stripe has no such price."""

        def fetch() -> dict[str, Any] | None:
            try:
                return self._client.v1.prices.retrieve(price_id).to_dict()
            except stripe.InvalidRequestError as e:
                if e.http_status == 404:
                    return None
                raise

        return self._call(fetch)


def _on(account: str | None) -> Any:
    """Request options asking `account` (Stripe Connect), or the platform itself."""
    return {"stripe_account": account} if account is not None else {}


def _missing_is_none(call: Callable[[], T]) -> T | None:
    """`call()`, or None when Stripe answers 404 for the object it names."""
    try:
        return call()
    except stripe.InvalidRequestError as e:
        if e.http_status == 404:
            return None
        raise


def _id_of(reference: object) -> str | None:
    """A Stripe reference's id: the string itself, or an expanded object's `id`."""
    if isinstance(reference, dict):
        reference = reference.get("id")
    return reference if isinstance(reference, str) and reference else None


def _scoped_subscription(account: str | None, sub: dict[str, Any]) -> dict[str, Any]:
    """`sub` with its own and its customer's ids scoped by `account` (as it was, without)."""
    if account is None:
        return sub
    customer = _id_of(sub.get("customer"))
    return {
        **sub,
        "id": scoped(account, str(sub["id"])),
        "customer": scoped(account, customer) if customer is not None else sub.get("customer"),
    }
