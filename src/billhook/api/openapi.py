"""`GET /openapi.json`: the OpenAPI 3.1 description of every route the app serves.

The routes are described here, as data, next to the app that assembles them;
their bodies and answers are the Structs of `api.schemas`, whose component
schemas msgspec generates. It is rendered once, at start, from the settings
(the configured tiers and features are the `examples` of those strings). Each
`/v1` operation carries `x-billhook-scope` (`read` or `admin`) so tests can
tell which token a route needs without a second list.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, get_args, get_origin

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api import schemas
from billhook.api.schemas import Schema, components, ref
from billhook.config import Settings

# The JSON Schema dialect of every schema in the document (plain 2020-12, no OpenAPI extras).
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# The operation field naming the token scope a `/v1` route needs.
SCOPE_FIELD = "x-billhook-scope"
# Where the document is served.
PATH = "/openapi.json"

JSON = "application/json"
# One path segment as the app routes it: no `/`, no line break (a mount's `.*` stops there),
# and not a dot segment that clients fold away. Anything else is a 404.
PATH_SEGMENT: Schema = {"type": "string", "minLength": 1, "pattern": r"^(?!\.\.?$)[^/\n]+$"}
# A workspace id: such a segment, not blank. An empty or blank one is 400 invalid_request.
WORKSPACE_SEGMENT: Schema = {**PATH_SEGMENT, "pattern": r"^(?!\.\.?$)[^/\n]*\S[^/\n]*$"}

WORKSPACE = {
    "name": "workspace_id",
    "in": "path",
    "required": True,
    "description": "the workspace, as linked through `workspace_key` metadata; "
    "empty or blank: 400 invalid_request",
    "schema": WORKSPACE_SEGMENT,
}
AS_OF = {
    "name": "as_of",
    "in": "query",
    "required": False,
    "description": "a log seq, or an ISO 8601 time (UTC when it has no timezone): answer as "
    "of the last event at or before it, with time rules evaluated then; 400 when the seq "
    "is not in the log or the time leaves the calendar once in UTC",
    "schema": {
        "anyOf": [
            {"type": "string", "pattern": "^[0-9]+$", "description": "a seq"},
            {"type": "string", "format": "date-time", "description": "a time"},
            {"type": "string", "description": "anything else: 400 invalid_request"},
        ]
    },
}


CURSOR_OR_NOW: Schema = {"type": "string", "pattern": r"^([0-9]+-[0-9]+|now)$"}
AFTER = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "a change's cursor: the changes past it; absent: from the first change; "
    "`now`: none, only the cursor of the newest (where a new follower starts)",
    "schema": {"anyOf": [CURSOR_OR_NOW, {"type": "string", "description": "else: 400"}]},
}
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "changes per answer, 1 to 1000 (default 100); else 400 invalid_request",
    "schema": {"type": "string"},
}
WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "seconds, 0 to 30: a long poll that answers as soon as there is a change",
    "schema": {"type": "string"},
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "the cursor of the last change received: the stream resumes after it",
    "schema": {"type": "string"},
}


def _body(answer: Any, description: str = "JSON") -> dict[str, Any]:
    """A JSON answer: a model, a `list[model]`, or a schema."""
    schema = answer if isinstance(answer, dict) else ref(answer)
    if get_origin(answer) is list:
        schema = {"type": "array", "items": ref(get_args(answer)[0])}
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(status_codes: dict[int, tuple[str, ...]]) -> dict[str, Any]:
    """Error answers: each status with the `error` codes it can carry."""
    return {
        str(status): _body(
            {
                "allOf": [ref(schemas.Error)],
                "properties": {"error": {"enum": list(codes)}},
            },
            "error: " + ", ".join(codes),
        )
        for status, codes in status_codes.items()
    }


def _v1(
    summary: str,
    *,
    scope: str,
    answers: dict[str, Any],
    errors: Mapping[int, tuple[str, ...]],
    body: type[schemas.Body] | None = None,
    parameters: tuple[dict[str, Any], ...] = (WORKSPACE,),
    tag: str = "entitlements",
) -> dict[str, Any]:
    """An operation under `/v1`: a bearer token of `scope`, 401 and (admin) 403 included."""
    auth: dict[int, tuple[str, ...]] = {401: ("unauthorized",)}
    if scope == "admin":
        auth[403] = ("forbidden",)
    if body is not None:
        auth[408] = ("request_timeout",)
        auth[413] = ("payload_too_large",)
    all_errors = {**auth, **errors}
    if WORKSPACE in parameters and "invalid_request" not in all_errors.get(400, ()):
        all_errors[400] = ("invalid_request", *all_errors.get(400, ()))
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": [{"bearer": []}],
        SCOPE_FIELD: scope,
        "description": f"Needs a bearer token of {scope} scope"
        + (" (`[auth] admin_tokens`)." if scope == "admin" else " (any configured token)."),
        "parameters": list(parameters),
        "responses": {**answers, **_errors(dict(sorted(all_errors.items())))},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    return operation


# Answers of every route reading projections: the store may be unreadable.
_READ_ERRORS: dict[int, tuple[str, ...]] = {503: ("projections_unavailable",)}
# Answers of every operator write: the log may refuse the event.
_WRITE_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("invalid_request",),
    503: ("log_unavailable",),
}


def _webhook(provider: str, headers: tuple[str, ...], verified_by: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"Receive a {provider} webhook",
            "tags": ["webhooks"],
            "description": f"No bearer token: the delivery is verified with {verified_by} "
            "over the exact bytes received, deduplicated and durably appended to the log "
            "before the answer.",
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                for name in headers
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"type": "object", "description": "the event"}}},
            },
            "responses": {
                "200": _body(schemas.WebhookAck, "appended, or seen before"),
                **_errors(
                    {
                        400: ("invalid_signature", "invalid_payload", "client_disconnected"),
                        404: ("provider_not_configured",),
                        408: ("request_timeout",),
                        413: ("payload_too_large",),
                        503: ("log_unavailable", "unavailable"),
                    }
                ),
            },
        }
    }


def _paths() -> dict[str, Any]:
    ws = "/v1/workspaces/{workspace_id}"
    return {
        "/webhooks/stripe": _webhook(
            "Stripe", ("Stripe-Signature",), "the `stripe` package against every secret"
        ),
        "/webhooks/polar": _webhook(
            "Polar",
            ("webhook-id", "webhook-timestamp", "webhook-signature"),
            "Standard Webhooks against every secret (standard and legacy schemes)",
        ),
        f"{ws}/entitlements": {
            "get": _v1(
                "What the workspace may do now (or as of a point of the log)",
                scope="read",
                parameters=(WORKSPACE, AS_OF),
                answers={"200": _body(schemas.Entitlement, "an unknown workspace: default tier")},
                errors={400: ("invalid_request",), **_READ_ERRORS},
            )
        },
        "/v1/changes": {
            "get": _v1(
                "The entitlement-change feed: every change past a cursor, oldest first",
                scope="read",
                parameters=(AFTER, LIMIT, WAIT),
                answers={"200": _body(schemas.Changes)},
                errors={400: ("invalid_request",), **_READ_ERRORS},
                tag="changes",
            )
        },
        "/v1/changes/stream": {
            "get": _v1(
                "The change feed as Server-Sent Events (`id`: the cursor; `event: change`;"
                " `data`: a change of `GET /v1/changes`), from `Last-Event-ID` or `after`",
                scope="read",
                parameters=(AFTER, LAST_EVENT_ID),
                answers={
                    "200": {
                        "description": "a stream that stays open; keep-alive comments when idle",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                errors={400: ("invalid_request",)},
                tag="changes",
            )
        },
        f"{ws}/history": {
            "get": _v1(
                "Changes of (tier, source, status), oldest first",
                scope="read",
                answers={"200": _body(list[schemas.HistoryEntry])},
                errors=_READ_ERRORS,
            )
        },
        f"{ws}/check": {
            "post": _v1(
                "May the workspace take this action?",
                scope="read",
                body=schemas.CheckRequest,
                answers={
                    "200": _body(schemas.CheckAnswer, "allowed, or would be denied (observe)"),
                    "402": _body(
                        ref(schemas.CheckDenial), "denied under enforce: billing_required"
                    ),
                },
                errors={400: ("invalid_request", "unknown_action"), **_READ_ERRORS},
            )
        },
        f"{ws}/refresh": {
            "post": _v1(
                "Reconcile the workspace from the provider APIs; answers the new entitlement",
                scope="read",
                answers={"200": _body(schemas.Entitlement)},
                errors={
                    409: ("not_linked",),
                    502: ("provider_error",),
                    503: ("provider_not_configured", "refresh_unavailable", "log_unavailable")
                    + _READ_ERRORS[503],
                },
            )
        },
        f"{ws}/checkout": {
            "post": _v1(
                "Start a provider checkout for a tier",
                scope="read",
                body=schemas.CheckoutRequest,
                tag="billing",
                answers={"201": _body(schemas.CheckoutSession, "redirect the buyer to `url`")},
                errors={
                    400: ("invalid_request",),
                    403: ("role_not_allowed",),
                    409: ("already_subscribed",),
                    422: ("no_price", "invalid_seats"),
                    502: ("provider_error",),
                    503: ("provider_not_configured", "log_unavailable") + _READ_ERRORS[503],
                },
            )
        },
        f"{ws}/portal": {
            "post": _v1(
                "Open the provider's customer portal",
                scope="read",
                body=schemas.PortalRequest,
                tag="billing",
                answers={"201": _body(schemas.PortalSession, "redirect the member to `url`")},
                errors={
                    400: ("invalid_request",),
                    403: ("role_not_allowed",),
                    409: ("not_linked",),
                    502: ("provider_error",),
                    503: ("provider_not_configured", "log_unavailable") + _READ_ERRORS[503],
                },
            )
        },
        "/v1/admin/overrides": {
            "post": _v1(
                "Set an override (an event in the log)",
                scope="admin",
                tag="admin",
                parameters=(),
                body=schemas.OverrideRequest,
                answers={"201": _body(schemas.Seq, "appended and projected")},
                errors=_WRITE_ERRORS,
            )
        },
        "/v1/admin/overrides/{workspace_id}/{kind}": {
            "delete": _v1(
                "Revoke the workspace's active override of this kind",
                scope="admin",
                tag="admin",
                parameters=(
                    WORKSPACE,
                    {"name": "kind", "in": "path", "required": True, "schema": PATH_SEGMENT},
                ),
                body=schemas.RevokeRequest,
                answers={"200": _body(schemas.Seq, "appended and projected")},
                errors={**_WRITE_ERRORS, 404: ("not_found",)},
            )
        },
        "/v1/admin/enforcement": {
            "put": _v1(
                "Switch the enforcement mode",
                scope="admin",
                tag="admin",
                parameters=(),
                body=schemas.EnforcementRequest,
                answers={"200": _body(schemas.Seq, "appended and projected")},
                errors=_WRITE_ERRORS,
            )
        },
        "/v1/admin/quarantine": {
            "get": _v1(
                "Events a reducer failed on (skipped, not fatal)",
                scope="admin",
                tag="admin",
                parameters=(),
                answers={"200": _body(list[schemas.Quarantined])},
                errors=_READ_ERRORS,
            )
        },
        "/v1/admin/impact": {
            "get": _v1(
                "Checks refused, or that enforcement would refuse, per action, reason and "
                "workspace (ids and counts only)",
                scope="admin",
                tag="admin",
                parameters=(
                    {
                        "name": "days",
                        "in": "query",
                        "required": False,
                        "description": "the window, today included: 1 to the retention "
                        "(90 days); default 30",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                ),
                answers={"200": _body(schemas.Impact)},
                errors={400: ("invalid_request",), **_READ_ERRORS},
            )
        },
        "/v1/admin/readiness": {
            "get": _v1(
                "The launch gates, each passed or not, with ids and seqs as evidence",
                scope="admin",
                tag="admin",
                parameters=(),
                answers={"200": _body(schemas.LaunchReport)},
                errors={**_READ_ERRORS, 503: ("projections_unavailable", "log_unavailable")},
            )
        },
        **_outbound_paths(),
        "/healthz": _ops("The process is alive", {"200": _body(schemas.Health)}),
        "/readyz": _ops(
            "The log and projections answer and projections keep up",
            {
                "200": _body(schemas.Readiness, "ready"),
                "503": _body(schemas.Readiness, "not ready: the failing check is named"),
            },
        ),
        "/metrics": _ops(
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        PATH: _ops(
            "This document",
            {"200": _body({"type": "object", "description": "OpenAPI 3.1"})},
        ),
    }


# Answers of the outbound admin routes: the projection and the outbox store are read.
_OUTBOX_ERRORS: dict[int, tuple[str, ...]] = {503: ("projections_unavailable",)}
ENDPOINT_ID = {
    "name": "endpoint_id",
    "in": "path",
    "required": True,
    "description": "an endpoint's id; unknown or removed: 404 not_found",
    "schema": PATH_SEGMENT,
}
DELIVERY_ID = {
    "name": "delivery_id",
    "in": "path",
    "required": True,
    "description": "a delivery's id",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def _outbound_paths() -> dict[str, Any]:
    """`/v1/admin/endpoints…` and `/v1/admin/deliveries…` (SPEC §6b, `api.endpoints`)."""
    return {
        "/v1/admin/endpoints": {
            "post": _v1(
                "Add an outbound webhook endpoint (an event in the log); its secret is in "
                "this answer only",
                scope="admin",
                tag="outbound",
                parameters=(),
                body=schemas.EndpointRequest,
                answers={"201": _body(schemas.EndpointCreated, "appended and projected")},
                errors={**_WRITE_ERRORS, 503: ("log_unavailable", "projections_unavailable")},
            ),
            "get": _v1(
                "Every outbound endpoint, configured or added, with its delivery health "
                "(never its secrets)",
                scope="admin",
                tag="outbound",
                parameters=(),
                answers={"200": _body(list[schemas.EndpointStatus])},
                errors=_OUTBOX_ERRORS,
            ),
        },
        "/v1/admin/endpoints/{endpoint_id}": {
            "delete": _v1(
                "Remove an endpoint the API added; its pending deliveries are canceled",
                scope="admin",
                tag="outbound",
                parameters=(ENDPOINT_ID,),
                body=schemas.RevokeRequest,
                answers={"200": _body(schemas.EndpointRemoved, "appended and projected")},
                errors={
                    **_WRITE_ERRORS,
                    404: ("not_found",),
                    409: ("endpoint_configured",),
                    503: ("log_unavailable", "projections_unavailable"),
                },
            )
        },
        "/v1/admin/endpoints/{endpoint_id}/secrets": {
            "post": _v1(
                "Rotate an added endpoint's secret: the new one signs from now, the previous "
                "ones too until they expire. The body may be empty.",
                scope="admin",
                tag="outbound",
                parameters=(ENDPOINT_ID,),
                body=schemas.RotateRequest,
                answers={"201": _body(schemas.SecretRotated, "the new secret, shown this once")},
                errors={
                    400: ("invalid_request",),
                    404: ("not_found",),
                    409: ("endpoint_configured",),
                    **_OUTBOX_ERRORS,
                },
            )
        },
        "/v1/admin/deliveries": {
            "get": _v1(
                "The delivery log, newest first (ids, statuses and attempts; never bodies)",
                scope="admin",
                tag="outbound",
                parameters=(
                    _query(
                        "status",
                        "only deliveries of this status: pending, sending, delivered, "
                        "failed or canceled",
                    ),
                    _query("endpoint", "only deliveries to this endpoint id"),
                    _query("workspace", "only deliveries about this workspace"),
                    _query("before", "only deliveries with a smaller id: `next_before`"),
                    _query("limit", "deliveries per answer, 1 to 1000 (default 100)"),
                ),
                answers={"200": _body(schemas.Deliveries)},
                errors={400: ("invalid_request",), **_OUTBOX_ERRORS},
            )
        },
        # Before `{delivery_id}`, which its path would match too.
        "/v1/admin/deliveries/redeliver": {
            "post": _v1(
                "Send delivered, failed or canceled deliveries again (by `ids`, or every one "
                "created `since` a time), with a fresh retry span",
                scope="admin",
                tag="outbound",
                parameters=(),
                body=schemas.RedeliverRequest,
                answers={"200": _body(schemas.Redelivered)},
                errors={400: ("invalid_request",), 404: ("not_found",), **_OUTBOX_ERRORS},
            )
        },
        "/v1/admin/deliveries/{delivery_id}": {
            "get": _v1(
                "One delivery with each of its attempts",
                scope="admin",
                tag="outbound",
                parameters=(DELIVERY_ID,),
                answers={"200": _body(schemas.DeliveryDetail)},
                errors={404: ("not_found",), **_OUTBOX_ERRORS},
            )
        },
    }


def _ops(summary: str, answers: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "tags": ["ops"], "security": [], "responses": answers}}


def _version() -> str:
    try:
        return version("billhook")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app built from `settings`."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DIALECT,
        "info": {
            "title": "billhook",
            "version": _version(),
            "description": "Stripe and Polar webhooks in; entitlements out. Every error "
            'answer is `{"error", "detail"}`; `error` is one of the codes listed for '
            "that status. See docs/api.md.",
        },
        "tags": [
            {"name": "webhooks", "description": "signed provider deliveries"},
            {"name": "entitlements", "description": "read scope"},
            {"name": "billing", "description": "checkout and portal sessions"},
            {"name": "admin", "description": "admin scope; every write is a log event"},
            {"name": "outbound", "description": "admin scope; signed entitlement webhooks"},
            {"name": "ops", "description": "no token"},
        ],
        "paths": _paths(),
        "components": {
            "schemas": components(settings),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of `[auth] api_tokens` (read scope) or "
                    "`[auth] admin_tokens` (admin scope, which also reads). Missing, unknown "
                    "or another scheme: 401 unauthorized; a read token on an admin route: "
                    "403 forbidden.",
                }
            },
        },
    }


class OpenApiRoute:
    """Serves the document, rendered once when the app is built."""

    def __init__(self, settings: Settings) -> None:
        self._body = orjson.dumps(openapi_document(settings))

    @property
    def routes(self) -> list[Route]:
        return [Route(PATH, self.serve, methods=["GET"])]

    async def serve(self, request: Request) -> Response:
        return Response(self._body, media_type=JSON)
