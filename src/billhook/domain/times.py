"""Reading the log's ISO 8601 times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """Whole microseconds since the epoch, exactly (no float rounding); naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The UTC moment `us` microseconds after the epoch (exact: no float in between)."""
    return _EPOCH + timedelta(microseconds=us)


def iso_to_us(value: str) -> int:
    """Microseconds since the epoch of an ISO 8601 time (naive means UTC)."""
    return to_us(datetime.fromisoformat(value))


def iso_utc(moment: datetime) -> str:
    """UTC ISO 8601 with millisecond precision and a `Z`, the log's one time format."""
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


def iso_seconds(moment: datetime) -> str:
    """UTC ISO 8601 to the second with a `Z`; naive means UTC.

    The year is always four digits: `strftime("%Y")` writes year 147 as `147`,
    which `fromisoformat` then refuses.
    """
    m = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as an aware datetime (naive means UTC)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
