"""What a slow or hostile client may hold: request deadlines and limits (docs/operations.md).

uvicorn bounds neither how long a request's headers may take nor their size
(decisions 84 to 92), so `billhook serve` runs uvicorn with
:class:`RequestDeadlineProtocol` (headers) and the app with
:class:`BodyDeadline` (the body); :func:`uvicorn_options` is what `serve` and
the benchmarks' baseline pass to uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from billhook.api.errors import RequestTimeout
from billhook.config import Settings

logger = logging.getLogger(__name__)

# Most bytes a request line and its headers may take (h11's default is 16 KiB); httptools
# alone buffers any amount. Provider deliveries and API calls send a few hundred.
MAX_HEADER_BYTES = 64 * 1024
# Scope key RequestDeadlineProtocol sets once a request's whole body has arrived.
BODY_RECEIVED = "billhook.body_received"


class BodyDeadline:
    """Bounds how long a request's body may take once its headers are in (pure ASGI).

    Each `receive` that waits for more of the body waits at most until
    `timeout_s` after the request reached the app; past that it raises
    RequestTimeout, answered 408 `request_timeout` with `Connection: close`
    (never a 5xx: a webhook sender just retries). Once the body is complete,
    `receive` (then a wait for the disconnect) is not bounded: a slow handler
    is not a slow client. A handler that never reads the body is covered by
    RequestDeadlineProtocol once its answer is sent.

    A request whose body was already complete when it reached the app (the
    scope says so under BODY_RECEIVED: RequestDeadlineProtocol's mark) has
    nothing left to wait for, and is passed on as is: most webhook deliveries
    and every GET arrive in one read, and a timer per `receive` cost the
    event loop about 4% of its time.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get(BODY_RECEIVED):
            await self._app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        body_complete = False

        async def bounded_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(self._timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self._app(scope, bounded_receive, send)


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit on request headers.

    uvicorn bounds neither: any byte received cancels its keep-alive timer, a
    connection that sends nothing is never timed out, and httptools buffers a
    header of any length. Here a request's line and headers must be complete
    within `timeout_s` of the moment the server starts waiting for them (the
    connection opened, or the previous answer was sent). Past that, a
    connection that sent part of a request is answered 408 `request_timeout`
    and closed; one that sent nothing of a new request (idle, or still
    trickling a body answered early) is closed. Headers over MAX_HEADER_BYTES
    are answered 431 `headers_too_large`. The app sees a request only once its
    headers are in; from then on its body is BodyDeadline's.
    """

    # Seconds a request's headers may take; `bounded_protocol` sets it.
    timeout_s: float = 10.0
    _timer: asyncio.TimerHandle | None = None
    # Bytes read since the current request began, until its headers are complete; else -1.
    _header_bytes = -1

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_bytes < 0 or self.transport.is_closing():
            return
        # Whole reads are counted: the read a request begins in may also end an earlier body.
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            detail = f"the request line and headers are over {MAX_HEADER_BYTES} bytes"
            self._refuse(431, "headers_too_large", detail)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._header_bytes = -1
        self._stop_waiting()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Tell BodyDeadline there is no body left to wait for. A body completed after the
        # app started is bounded there already: it looks at the mark once, on entry.
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.scope[BODY_RECEIVED] = True  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        # A queued (pipelined) request already has its headers; otherwise the next is awaited.
        awaits_next = not self.pipeline
        super().on_response_complete()
        if awaits_next and not self.transport.is_closing():
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._timer = self.loop.call_later(self.timeout_s, self._timed_out)

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._header_bytes < 0:
            self.transport.close()
            return
        detail = f"the request headers did not arrive within {self.timeout_s:g} s"
        self._refuse(408, "request_timeout", detail)

    def _refuse(self, status: int, error: str, detail: str) -> None:
        """Answer `status` in the app's error shape, outside any app, and close.

        While an earlier (pipelined) request is still being answered, only close:
        bytes written now would land inside that answer.
        """
        logger.info("connection cut", extra={"fields": {"status": status, "error": error}})
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        body = json.dumps({"error": error, "detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()


def bounded_protocol(timeout_s: float) -> type[RequestDeadlineProtocol]:
    """RequestDeadlineProtocol with its header deadline set to `timeout_s`."""
    return type("RequestDeadlineProtocol", (RequestDeadlineProtocol,), {"timeout_s": timeout_s})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings that bound slow and numerous clients (`billhook serve` uses them).

    Past `max_connections` open connections uvicorn answers each new request
    503 (plain text) and closes it; the request timeouts keep slow clients
    from holding those places for long.
    """
    return {
        "http": bounded_protocol(settings.request_timeout_s),
        "limit_concurrency": settings.max_connections,
    }
