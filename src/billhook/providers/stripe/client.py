"""Stripe's API as billhook reads it, through the `stripe` package: subscriptions, events,
prices, and checkout and billing-portal sessions.

Failures are retried and translated by :func:`billhook.providers.clients.with_retries`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import stripe

from billhook.providers.clients import PAGE_SIZE, ProviderError, with_retries

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
        def fetch() -> list[dict[str, Any]]:
            params: Any = {"customer": customer, "status": "all", "limit": PAGE_SIZE}
            page = self._client.v1.subscriptions.list(params=params)
            return [sub.to_dict() for sub in page.auto_paging_iter()]

        return self._call(fetch)

    def events(self, since: int, types: list[str]) -> Iterator[dict[str, Any]]:
        """Events created at or after `since` (Unix seconds) of `types`, newest first."""
        params: Any = {"created": {"gte": since}, "types": types, "limit": PAGE_SIZE}
        while True:
            page = self._call(functools.partial(self._client.v1.events.list, params=params))
            for event in page.data:
                yield event.to_dict()
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
