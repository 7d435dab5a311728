"""The outbound-webhook admin routes under `/v1/admin` (SPEC §6b): endpoints and deliveries.

Adding or removing an endpoint is an operator event in the log, answered once
projected, like every admin write. Its signing secret is made here and kept in
the outbox store *before* the event is appended: an endpoint the dispatcher can
see always has a secret, and a secret whose event never made it to the log is
an orphan that signs nothing. The secret is in the one answer that creates it
(or rotates it) and in no other answer, log line or event. Configured endpoints
(`[[outbound.endpoints]]`) are listed but changed only in the config.

The stores are called off the event loop: the outbox and the projection are
blocking database clients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api import bodies as req
from billhook.api import schemas
from billhook.api.auth import TokenGate
from billhook.api.body import read_limited
from billhook.config import Settings
from billhook.domain.records import EventRecord
from billhook.domain.times import from_us, iso_utc, parse_time, to_us
from billhook.errors import ApiError, PayloadTooLarge
from billhook.log.sqlite import Appended
from billhook.outbound import store as outbox_store
from billhook.outbound.endpoints import configured, current, new_endpoint_id, new_secret
from billhook.outbound.store import OutboxStore
from billhook.projections import actions as operator
from billhook.projections.store import ProjectionStore

Append = Callable[[EventRecord], Awaitable[Appended]]
WaitFor = Callable[[int], Awaitable[None]]

# Deliveries per page of `GET /admin/deliveries`, unless `limit` says otherwise, and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# The array fields of these bodies: `bodies` words any wrong type as "a non-empty string".
_ARRAYS = ("workspaces", "ids")
# The largest id a delivery may have (a signed 64-bit integer).
MAX_ID = 2**63 - 1


class OutboundAdmin:
    """`/v1/admin/endpoints…` and `/v1/admin/deliveries…` (admin tokens)."""

    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        outbox: OutboxStore,
        *,
        append: Append,
        wait_for: WaitFor,
        now: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._outbox = outbox
        self._append = append
        self._wait_for = wait_for
        self._now = now
        self._gate = TokenGate(settings.auth)
        self._configured = {endpoint.id for endpoint in configured(settings)}

    @property
    def routes(self) -> list[Route]:
        """Relative to `/v1`."""
        return [
            Route("/admin/endpoints", self.add_endpoint, methods=["POST"]),
            Route("/admin/endpoints", self.list_endpoints, methods=["GET"]),
            Route("/admin/endpoints/{endpoint_id}", self.remove_endpoint, methods=["DELETE"]),
            Route("/admin/endpoints/{endpoint_id}/secrets", self.rotate, methods=["POST"]),
            Route("/admin/deliveries", self.list_deliveries, methods=["GET"]),
            Route("/admin/deliveries/redeliver", self.redeliver, methods=["POST"]),
            Route("/admin/deliveries/{delivery_id:int}", self.delivery, methods=["GET"]),
        ]

    # -- endpoints ----------------------------------------------------------------------

    async def add_endpoint(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        body = await _read(request, schemas.EndpointRequest)
        now = self._now()
        endpoint_id, secret = new_endpoint_id(), new_secret()
        # Built (and so validated) first: a refused request leaves no secret behind.
        record = operator.endpoint_added(
            endpoint_id=endpoint_id,
            url=body.url,
            workspaces=body.workspaces,
            actor=body.actor,
            reason=body.reason,
            now=now,
        )
        await run_in_threadpool(self._outbox.add_secret, endpoint_id, secret, to_us(now))
        seq = await self._record(record)
        answer = schemas.EndpointCreated(
            id=endpoint_id,
            url=body.url,
            workspaces=body.workspaces or (),
            source="api",
            secret=secret,
            seq=seq,
        )
        return schemas.respond(answer, status_code=201)

    async def list_endpoints(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        return schemas.respond(await run_in_threadpool(self.endpoints, self._now()))

    def endpoints(self, now: datetime) -> list[schemas.EndpointStatus]:
        return endpoint_statuses(self._settings, self._store, self._outbox, to_us(now))

    async def remove_endpoint(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        endpoint_id = await run_in_threadpool(self._added, request.path_params["endpoint_id"])
        body = await req.read(request, schemas.RevokeRequest)
        now = self._now()
        record = operator.endpoint_removed(
            endpoint_id=endpoint_id, actor=body.actor, reason=body.reason, now=now
        )
        seq = await self._record(record)
        # Its secrets sign nothing any more; the dispatcher cancels what was pending.
        await run_in_threadpool(self._outbox.expire_secrets, endpoint_id, "", to_us(now))
        return schemas.respond(schemas.EndpointRemoved(id=endpoint_id, seq=seq))

    async def rotate(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        endpoint_id = await run_in_threadpool(self._added, request.path_params["endpoint_id"])
        raw = await _read_optional(request)
        body = req.decode(raw, schemas.RotateRequest) if raw.strip() else schemas.RotateRequest()
        now_us = to_us(self._now())
        secret = new_secret()
        await run_in_threadpool(self.rotate_secret, endpoint_id, secret, now_us, body)
        return schemas.respond(schemas.SecretRotated(id=endpoint_id, secret=secret), 201)

    def rotate_secret(
        self, endpoint_id: str, secret: str, now_us: int, body: schemas.RotateRequest
    ) -> None:
        """Sign with `secret` from now on; the others keep signing for the grace period,
        so a receiver can switch to the new secret before the old ones stop."""
        self._outbox.add_secret(endpoint_id, secret, now_us)
        expires_us = now_us + body.expire_previous_after_s * 1_000_000
        self._outbox.expire_secrets(endpoint_id, secret, expires_us)

    def _added(self, endpoint_id: str) -> str:
        """`endpoint_id`, if an endpoint the API added and that stands: 409 for a
        configured one (the config owns it), 404 for one unknown or removed."""
        if endpoint_id in self._configured:
            raise ApiError(
                409,
                "endpoint_configured",
                f"endpoint {endpoint_id} is configured: remove it from the config",
            )
        fact = self._store.endpoint(endpoint_id)
        if fact is None or not fact.active:
            raise ApiError(404, "not_found", f"no endpoint {endpoint_id}")
        return endpoint_id

    # -- deliveries ---------------------------------------------------------------------

    async def list_deliveries(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        query = request.query_params
        status = query.get("status")
        if status is not None:
            status = req.one_of("status", status, outbox_store.STATUSES)
        before = _whole(query.get("before"), "before", 1, MAX_ID)
        limit = _whole(query.get("limit"), "limit", 1, MAX_LIMIT)
        rows = await run_in_threadpool(
            lambda: self._outbox.deliveries(
                status=status,
                endpoint=query.get("endpoint"),
                workspace=query.get("workspace"),
                before_id=before,
                limit=DEFAULT_LIMIT if limit is None else limit,
            )
        )
        page = DEFAULT_LIMIT if limit is None else limit
        next_before = rows[-1].id if len(rows) == page else None
        return schemas.respond(
            schemas.Deliveries(tuple(delivery_answer(row) for row in rows), next_before)
        )

    async def delivery(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        delivery_id: int = request.path_params["delivery_id"]
        found = await run_in_threadpool(self._detail, delivery_id)
        if found is None:
            raise ApiError(404, "not_found", f"no delivery {delivery_id}")
        return schemas.respond(found)

    def _detail(self, delivery_id: int) -> schemas.DeliveryDetail | None:
        if delivery_id > MAX_ID:  # no such row, and past what the database can compare
            return None
        row = self._outbox.delivery(delivery_id)
        if row is None:
            return None
        attempts = self._outbox.attempts(delivery_id)
        return delivery_detail(row, attempts)

    async def redeliver(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        body = await _read(request, schemas.RedeliverRequest)
        if (body.ids is None) == (body.since is None):
            raise req.invalid("give exactly one of ids and since")
        now_us = to_us(self._now())
        give_up_us = now_us + self._settings.outbound.retry_span_s * 1_000_000
        if body.ids is not None:
            if not body.ids or len(body.ids) > schemas.MAX_REDELIVER_IDS:
                raise req.invalid(f"field ids must hold 1 to {schemas.MAX_REDELIVER_IDS} ids")
            count = await run_in_threadpool(self.redeliver_ids, body.ids, now_us, give_up_us)
        else:
            assert body.since is not None
            since_us = since_to_us(body.since)
            count = await run_in_threadpool(
                lambda: self._outbox.redeliver(
                    since_us=since_us, now_us=now_us, give_up_us=give_up_us
                )
            )
        return schemas.respond(schemas.Redelivered(count))

    def redeliver_ids(self, ids: Sequence[int], now_us: int, give_up_us: int) -> int:
        """Send these deliveries again (those not final are on their way already);
        404 naming the first unknown id, and then nothing is redelivered."""
        for delivery_id in ids:
            if self._outbox.delivery(delivery_id) is None:
                raise ApiError(404, "not_found", f"no delivery {delivery_id}")
        return self._outbox.redeliver(ids=ids, now_us=now_us, give_up_us=give_up_us)

    async def _record(self, record: EventRecord) -> int:
        appended = await self._append(record)
        await self._wait_for(appended.seq)
        return appended.seq


# -- shared with the CLI ----------------------------------------------------------------


def endpoint_statuses(
    settings: Settings, store: ProjectionStore, outbox: OutboxStore, now_us: int
) -> list[schemas.EndpointStatus]:
    """Every endpoint deliveries go to, configured ones first, with its health. Never its
    secrets: only whether it has one."""
    health = outbox.health()
    answers = []
    for endpoint in current(settings, store, outbox, now_us):
        seen = health.get(endpoint.id)
        failing_us = seen.failing_since_us if seen else None
        success_us = seen.last_success_us if seen else None
        oldest_us = seen.oldest_pending_us if seen else None
        if not endpoint.secrets:
            status = "no_secret"
        elif failing_us is not None:
            status = "failing"
        else:
            status = "ok"
        answers.append(
            schemas.EndpointStatus(
                id=endpoint.id,
                url=endpoint.url,
                workspaces=tuple(sorted(endpoint.workspaces)),
                source=endpoint.source,
                status=status,
                failing_since=_iso(failing_us),
                last_success_at=_iso(success_us),
                pending=seen.pending if seen else 0,
                oldest_pending_age_s=(
                    None if oldest_us is None else max(0, now_us - oldest_us) // 1_000_000
                ),
            )
        )
    return answers


def delivery_answer(row: outbox_store.Delivery) -> schemas.Delivery:
    """A delivery as answers show it: times in ISO 8601 UTC, never its body."""
    return schemas.Delivery(
        id=row.id,
        endpoint=row.endpoint,
        webhook_id=row.webhook_id,
        cursor=row.cursor,
        workspace=row.workspace,
        status=row.status,
        attempts=row.attempts,
        last_status=row.last_status,
        last_error=row.last_error,
        next_attempt_at=_iso(row.next_at_us),
        give_up_at=iso_utc(from_us(row.give_up_us)),
        created_at=iso_utc(from_us(row.created_us)),
        updated_at=iso_utc(from_us(row.updated_us)),
    )


def delivery_detail(
    row: outbox_store.Delivery, attempts: Sequence[outbox_store.Attempt]
) -> schemas.DeliveryDetail:
    """The delivery with every attempt, oldest first (`attempt_log`)."""
    return schemas.DeliveryDetail(
        **msgspec.structs.asdict(delivery_answer(row)),
        attempt_log=tuple(
            schemas.DeliveryAttempt(
                n=a.n,
                at=iso_utc(from_us(a.at_us)),
                status=a.status,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in attempts
        ),
    )


def since_to_us(value: str) -> int:
    """An ISO 8601 time (UTC without a timezone) in microseconds; 400 otherwise."""
    try:
        return to_us(parse_time(value))
    except (ValueError, OverflowError):
        raise req.invalid("field since must be an ISO 8601 time") from None


def _iso(us: int | None) -> str | None:
    return None if us is None else iso_utc(from_us(us))


def _whole(raw: str | None, name: str, low: int, high: int) -> int | None:
    """A whole-number query parameter from `low` to `high`; None when absent."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise req.invalid(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


async def _read(request: Request, model: type[req.B]) -> req.B:
    """`bodies.read`, saying "an array" where an array field got something else."""
    try:
        return await req.read(request, model)
    except ApiError as e:
        for name in _ARRAYS:
            if e.detail == f"field {name} must be a non-empty string":
                raise req.invalid(f"field {name} must be an array") from None
        raise


async def _read_optional(request: Request) -> bytes:
    """The body, which may be empty (every field has a default)."""
    try:
        return await read_limited(request, req.MAX_REQUEST_BYTES)
    except PayloadTooLarge as e:
        raise ApiError(413, "payload_too_large", str(e)) from None
