"""Errors raised by the projections package."""

from __future__ import annotations


class ProjectionError(Exception):
    """Root of every error the projections package raises on purpose."""


class DecodeError(ProjectionError):
    """A known event's payload does not have the shape its type promises.

    The projector quarantines the event with this message and moves on.
    """


class StoreUnavailable(ProjectionError):
    """projections.db cannot be read or written right now."""
