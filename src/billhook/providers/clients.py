"""The provider APIs billhook reads: the port, its errors, retries, and the configured sources.

The sources themselves live with their provider: :class:`StripeSource` in
`stripe/client.py` (the `stripe` package), :class:`PolarSource` in
`polar/client.py` (`polar-sdk`). Each is a small port with the calls provider
sync needs. Rate limits and transient failures are retried with bounded
exponential backoff; what still fails raises :class:`ProviderError` with a
short message that names the provider and the kind of failure, never a key, a
token or a response body.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from billhook.config import Settings
from billhook.errors import BillhookError

if TYPE_CHECKING:
    from billhook.providers.polar.client import PolarSource
    from billhook.providers.stripe.client import StripeSource

T = TypeVar("T")

# Attempts for one call, and the backoff between them (doubling, capped).
ATTEMPTS = 4
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0
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
    failure: type[Exception],
    retry_after: Callable[[Exception], float | None],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`, retrying `transient` failures; translate the final failure.

    `failure` is the root of the provider SDK's errors: one that is not
    transient raises :class:`ProviderError` at once.
    """
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
        except failure as e:
            raise ProviderError(f"{provider}: {_describe(e)}") from None
    raise AssertionError("unreachable")


def _describe(error: Exception) -> str:
    status = getattr(error, "http_status", None) or getattr(error, "status_code", None)
    return f"{type(error).__name__} (HTTP {status})" if status else type(error).__name__


def sources(settings: Settings) -> dict[str, StripeSource | PolarSource]:
    """The provider sources the configuration has credentials for."""
    # Imported here: each source imports this module (ProviderError, with_retries).
    from billhook.providers.polar.client import PolarSource
    from billhook.providers.stripe.client import StripeSource

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
