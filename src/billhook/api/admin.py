"""The operator reports under `/v1/admin` (admin tokens): impact and launch readiness.

Both read the impact store, the projection and (readiness) the log, off the
event loop. See `billhook.api.impact` and `billhook.api.launch`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billhook.api import schemas
from billhook.api.auth import TokenGate
from billhook.api.bodies import invalid
from billhook.api.diagnose import Diagnosis, diagnose
from billhook.api.impact import impact_report
from billhook.api.launch import launch_report
from billhook.config import Settings
from billhook.log.backend import Log
from billhook.projections.impact import ImpactStore
from billhook.projections.store import ProjectionStore

# The impact window when `?days` is not given.
DEFAULT_DAYS = 30


class AdminReports:
    """`GET /v1/admin/impact?days=N` and `GET /v1/admin/readiness`."""

    def __init__(
        self,
        settings: Settings,
        store: ProjectionStore,
        log: Log,
        impact: ImpactStore,
        *,
        now: Callable[[], datetime],
        retention_days: int,
    ) -> None:
        self._settings = settings
        self._store = store
        self._log = log
        self._impact = impact
        self._now = now
        self._retention_days = retention_days
        self._gate = TokenGate(settings.auth)

    @property
    def routes(self) -> list[Route]:
        """Relative to `/v1`."""
        return [
            Route("/admin/impact", self.impact, methods=["GET"]),
            Route("/admin/readiness", self.readiness, methods=["GET"]),
        ]

    def days(self, raw: str | None) -> int:
        """`?days=N`: 1 to the retention; DEFAULT_DAYS (at most the retention) without it."""
        if raw is None:
            return min(DEFAULT_DAYS, self._retention_days)
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self._retention_days:
            raise invalid(f"days must be a whole number from 1 to {self._retention_days}")
        return int(raw)

    def impact_answer(self, days: int) -> schemas.Impact:
        return impact_report(self._impact, self._store, self._settings, days=days, now=self._now())

    def readiness_answer(self) -> schemas.LaunchReport:
        return launch_report(
            self._settings,
            self._log,
            self._store,
            self._impact,
            now=self._now(),
            window_days=self._retention_days,
        )

    def log_head(self) -> int:
        """The log's last seq."""
        return self._log.head_seq()

    def diagnosis(self, workspace: str) -> Diagnosis:
        """The support report on `workspace` (billhook.api.diagnose)."""
        return diagnose(
            workspace, self._settings, self._log, self._store, self._impact, now=self._now()
        )

    async def impact(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        days = self.days(request.query_params.get("days"))
        return schemas.respond(await run_in_threadpool(self.impact_answer, days))

    async def readiness(self, request: Request) -> Response:
        self._gate.require(request, admin=True)
        return schemas.respond(await run_in_threadpool(self.readiness_answer))
