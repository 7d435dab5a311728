"""Polar's API as billhook reads it, through `polar-sdk`: subscriptions, products, checkouts
and customer-portal sessions.

Failures are retried and translated by :func:`billhook.providers.clients.with_retries`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from polar.base import PolarError, PolarNetworkError, PolarRateLimitError, PolarServerError
from polar.v2026_04 import Polar
from polar.v2026_04.errors import ResourceNotFound

from billhook.providers.clients import PAGE_SIZE, with_retries

T = TypeVar("T")


class PolarSource:
    provider = "polar"

    def __init__(self, access_token: str, *, server: str, server_url: str = "",
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        environment: Any = server
        self._client = Polar(access_token, environment=environment, base_url=server_url or None)
        self._sleep = sleep

    def _call(self, call: Callable[[], T]) -> T:
        return with_retries(
            call,
            provider="polar",
            transient=(PolarRateLimitError, PolarServerError, PolarNetworkError),
            failure=PolarError,
            retry_after=lambda e: getattr(e, "retry_after", None),
            sleep=self._sleep,
        )

    def subscriptions(self, customer: str) -> list[dict[str, Any]]:
        return self._subscriptions(customer_id=customer)

    def subscriptions_of_external(self, external_id: str) -> list[dict[str, Any]]:
        """Every subscription of the customer whose `external_id` is `external_id`."""
        return self._subscriptions(external_customer_id=external_id)

    def all_subscriptions(self) -> list[dict[str, Any]]:
        return self._subscriptions()

    def _subscriptions(self, **filters: Any) -> list[dict[str, Any]]:
        return self._call(
            lambda: [
                dataclasses.asdict(sub)
                for sub in self._client.subscriptions.iter_list(limit=PAGE_SIZE, **filters)
            ]
        )

    def product(self, product_id: str) -> dict[str, Any] | None:
        """The product, or None when Polar has no such product."""

        def fetch() -> dict[str, Any] | None:
            try:
                return dataclasses.asdict(self._client.products.get(product_id))
            except ResourceNotFound:
                return None

        return self._call(fetch)

    def checkout(self, body: Mapping[str, Any]) -> tuple[str, str]:
        """Create a checkout session from `body` (Polar's `CheckoutCreate`): (its id, its URL)."""

        def create() -> tuple[str, str]:
            checkout = self._client.checkouts.create(**body)
            return checkout.id, checkout.url

        return self._call(create)

    def customer_session(self, customer: str, return_url: str) -> tuple[str, str]:
        """Create a customer-portal session for `customer`: (its id, the portal URL)."""

        def create() -> tuple[str, str]:
            session = self._client.customer_sessions.create(
                customer_id=customer, return_url=return_url
            )
            return session.id, session.customer_portal_url

        return self._call(create)

    def close(self) -> None:
        self._client.__exit__()
