"""Errors raised by the projections package."""

from __future__ import annotations


class ProjectionError(Exception):
    """Root of every error the projections package raises on purpose."""


class DecodeError(ProjectionError):
    """A known event's payload does not have the shape its type promises.

    The projector quarantines the event with this message and moves on. The
    message names the field and what is wrong with it, never the value: it is
    shown to operators, and a payload may hold personal data (SPEC §10).
    """


class StoreUnavailable(ProjectionError):
    """projections.db cannot be read or written right now."""


class InvalidAction(ProjectionError):
    """An operator action or query is malformed; `field` names what is wrong."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail
