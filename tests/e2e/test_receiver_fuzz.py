"""Fuzzing the receiver: no header or body yields a 5xx other than 503 (SPEC §3)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhook.api.app import create_app
from billhook.log.sqlite import EventLog
from billhook.testing.polar import polar_headers
from billhook.testing.servers import serve_in_thread
from billhook.testing.settings import make_settings
from billhook.testing.stripe import stripe_headers
from tests.contract import Contract, contract_hook

# Header bytes HTTP/1.1 allows in a value: visible ASCII, inner space and tab, obs-text.
HEADER_BYTES = st.binary(max_size=120).map(
    lambda b: bytes(c for c in b if c in (9, 32) or 33 <= c <= 126 or c >= 128).strip(b" \t")
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES | st.text(min_size=1, max_size=300),
        "type": JSON_VALUES | st.sampled_from(["customer.updated", "subscription.active", ""]),
        "livemode": JSON_VALUES,
        "created": JSON_VALUES | st.integers(min_value=-(2**70), max_value=2**70),
        "timestamp": JSON_VALUES | st.sampled_from(["2026-13-45T99:00:00Z", "2026-11-21T00:00:00"]),
    },
).map(lambda d: json.dumps(d).encode())
BODIES = st.binary(max_size=300) | EVENTISH | JSON_VALUES.map(lambda v: json.dumps(v).encode())
ALLOWED = {200, 400, 404, 413, 503}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = make_settings(tmp_path_factory.mktemp("fuzz") / "data", max_body_bytes=2048)
    log = EventLog(cfg.events_path)
    with serve_in_thread(create_app(cfg, log=log)) as url:
        yield url
    log.close()


Hooks = dict[str, list[Callable[[httpx.Response], None]]]


@pytest.fixture(scope="module")
def contract(base_url: str) -> Hooks:
    """httpx hooks checking each answer against the server's `/openapi.json`."""
    return {"response": [contract_hook(Contract.of_server(base_url))]}


def _check(response: httpx.Response) -> None:
    assert response.status_code in ALLOWED, (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:
        assert body["status"] in ("accepted", "duplicate")
        assert isinstance(body["seq"], int)
    else:
        assert set(body) == {"error", "detail"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=BODIES,
    header=HEADER_BYTES,
    sign=st.booleans(),
    timestamp=st.integers(min_value=-(2**40), max_value=2**40) | st.just(None),
)
def test_stripe_receiver_never_fails(
    base_url: str, contract: Hooks, body: bytes, header: bytes, sign: bool, timestamp: int | None
) -> None:
    headers: list[tuple[bytes, bytes]] = [(b"Stripe-Signature", header)]
    if sign:
        try:
            body.decode()
        except UnicodeDecodeError:
            pass
        else:
            signed = stripe_headers(body, timestamp=timestamp)["Stripe-Signature"]
            headers = [(b"Stripe-Signature", signed.encode())]
    with httpx.Client(base_url=base_url, timeout=10, event_hooks=contract) as client:
        _check(client.post("/webhooks/stripe", content=body, headers=headers))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=BODIES,
    msg_id=HEADER_BYTES,
    stamp=HEADER_BYTES
    | st.integers(min_value=-(2**40), max_value=2**40).map(lambda i: str(i).encode()),
    signature=HEADER_BYTES,
    sign=st.booleans(),
)
def test_polar_receiver_never_fails(
    base_url: str,
    contract: Hooks,
    body: bytes,
    msg_id: bytes,
    stamp: bytes,
    signature: bytes,
    sign: bool,
) -> None:
    headers = [
        (b"webhook-id", msg_id),
        (b"webhook-timestamp", stamp),
        (b"webhook-signature", signature),
    ]
    if sign:
        try:
            body.decode()
        except UnicodeDecodeError:
            pass
        else:
            signed = polar_headers(body)
            headers = [(k.encode(), v.encode()) for k, v in signed.items()]
    with httpx.Client(base_url=base_url, timeout=10, event_hooks=contract) as client:
        _check(client.post("/webhooks/polar", content=body, headers=headers))
