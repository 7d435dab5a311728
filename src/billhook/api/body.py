"""Reading a request body without ever holding more than the configured limit."""

from __future__ import annotations

from starlette.requests import Request

from billhook.errors import PayloadTooLarge


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before reading a byte;
    a chunked or lying body is refused at the chunk that crosses the limit.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {int(declared)} bytes is over the {limit} byte limit")
        if "transfer-encoding" not in request.headers:
            # The server stops at the declared length, so the whole body fits the limit.
            return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
