"""Field checks the decoders share. Pure: no clock, I/O or config.

Every value that becomes part of a fact is checked (ids are bounded non-empty
strings, counts and times integers in range, flags booleans), so whatever the
projection stores can be stored.

Each check takes the value and the field's name as a reason shows it
("subscription id", "subscription items.data[0].quantity") and raises
DecodeError("<field> is <problem>"). A reason names the field and what is
wrong with it, never the value: quarantine reasons are shown to operators and
must not carry payload data (docs/entitlements.md, privacy).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billhook.domain.times import from_us, iso_seconds, to_us
from billhook.errors import DecodeError

# Longest provider id accepted (subscription, customer, price, product): real ones are well
# under 100 characters; the log's event ids have the same bound.
MAX_ID_CHARS = 255
# Longest workspace id accepted from a provider: Stripe and Polar cap metadata values at 500.
MAX_WORKSPACE_CHARS = 500
# Counts (seats, quantities) must fit SQLite's signed 64-bit INTEGER.
_COUNT_LIMIT = 2**63

# Unix seconds a provider time may take: what `datetime` can hold, a day inside either end
# so that no time zone takes it out of the calendar.
_FIRST_S = int(datetime(1, 1, 2, tzinfo=UTC).timestamp())
_LAST_S = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp())


def present(value: object) -> bool:
    """Whether an optional field holds something: JSON null and "" mean it is absent."""
    return value is not None and value != ""


def json_object(value: object, field: str) -> Mapping[str, Any]:
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, dict):
        raise DecodeError(f"{field} is not an object")
    return value


def required_id(value: object, field: str, limit: int | None = MAX_ID_CHARS) -> str:
    """A required id: a non-empty string of at most `limit` characters (None: any length)."""
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not a string")
    if not value:
        raise DecodeError(f"{field} is empty")
    if limit is not None and len(value) > limit:
        raise DecodeError(f"{field} is too long")
    return value


def optional_id(value: object, field: str) -> str | None:
    """An id that may be null; "" is malformed, as for a required id."""
    return None if value is None else required_id(value, field)


def optional_workspace(value: object, field: str) -> str | None:
    """A workspace id a merchant put in an optional field; "" means none."""
    return required_id(value, field, MAX_WORKSPACE_CHARS) if present(value) else None


def metadata_workspace(obj: Mapping[str, Any], key: str, owner: str) -> str | None:
    """The workspace `obj`'s metadata names under `key`, if any.

    Only a string names a workspace: Polar also allows numbers and booleans as
    metadata values, and those were never workspace ids.
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(key)
    if not isinstance(value, str):
        return None
    return optional_workspace(value, f"{owner} metadata.{key}")


def readable_id(value: object, limit: int | None = MAX_ID_CHARS) -> str | None:
    """`value` if it would pass as an id (:func:`required_id`), else None, never an error.

    For naming whom an event that could not be applied is about: any of its
    fields may be the malformed one, so each is taken only if it is well-formed.
    """
    if not isinstance(value, str) or not value:
        return None
    return value if limit is None or len(value) <= limit else None


def readable_metadata_workspace(obj: object, key: str) -> str | None:
    """The workspace `obj`'s metadata names under `key`, if readable (see :func:`readable_id`)."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        return None
    return readable_id(metadata.get(key), MAX_WORKSPACE_CHARS)


def free_text(value: object, field: str) -> str:
    """Free text an operator wrote (a reason, a name); absent means empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not a string")
    return value


def flag(value: object, field: str) -> bool:
    """A boolean; absent means false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise DecodeError(f"{field} is not a boolean")
    return value


def integer(value: object, field: str) -> int:
    if value is None:
        raise DecodeError(f"{field} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{field} is not an integer")
    return value


def count(value: object, field: str) -> int | None:
    """A quantity or seat count: absent, or a whole number SQLite can store."""
    if value is None:
        return None
    number = integer(value, field)
    if not 0 <= number < _COUNT_LIMIT:
        raise DecodeError(f"{field} is out of range")
    return number


def epoch_s(value: object, field: str) -> int:
    """Unix seconds, within the calendar."""
    seconds = integer(value, field)
    if not _FIRST_S <= seconds <= _LAST_S:
        raise DecodeError(f"{field} is outside the calendar")
    return seconds


def epoch_us(value: object, field: str) -> int:
    return epoch_s(value, field) * 1_000_000


def optional_epoch_iso(value: object, field: str) -> str | None:
    if value is None:
        return None
    # The UTC moment `fromtimestamp(tz=UTC)` gives, without its time-zone conversion (a
    # replay reads one or two of these per subscription event).
    return iso_seconds(from_us(epoch_s(value, field) * 1_000_000))


def moment(value: object, field: str) -> datetime:
    """An ISO 8601 time (naive means UTC) that stays in the calendar once in UTC."""
    if value is None:
        raise DecodeError(f"{field} is missing")
    if not isinstance(value, str):
        raise DecodeError(f"{field} is not an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DecodeError(f"{field} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    elif not 1 < parsed.year < 9999:  # no offset takes a time of years 2 to 9998 out of it
        try:
            parsed.astimezone(UTC)  # year 1 at +01:00 is before year 1 in UTC
        except OverflowError:
            raise DecodeError(f"{field} is outside the calendar") from None
    return parsed


def iso_us(value: object, field: str) -> int:
    return to_us(moment(value, field))


def optional_iso(value: object, field: str) -> str | None:
    return iso_seconds(moment(value, field)) if present(value) else None


def first_time_us(*candidates: tuple[object, str]) -> int:
    """The first present one of (value, field) times, in microseconds."""
    for value, field in candidates:
        if present(value):
            return iso_us(value, field)
    raise DecodeError(f"{candidates[-1][1]} is missing")
