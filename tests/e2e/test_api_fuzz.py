"""Fuzzing the whole HTTP surface from its own `/openapi.json` (schemathesis).

Every described operation, webhooks and ops included, gets generated
parameters and bodies, sent with an admin token, a read token and no token to
one real server. Each answer must be one the document describes (status,
content type, body schema), every error carries `error` and `detail`, and no
answer is a 5xx other than `503 provider_not_configured`: the fuzzed server has
no provider API credentials, so refresh legitimately says so (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from billhook.api.app import create_app
from billhook.api.openapi import openapi_document
from billhook.config import ENFORCEMENT_MODES, SEAT_ACTION, Settings
from billhook.log.sqlite import EventLog
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, make_settings
from tests.contract import Contract, contract_hook

# Generated cases per operation and token: ~17 operations x 3 tokens stay within ~40 s.
EXAMPLES = 20
# The only 5xx the fuzzed setup may answer, per error code: no provider API is configured.
EXPECTED_5XX = {(503, "provider_not_configured")}
TOKENS = {"admin": ADMIN_TOKEN, "read": READ_TOKEN, "none": None}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def fuzz_settings(data_dir: Path) -> Settings:
    """The fuzzed deployment: bodies capped at 4 KiB, no prices or products mapped."""
    return make_settings(
        data_dir, max_body_bytes=4096, stripe={"prices": {}}, polar={"products": {}}
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = fuzz_settings(tmp_path_factory.mktemp("api-fuzz") / "data")
    log = EventLog(cfg.events_path)
    with serve_in_thread(create_app(cfg, log=log)) as url:
        yield url
    log.close()


@pytest.fixture(scope="module")
def contract(base_url: str) -> Contract:
    served = Contract.of_server(base_url)
    assert served.document == DOCUMENT
    return served


# The document the fuzzed server serves (checked in `contract`), loaded at collection so
# each operation is a test of its own.
DOCUMENT = openapi_document(fuzz_settings(Path("unused")))
# The change feed waits by design (a stream that stays open, a long poll of up to 30 s):
# its parameters and answers are covered by tests/api/test_changes.py instead.
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path_regex=r"^/v1/changes")
# Bodies and parameters that fit the document, and ones that break it (which must be 4xx).
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module", params=list(TOKENS))
def auth(request: pytest.FixtureRequest) -> dict[str, str]:
    """An admin token, a read token, or none: each operation is fuzzed with all three."""
    secret = TOKENS[request.param]
    return {"Authorization": f"Bearer {secret}"} if secret else {}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_described(
    case: schemathesis.Case, auth: dict[str, str], base_url: str, contract: Contract
) -> None:
    response = case.call(base_url=base_url, headers=auth, timeout=10)
    method = case.method.upper()
    path = unquote(urlsplit(response.request.url).path)
    status = response.status_code
    # Schemathesis keeps headers with lowercase names and list values.
    content_type = response.headers.get("content-type", [""])[0]
    contract.check_answer(method, path, status, content_type, response.content)
    if status >= 400 and content_type.startswith("application/json"):
        body = response.json()
        assert isinstance(body["error"], str), body
        assert isinstance(body["detail"], str), body
        assert body["detail"], body
        if status >= 500:
            assert (status, body["error"]) in EXPECTED_5XX, (method, path, body)
    else:
        assert status < 500, (method, path, status)


# Times at the edges of what Python represents, with offsets that push them past.
EDGE_TIMES = st.datetimes(
    min_value=datetime.min,
    max_value=datetime.max,
    timezones=st.sampled_from([UTC, *(timezone(timedelta(hours=h)) for h in (-23, -10, 1, 14))]),
).map(datetime.isoformat)
# Seqs far past the log, up to past SQLite's 64-bit integers and Python's digit limit.
EDGE_SEQS = st.integers(min_value=0, max_value=10**30).map(str) | st.just("9" * 5000)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(as_of=EDGE_SEQS | EDGE_TIMES | st.text(max_size=40))
def test_as_of_edges_are_answered(base_url: str, contract: Contract, as_of: str) -> None:
    """Schema-derived text rarely reaches a 20-digit seq or year 1 at +01:00: aim there."""
    with httpx.Client(base_url=base_url, event_hooks={"response": [contract_hook(contract)]}) as c:
        response = c.get("/v1/workspaces/ws_1/entitlements", params={"as_of": as_of}, headers=READ)
    assert response.status_code in (200, 400), response.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expires_at=EDGE_TIMES | st.text(max_size=40))
def test_override_expiry_edges_are_answered(
    base_url: str, contract: Contract, expires_at: str
) -> None:
    body = {
        "workspace_id": "ws_edge",
        "kind": "manual_pilot",
        "tier": "team",
        "expires_at": expires_at,
        "reason": "fuzz",
        "actor": "fuzz",
    }
    with httpx.Client(base_url=base_url, event_hooks={"response": [contract_hook(contract)]}) as c:
        response = c.post("/v1/admin/overrides", json=body, headers=ADMIN)
    assert response.status_code in (201, 400), response.text


ACTIONS = sorted({f for fs in fuzz_settings(Path("unused")).tiers.values() for f in fs})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=st.sampled_from([*ACTIONS, SEAT_ACTION]) | st.text(max_size=20),
    seats=st.none()
    | st.integers(min_value=-5, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    mode=st.sampled_from(ENFORCEMENT_MODES),
)
def test_check_decisions_are_described(
    base_url: str, contract: Contract, action: str, seats: object, mode: str
) -> None:
    """Schema-derived bodies mostly say `seats_in_use: 0`: every mode, any seat count here."""
    hooks = {"response": [contract_hook(contract)]}
    with httpx.Client(base_url=base_url, event_hooks=hooks) as c:
        body = {"mode": mode, "approved_by": "fuzz", "reason": "fuzz"}
        assert c.put("/v1/admin/enforcement", json=body, headers=ADMIN).status_code == 200
        body = {"action": action, "seats_in_use": seats}
        response = c.post("/v1/workspaces/ws_1/check", json=body, headers=READ)
    assert response.status_code in (200, 400, 402), response.text
