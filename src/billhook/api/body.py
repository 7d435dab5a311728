"""Reading a request body without ever holding more than the configured limit, and a
request header straight from the ASGI scope."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from billhook.errors import PayloadTooLarge


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before reading a byte;
    a chunked or lying body is refused at the chunk that crosses the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        _check_declared(int(declared), limit)
        if "transfer-encoding" not in request.headers:
            # The server stops at the declared length, so the whole body fits the limit.
            return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _over(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_limited(scope: Scope, receive: Receive, limit: int) -> bytes:
    """:func:`read_limited` for a pure ASGI endpoint, with the same answers.

    Reads `receive` directly, as Starlette's `Request.stream` would (raising
    ClientDisconnect when the client goes away), without a Request or a copy.
    """
    declared = scope_header(scope, b"content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        _check_declared(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _over(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_declared(declared: int, limit: int) -> None:
    if declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limit} byte limit")


def _over(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body is over the {limit} byte limit")


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case), as Starlette's `Headers.get` gives it,
    read from the scope: building Headers for one look-up costs more than the look-up on
    the hot routes (a webhook delivery, every `/v1` request's token)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
