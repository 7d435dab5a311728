"""Every row of the SPEC §3 table, through real HTTP requests to a real uvicorn."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhook.api.app import create_app
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.testing.polar import (
    POLAR_LEGACY_SECRET,
    POLAR_SECRET,
    polar_event_body,
    polar_headers,
)
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import make_settings
from billhook.testing.stripe import STRIPE_SECRET, stripe_event_body, stripe_headers
from tests.contract import contract_client

NOW = 1_800_000_000
TOLERANCE = 300
SMALL_LIMIT = 4096


@pytest.fixture
def frozen(tmp_path: Path) -> Iterator[tuple[httpx.Client, EventLog]]:
    """A server whose clock stands at NOW, so tolerance edges are exact."""
    settings = make_settings(tmp_path / "data", max_body_bytes=SMALL_LIMIT * 64)
    log = EventLog(settings.events_path)
    with (
        serve_in_thread(create_app(settings, log=log, now=lambda: NOW)) as url,
        contract_client(url, timeout=10) as client,
    ):
        yield client, log
    log.close()


def _error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str)
    assert body["detail"]
    for secret in (STRIPE_SECRET, POLAR_SECRET, POLAR_LEGACY_SECRET):
        assert secret not in response.text
    return body  # type: ignore[no-any-return]


def _stripe(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/webhooks/stripe", content=body, headers=headers)


def _polar(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/webhooks/polar", content=body, headers=headers)


# -- 200 accepted / duplicate ------------------------------------------------------------


def test_new_stripe_event_is_accepted_and_stored_byte_exact(
    client: httpx.Client, event_log: EventLog
) -> None:
    body = stripe_event_body("customer.subscription.created", event_id="evt_1", created=NOW)
    # Key order and spacing a re-serializer would change: the log keeps the exact bytes.
    body = body.replace(b'"id": "evt_1"', b'"id" :  "evt_1"')
    response = _stripe(client, body, stripe_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "seq": 1}
    stored = event_log.get(1)
    assert stored is not None
    assert stored.payload.encode() == body
    assert (stored.provider, stored.event_id, stored.type) == (
        "stripe",
        "evt_1",
        "customer.subscription.created",
    )
    assert stored.livemode == 0
    assert stored.occurred_at == "2027-01-15T08:00:00.000Z"
    assert stored.received_at.endswith("Z")


def test_redelivery_is_a_duplicate_with_the_original_seq(
    client: httpx.Client, event_log: EventLog
) -> None:
    first = stripe_event_body(event_id="evt_a")
    other = stripe_event_body(event_id="evt_b")
    assert _stripe(client, first, stripe_headers(first)).json() == {"status": "accepted", "seq": 1}
    assert _stripe(client, other, stripe_headers(other)).json() == {"status": "accepted", "seq": 2}
    # A retry is signed anew, hours later; same id means same event.
    again = _stripe(client, first, stripe_headers(first))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "seq": 1}
    assert event_log.head_seq() == 2


def test_polar_event_id_is_the_webhook_id_header(client: httpx.Client, event_log: EventLog) -> None:
    body = polar_event_body("subscription.active")
    headers = polar_headers(body, msg_id="msg_polar_1")
    assert _polar(client, body, headers).json() == {"status": "accepted", "seq": 1}
    # Same webhook-id, re-signed later: a duplicate.
    assert _polar(client, body, polar_headers(body, msg_id="msg_polar_1")).json() == {
        "status": "duplicate",
        "seq": 1,
    }
    stored = event_log.get(1)
    assert stored is not None
    assert (stored.provider, stored.event_id, stored.type, stored.livemode) == (
        "polar",
        "msg_polar_1",
        "subscription.active",
        None,
    )


def test_same_event_id_from_two_providers_is_two_events(client: httpx.Client) -> None:
    s_body = stripe_event_body(event_id="same_id")
    p_body = polar_event_body()
    assert _stripe(client, s_body, stripe_headers(s_body)).json()["status"] == "accepted"
    p_headers = polar_headers(p_body, msg_id="same_id")
    assert _polar(client, p_body, p_headers).json() == {"status": "accepted", "seq": 2}


@pytest.mark.parametrize("secret", [POLAR_SECRET, POLAR_LEGACY_SECRET])
def test_both_polar_secret_schemes_are_accepted(client: httpx.Client, secret: str) -> None:
    body = polar_event_body()
    headers = polar_headers(body, secret, legacy=secret == POLAR_LEGACY_SECRET)
    assert _polar(client, body, headers).json()["status"] == "accepted"


def test_unknown_types_and_thin_events_are_accepted(
    client: httpx.Client, event_log: EventLog
) -> None:
    unknown = stripe_event_body("some.future.event", event_id="evt_future")
    thin = json.dumps(
        {
            "id": "evt_thin_1",
            "object": "v2.core.event",
            "type": "v1.billing.meter.error_report_triggered",
            "livemode": False,
            "created": "2026-11-21T10:00:00.000Z",
            "related_object": {
                "id": "mtr_1",
                "type": "billing.meter",
                "url": "/v1/billing/meters/mtr_1",
            },
        }
    ).encode()
    polar_unknown = polar_event_body("benefit_grant.cycled")
    assert _stripe(client, unknown, stripe_headers(unknown)).json()["status"] == "accepted"
    assert _stripe(client, thin, stripe_headers(thin)).json()["status"] == "accepted"
    assert (
        _polar(client, polar_unknown, polar_headers(polar_unknown)).json()["status"] == "accepted"
    )
    stored = event_log.find("evt_thin_1")[0]
    assert stored.type == "v1.billing.meter.error_report_triggered"
    assert stored.occurred_at == "2026-11-21T10:00:00.000Z"


def test_livemode_mismatch_is_accepted_and_recorded(
    client: httpx.Client, event_log: EventLog
) -> None:
    body = stripe_event_body(event_id="evt_live", livemode=True)
    assert _stripe(client, body, stripe_headers(body)).json()["status"] == "accepted"
    assert event_log.find("evt_live")[0].livemode == 1


# -- 400 invalid_signature --------------------------------------------------------------


def _signed_stripe(timestamp: int = NOW) -> tuple[bytes, str]:
    body = stripe_event_body()
    return body, stripe_headers(body, timestamp=timestamp)["Stripe-Signature"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=,v1=",
        "v1,!!!",
        "t=abc,v1=deadbeef",
        f"t={NOW}.5,v1=deadbeef",
        f"t={NOW},t={NOW},v1=deadbeef",
        "t=" + "9" * 40 + ",v1=deadbeef",
        f"t={NOW},v1=é",
        f"t={NOW},v0=deadbeef",
        f"t={NOW}",
    ],
)
def test_malformed_stripe_signature_headers(
    frozen: tuple[httpx.Client, EventLog], header: str | None
) -> None:
    client, log = frozen
    body, _ = _signed_stripe()
    headers = [] if header is None else [(b"Stripe-Signature", header.encode("latin-1"))]
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    _error(response, 400, "invalid_signature")
    assert log.head_seq() == 0


def test_stripe_signature_header_with_raw_non_ascii_bytes(
    frozen: tuple[httpx.Client, EventLog],
) -> None:
    client, _ = frozen
    body, _ = _signed_stripe()
    headers = [(b"Stripe-Signature", b"t=1800000000,v1=\xff\xfe")]
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    _error(response, 400, "invalid_signature")


def test_stripe_wrong_secret_and_tampered_body(frozen: tuple[httpx.Client, EventLog]) -> None:
    client, _ = frozen
    body = stripe_event_body()
    wrong = stripe_headers(body, "whsec_not_ours", timestamp=NOW)
    _error(_stripe(client, body, wrong), 400, "invalid_signature")
    headers = stripe_headers(body, timestamp=NOW)
    _error(_stripe(client, body + b" ", headers), 400, "invalid_signature")


@pytest.mark.parametrize(("skew", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_tolerance_edges_over_http(
    frozen: tuple[httpx.Client, EventLog], skew: int, ok: bool
) -> None:
    client, _ = frozen
    body, header = _signed_stripe(NOW + skew)
    p_body = polar_event_body()
    p_headers = polar_headers(p_body, timestamp=NOW + skew)
    responses = [
        _stripe(client, body, {"Stripe-Signature": header}),
        _polar(client, p_body, p_headers),
    ]
    for response in responses:
        if ok:
            assert response.status_code == 200, response.text
        else:
            _error(response, 400, "invalid_signature")


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": "v1,!!!"},
        {"webhook-signature": "garbage"},
        {"webhook-signature": ""},
        {"webhook-timestamp": "abc"},
        {"webhook-timestamp": f"{NOW}.0"},
        {"webhook-timestamp": "9" * 40},
        {"webhook-timestamp": "-1"},
        {"webhook-id": ""},
        {"webhook-id": "msg_other"},
    ],
)
def test_malformed_polar_headers(
    frozen: tuple[httpx.Client, EventLog], change: dict[str, str]
) -> None:
    client, log = frozen
    body = polar_event_body()
    headers = {**polar_headers(body, msg_id="msg_x", timestamp=NOW), **change}
    _error(_polar(client, body, headers), 400, "invalid_signature")
    assert log.head_seq() == 0


def test_polar_missing_headers_and_wrong_secret(frozen: tuple[httpx.Client, EventLog]) -> None:
    client, _ = frozen
    body = polar_event_body()
    _error(_polar(client, body, {}), 400, "invalid_signature")
    wrong = polar_headers(body, "whsec_" + "A" * 32, timestamp=NOW)
    _error(_polar(client, body, wrong), 400, "invalid_signature")


def test_non_utf8_body_cannot_verify(frozen: tuple[httpx.Client, EventLog]) -> None:
    client, _ = frozen
    body = b'{"id": "evt_\xff\xfe"}'
    headers = {"Stripe-Signature": f"t={NOW},v1=" + "0" * 64}
    _error(_stripe(client, body, headers), 400, "invalid_signature")
    p_headers = {"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "v1,AAAA"}
    _error(_polar(client, body, p_headers), 400, "invalid_signature")


# -- 400 invalid_payload ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        b'{"type": "customer.created"}',
        b'{"id": "evt_1"}',
        b'{"id": 42, "type": "customer.created"}',
        b'{"id": "evt_1", "type": ""}',
        b'{"id": "evt_1", "type": null}',
        json.dumps({"id": "evt_" + "x" * 300, "type": "customer.created"}).encode(),
        b'{"id": "evt_1", "type": "x"',
    ],
)
def test_signed_stripe_bodies_that_are_not_events(
    frozen: tuple[httpx.Client, EventLog], body: bytes
) -> None:
    client, log = frozen
    _error(_stripe(client, body, stripe_headers(body, timestamp=NOW)), 400, "invalid_payload")
    assert log.head_seq() == 0


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"type": 7}', b'{"data": {}}', b"nope"])
def test_signed_polar_bodies_that_are_not_events(
    frozen: tuple[httpx.Client, EventLog], body: bytes
) -> None:
    client, log = frozen
    _error(_polar(client, body, polar_headers(body, timestamp=NOW)), 400, "invalid_payload")
    assert log.head_seq() == 0


# -- 413 payload_too_large --------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[str, EventLog]]:
    settings = make_settings(tmp_path / "data", max_body_bytes=SMALL_LIMIT)
    log = EventLog(settings.events_path)
    with serve_in_thread(create_app(settings, log=log)) as url:
        yield url, log
    log.close()


def _event_of_size(size: int) -> bytes:
    head = b'{"id": "evt_sized", "type": "customer.updated", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_body_at_the_limit_is_accepted_one_byte_over_is_refused(
    small: tuple[str, EventLog],
) -> None:
    url, log = small
    with contract_client(url, timeout=10) as client:
        fits = _event_of_size(SMALL_LIMIT)
        assert len(fits) == SMALL_LIMIT
        assert _stripe(client, fits, stripe_headers(fits)).status_code == 200
        over = _event_of_size(SMALL_LIMIT + 1)
        _error(_stripe(client, over, stripe_headers(over)), 413, "payload_too_large")
        # Chunked, without a Content-Length: refused at the chunk that crosses the limit.
        chunks = iter([over[:1000], over[1000:3000], over[3000:]])
        chunked = client.post("/webhooks/stripe", content=chunks, headers=stripe_headers(over))
        _error(chunked, 413, "payload_too_large")
        p_over = b"{" + b" " * SMALL_LIMIT + b"}"
        _error(_polar(client, p_over, polar_headers(p_over)), 413, "payload_too_large")
    assert log.head_seq() == 1


def test_server_stops_reading_at_the_limit(small: tuple[str, EventLog]) -> None:
    """A 100 MB upload is answered 413 after the first bytes; the rest is never read."""
    url, _ = small
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\nStripe-Signature: t=1,v1=0\r\n\r\n"
        )
        sock.sendall(b"{" + b" " * (SMALL_LIMIT * 2))
        answer = sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"] == "payload_too_large"


# -- 404 provider_not_configured, and other paths -----------------------------------------


def test_provider_without_secrets_is_not_configured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    log = EventLog(settings.events_path)
    try:
        with (
            serve_in_thread(create_app(settings, log=log)) as url,
            contract_client(url) as client,
        ):
            body = stripe_event_body()
            _error(_stripe(client, body, stripe_headers(body)), 404, "provider_not_configured")
            p_body = polar_event_body()
            _error(_polar(client, p_body, polar_headers(p_body)), 404, "provider_not_configured")
        assert log.head_seq() == 0
    finally:
        log.close()


def test_unknown_provider_and_wrong_method(client: httpx.Client) -> None:
    _error(client.post("/webhooks/paddle", content=b"{}"), 404, "not_found")
    _error(client.get("/webhooks/stripe"), 405, "method_not_allowed")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_log_rows_are_the_only_record_of_payloads(client: httpx.Client, tmp_path: Path) -> None:
    """What was acked is what is in the file, read back by plain sqlite3."""
    bodies = [stripe_event_body(event_id=f"evt_{i}") for i in range(5)]
    for body in bodies:
        assert _stripe(client, body, stripe_headers(body)).status_code == 200
    conn = sqlite3.connect(tmp_path / "data" / "events.db")
    try:
        rows = conn.execute("SELECT seq, payload FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5]
    assert [payload.encode() for _, payload in rows] == bodies
