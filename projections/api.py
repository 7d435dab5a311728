"""The entitlement API (SPEC §6): what may this workspace do right now?

Reads come from `projections.db`, never from scanning the log; entitlements
are resolved at request time with the injected clock. Operator actions are
appended to the log as billhook events and answered once projected, so a read
right after a write sees it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.envelope import EventRecord, iso_utc
from ingest.http import ApiError
from ingest.log import Appended, EventLog
from ingest.settings import ENFORCEMENT_MODES, SEAT_ACTION, Settings
from projections import requests as req
from projections.auth import TokenGate
from projections.decode import ENFORCEMENT_SET, OVERRIDE_REVOKED, OVERRIDE_SET
from projections.facts import OVERRIDE_KINDS
from projections.resolver import Entitlement, required_tier, resolve
from projections.store import ProjectionStore, parse_time

Append = Callable[[EventRecord], Awaitable[Appended]]
WaitFor = Callable[[int], Awaitable[None]]
OnDecision = Callable[[str, str | None], None]


def operator_event(event_type: str, body: dict[str, Any], now: datetime) -> EventRecord:
    """A billhook event for the log: operator actions are events like any other."""
    return EventRecord(
        provider="billhook",
        event_id=str(uuid.uuid4()),
        type=event_type,
        livemode=None,
        occurred_at=iso_utc(now),
        payload=json.dumps(body, sort_keys=True),
    )


class EntitlementApi:
    """The `/v1` routes. Dependencies come in; nothing here opens a file."""

    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        log: EventLog,
        *,
        append: Append,
        wait_for: WaitFor,
        now: Callable[[], datetime],
        on_decision: OnDecision | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._log = log
        self._append = append
        self._wait_for = wait_for
        self._now = now
        self._gate = TokenGate(settings.auth)
        self._on_decision = on_decision
        self._features = {f for features in settings.tiers.values() for f in features}
        self._default_tier = next(iter(settings.tiers))

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/v1/workspaces/{workspace_id}/entitlements", self.entitlements, methods=["GET"]),
            Route("/v1/workspaces/{workspace_id}/history", self.history, methods=["GET"]),
            Route("/v1/workspaces/{workspace_id}/check", self.check, methods=["POST"]),
            Route("/v1/admin/overrides", self.set_override, methods=["POST"]),
            Route(
                "/v1/admin/overrides/{workspace_id}/{kind}",
                self.revoke_override,
                methods=["DELETE"],
            ),
            Route("/v1/admin/enforcement", self.set_enforcement, methods=["PUT"]),
            Route("/v1/admin/quarantine", self.quarantine, methods=["GET"]),
        ]

    # -- reads --------------------------------------------------------------------------

    def entitlement(self, workspace: str, as_of: str | None = None) -> tuple[Entitlement, datetime]:
        """Resolve a workspace now, or as it stood at `as_of` (a seq or an ISO time)."""
        if as_of is None:
            now = self._now()
            return resolve(self._store.workspace_facts(workspace), self._settings, now), now
        seq, at = self._as_of(as_of)
        return resolve(self._store.workspace_facts(workspace, seq), self._settings, at), at

    def _as_of(self, raw: str) -> tuple[int, datetime]:
        if raw.isascii() and raw.isdigit():
            seq = int(raw)
            event = self._log.get(seq) if seq > 0 else None
            if seq > 0 and event is None:
                raise req.invalid(f"as_of: no event with seq {seq}")
            return seq, parse_time(event.received_at) if event else datetime(1970, 1, 1, tzinfo=UTC)
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            raise req.invalid("as_of must be a seq or an ISO 8601 time") from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return self._log.last_seq_at(iso_utc(at)), at

    async def entitlements(self, request: Request) -> Response:
        self._gate.require(request)
        entitlement, at = self.entitlement(
            request.path_params["workspace_id"], request.query_params.get("as_of")
        )
        return JSONResponse(entitlement.to_json(at))

    async def history(self, request: Request) -> Response:
        self._gate.require(request)
        rows = self._store.history(request.path_params["workspace_id"])
        return JSONResponse(
            [
                {
                    "seq": r.seq,
                    "at": r.at,
                    "cause": {"provider": r.provider, "type": r.type, "event_id": r.event_id},
                    "tier": r.tier,
                    "source": r.source,
                    "status": r.status,
                }
                for r in rows
            ]
        )

    async def check(self, request: Request) -> Response:
        self._gate.require(request)
        body = await req.json_object(request)
        action = req.required_text(body, "action")
        if action != SEAT_ACTION and action not in self._features:
            raise ApiError(
                400, "unknown_action", f"{action!r} is not a configured feature or {SEAT_ACTION}"
            )
        seats_in_use = req.count(body, "seats_in_use")
        if action == SEAT_ACTION and seats_in_use is None:
            raise req.invalid(f"missing field: seats_in_use (required for {SEAT_ACTION})")
        entitlement, _ = self.entitlement(request.path_params["workspace_id"])
        answer = self.decide(entitlement, action, seats_in_use)
        if self._on_decision is not None:
            self._on_decision(answer["decision"], answer["reason"])
        if answer["decision"] == "deny":
            raise ApiError(402, "billing_required", _denial_detail(answer), extra=answer)
        return JSONResponse(answer)

    def decide(
        self, entitlement: Entitlement, action: str, seats_in_use: int | None
    ) -> dict[str, Any]:
        """The check answer for `action` (SPEC §6); the caller turns `deny` into a 402."""
        mode = entitlement.enforcement
        needed = None if action == SEAT_ACTION else required_tier(action, self._settings.tiers)
        reason: str | None = None
        if mode != "disabled":
            if action == SEAT_ACTION:
                purchased = entitlement.seats
                assert seats_in_use is not None
                if purchased is not None and seats_in_use + 1 > purchased:
                    reason = "seat_limit"
            elif needed != self._default_tier and action not in entitlement.included:
                tiers = list(self._settings.tiers)
                covered = needed is not None and tiers.index(needed) <= tiers.index(
                    entitlement.tier
                )
                reason = (
                    "billing_attention" if covered and entitlement.paid_blocked else "tier_required"
                )
        decision = "allow" if reason is None else ("deny" if mode == "enforce" else "would_deny")
        return {
            "workspace_id": entitlement.workspace_id,
            "action": action,
            "allowed": decision != "deny",
            "decision": decision,
            "reason": reason,
            "required_tier": needed,
            "tier": entitlement.tier,
            "next_action": entitlement.next_action,
            "enforcement": mode,
            "as_of_seq": entitlement.as_of_seq,
        }

    # -- admin --------------------------------------------------------------------------

    async def _record(self, event_type: str, body: dict[str, Any]) -> int:
        appended = await self._append(operator_event(event_type, body, self._now()))
        await self._wait_for(appended.seq)
        return appended.seq

    async def set_override(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        data = await req.json_object(request)
        kind = req.required_text(data, "kind")
        if kind not in OVERRIDE_KINDS:
            raise req.invalid(f"field kind must be one of {', '.join(OVERRIDE_KINDS)}")
        tier = req.required_text(data, "tier")
        if tier not in self._settings.tiers:
            raise req.invalid(f"field tier must be one of {', '.join(self._settings.tiers)}")
        body = {
            "workspace_id": req.required_text(data, "workspace_id"),
            "kind": kind,
            "tier": tier,
            "expires_at": req.timestamp(data, "expires_at"),
            "reason": req.required_text(data, "reason"),
            "actor": req.required_text(data, "actor"),
        }
        return JSONResponse({"seq": await self._record(OVERRIDE_SET, body)}, status_code=201)

    async def revoke_override(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        workspace, kind = request.path_params["workspace_id"], request.path_params["kind"]
        data = await req.json_object(request)
        reason, actor = req.required_text(data, "reason"), req.required_text(data, "actor")
        current = self._store.override(workspace, kind)
        now_iso = iso_utc(self._now())
        if current is None or not current.active or (current.expires_at or "9999") <= now_iso:
            raise ApiError(404, "not_found", f"no active {kind} override for this workspace")
        body = {"workspace_id": workspace, "kind": kind, "reason": reason, "actor": actor}
        return JSONResponse({"seq": await self._record(OVERRIDE_REVOKED, body)})

    async def set_enforcement(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        data = await req.json_object(request)
        mode = req.required_text(data, "mode")
        if mode not in ENFORCEMENT_MODES:
            raise req.invalid(f"field mode must be one of {', '.join(ENFORCEMENT_MODES)}")
        body = {
            "mode": mode,
            "approved_by": req.required_text(data, "approved_by"),
            "reason": req.required_text(data, "reason"),
        }
        return JSONResponse({"seq": await self._record(ENFORCEMENT_SET, body)})

    async def quarantine(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        return JSONResponse(
            [
                {
                    "seq": q.seq,
                    "provider": q.provider,
                    "event_id": q.event_id,
                    "type": q.type,
                    "error": q.error,
                }
                for q in self._store.quarantine()
            ]
        )


def _denial_detail(answer: dict[str, Any]) -> str:
    if answer["reason"] == "seat_limit":
        return "every purchased seat is in use"
    if answer["reason"] == "billing_attention":
        return "billing needs attention before paid features are available again"
    return f"this action needs the {answer['required_tier']} tier"
