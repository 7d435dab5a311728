"""`GET /openapi.json`: valid OpenAPI 3.1, complete, and strict enough to catch a drift."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from billhook.api import schemas
from billhook.api.app import create_app
from billhook.api.openapi import SCOPE_FIELD, openapi_document
from billhook.config import Settings, parse_settings
from billhook.testing.servers import serve_in_thread
from tests.contract import Contract, contract_client

# Methods Starlette adds by itself (HEAD beside GET), which the document does not repeat.
IMPLICIT_METHODS = {"HEAD"}


def app_routes(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path template) of every route of the app's routing table, mounts walked;
    templates without their convertors (`{workspace_id:segment}` is `{workspace_id}`)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= app_routes(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            methods = (route.methods or set()) - IMPLICIT_METHODS
            found |= {(method, prefix + route.path_format) for method in methods}
    return found


def described_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_served_without_a_token_and_valid_openapi_3_1(
    client: httpx.Client, settings: Settings
) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document == openapi_document(settings)
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_route_is_described_and_every_described_route_exists(settings: Settings) -> None:
    app = create_app(settings)
    with serve_in_thread(app):  # its lifespan closes what the app opened
        served = app_routes(list(app.routes))
    described = described_routes(openapi_document(settings))
    assert served - described == set(), "routes missing from worker/openapi.py"
    assert described - served == set(), "described routes the app does not serve"


def test_every_v1_route_states_its_scope_and_token_errors(settings: Settings) -> None:
    document = openapi_document(settings)
    for method, path in described_routes(document):
        operation = document["paths"][path][method.lower()]
        if not path.startswith("/v1/"):
            assert SCOPE_FIELD not in operation, path
            continue
        assert operation[SCOPE_FIELD] in ("read", "admin"), path
        assert operation["security"] == [{"bearer": []}], path
        assert "401" in operation["responses"], path
        if operation[SCOPE_FIELD] == "admin":
            assert "403" in operation["responses"], path


def test_every_error_answer_has_error_and_detail(settings: Settings) -> None:
    """Each 4xx/5xx JSON answer the document allows carries `error` and a `detail`."""
    contract = Contract(openapi_document(settings))
    for method, path in described_routes(contract.document):
        operation = contract.document["paths"][path][method.lower()]
        for status, answer in operation["responses"].items():
            if int(status) < 400 or "application/json" not in answer.get("content", {}):
                continue
            url = path.replace("{workspace_id}", "ws_1").replace("{kind}", "manual_pilot")
            missing = httpx.Response(
                int(status), json={}, request=httpx.Request(method, f"http://x{url}")
            )
            with pytest.raises(AssertionError, match="required property"):
                contract.check(missing)


@pytest.fixture
def drifted(settings: Settings) -> Iterator[str]:
    """A server that serves the real document but answers as a buggy billhook would."""
    document = openapi_document(settings)

    async def spec(request: Request) -> Response:
        return JSONResponse(document)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "uptime_s": 3})  # a field nobody described

    async def history(request: Request) -> Response:
        return JSONResponse({"error": "internal_error", "detail": "boom"}, status_code=500)

    async def check(request: Request) -> Response:
        # A documented status whose error code is not one the route lists.
        return JSONResponse({"error": "billing_required", "detail": "x"}, status_code=400)

    app = Starlette(
        routes=[
            Route("/openapi.json", spec),
            Route("/healthz", health),
            Route("/v1/workspaces/{workspace_id}/history", history),
            Route("/v1/workspaces/{workspace_id}/check", check, methods=["POST"]),
            Route("/v1/undescribed", health),
        ]
    )
    with serve_in_thread(app) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path", "why"),
    [
        ("GET", "/healthz", "uptime_s"),
        ("GET", "/v1/workspaces/ws_1/history", "undocumented status"),
        ("POST", "/v1/workspaces/ws_1/check", "billing_required"),
        ("GET", "/v1/undescribed", "not described"),
    ],
)
def test_the_contract_catches_drift(drifted: str, method: str, path: str, why: str) -> None:
    """An undescribed field, a 500, a wrong error code or route: the request call fails."""
    with contract_client(drifted) as client, pytest.raises(AssertionError, match=why):
        client.request(method, path)


def _enums(node: object) -> list[list[object]]:
    """Every `enum` of a schema, nested ones included."""
    if isinstance(node, dict):
        found = [node["enum"]] if "enum" in node else []
        return found + [e for value in node.values() for e in _enums(value)]
    if isinstance(node, list):
        return [e for value in node for e in _enums(value)]
    return []


def test_tiers_and_features_are_strings_with_the_configured_examples() -> None:
    """Issue 12: tiers and features are the operator's, so no enum closes them; the
    configured values are the `examples` of open strings, requests and answers alike."""
    settings = parse_settings({"tiers": {"free": ["reads"], "pro": ["sso", "ai"]}}, environ={})
    components = openapi_document(settings)["components"]["schemas"]
    tiers, features = ["free", "pro"], ["ai", "reads", "sso"]
    tier = components["Entitlement"]["properties"]["tier"]
    assert (tier["type"], tier["examples"]) == ("string", tiers)
    for request in ("CheckoutRequest", "OverrideRequest"):
        assert components[request]["properties"]["tier"]["examples"] == tiers
    included = components["Features"]["properties"]["included"]["items"]
    assert (included["type"], included["examples"]) == ("string", features)
    action = components["CheckRequest"]["properties"]["action"]
    assert action["examples"] == [*features, "invite_member"]
    configured = {*tiers, *features}
    assert [e for e in _enums(components) if configured & set(map(str, e))] == []


def test_an_answer_naming_a_tier_added_later_keeps_its_contract(settings: Settings) -> None:
    """A client generated before the operator added `platinum` still accepts answers naming
    it; a field of the wrong type still breaks the contract."""
    contract = Contract(openapi_document(settings))
    answer = schemas.Entitlement(
        workspace_id="ws_1",
        tier="platinum",
        source="manual_pilot",
        status="active",
        attention=None,
        next_action="none",
        features=schemas.Features(included=("warp_drive",), unavailable=()),
        seats=None,
        subscriptions=(),
        overrides=(),
        problems=(),
        enforcement="observe",
        as_of_seq=7,
    )
    path = "/v1/workspaces/ws_1/entitlements"
    contract.check_answer("GET", path, 200, "application/json", schemas.encode(answer))
    wrong = schemas.encode(answer).replace(b'"platinum"', b"5")
    with pytest.raises(AssertionError, match="is not of type 'string'"):
        contract.check_answer("GET", path, 200, "application/json", wrong)
