"""Bearer tokens on every `/v1` route (SPEC §6), enumerated from the app's routing table.

A route added later is covered without editing this file: its scope comes from
the `x-billhook-scope` its description carries in `/openapi.json`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

from billhook.api.app import create_app
from billhook.api.auth import TokenGate
from billhook.api.openapi import SCOPE_FIELD, openapi_document
from billhook.config import AuthSettings, Secret, Settings
from billhook.errors import ApiError
from billhook.log.sqlite import EventLog
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import make_settings
from tests.contract import contract_client

READ_TOKENS = ("read-token-one-0123456789", "read-token-two-0123456789")
ADMIN_TOKENS = ("admin-token-one-0123456789", "admin-token-two-0123456789")
# Sample values for the path parameters of `/v1` routes.
PATH_VALUES = {
    "workspace_id": "ws_1",
    "kind": "manual_pilot",
    "endpoint_id": "ep_0123456789abcdef",
    "delivery_id": "1",
}
# Authorization headers that must all be refused with 401.
REFUSED = {
    "missing": None,
    "wrong token": "Bearer not-a-configured-token",
    "empty token": "Bearer",
    "no scheme": READ_TOKENS[0],
    "wrong scheme": f"Basic {ADMIN_TOKENS[0]}",
    "token prefix": f"Bearer {ADMIN_TOKENS[0][:-1]}",
    "token with more": f"Bearer {ADMIN_TOKENS[0]}0",
}


def token_settings(data_dir: Path) -> Settings:
    """A deployment answering two read and two admin tokens."""
    auth = {"api_tokens": list(READ_TOKENS), "admin_tokens": list(ADMIN_TOKENS)}
    return make_settings(data_dir, stripe=None, polar=None, auth=auth)


def v1_routes(app: Starlette, settings: Settings) -> list[tuple[str, str, str]]:
    """(method, concrete path, scope) for every route under the app's `/v1` mount."""
    document = openapi_document(settings)
    mounts = [r for r in app.routes if isinstance(r, Mount) and r.path == "/v1"]
    assert len(mounts) == 1
    found = []
    for route in mounts[0].routes:
        assert isinstance(route, Route)
        template = "/v1" + route.path_format
        path = template
        for name, value in PATH_VALUES.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"no sample value for a parameter of {template}"
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation = document["paths"][template][method.lower()]
            found.append((method, path, operation[SCOPE_FIELD]))
    return found


@dataclass
class Served:
    client: httpx.Client
    routes: list[tuple[str, str, str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = token_settings(tmp_path_factory.mktemp("tokens") / "data")
    log = EventLog(settings.events_path)
    app = create_app(settings, log=log)
    with serve_in_thread(app) as url, contract_client(url) as client:
        yield Served(client, v1_routes(app, settings))
    log.close()


@dataclass(frozen=True)
class Answer:
    status_code: int
    error: str | None


def _call(client: httpx.Client, method: str, path: str, header: str | None) -> Answer:
    """The status and `error` of one call; a stream (the change feed's) is left at its
    headers, since it stays open by design."""
    headers = {"Authorization": header} if header is not None else {}
    if path.endswith("/stream"):
        # Not through the contract client, whose hook reads every answer to its end.
        with (
            httpx.Client(base_url=client.base_url, timeout=10) as plain,
            plain.stream(method, path, headers=headers) as response,
        ):
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                return Answer(response.status_code, None)
            body = json.loads(response.read())
    else:
        response = client.request(method, path, headers=headers, json={})
        body = response.json()
    return Answer(response.status_code, body.get("error") if isinstance(body, dict) else None)


def _error(answer: Answer) -> str | None:
    return answer.error


def test_every_v1_route_refuses_a_missing_or_wrong_token(served: Served) -> None:
    assert len(served.routes) >= 8
    for method, path, _ in served.routes:
        for case, header in REFUSED.items():
            response = _call(served.client, method, path, header)
            outcome = (response.status_code, _error(response))
            assert outcome == (401, "unauthorized"), (method, path, case)


def test_every_v1_route_admits_its_scope(served: Served) -> None:
    """Admin tokens pass everywhere; read tokens pass read routes and get 403 on admin ones."""
    for method, path, scope in served.routes:
        for token in ADMIN_TOKENS:
            response = _call(served.client, method, path, f"Bearer {token}")
            assert _error(response) not in ("unauthorized", "forbidden"), (method, path)
        for token in READ_TOKENS:
            # The scheme is case-insensitive (RFC 9110).
            response = _call(served.client, method, path, f"bearer {token}")
            outcome = (response.status_code, _error(response))
            if scope == "admin":
                assert outcome == (403, "forbidden"), (method, path)
            else:
                assert outcome[1] not in ("unauthorized", "forbidden"), (method, path)


def _request(authorization: str) -> Request:
    return Request({"type": "http", "headers": [(b"authorization", authorization.encode())]})


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every pair `hmac.compare_digest` is called with, in order."""
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


@pytest.mark.parametrize(
    "presented", [READ_TOKENS[0], READ_TOKENS[-1], ADMIN_TOKENS[0], ADMIN_TOKENS[-1], "wrong"]
)
def test_every_token_is_compared_in_constant_time(
    compared: list[tuple[bytes, bytes]], presented: str
) -> None:
    """Whichever token matches, and where it sits, the gate compares against every one
    with `hmac.compare_digest`: how long it takes says nothing about which matched."""
    gate = TokenGate(
        AuthSettings(
            api_tokens=tuple(map(Secret, READ_TOKENS)),
            admin_tokens=tuple(map(Secret, ADMIN_TOKENS)),
        )
    )
    every = {t.encode() for t in (*READ_TOKENS, *ADMIN_TOKENS)}
    try:
        gate.require(_request(f"Bearer {presented}"), admin=True)
    except ApiError as e:
        refused: int | None = e.status
    else:
        refused = None
    read_check = compared[: len(every)]
    assert {configured for _, configured in read_check} == every
    assert all(given == presented.encode() for given, _ in compared)
    if refused == 401:  # unknown: refused after comparing against every token, no further
        assert len(compared) == len(every)
    else:  # known: then compared against every admin token too
        admin_check = compared[len(every) :]
        assert {configured for _, configured in admin_check} == {t.encode() for t in ADMIN_TOKENS}
        assert len(admin_check) == len(ADMIN_TOKENS)
        assert refused == (None if presented in ADMIN_TOKENS else 403)
