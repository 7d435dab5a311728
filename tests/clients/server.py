"""A real billhook the client tests stop and start again on the same data and port,
and what they do to it: deliver signed Stripe events, switch enforcement, ask it raw."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN
from billhook.testing.stripe import stripe_event_body, stripe_headers, stripe_subscription

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class CountingTransport(httpx.BaseTransport):
    """httpx's transport, counting the requests by (method, path)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, request.url.params.get("after")))
        return self._inner.handle_request(request)

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.endswith(suffix))

    def feed_afters(self) -> list[str | None]:
        return [after for _, path, after in self.requests if path == "/v1/changes"]

    def close(self) -> None:
        self._inner.close()


class BillhookServer:
    """billhook on loopback; `stop()` and `start()` again serve the same data on the same port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.url = ""
        self._stack: contextlib.ExitStack | None = None

    def start(self, port: int | None = None) -> str:
        """Serve on `port` (None: the port it had, or a free one the first time)."""
        self._stack = contextlib.ExitStack()
        url = self._stack.enter_context(
            serve_in_thread(create_app(self.settings), self.port if port is None else port)
        )
        if port is None:
            self.url, self.port = url, int(url.rsplit(":", 1)[1])
        return url

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    # -- doing things to it -----------------------------------------------------------------

    def deliver(self, event_type: str, obj: dict[str, Any], url: str | None = None) -> int:
        """A signed Stripe delivery; returns its seq once projected."""
        base = url or self.url
        body = stripe_event_body(event_type, obj=obj, created=int(time.time()))
        response = httpx.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
        assert response.status_code == 200, response.text
        seq: int = response.json()["seq"]
        deadline = time.monotonic() + 10
        while self.entitlements("ws_probe", base)["as_of_seq"] < seq:
            assert time.monotonic() < deadline, "projection did not catch up"
            time.sleep(0.01)
        return seq

    def subscribe(self, workspace: str, url: str | None = None, **fields: Any) -> int:
        """`workspace` gets a team subscription (5 seats)."""
        n = workspace.removeprefix("ws_")
        sub = stripe_subscription(
            id=f"sub_{n}", customer=f"cus_{n}", metadata={"workspace_id": workspace}, **fields
        )
        return self.deliver("customer.subscription.created", sub, url)

    def enforce(self, mode: str, url: str | None = None) -> int:
        body = {"mode": mode, "approved_by": "cfo", "reason": "rollout"}
        response = httpx.put(f"{url or self.url}/v1/admin/enforcement", json=body, headers=ADMIN)
        assert response.status_code == 200, response.text
        seq: int = response.json()["seq"]
        return seq

    def entitlements(self, workspace: str, url: str | None = None) -> dict[str, Any]:
        response = httpx.get(
            f"{url or self.url}/v1/workspaces/{workspace}/entitlements", headers=READ
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def head(self) -> str:
        """The feed's cursor now: a follower that reached it has seen every change so far."""
        response = httpx.get(f"{self.url}/v1/changes", params={"after": "now"}, headers=READ)
        assert response.status_code == 200, response.text
        cursor: str = response.json()["next"]
        return cursor

    def entitlements_body(self, workspace: str) -> bytes:
        url = f"{self.url}/v1/workspaces/{workspace}/entitlements"
        return httpx.get(url, headers=READ).content

    def check(self, workspace: str, action: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/workspaces/{workspace}/check", json={"action": action}, headers=READ
        )
