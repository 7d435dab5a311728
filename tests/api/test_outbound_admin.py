"""The outbound-webhook admin routes (SPEC §6b): endpoints added, listed, removed and rotated;
deliveries listed, shown and redelivered. Every answer is checked against `/openapi.json`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Router

from billhook.api.endpoints import OutboundAdmin
from billhook.api.errors import exception_handlers
from billhook.api.openapi import openapi_document
from billhook.config import Settings, is_whsec
from billhook.domain.records import EventRecord
from billhook.domain.times import iso_utc, to_us
from billhook.log.backend import Log, open_log
from billhook.log.sqlite import Appended
from billhook.outbound.store import (
    DELIVERED,
    FAILED,
    PENDING,
    NewDelivery,
    OutboxStore,
    Result,
    open_outbox,
)
from billhook.projections.backend import open_live
from billhook.projections.projector import catch_up
from billhook.projections.store import ProjectionStore
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, make_settings
from tests.contract import Contract, contract_hook

READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
# The configured endpoint of every deployment here, and its secret.
APP_SECRET = "whsec_" + base64.b64encode(b"configured-endpoint-key-0123456").decode()
OUTBOUND = {
    "endpoints": [{"id": "app", "url": "https://app.example/hook", "secrets": [APP_SECRET]}]
}
ADD = {"url": "https://crm.example/hooks?t=1", "actor": "ops@x", "reason": "crm sync"}
WHO = {"actor": "ops@x", "reason": "done"}


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Admin:
    """The routes mounted under `/v1` over real stores, and the stores themselves."""

    client: httpx.Client
    outbox: OutboxStore
    store: ProjectionStore
    settings: Settings
    clock: Clock

    def add(self, **body: Any) -> dict[str, Any]:
        response = self.client.post("/v1/admin/endpoints", json={**ADD, **body}, headers=ADMIN)
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def listed(self) -> dict[str, dict[str, Any]]:
        response = self.client.get("/v1/admin/endpoints", headers=ADMIN)
        assert response.status_code == 200, response.text
        return {e["id"]: e for e in response.json()}

    @property
    def now_us(self) -> int:
        return to_us(self.clock.at)


def _deploy(settings: Settings, clock: Clock) -> Iterator[Admin]:
    log: Log = open_log(settings)
    store = open_live(settings)
    outbox = open_outbox(settings)

    async def append(record: EventRecord) -> Appended:
        return log.append_batch([record])[0]

    async def wait_for(seq: int) -> None:
        catch_up(log, store)

    admin = OutboundAdmin(settings, store, outbox, append=append, wait_for=wait_for, now=clock)
    app = Starlette(
        routes=[Mount("/v1", app=Router(admin.routes, redirect_slashes=False))],
        exception_handlers=exception_handlers(),
    )
    hooks = {"response": [contract_hook(Contract(openapi_document(settings)))]}
    try:
        with (
            serve_in_thread(app) as url,
            httpx.Client(base_url=url, event_hooks=hooks, timeout=10) as client,
        ):
            yield Admin(client, outbox, store, settings, clock)
    finally:
        outbox.close()
        store.close()
        log.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    settings = make_settings(tmp_path / "data", sections={"outbound": OUTBOUND})
    yield from _deploy(settings, Clock(NOW))


def _error(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    detail: str = body["detail"]
    return detail


# -- tokens ---------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/admin/endpoints", ADD),
    ("GET", "/v1/admin/endpoints", None),
    ("DELETE", "/v1/admin/endpoints/ep_0123456789abcdef", WHO),
    ("POST", "/v1/admin/endpoints/ep_0123456789abcdef/secrets", {}),
    ("GET", "/v1/admin/deliveries", None),
    ("GET", "/v1/admin/deliveries/1", None),
    ("POST", "/v1/admin/deliveries/redeliver", {"ids": [1]}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_an_admin_token(
    admin: Admin, method: str, path: str, body: object
) -> None:
    none = admin.client.request(method, path, json=body)
    _error(none, 401, "unauthorized")
    read = admin.client.request(method, path, json=body, headers=READ)
    _error(read, 403, "forbidden")
    # Refused before anything was done.
    assert admin.store.endpoints() == []


# -- endpoints ------------------------------------------------------------------------------


def test_adding_an_endpoint_answers_its_secret_once_and_lists_it_without(admin: Admin) -> None:
    added = admin.add(workspaces=["ws_b", "ws_a"])
    assert added["id"].startswith("ep_")
    assert added["url"] == ADD["url"]
    assert added["workspaces"] == ["ws_b", "ws_a"]
    assert added["source"] == "api"
    assert added["seq"] >= 1
    assert is_whsec(added["secret"])
    # The secret is in the outbox store, the endpoint in the projection.
    assert admin.outbox.secrets(added["id"], admin.now_us) == [added["secret"]]
    assert [f.endpoint_id for f in admin.store.endpoints()] == [added["id"]]

    response = admin.client.get("/v1/admin/endpoints", headers=ADMIN)
    assert "whsec_" not in response.text
    listed = {e["id"]: e for e in response.json()}
    assert list(listed) == ["app", added["id"]]  # configured ones first
    assert listed[added["id"]] == {
        "id": added["id"],
        "url": ADD["url"],
        "workspaces": ["ws_a", "ws_b"],
        "source": "api",
        "status": "ok",
        "failing_since": None,
        "last_success_at": None,
        "pending": 0,
        "oldest_pending_age_s": None,
    }
    assert listed["app"]["source"] == "config"
    assert listed["app"]["workspaces"] == []


def test_two_endpoints_get_distinct_ids_and_secrets(admin: Admin) -> None:
    first, second = admin.add(), admin.add()
    assert first["id"] != second["id"]
    assert first["secret"] != second["secret"]


def test_a_configured_endpoint_is_changed_only_in_the_config(admin: Admin) -> None:
    removal = admin.client.request("DELETE", "/v1/admin/endpoints/app", json=WHO, headers=ADMIN)
    assert "config" in _error(removal, 409, "endpoint_configured")
    rotation = admin.client.post("/v1/admin/endpoints/app/secrets", json={}, headers=ADMIN)
    _error(rotation, 409, "endpoint_configured")
    assert admin.outbox.secrets("app", admin.now_us) == []
    assert "app" in admin.listed()


def test_removing_an_endpoint_appends_an_event_and_unlists_it(admin: Admin) -> None:
    kept, removed = admin.add(), admin.add()
    response = admin.client.request(
        "DELETE", f"/v1/admin/endpoints/{removed['id']}", json=WHO, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"id": removed["id"], "seq": removed["seq"] + 1}
    assert set(admin.listed()) == {"app", kept["id"]}
    assert [f.endpoint_id for f in admin.store.endpoints()] == [kept["id"]]
    # Its secret signs nothing any more.
    assert admin.outbox.secrets(removed["id"], admin.now_us) == []
    assert admin.outbox.secrets(kept["id"], admin.now_us) == [kept["secret"]]
    # Gone: a second removal, or a rotation, finds nothing.
    again = admin.client.request(
        "DELETE", f"/v1/admin/endpoints/{removed['id']}", json=WHO, headers=ADMIN
    )
    _error(again, 404, "not_found")
    rotation = admin.client.post(f"/v1/admin/endpoints/{removed['id']}/secrets", headers=ADMIN)
    _error(rotation, 404, "not_found")


def test_an_unknown_endpoint_is_not_found(admin: Admin) -> None:
    removal = admin.client.request("DELETE", "/v1/admin/endpoints/ep_nope", json=WHO, headers=ADMIN)
    _error(removal, 404, "not_found")
    _error(
        admin.client.post("/v1/admin/endpoints/ep_nope/secrets", headers=ADMIN), 404, "not_found"
    )


def test_a_removal_needs_an_actor_and_a_reason(admin: Admin) -> None:
    added = admin.add()
    response = admin.client.request(
        "DELETE", f"/v1/admin/endpoints/{added['id']}", json={"actor": "ops"}, headers=ADMIN
    )
    assert _error(response, 400, "invalid_request") == "missing field: reason"
    assert added["id"] in admin.listed()


def test_rotation_adds_a_secret_and_expires_the_others_after_the_grace(admin: Admin) -> None:
    added = admin.add()
    old = added["secret"]
    admin.clock.at = NOW + timedelta(minutes=5)
    response = admin.client.post(
        f"/v1/admin/endpoints/{added['id']}/secrets",
        json={"expire_previous_after_s": 3600},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    new = response.json()["secret"]
    assert response.json() == {"id": added["id"], "secret": new}
    assert is_whsec(new)
    assert new != old
    hour_us = 3600 * 1_000_000
    assert admin.outbox.secrets(added["id"], admin.now_us) == [new, old]
    assert admin.outbox.secrets(added["id"], admin.now_us + hour_us - 1) == [new, old]
    assert admin.outbox.secrets(added["id"], admin.now_us + hour_us) == [new]
    assert "whsec_" not in admin.client.get("/v1/admin/endpoints", headers=ADMIN).text


def test_rotation_without_a_body_keeps_the_old_secret_a_day(admin: Admin) -> None:
    added = admin.add()
    admin.clock.at = NOW + timedelta(minutes=5)
    response = admin.client.post(f"/v1/admin/endpoints/{added['id']}/secrets", headers=ADMIN)
    assert response.status_code == 201, response.text
    day_us = 86_400 * 1_000_000
    assert len(admin.outbox.secrets(added["id"], admin.now_us + day_us - 1)) == 2
    assert admin.outbox.secrets(added["id"], admin.now_us + day_us) == [response.json()["secret"]]


def test_rotation_with_no_grace_expires_the_old_secret_now(admin: Admin) -> None:
    added = admin.add()
    response = admin.client.post(
        f"/v1/admin/endpoints/{added['id']}/secrets",
        json={"expire_previous_after_s": 0},
        headers=ADMIN,
    )
    assert admin.outbox.secrets(added["id"], admin.now_us) == [response.json()["secret"]]


def test_an_endpoint_without_a_secret_is_listed_as_such(admin: Admin) -> None:
    added = admin.add()
    admin.outbox.expire_secrets(added["id"], "", admin.now_us)  # as if the outbox were lost
    assert admin.listed()[added["id"]]["status"] == "no_secret"


# -- deliveries -----------------------------------------------------------------------------


def _seed(admin: Admin) -> tuple[int, int, int]:
    """Three deliveries to `app`: one delivered, one given up (410), one pending; their ids."""
    now_us = admin.now_us
    rows = [
        NewDelivery("app", 3, 0, "ws_a", b'{"secret body": 1}'),
        NewDelivery("app", 4, 0, "ws_b", b"{}"),
        NewDelivery("app", 5, 0, "ws_c", b"{}"),
    ]
    assert admin.outbox.enqueue(None, (5, 0), rows, now_us, now_us + 60_000_000)
    claims = admin.outbox.claim(now_us, {"app": 10}, 30_000_000)
    assert len(claims) == 3
    at_us = now_us + 1_000_000
    first, second, third = claims
    admin.outbox.record(
        [
            Result(first.id, first.token, at_us, 200, None, 12, DELIVERED, None),
            Result(second.id, second.token, at_us, 410, "gone", 7, FAILED, None),
            Result(third.id, third.token, at_us, 503, None, 9, PENDING, at_us + 5_000_000),
        ]
    )
    return first.id, second.id, third.id


def _deliveries(admin: Admin, query: str = "") -> dict[str, Any]:
    response = admin.client.get(f"/v1/admin/deliveries{query}", headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_deliveries_are_listed_newest_first_without_bodies(admin: Admin) -> None:
    delivered, failed, pending = _seed(admin)
    answer = _deliveries(admin)
    assert [d["id"] for d in answer["deliveries"]] == [pending, failed, delivered]
    assert answer["next_before"] is None
    shown = answer["deliveries"][1]
    assert shown == {
        "id": failed,
        "endpoint": "app",
        "webhook_id": "app_4_0",
        "cursor": "4-0",
        "workspace": "ws_b",
        "status": "failed",
        "attempts": 1,
        "last_status": 410,
        "last_error": "gone",
        "next_attempt_at": None,
        "give_up_at": iso_utc(NOW + timedelta(seconds=60)),
        "created_at": iso_utc(NOW),
        "updated_at": iso_utc(NOW + timedelta(seconds=1)),
    }
    assert answer["deliveries"][0]["next_attempt_at"] == iso_utc(NOW + timedelta(seconds=6))
    assert "secret body" not in str(answer)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?status=failed", [1]),
        ("?status=delivered", [0]),
        ("?status=pending", [2]),
        ("?status=canceled", []),
        ("?workspace=ws_a", [0]),
        ("?endpoint=app&workspace=ws_c", [2]),
        ("?endpoint=other", []),
    ],
)
def test_deliveries_are_filtered(admin: Admin, query: str, expected: list[int]) -> None:
    ids = _seed(admin)
    assert [d["id"] for d in _deliveries(admin, query)["deliveries"]] == [ids[n] for n in expected]


def test_deliveries_page_with_next_before(admin: Admin) -> None:
    delivered, failed, pending = _seed(admin)
    first = _deliveries(admin, "?limit=2")
    assert [d["id"] for d in first["deliveries"]] == [pending, failed]
    assert first["next_before"] == failed
    second = _deliveries(admin, f"?limit=2&before={first['next_before']}")
    assert [d["id"] for d in second["deliveries"]] == [delivered]
    assert second["next_before"] is None


def test_a_delivery_shows_its_attempts(admin: Admin) -> None:
    _, failed, _ = _seed(admin)
    response = admin.client.get(f"/v1/admin/deliveries/{failed}", headers=ADMIN)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "failed"
    assert answer["attempts"] == 1
    assert answer["attempt_log"] == [
        {
            "n": 1,
            "at": iso_utc(NOW + timedelta(seconds=1)),
            "status": 410,
            "error": "gone",
            "duration_ms": 7,
        }
    ]


@pytest.mark.parametrize("path", ["999", "9" * 30, "abc"])
def test_an_unknown_delivery_is_not_found(admin: Admin, path: str) -> None:
    _seed(admin)
    _error(admin.client.get(f"/v1/admin/deliveries/{path}", headers=ADMIN), 404, "not_found")


def test_redelivery_by_id_gives_a_fresh_span(admin: Admin) -> None:
    delivered, failed, pending = _seed(admin)
    admin.clock.at = NOW + timedelta(hours=2)
    response = admin.client.post(
        "/v1/admin/deliveries/redeliver", json={"ids": [failed, pending]}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    # The pending one is on its way already.
    assert response.json() == {"redelivered": 1}
    again = admin.outbox.delivery(failed)
    assert again is not None
    assert again.status == "pending"
    assert again.next_at_us == to_us(admin.clock.at)
    span_us = admin.settings.outbound.retry_span_s * 1_000_000
    assert again.give_up_us == to_us(admin.clock.at) + span_us
    assert again.attempts == 1
    still = admin.outbox.delivery(delivered)
    assert still is not None
    assert still.status == "delivered"


def test_redelivery_of_an_unknown_id_redelivers_nothing(admin: Admin) -> None:
    _, failed, _ = _seed(admin)
    response = admin.client.post(
        "/v1/admin/deliveries/redeliver", json={"ids": [failed, 999]}, headers=ADMIN
    )
    assert "999" in _error(response, 404, "not_found")
    found = admin.outbox.delivery(failed)
    assert found is not None
    assert found.status == "failed"


def test_redelivery_since_a_time(admin: Admin) -> None:
    _seed(admin)
    later = admin.client.post(
        "/v1/admin/deliveries/redeliver",
        json={"since": iso_utc(NOW + timedelta(seconds=1))},
        headers=ADMIN,
    )
    assert later.json() == {"redelivered": 0}
    since = admin.client.post(
        "/v1/admin/deliveries/redeliver", json={"since": "2027-03-01T12:00:00Z"}, headers=ADMIN
    )
    assert since.json() == {"redelivered": 2}
    assert {d["status"] for d in _deliveries(admin)["deliveries"]} == {"pending"}


def test_endpoint_health_joins_the_delivery_log(admin: Admin) -> None:
    _seed(admin)
    admin.clock.at = NOW + timedelta(seconds=90)
    listed = admin.listed()["app"]
    assert listed["status"] == "failing"
    assert listed["failing_since"] == iso_utc(NOW + timedelta(seconds=1))
    assert listed["last_success_at"] == iso_utc(NOW + timedelta(seconds=1))
    assert listed["pending"] == 1
    assert listed["oldest_pending_age_s"] == 90


# -- bad input ------------------------------------------------------------------------------

BAD_ADDS = [
    {**ADD, "url": "ftp://crm.example/hook"},
    {**ADD, "url": "https://"},
    {**ADD, "url": "https://[::1/x"},
    {**ADD, "url": "https://crm.example/" + "a" * 2048},
    {**ADD, "url": "https://crm.example/a b"},
    {**ADD, "url": ""},
    {**ADD, "workspaces": [" "]},
    {**ADD, "workspaces": "ws_a"},
    {**ADD, "workspaces": [f"ws_{n}" for n in range(1001)]},
    {"url": ADD["url"], "reason": "x"},
    {"url": ADD["url"], "actor": "x", "reason": " "},
    [],
]


@pytest.mark.parametrize("body", BAD_ADDS)
def test_a_bad_endpoint_is_refused_and_leaves_nothing(admin: Admin, body: object) -> None:
    response = admin.client.post("/v1/admin/endpoints", json=body, headers=ADMIN)
    _error(response, 400, "invalid_request")
    assert admin.store.endpoints() == []
    assert list(admin.listed()) == ["app"]


def test_workspaces_must_be_an_array(admin: Admin) -> None:
    response = admin.client.post(
        "/v1/admin/endpoints", json={**ADD, "workspaces": "ws_a"}, headers=ADMIN
    )
    assert _error(response, 400, "invalid_request") == "field workspaces must be an array"


def test_a_body_that_is_not_json_is_refused(admin: Admin) -> None:
    response = admin.client.post("/v1/admin/endpoints", content=b"{", headers=ADMIN)
    _error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {"expire_previous_after_s": 604_801},
        {"expire_previous_after_s": -1},
        {"expire_previous_after_s": "1"},
    ],
)
def test_a_bad_grace_is_refused(admin: Admin, body: object) -> None:
    added = admin.add()
    response = admin.client.post(
        f"/v1/admin/endpoints/{added['id']}/secrets", json=body, headers=ADMIN
    )
    _error(response, 400, "invalid_request")
    assert admin.outbox.secrets(added["id"], admin.now_us) == [added["secret"]]


@pytest.mark.parametrize(
    "query",
    [
        "?status=bogus",
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?before=0",
        "?before=-1",
        "?before=" + "9" * 30,
    ],
)
def test_a_bad_delivery_query_is_refused(admin: Admin, query: str) -> None:
    response = admin.client.get(f"/v1/admin/deliveries{query}", headers=ADMIN)
    _error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": [1], "since": "2027-01-01T00:00:00Z"},
        {"ids": []},
        {"ids": [-1]},
        {"ids": ["1"]},
        {"ids": list(range(1, 1002))},
        {"since": "yesterday"},
        {"since": "2027-13-01"},
        {"since": ""},
    ],
)
def test_a_bad_redelivery_is_refused(admin: Admin, body: object) -> None:
    _seed(admin)
    response = admin.client.post("/v1/admin/deliveries/redeliver", json=body, headers=ADMIN)
    _error(response, 400, "invalid_request")
    assert {d["status"] for d in _deliveries(admin)["deliveries"]} == {
        "delivered",
        "failed",
        "pending",
    }


# -- PostgreSQL -----------------------------------------------------------------------------


def test_add_rotate_and_remove_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    sections = {"outbound": OUTBOUND, "storage": {"url": pg_url}}
    settings = make_settings(tmp_path / "data", sections=sections)
    for admin in _deploy(settings, Clock(NOW)):
        added = admin.add(workspaces=["ws_a"])
        assert admin.outbox.secrets(added["id"], admin.now_us) == [added["secret"]]
        assert admin.listed()[added["id"]]["workspaces"] == ["ws_a"]
        rotated = admin.client.post(
            f"/v1/admin/endpoints/{added['id']}/secrets",
            json={"expire_previous_after_s": 0},
            headers=ADMIN,
        )
        assert admin.outbox.secrets(added["id"], admin.now_us) == [rotated.json()["secret"]]
        removed = admin.client.request(
            "DELETE", f"/v1/admin/endpoints/{added['id']}", json=WHO, headers=ADMIN
        )
        assert removed.status_code == 200, removed.text
        assert list(admin.listed()) == ["app"]
        _, failed, _ = _seed(admin)
        again = admin.client.post(
            "/v1/admin/deliveries/redeliver", json={"ids": [failed]}, headers=ADMIN
        )
        assert again.json() == {"redelivered": 1}


def test_the_app_serves_them(client: httpx.Client) -> None:
    """Mounted by `create_app`, over its own stores (the `client` fixture checks answers too)."""
    response = client.post("/v1/admin/endpoints", json=ADD, headers=ADMIN)
    assert response.status_code == 201, response.text
    added = response.json()
    listed = client.get("/v1/admin/endpoints", headers=ADMIN)
    assert [e["id"] for e in listed.json()] == [added["id"]]
    assert "whsec_" not in listed.text
    assert client.get("/v1/admin/deliveries", headers=ADMIN).json() == {
        "deliveries": [],
        "next_before": None,
    }
