"""A minimal HTTP/1.1 client and SSE reader over asyncio streams, for the load generator.

Why not httpx: at 100 streams of 30 tokens/s the load generator reads thousands of small
chunks per second on the same two cores as the server it measures; every microsecond it
spends per chunk shows up as server latency. This reads what daphne and uvicorn send (a
status line, headers, then a Content-Length or chunked body) and nothing more: one
connection per request, no redirects, no cookie jar; ``\\n`` or ``\\r\\n`` line endings
in the stream (daphne sends the first, sse-starlette the second).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any


class HTTPError(Exception):
    """The server answered, but not with the expected status."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: one item per HTTP chunk (or per read without chunking)."""
        reader = self.reader
        if not self.chunked:
            length = self.headers.get("content-length")
            if length is not None:
                yield await reader.readexactly(int(length))
                return
            while data := await reader.read(65536):
                yield data
            return
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                return
            yield (await reader.readexactly(size + 2))[:-2]

    async def body(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self.chunks()])
        finally:
            self.close()

    def close(self) -> None:
        self.writer.close()


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> Response:
    """Send one request on a new connection; returns once the response headers are read."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        head.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        if body or method in {"POST", "PUT", "PATCH"}:
            head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError(f"{method} {path}: connection closed before the response")
        status = int(status_line.split(b" ", 2)[1])
        response_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
    except BaseException:
        writer.close()
        raise
    return Response(status, response_headers, reader, writer)


async def request_json(
    host: str,
    port: int,
    method: str,
    path: str,
    expect: int,
    payload: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """A JSON request whose answer must have status `expect`; returns the decoded body."""
    body = b"" if payload is None else json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})} if body else headers
    response = await request(host, port, method, path, all_headers, body)
    data = await response.body()
    if response.status != expect:
        raise HTTPError(f"{method} {path}: {response.status} {data[:300]!r}")
    return json.loads(data)


@dataclass(slots=True)
class SSEEvent:
    received_ns: int  # time.monotonic_ns() right after the chunk holding the event was read
    event: str
    data: str


async def sse_events(response: Response) -> AsyncIterator[SSEEvent]:
    """The events of a text/event-stream response, each stamped with its arrival time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    async for chunk in response.chunks():
        received_ns = time.monotonic_ns()
        pending += decoder.decode(chunk)
        if "\r" in pending:  # sse-starlette ends lines with CRLF; one may span two chunks
            pending = pending.replace("\r\n", "\n")
        *frames, pending = pending.split("\n\n")
        for frame in frames:
            event, data = "message", []
            for line in frame.split("\n"):
                field, _, value = line.partition(":")
                if field == "event":
                    event = value.removeprefix(" ")
                elif field == "data":
                    data.append(value.removeprefix(" "))
            if data or event != "message":  # a comment-only frame (keep-alive) is no event
                yield SSEEvent(received_ns, event, "\n".join(data))
