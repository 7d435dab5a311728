"""Reading a body within a limit, from a pure ASGI endpoint (`receive_limited`)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from billhook.api.body import receive_limited
from billhook.errors import PayloadTooLarge


def _read(messages: list[Message], limit: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The body `receive_limited` reads from `messages`; raises what it raises."""
    pending = iter(messages)

    async def receive() -> Message:
        return next(pending)

    scope = {"type": "http", "headers": headers}
    return asyncio.run(receive_limited(scope, receive, limit))


def _chunk(body: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_in_one_message_is_returned() -> None:
    assert _read([_chunk(b'{"a":1}')], 100, [(b"content-length", b"7")]) == b'{"a":1}'


def test_a_body_in_several_messages_is_joined() -> None:
    messages = [_chunk(b"ab", more=True), _chunk(b"", more=True), _chunk(b"cd")]
    assert _read(messages, 4, [(b"transfer-encoding", b"chunked")]) == b"abcd"


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(PayloadTooLarge, match="body of 101 bytes is over the 100 byte limit"):
        _read([], 100, [(b"content-length", b"101")])


@pytest.mark.parametrize("declared", [None, b"3", b"x1", b"\xd9\xa3"])
def test_a_body_is_refused_at_the_chunk_that_crosses_the_limit(declared: bytes | None) -> None:
    """Whatever the length header says (nothing, a lie, junk, a non-ASCII digit)."""
    headers = [(b"content-length", declared)] if declared is not None else []
    messages = [_chunk(b"abc", more=True), _chunk(b"de", more=True)]  # no third: never read
    with pytest.raises(PayloadTooLarge, match="body is over the 4 byte limit"):
        _read(messages, 4, headers)


def test_a_client_that_goes_away_raises_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        _read([_chunk(b"ab", more=True), {"type": "http.disconnect"}], 100, [])
