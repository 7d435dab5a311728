"""The provider APIs billhook reads: Stripe (the `stripe` package) and Polar (`polar-sdk`).

Each source is a small port with the calls provider sync needs. Rate limits
and transient failures are retried with bounded exponential backoff; what
still fails raises :class:`ProviderError` with a short message that names the
provider and the kind of failure, never a key, a token or a response body.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import stripe
from polar.base import PolarError, PolarNetworkError, PolarRateLimitError, PolarServerError
from polar.v2026_04 import Polar
from polar.v2026_04.errors import ResourceNotFound

from billhook.config import Settings
from billhook.errors import BillhookError

T = TypeVar("T")

# Attempts for one call, and the backoff between them (doubling, capped).
ATTEMPTS = 4
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0
# Seconds one Stripe request may take (Polar's SDK defaults to 5).
STRIPE_TIMEOUT_S = 10
# Page size asked of both APIs (their maximum).
PAGE_SIZE = 100


class ProviderError(BillhookError):
    """A provider API call failed for good; the message is safe to show."""


class ApiNotConfigured(ProviderError):
    """No API key or token is configured for the provider a call needs."""


class SubscriptionSource(Protocol):
    provider: str

    def subscriptions(self, customer: str) -> list[dict[str, Any]]:
        """Every subscription of `customer`, whatever its status, as plain JSON data."""
        ...


def with_retries(
    call: Callable[[], T],
    *,
    provider: str,
    transient: tuple[type[Exception], ...],
    retry_after: Callable[[Exception], float | None],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`, retrying transient failures; translate the final failure."""
    delay = FIRST_DELAY_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except transient as e:
            if attempt == ATTEMPTS:
                raise ProviderError(
                    f"{provider}: {_describe(e)} after {ATTEMPTS} attempts"
                ) from None
            sleep(min(retry_after(e) or delay, MAX_DELAY_S))
            delay = min(delay * 2, MAX_DELAY_S)
        except (stripe.StripeError, PolarError) as e:
            raise ProviderError(f"{provider}: {_describe(e)}") from None
    raise AssertionError("unreachable")


def _describe(error: Exception) -> str:
    status = getattr(error, "http_status", None) or getattr(error, "status_code", None)
    return f"{type(error).__name__} (HTTP {status})" if status else type(error).__name__


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


def sources(settings: Settings) -> dict[str, StripeSource | PolarSource]:
    """The provider sources the configuration has credentials for."""
    found: dict[str, StripeSource | PolarSource] = {}
    if settings.stripe.api_key:
        found["stripe"] = StripeSource(settings.stripe.api_key.reveal(), settings.stripe.api_base)
    if settings.polar.access_token:
        found["polar"] = PolarSource(
            settings.polar.access_token.reveal(),
            server=settings.polar.server,
            server_url=settings.polar.server_url,
        )
    return found
