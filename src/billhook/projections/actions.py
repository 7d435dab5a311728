"""Operator actions as log events, shared by the admin API and the CLI.

Every change an operator makes is an event in the log (docs/architecture.md), so a replay
reproduces it. These functions validate the action and build the event; the
caller appends it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from billhook.config import ENDPOINT_ID, ENFORCEMENT_MODES, Settings
from billhook.domain.facts import OVERRIDE_KINDS, OverrideFact
from billhook.domain.records import EventRecord
from billhook.domain.times import iso_seconds, iso_to_us, iso_utc, to_us
from billhook.errors import InvalidAction
from billhook.projections.store import ProjectionStore
from billhook.providers.billhook import (
    ENDPOINT_ADDED,
    ENDPOINT_REMOVED,
    ENFORCEMENT_SET,
    OVERRIDE_REVOKED,
    OVERRIDE_SET,
)


def _event(event_type: str, body: Mapping[str, Any], now: datetime) -> EventRecord:
    return EventRecord(
        provider="billhook",
        event_id=str(uuid.uuid4()),
        type=event_type,
        livemode=None,
        occurred_at=iso_utc(now),
        payload=json.dumps(body, sort_keys=True),
    )


def _required(field: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise InvalidAction(field, f"missing field: {field}")
    return value


def _one_of(field: str, value: str | None, choices: tuple[str, ...]) -> str:
    if _required(field, value) not in choices:
        raise InvalidAction(field, f"field {field} must be one of {', '.join(choices)}")
    return str(value)


def normalize_time(field: str, value: str | None) -> str | None:
    """An ISO 8601 time with a timezone, as UTC `…Z`; None stays None."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidAction(field, f"field {field} must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidAction(
            field, f"field {field} must carry a timezone, e.g. 2027-01-01T00:00:00Z"
        )
    try:
        return iso_seconds(moment)
    except OverflowError:  # year 1 at +01:00, year 9999 at -10:00: not a time in UTC
        raise InvalidAction(field, f"field {field} is out of range") from None


def override_set(
    settings: Settings,
    *,
    workspace_id: str | None,
    kind: str | None,
    tier: str | None,
    expires_at: str | None,
    reason: str | None,
    actor: str | None,
    now: datetime,
) -> EventRecord:
    body = {
        "workspace_id": _required("workspace_id", workspace_id),
        "kind": _one_of("kind", kind, OVERRIDE_KINDS),
        "tier": _one_of("tier", tier, tuple(settings.tiers)),
        "expires_at": _future("expires_at", normalize_time("expires_at", expires_at), now),
        "reason": _required("reason", reason),
        "actor": _required("actor", actor),
    }
    return _event(OVERRIDE_SET, body, now)


def _future(field: str, value: str | None, now: datetime) -> str | None:
    """`value` (as normalize_time returns it), refused unless after `now`: an override
    that expired before it was set would be logged, and granted nothing."""
    if value is not None and iso_to_us(value) <= to_us(now):
        raise InvalidAction(field, f"field {field} must be in the future")
    return value


def active_override(
    store: ProjectionStore, workspace: str, kind: str, now: datetime
) -> OverrideFact | None:
    """The override of this kind in force at `now`, if any."""
    current = store.override(workspace, kind)
    if current is None or not current.active:
        return None
    if current.expires_at is not None and current.expires_at <= iso_utc(now):
        return None
    return current


def override_revoke(
    store: ProjectionStore,
    *,
    workspace_id: str,
    kind: str,
    reason: str | None,
    actor: str | None,
    now: datetime,
) -> EventRecord:
    """The revoke event; raises NothingToRevoke when no such override is active."""
    body = {
        "workspace_id": workspace_id,
        "kind": kind,
        "reason": _required("reason", reason),
        "actor": _required("actor", actor),
    }
    if active_override(store, workspace_id, kind, now) is None:
        raise NothingToRevoke(f"no active {kind} override for workspace {workspace_id}")
    return _event(OVERRIDE_REVOKED, body, now)


def enforcement_set(
    *, mode: str | None, approved_by: str | None, reason: str | None, now: datetime
) -> EventRecord:
    body = {
        "mode": _one_of("mode", mode, ENFORCEMENT_MODES),
        "approved_by": _required("approved_by", approved_by),
        "reason": _required("reason", reason),
    }
    return _event(ENFORCEMENT_SET, body, now)


class NothingToRevoke(InvalidAction):
    def __init__(self, detail: str) -> None:
        super().__init__("kind", detail)


# Longest endpoint URL an operator may add (the API's limit on any URL it takes).
MAX_ENDPOINT_URL_CHARS = 2048
# Most workspaces one endpoint may be limited to; more is a config, not an endpoint.
MAX_ENDPOINT_WORKSPACES = 1000


def endpoint_added(
    *,
    endpoint_id: str,
    url: str | None,
    workspaces: Sequence[str] | None,
    actor: str | None,
    reason: str | None,
    now: datetime,
) -> EventRecord:
    """The event adding an outbound endpoint (SPEC §6b). Its secret is never in it: the
    caller keeps that in the outbox store. `workspaces` None or empty: every workspace."""
    named = list(workspaces or ())
    if len(named) > MAX_ENDPOINT_WORKSPACES:
        raise InvalidAction(
            "workspaces", f"field workspaces must hold at most {MAX_ENDPOINT_WORKSPACES} ids"
        )
    for workspace in named:
        if not workspace.strip():
            raise InvalidAction("workspaces", "field workspaces must hold non-blank ids")
    body = {
        "endpoint_id": _endpoint_id(endpoint_id),
        "url": _endpoint_url(url),
        "workspaces": named,
        "actor": _required("actor", actor),
        "reason": _required("reason", reason),
    }
    return _event(ENDPOINT_ADDED, body, now)


def endpoint_removed(
    *, endpoint_id: str, actor: str | None, reason: str | None, now: datetime
) -> EventRecord:
    """The event removing an endpoint the API added; the caller checked that it stands."""
    body = {
        "endpoint_id": _endpoint_id(endpoint_id),
        "actor": _required("actor", actor),
        "reason": _required("reason", reason),
    }
    return _event(ENDPOINT_REMOVED, body, now)


def _endpoint_id(value: str) -> str:
    if not ENDPOINT_ID.fullmatch(value):
        raise InvalidAction("endpoint_id", "an endpoint id is letters, digits, _ and -, at most 64")
    return value


def _endpoint_url(value: str | None) -> str:
    """An absolute http(s) URL with a host: where the dispatcher will POST."""
    url = _required("url", value)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        parts, host = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not host
        or len(url) > MAX_ENDPOINT_URL_CHARS
        or any(c.isspace() for c in url)
    ):
        raise InvalidAction(
            "url",
            f"field url must be an absolute http or https URL of at most "
            f"{MAX_ENDPOINT_URL_CHARS} characters",
        )
    return url
