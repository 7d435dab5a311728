"""RequestDeadlineProtocol's mark of a complete body, and BodyDeadline's use of it.

Slow clients against a real `billhook serve` are tests/e2e/test_hardening.py's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from billhook.api.deadlines import BODY_RECEIVED, BodyDeadline, bounded_protocol
from billhook.testing.servers import HOST, START_TIMEOUT_S, STOP_TIMEOUT_S, wait_until

# Long enough that no deadline fires during a test.
TIMEOUT_S = 30.0
WAIT_S = 10.0


class Recorder:
    """An app answering whether its scope carried the mark on entry, and the body's size."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        marked = bool(scope.get(BODY_RECEIVED))
        self.entered.set()
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.dumps({"marked": marked, "bytes": size}).encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served() -> Iterator[tuple[Recorder, int]]:
    app = Recorder()
    config = uvicorn.Config(
        app, host=HOST, port=0, log_config=None, lifespan="off", http=bounded_protocol(TIMEOUT_S)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, START_TIMEOUT_S, "uvicorn to start")
        yield app, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT_S)


def _head(size: int) -> bytes:
    return f"POST /in HTTP/1.1\r\nHost: billhook\r\nContent-Length: {size}\r\n\r\n".encode()


def _answers(sock: socket.socket, count: int) -> list[dict[str, object]]:
    """The JSON bodies of the next `count` answers on `sock` (each with a Content-Length)."""
    sock.settimeout(WAIT_S)
    data = b""
    found: list[dict[str, object]] = []
    while len(found) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            None,
        )
        if sep and length is not None and len(rest) >= length:
            found.append(json.loads(rest[:length]))
            data = rest[length:]
            continue
        chunk = sock.recv(65536)
        assert chunk, "closed before answering"
        data += chunk
    return found


def test_a_body_that_came_with_its_headers_is_marked(served: tuple[Recorder, int]) -> None:
    _, port = served
    with socket.create_connection((HOST, port), timeout=WAIT_S) as sock:
        sock.sendall(_head(5) + b"hello")
        assert _answers(sock, 1) == [{"marked": True, "bytes": 5}]


def test_pipelined_requests_are_each_marked(served: tuple[Recorder, int]) -> None:
    _, port = served
    with socket.create_connection((HOST, port), timeout=WAIT_S) as sock:
        sock.sendall(_head(2) + b"ab" + _head(0) + _head(3) + b"cde")
        assert _answers(sock, 3) == [
            {"marked": True, "bytes": 2},
            {"marked": True, "bytes": 0},
            {"marked": True, "bytes": 3},
        ]


def test_a_body_still_arriving_when_the_app_starts_is_not_marked(
    served: tuple[Recorder, int],
) -> None:
    """Then BodyDeadline bounds its reads: it looks at the mark once, on entry."""
    app, port = served
    with socket.create_connection((HOST, port), timeout=WAIT_S) as sock:
        sock.sendall(_head(10) + b"01234")
        assert app.entered.wait(WAIT_S)
        sock.sendall(b"56789")
        assert _answers(sock, 1) == [{"marked": False, "bytes": 10}]


def _behind_deadline(scope: Scope, delay_s: float, timeout_s: float) -> Message:
    """What an app behind BodyDeadline receives from a `receive` that answers after `delay_s`."""
    received: list[Message] = []

    async def receive() -> Message:
        await asyncio.sleep(delay_s)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError("the app answers nothing here")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())

    asyncio.run(BodyDeadline(app, timeout_s)(scope, receive, send))
    return received[0]


def test_a_marked_request_is_passed_on_unbounded() -> None:
    """Its body is in: what the app waits for now (a disconnect) is no slow client's."""
    scope = {"type": "http", BODY_RECEIVED: True}
    assert _behind_deadline(scope, 0.2, 0.01) == {"type": "http.disconnect"}
