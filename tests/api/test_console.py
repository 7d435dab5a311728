"""The operator console over HTTP (SPEC §6c): sessions, CSRF, pages, writes and privacy.

The same flows in a real browser are in test_console_browser.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from billhook.api.app import create_app
from billhook.api.console.session import COOKIE, Signer, derive_key
from billhook.cli.main import main
from billhook.config import Secret, Settings
from billhook.log.sqlite import EventLog
from billhook.providers.billhook import ENFORCEMENT_SET, OVERRIDE_SET
from billhook.testing.polar import POLAR_PII
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, SECRETS, write_config
from billhook.testing.stripe import (
    STRIPE_PII,
    stripe_customer,
    stripe_event_body,
    stripe_headers,
    stripe_subscription,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Operator:
    """An httpx client that signs in to the console as a browser would."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10, follow_redirects=False)

    def csrf(self, path: str) -> str:
        page = self.http.get(path)
        assert page.status_code == 200, page.text
        found = _CSRF.search(page.text)
        assert found is not None, page.text
        return found.group(1)

    def sign_in(self, token: str = ADMIN_TOKEN) -> httpx.Response:
        csrf = self.csrf("/console/sign-in")
        return self.http.post("/console/sign-in", data={"csrf": csrf, "token": token})

    def post(self, path: str, form: dict[str, str], *, page: str) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf(page), **form})


@pytest.fixture
def base(settings: Settings, event_log: EventLog) -> Iterator[str]:
    with serve_in_thread(create_app(settings, log=event_log)) as url:
        yield url


@pytest.fixture
def operator(base: str) -> Iterator[Operator]:
    op = Operator(base)
    yield op
    op.http.close()


@pytest.fixture
def signed_in(operator: Operator) -> Operator:
    answer = operator.sign_in()
    assert answer.status_code == 303, answer.text
    return operator


def _deliver(base: str, event_type: str, obj: dict[str, object]) -> int:
    body = stripe_event_body(event_type, obj=obj)
    answer = httpx.post(f"{base}/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert answer.status_code == 200, answer.text
    seq: int = answer.json()["seq"]
    return seq


def _wait_projected(base: str, seq: int) -> None:
    deadline = time.monotonic() + 10
    url = f"{base}/v1/workspaces/ws_probe/entitlements"
    while httpx.get(url, headers=READ).json()["as_of_seq"] < seq:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _types(log: EventLog) -> list[str]:
    return [e.type for e in log.read()]


# -- signing in ---------------------------------------------------------------------------------


def test_pages_send_a_signed_out_visitor_to_the_sign_in_form(operator: Operator) -> None:
    for path in ("/console/", "/console/workspaces", "/console/enforcement", "/console/readiness"):
        answer = operator.http.get(path, follow_redirects=True)
        assert answer.url.path == "/console/sign-in", path
        assert 'name="token"' in answer.text


def test_an_admin_token_signs_in_with_a_strict_http_only_cookie(operator: Operator) -> None:
    answer = operator.sign_in()
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/workspaces"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    # Served over plain http here: Secure would make the browser drop it (docs/console.md).
    assert "Secure" not in cookie
    assert ADMIN_TOKEN not in cookie
    assert ADMIN_TOKEN not in answer.headers["location"]
    page = operator.http.get("/console/workspaces")
    assert page.status_code == 200
    assert "Sign out" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("token", [READ_TOKEN, "", "not-a-token", ADMIN_TOKEN + "x"])
def test_anything_but_an_admin_token_is_refused(operator: Operator, token: str) -> None:
    answer = operator.sign_in(token)
    assert answer.status_code == 403
    assert "not an admin token" in answer.text
    assert operator.http.get("/console/workspaces").status_code == 303


def test_signing_in_without_the_csrf_token_is_refused(operator: Operator) -> None:
    operator.csrf("/console/sign-in")  # the anonymous session cookie
    answer = operator.http.post("/console/sign-in", data={"token": ADMIN_TOKEN})
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert operator.http.get("/console/workspaces").status_code == 303


def test_a_forged_or_expired_cookie_is_no_session(base: str, settings: Settings) -> None:
    signer = Signer(derive_key(settings.auth.admin_tokens))
    other = Signer(derive_key((Secret("another-admin-token"),)))
    now = int(time.time())
    cases = {
        "forged": other.dump(other.new(admin=True, now=now)),
        "expired": signer.dump(signer.new(admin=True, now=now - 9 * 3600)),
        "anonymous": signer.dump(signer.new(admin=False, now=now)),
        "garbage": "x.y",
    }
    for name, value in cases.items():
        with httpx.Client(base_url=base, cookies={COOKIE: value}) as client:
            assert client.get("/console/workspaces").status_code == 303, name
    good = signer.dump(signer.new(admin=True, now=now))
    with httpx.Client(base_url=base, cookies={COOKIE: good}) as client:
        assert client.get("/console/workspaces").status_code == 200


def test_signing_out_ends_the_session(signed_in: Operator) -> None:
    answer = signed_in.post("/console/sign-out", {}, page="/console/workspaces")
    assert answer.status_code == 303
    assert signed_in.http.get("/console/workspaces").status_code == 303


# -- workspaces ---------------------------------------------------------------------------------


def test_the_workspace_card_is_the_api_answer_and_search_finds_it(
    signed_in: Operator, base: str
) -> None:
    meta = {"workspace_id": "ws_card"}
    _deliver(base, "customer.created", stripe_customer(id="cus_card", metadata=meta))
    sub = stripe_subscription(id="sub_card", customer="cus_card", metadata=meta)
    _wait_projected(base, _deliver(base, "customer.subscription.created", sub))
    api = httpx.get(f"{base}/v1/workspaces/ws_card/entitlements", headers=READ).json()
    # By id, and by the provider's customer id.
    found = signed_in.http.get("/console/workspaces", params={"q": "ws_card"})
    assert found.status_code == 303
    assert found.headers["location"] == "/console/workspaces/ws_card"
    by_customer = signed_in.http.get("/console/workspaces", params={"q": "cus_card"})
    assert "/console/workspaces/ws_card" in by_customer.text
    assert "stripe customer" in by_customer.text
    page = signed_in.http.get("/console/workspaces/ws_card").text
    for field in ("tier", "source", "status", "next-action"):
        value = api[field.replace("-", "_")]
        assert f'id="card-{field}">{value}<' in page, field
    assert f'id="card-seats">{api["seats"]["purchased"]}<' in page
    for feature in api["features"]["included"]:
        assert f"<li>{feature}</li>" in page
    assert "sub_card" in page


def test_the_as_of_view_is_the_api_as_of_answer(signed_in: Operator, base: str) -> None:
    meta = {"workspace_id": "ws_t"}
    sub = stripe_subscription(id="sub_t", customer="cus_t", metadata=meta)
    first = _deliver(base, "customer.subscription.created", sub)
    canceled = stripe_subscription(id="sub_t", customer="cus_t", metadata=meta, status="canceled")
    _wait_projected(base, _deliver(base, "customer.subscription.deleted", canceled))
    then = httpx.get(
        f"{base}/v1/workspaces/ws_t/entitlements", params={"as_of": first}, headers=READ
    ).json()
    page = signed_in.http.get("/console/workspaces/ws_t", params={"as_of": str(first)}).text
    assert f'id="card-tier">{then["tier"]}<' in page
    assert f'id="card-status">{then["status"]}<' in page
    assert f'id="card-as-of-seq">{then["as_of_seq"]}<' in page
    assert f'href="/console/workspaces/ws_t?as_of={first}"' in page
    bad = signed_in.http.get("/console/workspaces/ws_t", params={"as_of": "yesterday"})
    assert bad.status_code == 400
    assert "Traceback" not in bad.text


def test_an_override_set_and_revoked_in_the_console_is_an_operator_event(
    signed_in: Operator, event_log: EventLog
) -> None:
    page = "/console/workspaces/ws_o"
    answer = signed_in.post(
        f"{page}/overrides",
        {
            "kind": "manual_pilot",
            "tier": "team",
            "reason": "pilot",
            "actor": "ops",
            "expires_at": "",
        },
        page=page,
    )
    assert answer.status_code == 303, answer.text
    card = signed_in.http.get(page).text
    assert 'id="card-tier">team<' in card
    assert 'id="card-source">manual_pilot<' in card
    assert _types(event_log)[-1] == OVERRIDE_SET
    bad = signed_in.post(
        f"{page}/overrides",
        {"kind": "manual_pilot", "tier": "platinum", "reason": "x", "actor": "ops"},
        page=page,
    )
    assert bad.status_code == 400
    assert "tier must be one of" in bad.text
    revoked = signed_in.post(
        f"{page}/overrides/manual_pilot/revoke", {"reason": "over", "actor": "ops"}, page=page
    )
    assert revoked.status_code == 303
    assert 'id="card-tier">solo<' in signed_in.http.get(page).text
    again = signed_in.post(
        f"{page}/overrides/manual_pilot/revoke", {"reason": "over", "actor": "ops"}, page=page
    )
    assert again.status_code == 400


def test_a_form_without_its_csrf_token_changes_nothing(
    signed_in: Operator, event_log: EventLog
) -> None:
    before = _types(event_log)
    forms = {
        "/console/workspaces/ws_c/overrides": {
            "kind": "manual_pilot",
            "tier": "team",
            "reason": "x",
            "actor": "y",
        },
        "/console/enforcement": {
            "mode": "enforce",
            "approved_by": "a",
            "reason": "b",
            "step": "confirm",
        },
    }
    for path, form in forms.items():
        for csrf in (None, "wrong"):
            data = form if csrf is None else {**form, "csrf": csrf}
            answer = signed_in.http.post(path, data=data)
            assert answer.status_code == 403, path
            assert "CSRF" in answer.text
    assert _types(event_log) == before


def test_a_form_posted_without_a_session_changes_nothing(
    operator: Operator, event_log: EventLog
) -> None:
    before = _types(event_log)
    answer = operator.http.post(
        "/console/enforcement",
        data={"mode": "enforce", "approved_by": "a", "reason": "b", "step": "confirm"},
    )
    assert answer.status_code == 403
    assert _types(event_log) == before


# -- enforcement ---------------------------------------------------------------------------------


def test_the_switch_needs_an_approval_and_shows_the_impact_first(
    signed_in: Operator, base: str, event_log: EventLog
) -> None:
    for _ in range(3):
        httpx.post(f"{base}/v1/workspaces/ws_i/check", json={"action": "sso"}, headers=READ)
    page = "/console/enforcement"
    for missing in ({"approved_by": ""}, {"reason": " "}):
        form = {"mode": "enforce", "approved_by": "ops-lead", "reason": "go", **missing}
        answer = signed_in.post(page, {**form, "step": "confirm"}, page=page)
        assert answer.status_code == 400
        assert 'id="mode">observe<' in answer.text
    assert ENFORCEMENT_SET not in _types(event_log)
    time.sleep(1.5)  # the impact counts are flushed every second
    review = signed_in.post(
        page,
        {"mode": "enforce", "approved_by": "ops-lead", "reason": "go", "step": "review"},
        page=page,
    )
    assert review.status_code == 200
    assert 'id="review"' in review.text
    assert "ws_i" in review.text
    assert "1 workspace(s) and 3 check(s)" in review.text
    assert ENFORCEMENT_SET not in _types(event_log)
    confirm = signed_in.post(
        page,
        {"mode": "enforce", "approved_by": "ops-lead", "reason": "go", "step": "confirm"},
        page=page,
    )
    assert confirm.status_code == 303
    assert 'id="mode">enforce<' in signed_in.http.get(page).text
    approval = [e for e in event_log.read() if e.type == ENFORCEMENT_SET]
    assert len(approval) == 1
    assert '"approved_by": "ops-lead"' in approval[0].payload


def test_quarantine_and_readiness_pages_render(signed_in: Operator) -> None:
    quarantine = signed_in.http.get("/console/quarantine")
    assert quarantine.status_code == 200
    assert "Nothing in quarantine" in quarantine.text
    readiness = signed_in.http.get("/console/readiness")
    assert readiness.status_code == 200
    assert 'data-gate="smoke"' in readiness.text
    assert "not ready" in readiness.text


# -- privacy ---------------------------------------------------------------------------------------


def test_no_page_or_report_carries_personal_data_tokens_or_secrets(
    signed_in: Operator, base: str, tmp_path: Path
) -> None:
    """A lifecycle whose payloads carry planted personal data: none of it shows anywhere."""
    meta = {"workspace_id": "ws_p"}
    _deliver(base, "customer.created", stripe_customer(id="cus_p", metadata=meta))
    sub = stripe_subscription(id="sub_p", customer="cus_p", metadata=meta)
    _deliver(base, "customer.subscription.created", sub)
    past_due = stripe_subscription(id="sub_p", customer="cus_p", metadata=meta, status="past_due")
    _wait_projected(base, _deliver(base, "customer.subscription.updated", past_due))
    for action in ("sso", "team_sharing"):
        httpx.post(f"{base}/v1/workspaces/ws_p/check", json={"action": action}, headers=READ)
    time.sleep(1.5)
    pages = [
        "/console/workspaces",
        "/console/workspaces?q=cus_p",
        "/console/workspaces/ws_p",
        "/console/workspaces/ws_p?as_of=2",
        "/console/workspaces/ws_p/diagnose",
        "/console/enforcement",
        "/console/quarantine",
        "/console/readiness",
        "/console/sign-in",
    ]
    texts = [signed_in.http.get(p).text for p in pages]
    texts += [
        httpx.get(f"{base}/v1/admin/impact", headers=ADMIN).text,
        httpx.get(f"{base}/v1/admin/readiness", headers=ADMIN).text,
    ]
    # The CLI's reports of the same deployment (its config names the same data_dir).
    config = write_config(tmp_path)
    for command in (["launch", "status"], ["enforcement", "impact"]):
        for extra in ([], ["--json"]):
            done = CliRunner().invoke(main, [*command, "--config", str(config), *extra])
            assert done.exit_code in (0, 1), done.output
            texts.append(done.output)
    assert "ws_p" in texts[2]
    assert "ws_p" in texts[-1]
    planted = (*STRIPE_PII, *POLAR_PII, *SECRETS, ADMIN_TOKEN, READ_TOKEN)
    for text in texts:
        for value in planted:
            assert value not in text
