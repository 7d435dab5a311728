"""Stripe thin events (`v2.core.event`): fetching the objects they point at, into the log.

A thin event names an object (`related_object`: id, type, url) and carries
none of its fields. When it is a subscription, customer, checkout session or
invoice, billhook fetches the subscriptions it leads to and appends each as a
`billhook.reconciled` snapshot, exactly as a refresh does: the projection only
reads snapshots, so a replay needs the log alone, never the API.

Progress lives in the log, not beside it: every snapshot appended for thin
events names them (`answers`), and an object that leads to no subscription is
answered by a `billhook.thin_resolved` record. A restarted follower reads the
log, keeps the thin events no later event answers, and fetches only those.
Thin events about one object are coalesced: one fetch answers them all.

Without a Stripe API key nothing can be fetched: the follower appends one
`billhook.thin_unfetched` record per object, which the projection quarantines
with a reason naming the missing key, so the workspace the object belongs to
(or, when none is known, `billhook quarantine list`) shows the problem.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from billhook.domain.records import EventRecord, StoredEvent
from billhook.domain.times import iso_utc
from billhook.providers.billhook import RECONCILED, THIN_RESOLVED, THIN_UNFETCHED
from billhook.providers.clients import ProviderError
from billhook.providers.fields import readable_id
from billhook.providers.stripe.accounts import is_account_id, scoped, split
from billhook.sync.reconcile import reconciled_record

# The `object` of a Stripe thin event.
THIN_OBJECT = "v2.core.event"
# The related objects billhook follows: each leads to subscriptions.
FOLLOWED = frozenset({"subscription", "customer", "checkout.session", "invoice"})
# billhook events that answer thin events (their payload's `answers`).
ANSWERING = frozenset({RECONCILED, THIN_RESOLVED})
# billhook events that name thin events: the answers, and the reports of unfetched ones.
NAMING = ANSWERING | {THIN_UNFETCHED}
# Log events read per query while following.
READ_BATCH = 500
# Backoff between fetches of an object whose provider call failed (doubling, capped).
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0


class EventLogPort(Protocol):
    """What following thin events needs of the event log."""

    def read(self, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]: ...

    def append_batch(self, records: Sequence[EventRecord]) -> Sequence[object]: ...


class StripeObjects(Protocol):
    """The Stripe calls a thin event may need; ids are scoped (:mod:`..stripe.accounts`)."""

    def subscription(self, subscription: str) -> dict[str, Any] | None: ...

    def subscriptions(self, customer: str) -> list[dict[str, Any]]: ...

    def invoice_subscription(self, invoice: str) -> str | None: ...

    def session_subscription(self, session: str) -> str | None: ...


@dataclass(frozen=True, order=True)
class Target:
    """An object thin events point at: its `related_object.type`, and its id, scoped by the
    connected account the event came from (`context`)."""

    kind: str
    id: str


def thin_target(event: StoredEvent) -> Target | None:
    """The object a logged Stripe thin event is about, if billhook follows it; else None.

    Never raises: a thin event of another kind, or one whose reference is
    unreadable, is simply not followed.
    """
    if event.provider != "stripe" or THIN_OBJECT not in event.payload:
        return None
    try:
        payload = orjson.loads(event.payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("object") != THIN_OBJECT:
        return None
    related = payload.get("related_object")
    if not isinstance(related, dict) or related.get("type") not in FOLLOWED:
        return None
    object_id = readable_id(related.get("id"))
    if object_id is None or ":" in object_id:
        return None
    # Thin events name a connected account in `context`; snapshot events in `account`.
    account = payload.get("context") or payload.get("account")
    if not (isinstance(account, str) and is_account_id(account)):
        account = None
    return Target(str(related["type"]), scoped(account, object_id))


def answered(event: StoredEvent) -> tuple[str, ...]:
    """The thin event ids a billhook event answers (none for any other event)."""
    if event.provider != "billhook" or event.type not in NAMING:
        return ()
    try:
        payload = orjson.loads(event.payload)
    except orjson.JSONDecodeError:
        return ()
    ids = payload.get("answers") if isinstance(payload, dict) else None
    return tuple(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else ()


@dataclass
class Ledger:
    """Which thin events still wait for a fetch, as of log position `position`.

    `pending`: per object, the ids of its unanswered thin events, oldest first.
    `reported`: those already named by a `billhook.thin_unfetched` record.
    """

    position: int = 0
    pending: dict[Target, list[str]] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    def observe(self, events: Iterable[StoredEvent]) -> None:
        """Take in log events read in seq order past `position`."""
        for event in events:
            self.position = max(self.position, event.seq)
            if event.provider == "billhook":
                ids = answered(event)
                if event.type == THIN_UNFETCHED:
                    self.reported.update(ids)
                else:
                    self.settle(ids)
                continue
            target = thin_target(event)
            if target is not None:
                self.pending.setdefault(target, []).append(event.event_id)

    def settle(self, ids: Iterable[str]) -> None:
        """Forget the thin events `ids`: they are answered."""
        done = set(ids)
        if not done:
            return
        for target in list(self.pending):
            left = [i for i in self.pending[target] if i not in done]
            if left:
                self.pending[target] = left
            else:
                del self.pending[target]
        self.reported -= done


def subscriptions_of(target: Target, source: StripeObjects) -> list[dict[str, Any]]:
    """The subscriptions `target` leads to, as Stripe's API shows them now.

    Raises :class:`~billhook.providers.clients.ProviderError` when a call fails.
    """
    if target.kind == "customer":
        return source.subscriptions(target.id)
    if target.kind == "subscription":
        sub_id: str | None = target.id
    elif target.kind == "invoice":
        sub_id = source.invoice_subscription(target.id)
    else:
        sub_id = source.session_subscription(target.id)
    found = source.subscription(sub_id) if sub_id is not None else None
    return [found] if found is not None else []


def _marker(kind: str, target: Target, answers: Sequence[str], at: datetime) -> EventRecord:
    account, object_id = split(target.id)
    body: dict[str, Any] = {
        "provider": "stripe",
        "object": {"type": target.kind, "id": object_id},
        "answers": sorted(answers),
        "at": iso_utc(at),
    }
    if account is not None:
        body["account"] = account
    return EventRecord(
        provider="billhook",
        event_id=str(uuid.uuid4()),
        type=kind,
        livemode=None,
        occurred_at=iso_utc(at),
        payload=json.dumps(body, sort_keys=True),
    )


def fetched_records(
    target: Target, source: StripeObjects, answers: Sequence[str], fetched_at: datetime
) -> list[EventRecord]:
    """The events answering `answers` about `target`: a reconciled snapshot per subscription
    it leads to, else one `billhook.thin_resolved` record. Raises ProviderError."""
    subs = subscriptions_of(target, source)
    if not subs:
        return [_marker(THIN_RESOLVED, target, answers, fetched_at)]
    return [reconciled_record("stripe", sub, fetched_at, answers=answers) for sub in subs]


def unfetched_record(target: Target, answers: Sequence[str], at: datetime) -> EventRecord:
    """The record saying the thin events `answers` about `target` cannot be fetched."""
    return _marker(THIN_UNFETCHED, target, answers, at)


@dataclass(frozen=True)
class Failed:
    """An object whose fetch failed: how many thin events wait, and the (safe) error."""

    target: Target
    waiting: int
    error: str


@dataclass
class Step:
    """What one :meth:`ThinSync.step` did."""

    fetched: int = 0
    appended: int = 0
    unfetched: int = 0
    failed: list[Failed] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ThinSync:
    """Follows the log for thin events and answers them; one :meth:`step` at a time.

    Not thread-safe: one follower owns it. `source` is None when no Stripe API
    key is configured. A failed fetch leaves its thin events pending and is
    tried again after a backoff (`FIRST_RETRY_S`, doubling to `MAX_RETRY_S`),
    while other objects go on; nothing here ever blocks the receiver.
    """

    def __init__(
        self,
        log: EventLogPort,
        source: StripeObjects | None,
        *,
        now: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._source = source
        self._now = now
        self._monotonic = monotonic
        self.ledger = Ledger()
        # Per object whose fetch failed: (when to try again, the next delay).
        self._retry: dict[Target, tuple[float, float]] = {}

    def catch_up(self) -> None:
        """Read the log past the ledger's position, up to its head."""
        while True:
            events = self._log.read(after=self.ledger.position, limit=READ_BATCH)
            self.ledger.observe(events)
            if len(events) < READ_BATCH:
                return

    def step(self) -> Step:
        """Catch up with the log, then answer every pending object that is due."""
        self.catch_up()
        done = Step()
        for target, ids in sorted(self.ledger.pending.items()):
            if self._source is None:
                new = [i for i in ids if i not in self.ledger.reported]
                if new:
                    self._log.append_batch([unfetched_record(target, new, self._now())])
                    self.ledger.reported.update(new)
                    done.unfetched += 1
                continue
            retry = self._retry.get(target)
            if retry is not None and self._monotonic() < retry[0]:
                continue
            answers = list(ids)
            try:
                records = fetched_records(target, self._source, answers, self._now())
            except ProviderError as e:
                delay = retry[1] if retry is not None else FIRST_RETRY_S
                self._retry[target] = (self._monotonic() + delay, min(delay * 2, MAX_RETRY_S))
                done.failed.append(Failed(target, len(answers), str(e)))
                continue
            self._retry.pop(target, None)
            self._log.append_batch(records)
            self.ledger.settle(answers)
            done.fetched += 1
            done.appended += len(records)
        return done

    @property
    def waiting(self) -> Mapping[Target, Sequence[str]]:
        """The thin events still unanswered, per object."""
        return self.ledger.pending
