"""Slow, large and numerous clients against a real `billhook serve`, and no redirects anywhere.

Raw sockets play the clients an HTTP library would never be: a body that
stops, headers trickled a byte at a time, headers that never end, more
connections than `max_connections`. Each must be answered (408, 431, 503) or
closed within a generous bound, while normal deliveries keep being accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Receive, Scope, Send

from billhook.api.app import create_app
from billhook.api.deadlines import BodyDeadline
from billhook.api.errors import RequestTimeout
from billhook.config import Settings
from billhook.log.sqlite import EventLog
from billhook.testing.servers import serve_in_thread, wait_until
from billhook.testing.settings import READ_TOKEN, write_config
from billhook.testing.stripe import stripe_event_body
from tests.contract import contract_client
from tests.deployment import Processes, Server, deliver

# `request_timeout_s` of the server that cuts slow clients.
BOUND_S = 1
# `request_timeout_s` of the server that must hold slow clients throughout a test.
PATIENT_S = 60
# `max_connections` of that server.
PATIENT_CONNECTIONS = 12
# How long a test waits for the server to act on a slow client: the bound, and then some.
GENEROUS_S = 10.0
# How often a trickling client sends its next byte.
TRICKLE_EVERY_S = 0.3
# What each path needs besides the body to read it: the body then stops at 50 of 1,000 bytes.
STALLED_BODY = {
    "/webhooks/stripe": b"Stripe-Signature: t=1,v1=00\r\n",
    "/webhooks/polar": b"webhook-id: msg_1\r\nwebhook-timestamp: 1\r\n"
    b"webhook-signature: v1,AA==\r\n",
    "/v1/workspaces/ws_1/check": f"Authorization: Bearer {READ_TOKEN}\r\n".encode(),
}
# Sample values for the path parameters of every route.
PATH_VALUES = {
    "workspace_id": "ws_1",
    "kind": "manual_pilot",
    "endpoint_id": "ep_0123456789abcdef",
    "delivery_id": "1",
}
# The Host a caller makes up; no answer may carry it back.
FOREIGN_HOST = "evil.example"


def _serve(directory: Path, **core: int) -> Iterator[Server]:
    processes = Processes(directory)
    try:
        yield processes.serve(write_config(directory, **core))
    finally:
        processes.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that gives a client BOUND_S for its headers, then BOUND_S for its body."""
    yield from _serve(tmp_path_factory.mktemp("strict"), request_timeout_s=BOUND_S)


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that holds slow clients for longer than any test here lasts."""
    yield from _serve(
        tmp_path_factory.mktemp("patient"),
        request_timeout_s=PATIENT_S,
        max_connections=PATIENT_CONNECTIONS,
    )


# -- raw clients ------------------------------------------------------------------------------


def connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def until_closed(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before it closed `sock`; None when it is still open after `within_s`."""
    deadline = time.monotonic() + within_s
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def trickle(sock: socket.socket, data: bytes, within_s: float) -> bytes | None:
    """Send `data` a byte every TRICKLE_EVERY_S; what the server sent when it cut the connection.

    None when the server still reads after `within_s`.
    """
    deadline = time.monotonic() + within_s
    for byte in data:
        if time.monotonic() > deadline:
            return None
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # reset, or a broken pipe: cut, and maybe answered first
            return until_closed(sock, 1.0) or b""
        answer = until_closed(sock, TRICKLE_EVERY_S)
        if answer is not None:
            return answer
    raise AssertionError("the request ran out before the bound")


def stalled_body(server: Server, path: str) -> socket.socket:
    """A connection that sent the headers of a 1,000-byte body, then 50 bytes of it."""
    sock = connect(server)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: billhook\r\nContent-Type: application/json\r\n".encode()
        + STALLED_BODY.get(path, b"")
        + b"Content-Length: 1000\r\n\r\n"
        + b'{"id": "evt_1", "padding": "'
        + b"x" * 22
    )
    return sock


def partial_headers(server: Server) -> socket.socket:
    """A connection that sent half a request line and header, then nothing."""
    sock = connect(server)
    sock.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: billhook\r\nStripe-Sig")
    return sock


def assert_answered(answer: bytes | None, status: int, error: str) -> None:
    """The server closed the connection, answering `status` `error` if it answered at all."""
    assert answer is not None, "the server still holds the connection"
    if not answer:
        return  # closed with a reset before the answer could be read
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"connection: close" in head.lower(), head
    fields = json.loads(body)
    assert fields["error"] == error
    assert set(fields) == {"error", "detail"}


# -- slow clients -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(STALLED_BODY))
def test_a_body_that_stops_is_answered_408_and_closed(strict: Server, path: str) -> None:
    with stalled_body(strict, path) as sock:
        answer = until_closed(sock, GENEROUS_S)
    assert answer, "closed without an answer"  # the server reads everything sent: no reset
    assert_answered(answer, 408, "request_timeout")
    assert httpx.get(f"{strict.base_url}/healthz", timeout=5).status_code == 200


def test_a_body_trickled_after_an_early_answer_is_cut(strict: Server) -> None:
    """A 404 needs no body; sending the rest a byte at a time does not keep the connection."""
    with stalled_body(strict, "/webhooks/nowhere") as sock:
        assert trickle(sock, b"x" * 950, GENEROUS_S) is not None, "still held"


def test_headers_trickled_byte_by_byte_are_cut(strict: Server) -> None:
    request = b"POST /webhooks/stripe HTTP/1.1\r\nHost: billhook\r\nX-Slow: " + b"a" * 1000
    with connect(strict) as sock:
        answer = trickle(sock, request, GENEROUS_S)
    assert_answered(answer, 408, "request_timeout")


def test_a_connection_that_sends_nothing_is_closed(strict: Server) -> None:
    with connect(strict) as sock:
        assert until_closed(sock, GENEROUS_S) == b""


def test_headers_that_never_end_are_answered_431(strict: Server) -> None:
    with connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: billhook\r\nX-Big: ")
        with contextlib.suppress(OSError):  # refused while still sending
            sock.sendall(b"a" * 1_000_000)
        answer = until_closed(sock, GENEROUS_S)
    assert_answered(answer, 431, "headers_too_large")


def test_normal_deliveries_are_accepted_while_slow_clients_are_held(patient: Server) -> None:
    slow = [stalled_body(patient, "/webhooks/stripe") for _ in range(3)]
    slow += [partial_headers(patient) for _ in range(3)]
    try:
        with patient.client() as client:
            seqs = [deliver(client, stripe_event_body()) for _ in range(3)]
        assert seqs == sorted(set(seqs))
        for sock in slow:
            assert until_closed(sock, 0.05) is None, "a slow client was let go early"
    finally:
        for sock in slow:
            sock.close()


def test_connections_past_max_connections_are_answered_503(patient: Server) -> None:
    def status() -> int:
        return httpx.get(f"{patient.base_url}/healthz", timeout=5).status_code

    idle = [connect(patient) for _ in range(PATIENT_CONNECTIONS)]
    try:
        wait_until(lambda: status() == 503, GENEROUS_S, "a 503 past max_connections")
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: status() == 200, GENEROUS_S, "a 200 once the idle connections are gone")


# -- the body deadline, in process --------------------------------------------------------------


def _run(timeout_s: float, messages: list[tuple[float, Message]]) -> list[Message]:
    """What an app behind BodyDeadline receives when each message comes after its delay."""
    received: list[Message] = []
    pending = iter(messages)

    async def receive() -> Message:
        delay, message = next(pending)
        await asyncio.sleep(delay)
        return message

    async def send(message: Message) -> None:
        raise AssertionError("the app answers nothing here")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in messages:
            received.append(await receive())

    asyncio.run(BodyDeadline(app, timeout_s)({"type": "http"}, receive, send))
    return received


def test_the_body_deadline_raises_request_timeout_when_the_body_stalls() -> None:
    first = {"type": "http.request", "body": b"{", "more_body": True}
    rest = {"type": "http.request", "body": b"}", "more_body": False}
    with pytest.raises(RequestTimeout):
        _run(0.05, [(0, first), (1.0, rest)])


def test_the_body_deadline_ends_with_the_body() -> None:
    """Waiting after the whole body (for a disconnect, behind a slow provider) is not cut."""
    body = {"type": "http.request", "body": b"{}", "more_body": False}
    gone = {"type": "http.disconnect"}
    assert _run(0.05, [(0, body), (0.3, gone)]) == [body, gone]


# -- no redirects -----------------------------------------------------------------------------


def every_route(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the app, mounts walked."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += every_route(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            path = prefix + route.path_format
            for name, value in PATH_VALUES.items():
                path = path.replace("{" + name + "}", value)
            assert "{" not in path, f"no sample value for a parameter of {path}"
            found += [(method, path) for method in sorted((route.methods or set()) - {"HEAD"})]
    return found


@pytest.fixture
def served_app(settings: Settings, event_log: EventLog) -> Iterator[tuple[Starlette, str]]:
    app = create_app(settings, log=event_log)
    with serve_in_thread(app) as url:
        yield app, url


def test_no_path_redirects_or_echoes_a_foreign_host(served_app: tuple[Starlette, str]) -> None:
    app, url = served_app
    routes = every_route(list(app.routes))
    assert len(routes) >= 15
    near_misses = [(method, path + "/") for method, path in routes]
    near_misses += [
        (method, path)
        for method in ("GET", "POST")
        for path in ("/webhooks", "/webhooks/", "/v1", "/v1/", "/webhooks//stripe", "/healthz//")
    ]
    headers = {"Host": FOREIGN_HOST, "Authorization": f"Bearer {READ_TOKEN}"}
    with contract_client(url, timeout=10) as client:  # undescribed paths must be 404 not_found
        for method, path in near_misses:
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 404, (method, path, response.status_code)
            echoed = [k for k, v in response.headers.items() if FOREIGN_HOST in v]
            assert not echoed, (method, path, echoed)
