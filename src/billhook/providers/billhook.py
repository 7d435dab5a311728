"""billhook's own events: operator actions, reconciled snapshots, sessions started. Pure.

They are logged with provider "billhook". Written by billhook's own API, CLI
and sync, which validated them; checked here for types only (no length
bounds), so that a replay never quarantines an action the API accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billhook.config import ENFORCEMENT_MODES
from billhook.domain.facts import (
    OVERRIDE_KINDS,
    EndpointFact,
    EnforcementFact,
    Fact,
    OverrideFact,
)
from billhook.domain.records import EventSubject, StoredEvent
from billhook.errors import DecodeError
from billhook.providers.fields import (
    free_text,
    iso_us,
    json_object,
    moment,
    readable_id,
    required_id,
)
from billhook.providers.polar.decode import polar_snapshot, polar_subscription_subject
from billhook.providers.stripe.accounts import is_account_id, scoped
from billhook.providers.stripe.decode import (
    event_account,
    readable_account,
    stripe_snapshot,
    stripe_subscription_subject,
)

# billhook's own operator events.
OVERRIDE_SET = "billhook.override_set"
OVERRIDE_REVOKED = "billhook.override_revoked"
ENFORCEMENT_SET = "billhook.enforcement_set"
# Outbound endpoints an operator added or removed (SPEC §6b); their secrets are never logged.
ENDPOINT_ADDED = "billhook.endpoint_added"
ENDPOINT_REMOVED = "billhook.endpoint_removed"
# A subscription snapshot fetched from a provider's API (docs/operations.md).
RECONCILED = "billhook.reconciled"
# A reconciled snapshot ranks like an update at the same instant.
RECONCILED_RANK = 1
# Sessions started through billhook's API: the history of who started what.
# Logged, never projected (they state no fact about a subscription).
CHECKOUT_STARTED = "billhook.checkout_started"
PORTAL_OPENED = "billhook.portal_opened"
# Stripe thin events followed by billhook.sync.thin: an object that led to no subscription
# (logged, never projected), and one that could not be fetched for want of an API key.
THIN_RESOLVED = "billhook.thin_resolved"
THIN_UNFETCHED = "billhook.thin_unfetched"
# Why a `billhook.thin_unfetched` record is quarantined: the problem its workspace shows.
THIN_UNFETCHED_REASON = (
    "a Stripe thin event could not be fetched: no Stripe API key is configured"
    " (set [stripe] api_key or STRIPE_API_KEY)"
)


def reconciled_facts(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    """A subscription as a provider's API showed it, ordered by when it was fetched."""
    fetched_us = iso_us(payload.get("fetched_at"), "reconciled fetched_at")
    sub = json_object(payload.get("subscription"), "reconciled subscription")
    provider = payload.get("provider")
    if provider == "stripe":
        livemode = payload.get("livemode")
        mode = int(livemode) if isinstance(livemode, bool) else None
        # A connected account's subscription names its account as a webhook event does.
        account = event_account(payload)
        return stripe_snapshot(sub, fetched_us, RECONCILED_RANK, event, mode, key, account=account)
    if provider == "polar":
        return polar_snapshot(sub, fetched_us, event, key)
    raise DecodeError("reconciled provider is unknown")


def override_facts(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    kind = payload.get("kind")
    if not isinstance(kind, str) or kind not in OVERRIDE_KINDS:
        raise DecodeError("override kind is unknown")
    workspace = required_id(payload.get("workspace_id"), "override workspace_id", limit=None)
    active = event.type == OVERRIDE_SET
    tier = expires_at = None
    if active:
        tier = required_id(payload.get("tier"), "override tier", limit=None)
        expires_at = payload.get("expires_at")
        if expires_at is not None:
            moment(expires_at, "override expires_at")  # the resolver reads it back
    return [
        OverrideFact(
            workspace=workspace,
            kind=kind,
            tier=tier,
            expires_at=expires_at,
            active=active,
            reason=free_text(payload.get("reason"), "override reason"),
            actor=free_text(payload.get("actor"), "override actor"),
            seq=event.seq,
        )
    ]


def enforcement_facts(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    mode = payload.get("mode")
    if not isinstance(mode, str) or mode not in ENFORCEMENT_MODES:
        raise DecodeError("enforcement mode is unknown")
    approved_by = free_text(payload.get("approved_by"), "enforcement approved_by")
    reason = free_text(payload.get("reason"), "enforcement reason")
    return [EnforcementFact(mode, approved_by, reason, event.seq)]


def endpoint_facts(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    """An endpoint added (or added again, replacing what it was) or removed.

    Types only, and only of what the fact keeps (its actor and reason stay in the
    log): the admin API checked the id's shape and the URL's scheme. An absent
    `workspaces` reads as none named, every workspace, as in the config.
    """
    endpoint_id = required_id(payload.get("endpoint_id"), "endpoint endpoint_id", limit=None)
    if event.type == ENDPOINT_REMOVED:
        return [EndpointFact(endpoint_id, "", (), active=False, seq=event.seq)]
    url = required_id(payload.get("url"), "endpoint url", limit=None)
    named = payload.get("workspaces")
    if named is None:
        named = []
    if not isinstance(named, list):
        raise DecodeError("endpoint workspaces is not an array")
    workspaces = tuple(
        required_id(workspace, f"endpoint workspaces[{n}]", limit=None)
        for n, workspace in enumerate(named)
    )
    return [EndpointFact(endpoint_id, url, workspaces, active=True, seq=event.seq)]


def thin_unfetched_facts(event: StoredEvent, payload: Mapping[str, Any], key: str) -> list[Fact]:
    """Never applied: a thin event billhook could not fetch is a problem until a key is set."""
    raise DecodeError(THIN_UNFETCHED_REASON)


def _thin_subject(payload: Mapping[str, Any]) -> EventSubject:
    """The subscription or customer a `billhook.thin_unfetched` record names, if readable."""
    related = payload.get("object")
    if not isinstance(related, dict):
        return EventSubject()
    object_id = readable_id(related.get("id"))
    account = readable_id(payload.get("account"))
    if object_id is None:
        return EventSubject()
    scoped_id = scoped(account if account and is_account_id(account) else None, object_id)
    if related.get("type") == "subscription":
        return EventSubject(provider="stripe", subscription=scoped_id)
    if related.get("type") == "customer":
        return EventSubject(provider="stripe", customer=scoped_id)
    return EventSubject()


def billhook_subject(event: StoredEvent, payload: Mapping[str, Any], key: str) -> EventSubject:
    """Whom one of billhook's own events is about, each field read only if well-formed."""
    if event.type == THIN_UNFETCHED:
        return _thin_subject(payload)
    if event.type == RECONCILED:
        sub = payload.get("subscription")
        if not isinstance(sub, dict):
            return EventSubject()
        provider = payload.get("provider")
        if provider == "stripe":
            readable, account = readable_account(payload.get("account"))
            return stripe_subscription_subject(sub, key, account, ids=readable)
        if provider == "polar":
            return polar_subscription_subject(sub, key)
        return EventSubject()
    if event.type in (OVERRIDE_SET, OVERRIDE_REVOKED):
        return EventSubject(workspace=readable_id(payload.get("workspace_id"), limit=None))
    # The enforcement mode and the outbound endpoints are about every workspace, not one.
    return EventSubject()
