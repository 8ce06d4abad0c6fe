"""The event stream endpoint on the wire: a conversation's events path, streams of many
users, a stream read until the server closes it, a bare HTTP/1.1 connection, a chunked body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model

from assistant.models import Conversation
from tests.helpers.live import LiveServer, session_cookie
from tests.helpers.sse import SSEEvent, parse_sse, sse_lines


def events_url(conversation: Conversation) -> str:
    return f"/api/conversations/{conversation.pk}/events/"


def streams_of_several_users(count: int) -> list[tuple[str, str]]:
    """(events path, session cookie) for `count` streams, spread over as many users as
    the per-user cap (ASSISTANT_MAX_STREAMS_PER_USER) needs to leave them all open."""
    per_user = settings.ASSISTANT_MAX_STREAMS_PER_USER
    users = [
        get_user_model().objects.create_user(f"streamer-{n}")
        for n in range((count + per_user - 1) // per_user)
    ]
    owned = [
        (events_url(Conversation.objects.create(owner=user, model="fake-model")), session_cookie(user))
        for user in users
    ]
    return [owned[n // per_user] for n in range(count)]


def until_closed(response: httpx.Response, deadline: float = 10) -> Iterator[SSEEvent]:
    """The events of a stream until the server closes it; fails after `deadline` seconds
    (keep-alives every 3 s make sure the check runs)."""
    give_up = time.monotonic() + deadline
    for event in parse_sse(sse_lines(response)):
        yield event
        if time.monotonic() > give_up:
            raise AssertionError(f"the stream was still open after {deadline} s")


def open_then(client: httpx.Client, url: str, action) -> list[SSEEvent]:
    """Open a stream, `action()` once it is open, then every event until the server closes it."""
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        events = until_closed(response)
        assert next(events).event == "stream-open"
        action()
        return list(events)


async def open_raw_stream(live: LiveServer, path: str, cookie: str) -> tuple:
    """A bare HTTP/1.1 connection whose stream has opened (it sent `stream-open`)."""
    host = live.url.removeprefix("http://")
    name, port = host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(name, int(port))
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        f"Cookie: {settings.SESSION_COOKIE_NAME}={cookie}\r\n\r\n".encode()
    )
    received = b""
    while b"stream-open" not in received:
        chunk = await asyncio.wait_for(reader.read(4096), 30)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received
    return reader, writer


def dechunked(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body's content (the last chunk may be cut short)."""
    content = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        length = int(size, 16)
        content += body[:length]
        body = body[length + 2 :]
    return content
