"""Errors raised by the ingest package.

One root, a few meaningful subclasses. Library errors (sqlite3, stripe,
standardwebhooks) are translated into these where they enter, so the HTTP and
CLI edges only ever map billhook's own exceptions to answers.
"""

from __future__ import annotations


class IngestError(Exception):
    """Root of every error the ingest package raises on purpose."""


class ConfigError(IngestError):
    """The configuration is invalid; the message names the offending key."""


class InvalidSignature(IngestError):
    """A webhook's signature headers are missing, malformed, stale or wrong."""


class InvalidPayload(IngestError):
    """A verified webhook body is not an event billhook can log."""


class LogUnavailable(IngestError):
    """The event log cannot be written right now (disk full, locked, read-only)."""


class PayloadTooLarge(IngestError):
    """The body is longer than `max_body_bytes`; reading stopped at the limit."""


class ProviderNotConfigured(IngestError):
    """A webhook arrived for a provider with no signing secret configured."""
