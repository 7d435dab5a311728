"""Provider sync: subscriptions as the provider APIs show them, into the log.

A reconciliation appends one `billhook.reconciled` event per subscription
whose API snapshot differs from the projection, and nothing when nothing
differs, so running it twice appends nothing the second time. Every change
still goes through the log (docs/architecture.md); a replay reproduces it.

A Stripe Connect subscription comes from the source with scoped ids
(`acct_1:sub_2`, as billhook keys it) and goes into the log as a Connect
webhook carries it: bare ids, and its `account` beside the snapshot, which the
decoder scopes again into the same rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billhook.config import Settings
from billhook.domain.facts import SubscriptionFact
from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.times import iso_utc
from billhook.errors import BillhookError
from billhook.projections.store import ProjectionStore
from billhook.providers.billhook import RECONCILED
from billhook.providers.clients import ApiNotConfigured, SubscriptionSource
from billhook.providers.decode import decode
from billhook.providers.polar.client import PolarSource
from billhook.providers.stripe.accounts import split


class NotLinked(BillhookError):
    """No provider customer is known for the workspace."""


@dataclass(frozen=True)
class Drift:
    """What one reconciliation found: snapshots checked and the events to append."""

    checked: int
    records: list[EventRecord]


def reconciled_record(
    provider: str,
    subscription: Mapping[str, Any],
    fetched_at: datetime,
    *,
    answers: Iterable[str] = (),
) -> EventRecord:
    """The log event stating that `provider`'s API showed `subscription` at `fetched_at`.

    `answers`: the ids of the Stripe thin events this fetch answers
    (:mod:`billhook.sync.thin`), kept so that a restart knows they are done.
    """
    livemode = subscription.get("livemode") if provider == "stripe" else None
    body: dict[str, Any] = {
        "provider": provider,
        "fetched_at": iso_utc(fetched_at),
        "livemode": livemode,
        "subscription": subscription,
    }
    if provider == "stripe":
        account, subscription = _as_connect_sends(subscription)
        body["subscription"] = subscription
        if account is not None:
            body["account"] = account
    answered = sorted(set(answers))
    if answered:
        body["answers"] = answered
    return EventRecord(
        provider="billhook",
        event_id=str(uuid.uuid4()),
        type=RECONCILED,
        livemode=int(livemode) if isinstance(livemode, bool) else None,
        occurred_at=iso_utc(fetched_at),
        payload=json.dumps(body, sort_keys=True, default=str),
    )


def _as_connect_sends(subscription: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """(account, subscription with bare ids) of a Connect subscription; (None, as is) else."""
    sub_id = subscription.get("id")
    account, bare = split(sub_id) if isinstance(sub_id, str) else (None, "")
    if account is None:
        return None, subscription
    unscoped = {**subscription, "id": bare}
    customer = subscription.get("customer")
    if isinstance(customer, str):
        unscoped["customer"] = split(customer)[1]
    return account, unscoped


def _comparable(fact: SubscriptionFact) -> tuple[object, ...]:
    """What a snapshot says, without where and when billhook learned it."""
    return (
        fact.customer,
        fact.workspace,
        fact.provider_status,
        fact.status,
        fact.product,
        fact.items,
        fact.seats,
        fact.cancel_at_period_end,
        fact.current_period_end,
        fact.livemode,
    )


def differs(record: EventRecord, store: ProjectionStore, settings: Settings) -> bool:
    """Whether the projection lacks what `record` states about its subscription."""
    event = StoredEvent(0, record.provider, record.event_id, record.type, record.livemode,
                        record.occurred_at, record.occurred_at or "", record.payload)  # fmt: skip
    fetched = next(
        f for f in decode(event, settings.workspace_key) if isinstance(f, SubscriptionFact)
    )
    current = store.subscription(fetched.provider, fetched.id)
    return current is None or _comparable(current) != _comparable(fetched)


def drift(
    snapshots: Iterable[tuple[str, Mapping[str, Any]]],
    store: ProjectionStore,
    settings: Settings,
    now: datetime,
) -> Drift:
    """The reconciled events for the (provider, subscription) snapshots that differ."""
    checked = 0
    records = []
    for provider, subscription in snapshots:
        checked += 1
        record = reconciled_record(provider, subscription, now)
        if differs(record, store, settings):
            records.append(record)
    return Drift(checked, records)


def workspace_snapshots(
    workspace: str,
    store: ProjectionStore,
    sources: Mapping[str, SubscriptionSource],
    provider: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Every subscription of the customers linked to `workspace`, from the provider APIs.

    A workspace with no customer linked at all is looked up by Polar's
    `external_customer_id` (billhook's Polar checkouts set it to the workspace),
    so a refresh on the return from a first purchase finds it before its
    webhooks arrive. (Stripe has no such exact look-up; its checkout's
    `checkout.session.completed` webhook links the customer.)

    Raises NotLinked when no customer is known or found, ApiNotConfigured when a
    linked provider has no credentials, ProviderError when an API fails.
    """
    customers = sorted(c for c in store.customers_of(workspace) if provider in (None, c[0]))
    snapshots: list[tuple[str, dict[str, Any]]] = []
    polar = sources.get("polar")
    if not customers and provider in (None, "polar") and isinstance(polar, PolarSource):
        snapshots += [("polar", sub) for sub in polar.subscriptions_of_external(workspace)]
    if not customers and not snapshots:
        raise NotLinked(f"no provider customer is known for workspace {workspace}")
    for name, customer in customers:
        source = sources.get(name)
        if source is None:
            raise ApiNotConfigured(f"{name}: no API credentials are configured")
        snapshots += [(name, sub) for sub in source.subscriptions(customer)]
    return snapshots
