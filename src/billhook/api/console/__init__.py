"""The operator console at `/console`: server-rendered pages for admin tokens (SPEC §6c).

Signing in takes an admin token once and sets a signed session cookie
(`console.session`); the token never travels in a URL and is never stored.
Every form carries a CSRF token. Writes append the same operator events as the
admin API and wait until they are projected, so the next page shows them.
Pages carry ids, statuses, tiers and counts only (SPEC §10).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from billhook.api import schemas
from billhook.api.admin import AdminReports
from billhook.api.auth import TokenGate
from billhook.api.body import read_limited
from billhook.api.console.replays import BackgroundReplay
from billhook.api.console.session import COOKIE, Session, Signer, derive_key
from billhook.api.diagnose import diagnosis_lines
from billhook.api.entitlements import EntitlementApi
from billhook.config import Settings
from billhook.domain.facts import OVERRIDE_KINDS
from billhook.domain.records import EventRecord
from billhook.errors import ApiError, BillhookError, InvalidAction, PayloadTooLarge
from billhook.projections import actions as operator
from billhook.projections.store import ProjectionStore

HERE = Path(__file__).parent
# Largest form body the console reads.
MAX_FORM_BYTES = 16 * 1024
# How many workspaces a search lists at most.
MAX_RESULTS = 50
# Sent with every console answer: no framing, no third-party anything, nothing cached.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

Append = Callable[[EventRecord], Awaitable[Any]]
WaitFor = Callable[[int], Awaitable[None]]


class Refused(Exception):
    """A console request refused with `status`; rendered as the error page."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Console:
    """The `/console` pages; `app` is what the web app mounts."""

    def __init__(
        self,
        settings: Settings,
        api: EntitlementApi,
        store: ProjectionStore,
        reports: AdminReports,
        *,
        append: Append,
        wait_for: WaitFor,
        now: Callable[[], datetime],
        key: bytes | None = None,
        replays: BackgroundReplay | None = None,
    ) -> None:
        self._settings = settings
        self._api = api
        self._store = store
        self._reports = reports
        self._append = append
        self._wait_for = wait_for
        self._now = now
        self._replays = replays if replays is not None else BackgroundReplay(settings, now=now)
        self._gate = TokenGate(settings.auth)
        self._signer = Signer(key if key is not None else derive_key(settings.auth.admin_tokens))
        self._env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        routes = [
            Route("/", self.home, methods=["GET"]),
            Route("/sign-in", self.sign_in_page, methods=["GET"]),
            Route("/sign-in", self.sign_in, methods=["POST"]),
            Route("/sign-out", self.sign_out, methods=["POST"]),
            Route("/workspaces", self.search, methods=["GET"]),
            Route("/workspaces/{workspace_id}", self.workspace, methods=["GET"]),
            Route("/workspaces/{workspace_id}/diagnose", self.diagnose, methods=["GET"]),
            Route("/workspaces/{workspace_id}/overrides", self.set_override, methods=["POST"]),
            Route(
                "/workspaces/{workspace_id}/overrides/{kind}/revoke",
                self.revoke_override,
                methods=["POST"],
            ),
            Route("/enforcement", self.enforcement, methods=["GET"]),
            Route("/enforcement", self.switch, methods=["POST"]),
            Route("/quarantine", self.quarantine, methods=["GET"]),
            Route("/quarantine/replay", self.replay, methods=["POST"]),
            Route("/readiness", self.readiness, methods=["GET"]),
            Route("/static/console.css", self.stylesheet, methods=["GET"]),
        ]
        self.app: ASGIApp = _Secured(Router(routes, redirect_slashes=False))

    # -- sessions -------------------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        return self._signer.load(request.cookies.get(COOKIE), now=int(time.time()))

    def _admin(self, request: Request) -> Session:
        session = self._session(request)
        if session is None or not session.admin:
            raise Refused(403, "sign in with an admin token first")
        return session

    async def _form(self, request: Request, session: Session) -> dict[str, str]:
        """The posted form, after its CSRF token is checked (403 without the right one)."""
        try:
            body = await read_limited(request, MAX_FORM_BYTES)
        except PayloadTooLarge:
            raise Refused(413, "the form is too large") from None
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        form = {name: values[0] for name, values in parsed.items()}
        if not self._signer.csrf_ok(session, form.get("csrf")):
            raise Refused(403, "the form's CSRF token is missing or wrong: reload the page")
        return form

    def _set_cookie(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._signer.dump(session),
            max_age=session.expires - int(time.time()),
            path="/console",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def _page(
        self,
        request: Request,
        template: str,
        session: Session,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        html = self._env.get_template(template).render(
            csrf=self._signer.csrf(session), signed_in=session.admin, **context
        )
        response = HTMLResponse(html, status_code=status)
        if self._session(request) != session:
            self._set_cookie(response, request, session)
        return response

    async def _guarded(
        self, request: Request, handler: Callable[[Session], Awaitable[Response]]
    ) -> Response:
        """Run a signed-in page; refusals and billhook's errors become the error page."""
        session = self._session(request)
        if session is None or not session.admin:
            if request.method == "GET":
                return RedirectResponse("/console/sign-in", status_code=303)
            return self._error(request, Refused(403, "sign in with an admin token first"))
        try:
            return await handler(session)
        except Refused as e:
            return self._error(request, e, session)
        except ApiError as e:
            return self._error(request, Refused(e.status, e.detail), session)
        except InvalidAction as e:
            return self._error(request, Refused(400, e.detail), session)
        except BillhookError as e:
            return self._error(request, Refused(503, str(e)), session)

    def _error(
        self, request: Request, refused: Refused, session: Session | None = None
    ) -> HTMLResponse:
        if session is None:
            session = self._session(request) or self._signer.new(admin=False, now=int(time.time()))
        return self._page(
            request,
            "error.html",
            session,
            refused.status,
            code=refused.status,
            detail=refused.detail,
        )

    # -- sign-in --------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/console/workspaces", status_code=303)

    async def sign_in_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is not None and session.admin:
            return RedirectResponse("/console/workspaces", status_code=303)
        if session is None:
            session = self._signer.new(admin=False, now=int(time.time()))
        return self._page(request, "sign_in.html", session)

    async def sign_in(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._error(request, Refused(403, "the sign-in form expired: reload the page"))
        try:
            form = await self._form(request, session)
        except Refused as e:
            return self._error(request, e, session)
        if not self._gate.is_admin(form.get("token", "").strip()):
            return self._page(
                request, "sign_in.html", session, 403, error="that is not an admin token"
            )
        # A new nonce: a session fixed before sign-in is worth nothing after it.
        signed_in = self._signer.new(admin=True, now=int(time.time()))
        response = RedirectResponse("/console/workspaces", status_code=303)
        self._set_cookie(response, request, signed_in)
        return response

    async def sign_out(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            await self._form(request, session)
            response = RedirectResponse("/console/sign-in", status_code=303)
            response.delete_cookie(COOKIE, path="/console")
            return response

        return await self._guarded(request, handle)

    # -- workspaces -----------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            query = request.query_params.get("q", "").strip()
            found = self._find(query) if query else []
            if len(found) == 1 and found[0][0] == query:
                return RedirectResponse(f"/console/workspaces/{quote(query, safe='')}", 303)
            return self._page(request, "search.html", session, query=query, found=found)

        return await self._guarded(request, handle)

    def _find(self, query: str) -> list[tuple[str, str]]:
        """(workspace, why it matched): its id, or a provider customer id linked to it."""
        found: list[tuple[str, str]] = []
        for workspace in sorted(self._store.workspaces()):
            if query in workspace:
                found.append((workspace, "workspace id"))
            else:
                customers = self._store.customers_of(workspace)
                match = next((f"{p} customer" for p, c in customers if c == query), None)
                if match is not None:
                    found.append((workspace, match))
            if len(found) >= MAX_RESULTS:
                break
        return found

    async def workspace(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            return self._workspace_page(request, session)

        return await self._guarded(request, handle)

    def _workspace_page(
        self, request: Request, session: Session, status: int = 200, error: str | None = None
    ) -> HTMLResponse:
        workspace = _workspace(request)
        as_of = request.query_params.get("as_of") or None
        if as_of is None:
            card: Mapping[str, Any] = json.loads(self._api.current_body(workspace))
        else:
            entitlement, at = self._api.entitlement(workspace, as_of)
            card = msgspec.to_builtins(schemas.entitlement_answer(entitlement, at))
        return self._page(
            request,
            "workspace.html",
            session,
            status,
            workspace=workspace,
            card=card,
            as_of=as_of,
            history=list(reversed(self._store.history(workspace))),
            kinds=OVERRIDE_KINDS,
            tiers=list(self._settings.tiers),
            error=error,
        )

    async def diagnose(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            workspace = _workspace(request)
            report = await run_in_threadpool(self._reports.diagnosis, workspace)
            return self._page(
                request,
                "diagnose.html",
                session,
                workspace=workspace,
                lines=diagnosis_lines(report),
            )

        return await self._guarded(request, handle)

    async def _record(self, record: EventRecord) -> int:
        appended = await self._append(record)
        seq: int = appended.seq
        await self._wait_for(seq)
        return seq

    async def set_override(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            form = await self._form(request, session)
            workspace = _workspace(request)
            try:
                record = operator.override_set(
                    self._settings,
                    workspace_id=workspace,
                    kind=form.get("kind"),
                    tier=form.get("tier"),
                    expires_at=form.get("expires_at") or None,
                    reason=form.get("reason"),
                    actor=form.get("actor"),
                    now=self._now(),
                )
            except InvalidAction as e:
                return self._workspace_page(request, session, 400, e.detail)
            await self._record(record)
            return RedirectResponse(f"/console/workspaces/{quote(workspace, safe='')}", 303)

        return await self._guarded(request, handle)

    async def revoke_override(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            form = await self._form(request, session)
            workspace = _workspace(request)
            try:
                record = operator.override_revoke(
                    self._store,
                    workspace_id=workspace,
                    kind=request.path_params["kind"],
                    reason=form.get("reason"),
                    actor=form.get("actor"),
                    now=self._now(),
                )
            except InvalidAction as e:
                return self._workspace_page(request, session, 400, e.detail)
            await self._record(record)
            return RedirectResponse(f"/console/workspaces/{quote(workspace, safe='')}", 303)

        return await self._guarded(request, handle)

    # -- enforcement, quarantine, readiness ----------------------------------------------

    async def enforcement(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            days = self._reports.days(request.query_params.get("days"))
            return self._enforcement_page(request, session, days)

        return await self._guarded(request, handle)

    def _enforcement_page(
        self,
        request: Request,
        session: Session,
        days: int,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        report = self._reports.impact_answer(days)
        return self._page(
            request, "enforcement.html", session, status, report=report, days=days, **context
        )

    async def switch(self, request: Request) -> Response:
        """Two steps: `review` shows what the switch would block; `confirm` appends it."""

        async def handle(session: Session) -> Response:
            form = await self._form(request, session)
            days = self._reports.days(None)
            mode = form.get("mode", "")
            approved_by, reason = form.get("approved_by", "").strip(), form.get("reason", "")
            try:
                record = operator.enforcement_set(
                    mode=mode, approved_by=approved_by, reason=reason.strip(), now=self._now()
                )
            except InvalidAction as e:
                return self._enforcement_page(request, session, days, 400, error=e.detail)
            if form.get("step") != "confirm":
                return self._enforcement_page(
                    request,
                    session,
                    days,
                    review={"mode": mode, "approved_by": approved_by, "reason": reason},
                )
            await self._record(record)
            return RedirectResponse("/console/enforcement", 303)

        return await self._guarded(request, handle)

    async def quarantine(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            return self._quarantine_page(request, session)

        return await self._guarded(request, handle)

    def _quarantine_page(
        self, request: Request, session: Session, status: int = 200, **context: Any
    ) -> HTMLResponse:
        return self._page(
            request,
            "quarantine.html",
            session,
            status,
            rows=self._store.quarantine(),
            run=self._replays.last,
            head=self._reports.log_head(),
            checkpoint=self._store.checkpoint(),
            **context,
        )

    async def replay(self, request: Request) -> Response:
        """Start `billhook replay` in the background; a second press while it runs is told so."""

        async def handle(session: Session) -> Response:
            await self._form(request, session)
            started, run = await run_in_threadpool(self._replays.start)
            if not started:
                detail = f"a replay is already running (started at {run.started_at})"
                return self._quarantine_page(request, session, 409, error=detail)
            return RedirectResponse("/console/quarantine", 303)

        return await self._guarded(request, handle)

    async def readiness(self, request: Request) -> Response:
        async def handle(session: Session) -> Response:
            report = self._reports.readiness_answer()
            return self._page(request, "readiness.html", session, report=report)

        return await self._guarded(request, handle)

    async def stylesheet(self, request: Request) -> Response:
        return FileResponse(HERE / "static" / "console.css", media_type="text/css")


def _workspace(request: Request) -> str:
    workspace: str = request.path_params["workspace_id"]
    if not workspace.strip():
        raise Refused(400, "workspace_id must not be empty or blank")
    return workspace


class _Secured:
    """Adds SECURITY_HEADERS to every console answer."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_secured)
