"""A service that receives billhook's entitlement webhooks, for tests, benchmarks and trials.

It verifies every request with the `standardwebhooks` package against each of
its secrets (all must verify), records what it accepted, and answers what
its `answer` function says: a status, or a status and headers (`Retry-After`),
after an optional delay (to make billhook's attempt time out).

    sink = WebhookSink(["whsec_…"])
    with serve_in_thread(sink.app) as url:
        ...  # point an [[outbound.endpoints]] at f"{url}/hooks"
        sink.wait_for(lambda got: len(got) >= 3, timeout_s=10)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# How often `wait_for` looks again.
POLL_S = 0.01


@dataclass(frozen=True)
class Received:
    """One verified request: its headers' id and time, its body, what was answered."""

    webhook_id: str
    timestamp: int
    signature: str
    body: dict[str, Any]
    status: int

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def workspace(self) -> str:
        return str(self.body["data"]["workspace_id"])

    @property
    def cursor(self) -> str:
        return str(self.body["data"]["cursor"])


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class WebhookSink:
    """A Starlette app at `/hooks` that verifies, records and answers."""

    def __init__(
        self,
        secrets: Sequence[str],
        answer: Callable[[Received], Answer] | None = None,
    ) -> None:
        """`answer` sees each verified request (with status 0) and says what to answer."""
        self._verifiers = [Webhook(secret) for secret in secrets]
        self._answer = answer or (lambda received: Answer())
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self.rejected = 0
        self.raw: list[bytes] = []
        self.app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])

    def trust(self, secrets: Sequence[str]) -> None:
        """Verify from now on with these secrets (every one must verify)."""
        self._verifiers = [Webhook(secret) for secret in secrets]

    async def _hook(self, request: Request) -> Response:
        content = await request.body()
        headers = dict(request.headers)
        try:
            for verifier in self._verifiers:
                verifier.verify(content, headers)
        except WebhookVerificationError:
            with self._lock:
                self.rejected += 1
            return Response(status_code=400)
        seen = Received(
            webhook_id=headers["webhook-id"],
            timestamp=int(headers["webhook-timestamp"]),
            signature=headers["webhook-signature"],
            body=orjson.loads(content),
            status=0,
        )
        answer = self._answer(seen)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        with self._lock:
            self.raw.append(content)
            self.received.append(
                Received(seen.webhook_id, seen.timestamp, seen.signature, seen.body, answer.status)
            )
        return Response(status_code=answer.status, headers=answer.headers)

    def delivered(self) -> list[Received]:
        """The requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.received if r.delivered]

    def attempts(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, done: Callable[[list[Received]], bool], timeout_s: float) -> None:
        """Until `done(delivered())`; raises TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not done(self.delivered()):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the sink got {len(self.delivered())} deliveries"
                    f" ({len(self.attempts())} attempts, {self.rejected} rejected)"
                )
            time.sleep(POLL_S)
