"""billhook's errors: one root, a few meaningful subclasses.

Library errors (sqlite3, stripe, polar-sdk, standardwebhooks) are translated
into these where they enter, so the HTTP answers (`billhook.api.errors`) and
the CLI's one-line errors only ever map billhook's own exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping


class BillhookError(Exception):
    """Root of every error billhook raises on purpose."""


class ConfigError(BillhookError):
    """The configuration is invalid; the message names the offending key."""


# -- webhooks -------------------------------------------------------------------------------


class InvalidSignature(BillhookError):
    """A webhook's signature headers are missing, malformed, stale or wrong."""


class InvalidPayload(BillhookError):
    """A verified webhook body is not an event billhook can log."""


class PayloadTooLarge(BillhookError):
    """The body is longer than `max_body_bytes`; reading stopped at the limit."""


class ProviderNotConfigured(BillhookError):
    """A webhook arrived for a provider with no signing secret configured."""


# -- storage --------------------------------------------------------------------------------


class LogUnavailable(BillhookError):
    """The event log cannot be written right now (disk full, locked, read-only)."""


class StoreUnavailable(BillhookError):
    """The projection store cannot be read or written right now."""


# -- projections ----------------------------------------------------------------------------


class DecodeError(BillhookError):
    """A known event's payload does not have the shape its type promises.

    The projector quarantines the event with this message and moves on. The
    message names the field and what is wrong with it, never the value: it is
    shown to operators, and a payload may hold personal data (docs/decisions.md, 80).
    """


class InvalidAction(BillhookError):
    """An operator action or query is malformed; `field` names what is wrong."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


# -- answers ------------------------------------------------------------------------------


class ApiError(BillhookError):
    """An answer other than success, raised anywhere a request is handled.

    `extra` adds fields to the error body (the 402 answer of a check carries
    the whole decision).
    """

    def __init__(
        self, status: int, error: str, detail: str, extra: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = dict(extra or {})
