"""The entitlement-change feed: what a change holds, its cursor, and when one is due.

The projection writes a change whenever a workspace's resolved entitlement
differs from the last change written for it: after an event (`cause` names
it), or when a time rule of the resolver fires (an override expiring, a grace
period ending, a canceling subscription's end: `cause` is `{"kind": "time"}`),
and one without a workspace when the enforcement mode changes. Both are
decided from projection facts and time alone, so a replay writes the same
changes under the same cursors.

A change's cursor is `(seq, k)`: the log position it is as of, and its rank
among the changes written at that position. Changes of an event are written at
its seq; a time rule that fires at instant T is written at the last seq applied
before T (before the first event received after T), whether the live projector
meets T while applying that event or, idle, on its clock. Cursors therefore
grow in the order changes are committed, and a follower at a cursor has seen
everything below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from billhook.domain.records import StoredEvent
from billhook.domain.resolver import Entitlement

# A cursor as the API spells it: `<seq>-<rank>`; `0-0` is before every change.
_CURSOR = re.compile(r"(0|[1-9][0-9]{0,17})-(0|[1-9][0-9]{0,8})")
START = (0, 0)
TIME_CAUSE = orjson.dumps({"kind": "time"}).decode()


@dataclass(frozen=True)
class ChangeRow:
    """One stored change: its cursor, whom it is about (None: the enforcement mode), when
    and why, and the state (JSON text: the entitlement fields, or `{"enforcement"}`)."""

    seq: int
    k: int
    workspace: str | None
    at: str
    cause: str
    state: str

    @property
    def cursor(self) -> str:
        return format_cursor((self.seq, self.k))


def format_cursor(cursor: tuple[int, int]) -> str:
    return f"{cursor[0]}-{cursor[1]}"


def parse_cursor(raw: str) -> tuple[int, int] | None:
    """`(seq, k)` of a cursor this feed gave out; None when `raw` is not one."""
    match = _CURSOR.fullmatch(raw)
    return (int(match[1]), int(match[2])) if match else None


def entitlement_state(entitlement: Entitlement) -> str:
    """The fields a change carries, as canonical JSON: two states are equal as strings."""
    seats = None if entitlement.seats is None else {"purchased": entitlement.seats}
    state: dict[str, Any] = {
        "tier": entitlement.tier,
        "source": entitlement.source,
        "status": entitlement.status,
        "attention": entitlement.attention,
        "next_action": entitlement.next_action,
        "features": {"included": list(entitlement.included)},
        "seats": seats,
    }
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()


def enforcement_state(mode: str) -> str:
    return orjson.dumps({"enforcement": mode}).decode()


def event_cause(event: StoredEvent) -> str:
    cause = {
        "kind": "event",
        "provider": event.provider,
        "type": event.type,
        "event_id": event.event_id,
    }
    return orjson.dumps(cause).decode()


def change_body(row: ChangeRow) -> dict[str, Any]:
    """The change as the API answers it (docs/api.md, `GET /v1/changes`)."""
    body: dict[str, Any] = {
        "cursor": row.cursor,
        "kind": "entitlement" if row.workspace is not None else "enforcement",
        "workspace_id": row.workspace,
        "seq": row.seq,
        "at": row.at,
        "cause": orjson.loads(row.cause),
    }
    body.update(orjson.loads(row.state))
    return body
