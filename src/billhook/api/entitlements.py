"""The entitlement API (docs/api.md): what may this workspace do right now?

Reads come from `projections.db`, never from scanning the log; entitlements
are resolved at request time with the injected clock. Operator actions are
appended to the log as billhook events and answered once projected, so a read
right after a write sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api import bodies as req
from billhook.api import schemas
from billhook.api.auth import TokenGate
from billhook.api.cache import EntitlementCache
from billhook.api.paths import SEGMENT, WORKSPACE_PATH, workspace_id
from billhook.config import SEAT_ACTION, Settings
from billhook.domain.records import EventRecord
from billhook.domain.resolver import Entitlement, required_tier
from billhook.errors import ApiError
from billhook.log.backend import Log
from billhook.log.sqlite import Appended
from billhook.projections import actions as operator
from billhook.projections.query import entitlement_at
from billhook.projections.store import ProjectionStore

Append = Callable[[EventRecord], Awaitable[Appended]]
WaitFor = Callable[[int], Awaitable[None]]
# Told each check's (workspace, action, decision, reason): the metrics and the impact counts.
OnDecision = Callable[[str, str, str, str | None], None]


class EntitlementApi:
    """The `/v1` routes. Dependencies come in; nothing here opens a file."""

    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        log: Log,
        *,
        append: Append,
        wait_for: WaitFor,
        now: Callable[[], datetime],
        on_decision: OnDecision | None = None,
        on_flagged: Callable[[str], None] | None = None,
    ) -> None:
        """`on_flagged(workspace)`: a freshly resolved answer has subscriptions a time rule
        flagged (a missed final event, a stale period), which a refresh would settle."""
        self._settings = settings
        self._store = store
        self._log = log
        self._append = append
        self._wait_for = wait_for
        self._now = now
        self._gate = TokenGate(settings.auth)
        self._cache = EntitlementCache(store, settings, now, on_flagged=on_flagged)
        self._on_decision = on_decision
        self._features = {f for features in settings.tiers.values() for f in features}

    @property
    def routes(self) -> list[Route]:
        """Routes relative to `/v1` (the app mounts them there), the hot ones first:
        Starlette tries routes in order."""
        return [
            Route(f"{WORKSPACE_PATH}/check", self.check, methods=["POST"]),
            Route(f"{WORKSPACE_PATH}/entitlements", self.entitlements, methods=["GET"]),
            Route(f"{WORKSPACE_PATH}/history", self.history, methods=["GET"]),
            Route("/admin/overrides", self.set_override, methods=["POST"]),
            Route(
                "/admin/overrides/{workspace_id:" + SEGMENT + "}/{kind}",
                self.revoke_override,
                methods=["DELETE"],
            ),
            Route("/admin/enforcement", self.set_enforcement, methods=["PUT"]),
            Route("/admin/quarantine", self.quarantine, methods=["GET"]),
        ]

    # -- reads --------------------------------------------------------------------------

    def entitlement(self, workspace: str, as_of: str | None = None) -> tuple[Entitlement, datetime]:
        """Resolve a workspace now, or as it stood at `as_of` (a seq or an ISO time)."""
        return entitlement_at(self._store, self._log, self._settings, workspace, as_of, self._now())

    def current_body(self, workspace: str) -> bytes:
        """The rendered entitlement of `workspace` now (what GET answers), as of the
        projection's latest commit: callers have often just waited for their own write."""
        return self._cache.get(workspace, fresh=True).body

    async def entitlements(self, request: Request) -> Response:
        self._gate.require(request)
        workspace = workspace_id(request)
        # Most reads carry no query string; building QueryParams for none costs ~2.5 µs.
        as_of = request.query_params.get("as_of") if request.scope["query_string"] else None
        if as_of is None:
            return Response(self._cache.get(workspace).body, media_type="application/json")
        entitlement, at = self.entitlement(workspace, as_of)
        return schemas.respond(schemas.entitlement_answer(entitlement, at))

    async def history(self, request: Request) -> Response:
        self._gate.require(request)
        rows = self._store.history(workspace_id(request))
        return schemas.respond(
            [
                schemas.HistoryEntry(
                    r.seq,
                    r.at,
                    schemas.Cause(r.provider, r.type, r.event_id),
                    r.tier,
                    r.source,
                    r.status,
                )
                for r in rows
            ]
        )

    async def check(self, request: Request) -> Response:
        self._gate.require(request)
        workspace = workspace_id(request)
        body = await req.read(request, schemas.CheckRequest)
        action, seats_in_use = body.action, body.seats_in_use
        if not action.strip():
            raise req.invalid("field action must be a non-empty string")
        if action != SEAT_ACTION and action not in self._features:
            raise ApiError(
                400, "unknown_action", f"{action!r} is not a configured feature or {SEAT_ACTION}"
            )
        if action == SEAT_ACTION and seats_in_use is None:
            raise req.invalid(f"missing field: seats_in_use (required for {SEAT_ACTION})")
        cached = self._cache.get(workspace)
        if action == SEAT_ACTION:
            answer = self.decide(cached.entitlement, action, seats_in_use)
            encoded = None
        else:
            # A feature's answer depends on the entitlement and the action only: decided
            # and encoded once per cache entry.
            known = cached.checks.get(action)
            if known is None:
                answer = self.decide(cached.entitlement, action, None)
                known = cached.checks[action] = (answer, schemas.encode(answer))
            answer, encoded = known
        if self._on_decision is not None:
            self._on_decision(workspace, action, answer.decision, answer.reason)
        if answer.decision == "deny":
            extra = msgspec.structs.asdict(answer)
            raise ApiError(402, "billing_required", _denial_detail(answer), extra=extra)
        if encoded is None:
            return schemas.respond(answer)
        return Response(encoded, media_type="application/json")

    def decide(
        self, entitlement: Entitlement, action: str, seats_in_use: int | None
    ) -> schemas.CheckAnswer:
        """The check answer for `action` (docs/api.md); the caller turns `deny` into a 402."""
        mode = entitlement.enforcement
        needed = None if action == SEAT_ACTION else required_tier(action, self._settings.tiers)
        reason: str | None = None
        if mode != "disabled":
            if action == SEAT_ACTION:
                purchased = entitlement.seats
                assert seats_in_use is not None
                if purchased is not None and seats_in_use + 1 > purchased:
                    reason = "seat_limit"
            elif needed != self._settings.default_tier and action not in entitlement.included:
                rank = self._settings.tier_rank
                covered = needed is not None and rank[needed] <= rank[entitlement.tier]
                reason = (
                    "billing_attention" if covered and entitlement.paid_blocked else "tier_required"
                )
        decision = "allow" if reason is None else ("deny" if mode == "enforce" else "would_deny")
        return schemas.CheckAnswer(
            workspace_id=entitlement.workspace_id,
            action=action,
            allowed=decision != "deny",
            decision=decision,
            reason=reason,
            required_tier=needed,
            tier=entitlement.tier,
            next_action=entitlement.next_action,
            enforcement=mode,
            as_of_seq=entitlement.as_of_seq,
        )

    # -- admin --------------------------------------------------------------------------

    async def _record(self, record: EventRecord) -> int:
        appended = await self._append(record)
        await self._wait_for(appended.seq)
        return appended.seq

    async def set_override(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        body = await req.read(request, schemas.OverrideRequest)
        record = operator.override_set(
            self._settings,
            workspace_id=body.workspace_id,
            kind=body.kind,
            tier=body.tier,
            expires_at=body.expires_at,
            reason=body.reason,
            actor=body.actor,
            now=self._now(),
        )
        return schemas.respond(schemas.Seq(await self._record(record)), status_code=201)

    async def revoke_override(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        workspace = workspace_id(request)
        body = await req.read(request, schemas.RevokeRequest)
        record = operator.override_revoke(
            self._store,
            workspace_id=workspace,
            kind=request.path_params["kind"],
            reason=body.reason,
            actor=body.actor,
            now=self._now(),
        )
        return schemas.respond(schemas.Seq(await self._record(record)))

    async def set_enforcement(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        body = await req.read(request, schemas.EnforcementRequest)
        record = operator.enforcement_set(
            mode=body.mode, approved_by=body.approved_by, reason=body.reason, now=self._now()
        )
        return schemas.respond(schemas.Seq(await self._record(record)))

    async def quarantine(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        return schemas.respond(
            [
                schemas.Quarantined(q.seq, q.provider, q.event_id, q.type, q.error)
                for q in self._store.quarantine()
            ]
        )


def _denial_detail(answer: schemas.CheckAnswer) -> str:
    if answer.reason == "seat_limit":
        return "every purchased seat is in use"
    if answer.reason == "billing_attention":
        return "billing needs attention before paid features are available again"
    return f"this action needs the {answer.required_tier} tier"
