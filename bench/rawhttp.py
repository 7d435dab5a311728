"""A lean HTTP/1.1 client over asyncio streams, for a load generator that must keep up.

httpx spends about two milliseconds of CPU per request, which on one core
cannot sustain 500 requests/s plus polling without queueing (and the queue
would be measured as the server's latency). This client sends pre-formatted
requests on keep-alive connections and reads `Content-Length` answers, which
is all uvicorn sends; it is only for talking to the benchmark's own server
on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_HEADER_BYTES = 65_536
# uvicorn closes a keep-alive connection idle for 5 s (its default); reusing one that
# may be closing would fail a request, so idle connections are dropped well before.
MAX_IDLE_S = 2.0


class HttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 this client can read."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str,
    path: str,
    *,
    host: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """A complete HTTP/1.1 request, ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection: one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            raise HttpError(f"cannot connect: {e}") from None
        return cls(reader, writer)

    async def send(self, request: bytes) -> Answer:
        try:
            self._writer.write(request)
            head = await self._reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEADER_BYTES:
                raise HttpError("answer headers too long")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                elif name.strip().lower() == "transfer-encoding":
                    raise HttpError("chunked answers are not supported")
            body = await self._reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            raise HttpError(f"connection failed: {e!r}") from None
        except (ValueError, IndexError) as e:
            raise HttpError(f"unreadable answer: {e!r}") from None
        self.last_used = time.monotonic()
        return Answer(status, body)

    def close(self) -> None:
        self._writer.close()


class Pool:
    """Up to `size` keep-alive connections to one server, opened as needed."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(size)

    async def send(self, request: bytes) -> Answer:
        """Send `request` on an idle connection (or a new one); its answer."""
        async with self._slots:
            connection = await self._connection()
            try:
                answer = await connection.send(request)
            except HttpError:
                connection.close()
                raise
            self._idle.append(connection)
            return answer

    async def _connection(self) -> Connection:
        """The most recently used idle connection, unless it idled too long; else a new one."""
        while self._idle:
            connection = self._idle.pop()
            if time.monotonic() - connection.last_used < MAX_IDLE_S:
                return connection
            connection.close()
        return await Connection.open(self._host, self._port)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
