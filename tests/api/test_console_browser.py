"""The console in a real browser: Playwright driving Debian's Chromium against a real server.

`make test` installs Chromium with apt-get when /usr/bin/chromium is missing
(Playwright cannot download its own browsers here). The test takes the
screenshots the README shows; they go to a temporary folder, or to the folder
`BILLHOOK_SCREENSHOTS` names (`BILLHOOK_SCREENSHOTS=docs/img make test` refreshes
the README's), so a test run leaves the work tree as it found it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.providers.billhook import ENFORCEMENT_SET
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN
from billhook.testing.stripe import (
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)
from tests.support import unavailable

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("BILLHOOK_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / "billhook-console-screenshots"
)
READ = {"Authorization": f"Bearer {READ_TOKEN}"}


@pytest.fixture
def base(settings: Settings, event_log: EventLog) -> Iterator[str]:
    with serve_in_thread(create_app(settings, log=event_log)) as url:
        yield url


@pytest.fixture
def page(base: str) -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    with sync_api.sync_playwright() as p:
        # As root (CI, containers) Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def _deliver(base: str, event_type: str, obj: dict[str, object]) -> int:
    body = stripe_event_body(event_type, obj=obj)
    answer = httpx.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text
    seq: int = answer.json()["seq"]
    return seq


def _entitlement(base: str, workspace: str, **params: str) -> dict[str, Any]:
    url = f"{base}/v1/workspaces/{workspace}/entitlements"
    answer: dict[str, Any] = httpx.get(url, params=params, headers=READ).json()
    return answer


def _seed(base: str) -> tuple[int, int]:
    """ws_browser: a customer, a team subscription, then its seats raised; the seqs of the
    subscription's two events."""
    meta = {"workspace_id": "ws_browser"}
    _deliver(base, "customer.created", stripe_customer(id="cus_browser", metadata=meta))
    sub = stripe_subscription(id="sub_browser", customer="cus_browser", metadata=meta)
    first = _deliver(base, "customer.subscription.created", sub)
    more = stripe_subscription(
        id="sub_browser",
        customer="cus_browser",
        metadata=meta,
        items=(("price_team_monthly", 9),),
    )
    last = _deliver(base, "customer.subscription.updated", more)
    deadline = time.monotonic() + 10
    while _entitlement(base, "ws_browser")["as_of_seq"] < last:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for action in ("sso", "sso", "scim"):
        httpx.post(f"{base}/v1/workspaces/ws_browser/check", json={"action": action}, headers=READ)
    httpx.post(f"{base}/v1/workspaces/ws_free/check", json={"action": "team_sharing"}, headers=READ)
    return first, last


def _card(page: Any) -> dict[str, str]:
    fields = ("tier", "source", "status", "next-action", "seats", "as-of-seq")
    return {f: page.inner_text(f"#card-{f}") for f in fields}


def _api_card(answer: dict[str, Any]) -> dict[str, str]:
    seats = answer["seats"]
    return {
        "tier": answer["tier"],
        "source": answer["source"],
        "status": answer["status"],
        "next-action": answer["next_action"],
        "seats": str(seats["purchased"]) if seats else "no limit",
        "as-of-seq": str(answer["as_of_seq"]),
    }


def test_an_operator_signs_in_reads_a_workspace_and_switches_enforcement_on(
    page: Any, base: str, event_log: EventLog
) -> None:
    first, _ = _seed(base)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    # A read token cannot sign in; an admin token can.
    page.goto("/console/")
    assert page.url.endswith("/console/sign-in")
    page.fill("#token", READ_TOKEN)
    page.click("#sign-in")
    assert "not an admin token" in page.inner_text("#error")
    assert page.url.endswith("/console/sign-in")
    page.screenshot(path=str(SCREENSHOTS / "console-sign-in.png"))
    page.fill("#token", ADMIN_TOKEN)
    page.click("#sign-in")
    assert page.url.endswith("/console/workspaces")
    cookie = next(c for c in page.context.cookies() if c["name"] == "billhook_console")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    # Find the workspace; its card is the API's answer.
    page.fill("#q", "ws_browser")
    page.click("#search")
    assert page.url.endswith("/console/workspaces/ws_browser")
    assert _card(page) == _api_card(_entitlement(base, "ws_browser"))
    assert page.inner_text("#card-seats") == "9"
    page.screenshot(path=str(SCREENSHOTS / "console-workspace.png"), full_page=True)

    # The timeline's as-of view is the API's `?as_of=` answer.
    page.click(f'a.as-of-link[data-seq="{first}"]')
    assert page.inner_text("#as-of") == str(first)
    assert _card(page) == _api_card(_entitlement(base, "ws_browser", as_of=str(first)))
    assert page.inner_text("#card-seats") == "5"

    # An override set in the console changes the card.
    page.goto("/console/workspaces/ws_browser")
    page.select_option("#override-kind", "enterprise_contract")
    page.select_option("#override-tier", "enterprise")
    page.fill("#override-reason", "signed contract")
    page.fill("#override-actor", "support")
    page.click("#override-set")
    assert page.inner_text("#card-tier") == "enterprise"
    assert page.inner_text("#card-source") == "enterprise_contract"
    assert _card(page) == _api_card(_entitlement(base, "ws_browser"))

    # A form posted without its CSRF token is refused.
    page.eval_on_selector("#override-form input[name=csrf]", "e => e.remove()")
    page.fill("#override-reason", "no csrf")
    page.fill("#override-actor", "support")
    with page.expect_navigation():
        page.click("#override-set")
    assert "CSRF" in page.inner_text("#error")

    # The switch refuses without approved_by, shows the impact, then records the approval.
    time.sleep(1.5)  # the impact counts are flushed every second
    page.goto("/console/enforcement")
    assert page.inner_text("#mode") == "observe"
    assert "ws_free" in page.inner_text("#impact-workspaces")
    page.fill("#switch-reason", "launch review")
    page.click("#switch-review")
    assert "approved_by" in page.inner_text("#error")
    assert page.inner_text("#mode") == "observe"
    page.fill("#switch-approved-by", "ops-lead")
    page.fill("#switch-reason", "launch review")
    page.click("#switch-review")
    assert "would have been refused" in page.inner_text("#review-impact")
    page.screenshot(path=str(SCREENSHOTS / "console-enforcement.png"), full_page=True)
    assert ENFORCEMENT_SET not in [e.type for e in event_log.read()]
    page.click("#confirm")
    assert page.inner_text("#mode") == "enforce"
    approvals = [e for e in event_log.read() if e.type == ENFORCEMENT_SET]
    assert len(approvals) == 1
    assert '"approved_by": "ops-lead"' in approvals[0].payload
    assert _entitlement(base, "ws_browser")["enforcement"] == "enforce"

    page.goto("/console/readiness")
    assert page.inner_text('[data-gate="enforcement"] .mark') == "✓"
    page.screenshot(path=str(SCREENSHOTS / "console-readiness.png"), full_page=True)

    # No token ever travelled in a URL.
    assert ADMIN_TOKEN not in page.url
