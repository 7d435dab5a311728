"""The guard: billhook's check before a Starlette or FastAPI handler runs
(`pip install 'billhook-client[starlette]'`).

A plain decorator, for endpoints that take the request:

    @requires("ai_imports", workspace=lambda request: request.path_params["ws"])
    async def chat(request: Request) -> Response: ...

and a dependency, for FastAPI's `Depends(Requires(...))` or a call inside any endpoint
(`await need_ai(request)`), whose denials `add_guard_handlers(app)` answers.

Denied by billhook (enforcement `enforce`): 402 with billhook's own
`billing_required` body, byte for byte — the handler never runs. Under
`observe` the call goes through (`would_deny`) and is counted in
`client.guard_counts`. When billhook cannot answer and the outage policy
denies: 503 `billing_unavailable` (not a 402: nothing says the workspace must
pay). The client is `client=`, else `request.app.state.billhook`.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from billhook_client.aio import AsyncBillhook
from billhook_client.client import Billhook
from billhook_client.errors import BillingRequired, BillingUnavailable
from billhook_client.models import Check

AnyClient = Billhook | AsyncBillhook
# Which workspace a request is about: a function of the request (may be async).
WorkspaceOf = Callable[[Request], str | Awaitable[str]]
SeatsOf = Callable[[Request], int | Awaitable[int | None] | None]
F = TypeVar("F", bound=Callable[..., Any])


def _client_of(connection: HTTPConnection, client: AnyClient | None) -> AnyClient:
    if client is not None:
        return client
    found = getattr(connection.app.state, "billhook", None)
    if not isinstance(found, Billhook | AsyncBillhook):
        raise RuntimeError("no billhook client: pass client= or set app.state.billhook")
    return found


async def _value(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def evaluate(
    request: Request,
    action: str,
    workspace: WorkspaceOf,
    seats_in_use: SeatsOf | None = None,
    client: AnyClient | None = None,
) -> Check:
    """billhook's answer for this request's workspace, counted in `client.guard_counts`."""
    bh = _client_of(request, client)
    ws = str(await _value(workspace(request)))
    seats = None if seats_in_use is None else await _value(seats_in_use(request))
    if isinstance(bh, AsyncBillhook):
        check = await bh.check(ws, action, seats)
    else:
        # A cached answer costs a dict read: no thread for it.
        cached = bh.cached_check(ws, action, seats)
        if cached is None:
            cached = await run_in_threadpool(bh.check, ws, action, seats)
        check = cached
    bh.guard_counts.add(action, check.decision, check.fallback)
    return check


def denial_response(check: Check) -> Response | None:
    """The answer that stops the request, or None when the call may go through."""
    if check.allowed:
        return None
    if check.billing_required:
        return Response(check.body, status_code=402, media_type="application/json")
    body = {
        "error": "billing_unavailable",
        "detail": "billhook could not be asked; the outage policy denies this action",
        "workspace_id": check.workspace_id,
        "action": check.action,
        "fallback_reason": check.fallback_reason,
    }
    return Response(json.dumps(body), status_code=503, media_type="application/json")


def _request_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Request):
            return value
    raise TypeError("a guarded endpoint must take the Request")


def requires(
    action: str,
    *,
    workspace: WorkspaceOf,
    seats_in_use: SeatsOf | None = None,
    client: AnyClient | None = None,
) -> Callable[[F], F]:
    """Guard an endpoint (taking the Request): it runs only when billhook allows `action`."""

    def decorate(endpoint: F) -> F:
        @functools.wraps(endpoint)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            request = _request_in(args, kwargs)
            check = await evaluate(request, action, workspace, seats_in_use, client)
            denied = denial_response(check)
            if denied is not None:
                return denied
            if inspect.iscoroutinefunction(endpoint):
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(endpoint, *args, **kwargs)

        return cast(F, guarded)

    return decorate


class Requires:
    """A dependency: `await Requires(...)(request)` returns the allowing Check, or raises
    BillingRequired / BillingUnavailable, which `add_guard_handlers` turns into answers."""

    def __init__(
        self,
        action: str,
        *,
        workspace: WorkspaceOf,
        seats_in_use: SeatsOf | None = None,
        client: AnyClient | None = None,
    ) -> None:
        self.action = action
        self._workspace = workspace
        self._seats_in_use = seats_in_use
        self._client = client

    async def __call__(self, request: Request) -> Check:
        check = await evaluate(
            request, self.action, self._workspace, self._seats_in_use, self._client
        )
        if check.allowed:
            return check
        if check.billing_required:
            raise BillingRequired(check)
        raise BillingUnavailable(check)


async def _billing_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BillingRequired | BillingUnavailable)
    response = denial_response(exc.check)
    assert response is not None
    return response


def add_guard_handlers(app: Any) -> None:
    """Answer the dependency's denials: 402 billhook's body, 503 `billing_unavailable`."""
    app.add_exception_handler(BillingRequired, _billing_required)
    app.add_exception_handler(BillingUnavailable, _billing_required)
