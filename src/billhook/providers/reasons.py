"""What would make a quarantined event readable: one hint per family of reasons. Pure.

A quarantine reason names a field and its problem (docs/decisions.md, 80);
its family says what an operator can do about it. Hints are fixed sentences:
they name no value, id or payload field beyond what the reason already names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """Reasons matching `pattern`, and what would make such an event readable."""

    name: str
    pattern: re.Pattern[str]
    hint: str


# Checked in order: the first family whose pattern matches a reason is its family.
FAMILIES = (
    Family(
        "missing field",
        re.compile(r" is missing$"),
        "the payload lacks a field billhook needs: an API version older than billhook reads"
        " (docs/api.md) or a hand-made event; `billhook reconcile` fetches the object as the"
        " provider holds it now",
    ),
    Family(
        "wrong type",
        re.compile(r" is not (a string|an integer|a boolean|an object|an array|an ISO 8601 time)$"),
        "a field has another type than the provider documents: was the event sent by the"
        " provider? `billhook reconcile` fetches the object as the provider holds it now",
    ),
    Family(
        "value out of bounds",
        re.compile(r" is (empty|too long|out of range|outside the calendar)$"),
        "a value is outside what billhook stores; `billhook reconcile` fetches the object"
        " as the provider holds it now",
    ),
    Family(
        "unknown value",
        re.compile(r" is unknown$| is not a connected account id$"),
        "a value billhook does not know, perhaps from a newer API version: upgrade billhook,"
        " then `billhook replay` reads the event again",
    ),
    Family(
        "not JSON",
        re.compile(r"^payload is not (valid JSON|a JSON object)$"),
        "the logged body is not a JSON object; it cannot become readable, and the"
        " next event from the provider about the object supersedes it",
    ),
    Family(
        "no API key",
        re.compile(r"no Stripe API key is configured"),
        "set [stripe] api_key (or STRIPE_API_KEY), then `billhook replay`",
    ),
    Family(
        "billhook fault",
        re.compile(r"a shape billhook does not read$|^could not be applied"),
        "billhook could not apply an event it should read: report it with its seq,"
        " and `billhook replay` once billhook is upgraded",
    ),
)
# The hint of a reason no family matches.
DEFAULT = Family(
    "other",
    re.compile(""),
    "`billhook replay` reads the event again once the cause is fixed",
)


def family(reason: str) -> Family:
    """The family of a quarantine reason."""
    return next((f for f in FAMILIES if f.pattern.search(reason)), DEFAULT)
