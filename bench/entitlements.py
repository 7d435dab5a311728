"""What the read-side benchmarks share: a `billhook serve` with the API on, fed for real.

The server is configured like tests/projections/conftest.py (a read token, a
Stripe secret, a price map with team and enterprise prices) and fed through
its real webhook path: signed deliveries over HTTP, acknowledged with their
`seq`, then awaited in the entitlement API until `as_of_seq` (the projection
checkpoint the answer was read at) reaches them.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.subscriptions import PRICES, signed_headers
from bench.tools import HOST, BenchError

WEBHOOK_PATH = "/webhooks/stripe"
# The workspace whose answer carries `as_of_seq` to everybody who asks: no events about it.
PROBE_WORKSPACE = "ws_probe"
# Deliveries in flight at once while a benchmark feeds its server (not measured).
FEED_CONCURRENCY = 32
# How long a fed server may take to project everything it acknowledged.
PROJECT_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 30.0


def billhook_toml(data_dir: Path, *, secret: str, token: str) -> str:
    """A billhook.toml: its own data dir, the Stripe secret and prices, one read token."""
    # JSON string literals are valid TOML basic strings.
    lines = [
        "[billhook]",
        f"data_dir = {json.dumps(str(data_dir))}",
        "",
        "[stripe]",
        f"webhook_secrets = [{json.dumps(secret)}]",
        "",
        "[stripe.prices]",
        *(
            f'{price} = {{ tier = "{tier}", interval = "{interval}" }}'
            for price, (tier, interval) in PRICES.items()
        ),
        "",
        "[auth]",
        f"api_tokens = [{json.dumps(token)}]",
        "",
    ]
    return "\n".join(lines)


def billhook_command(config: Path, port: int) -> list[str]:
    """`billhook serve` as the benchmarks run it (warnings only)."""
    return [
        sys.executable,
        *("-m", "billhook", "serve", "--config", str(config)),
        *("--port", str(port), "--log-level", "warning"),
    ]


def minimal_command(port: int) -> list[str]:
    """bench/minimal_app.py, served with the settings of `billhook serve`."""
    return [sys.executable, "-m", "bench.minimal_app", "--port", str(port)]


def base_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def entitlements_path(workspace: str) -> str:
    return f"/v1/workspaces/{workspace}/entitlements"


async def _deliver(client: httpx.AsyncClient, body: str, secret: str) -> int:
    """Deliver one event, signed now; its `seq` once acknowledged."""
    response = await client.post(
        WEBHOOK_PATH, content=body.encode(), headers=signed_headers(body, secret)
    )
    if response.status_code != 200:
        raise BenchError(f"feeding: {WEBHOOK_PATH} answered {response.status_code}")
    seq: int = response.json()["seq"]
    return seq


async def _feed(url: str, bodies: Sequence[str], secret: str) -> int:
    limits = httpx.Limits(max_connections=FEED_CONCURRENCY)
    queue = iter(bodies)
    seqs: list[int] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for body in queue:
            seqs.append(await _deliver(client, body, secret))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=HTTP_TIMEOUT_S) as client:
        await asyncio.gather(*(worker(client) for _ in range(FEED_CONCURRENCY)))
    return max(seqs, default=0)


def feed(url: str, bodies: Sequence[str], secret: str) -> int:
    """Deliver every body through the webhook path (in order, a few at a time); the top seq."""
    try:
        return asyncio.run(_feed(url, bodies, secret))
    except httpx.HTTPError as e:
        raise BenchError(f"feeding the server failed: {e!r}") from None


def wait_projected(url: str, token: str, seq: int, timeout_s: float = PROJECT_TIMEOUT_S) -> float:
    """Poll GET entitlements until `as_of_seq` reaches `seq`; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    with httpx.Client(base_url=url, headers=bearer(token), timeout=HTTP_TIMEOUT_S) as client:
        while True:
            response = client.get(entitlements_path(PROBE_WORKSPACE))
            if response.status_code != 200:
                raise BenchError(f"GET entitlements answered {response.status_code}")
            if int(response.json()["as_of_seq"]) >= seq:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise BenchError(f"projections did not reach seq {seq} in {timeout_s:.0f} s")
            time.sleep(0.05)


async def _fetch_all(url: str, token: str, workspaces: Sequence[str]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=FEED_CONCURRENCY)
    answers: dict[str, Any] = {}
    queue = iter(workspaces)

    async def worker(client: httpx.AsyncClient) -> None:
        for workspace in queue:
            response = await client.get(entitlements_path(workspace))
            answers[workspace] = (
                response.json() if response.status_code == 200 else response.status_code
            )

    async with httpx.AsyncClient(
        base_url=url, headers=bearer(token), limits=limits, timeout=HTTP_TIMEOUT_S
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(FEED_CONCURRENCY)))
    return answers


def fetch_all(url: str, token: str, workspaces: Sequence[str]) -> dict[str, Any]:
    """GET entitlements of every workspace: its JSON answer, or the status when not 200."""
    try:
        return asyncio.run(_fetch_all(url, token, workspaces))
    except httpx.HTTPError as e:
        raise BenchError(f"reading entitlements failed: {e!r}") from None


def mismatch(answer: Any, expected: Mapping[str, Any]) -> str | None:
    """How an entitlements answer differs from the `expected` fields; None when it does not."""
    if not isinstance(answer, dict):
        return f"answered {answer}"
    for key, value in expected.items():
        if answer.get(key) != value:
            return f"{key} is {answer.get(key)!r}, expected {value!r}"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0 < q <= 100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]
