"""Streamed answers read from aiohttp itself, with the connection held between paced reads.

The provider reads an answer's body at most once per coalescing window (`pace`). Its
public path, httpx2's `aiter_bytes()` and a sleep between reads, does the same work at a
measured cost (docs/architecture.md, "Fast paths"): while it sleeps, aiohttp still
receives every token as it comes (a wake-up, a parse and a reset of its read timer each),
and every read passes four layers of async iterators (httpx2's and the SDK transport's).
This module, for the SDK's aiohttp transport only:

- holds the connection between two reads (`_Held`), with aiohttp's own hold for a buffer
  it cannot drain yet: what the upstream writes meanwhile waits in the socket, and after
  the wait is received in one go with the call the event loop makes for a readable
  socket; while every window brings text, the connection stays held, with no selector
  change and no wake-up of its own per window;
- reads a body that is not content-encoded (the usual) from aiohttp's own reader, not
  through httpx2's and the transport's iterators (a gzipped one goes through httpx2, which
  decodes it);
- keeps the read timeout (OPENAI_TIMEOUT, the longest silence) with one timer per timeout
  (`_ReadDeadline`), not aiohttp's, which it cancels and sets again on every piece of data.

Private names used: httpx2's `Response.stream._stream` and the SDK transport's
`_aiohttp_response` (to find the aiohttp response); aiohttp's
`ResponseHandler._pause_reading_for_buffer`, `_resume_reading_for_buffer` and
`_on_read_timeout`; asyncio's socket transport's `_read_ready`. Written for the versions
in WRITTEN_FOR; another one, or the switch off, leaves the provider on the public path
(`installed`). tests/test_llm.py fails when one of these names changes within them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import cache

import aiohttp
import httpx2
from aiohttp.client_proto import ResponseHandler

from config import fastpaths

WRITTEN_FOR = {"aiohttp": ("3.14",), "httpx2": ("2.17",), "openai": ("3.54",)}

# At most this much per read: as much as the SDK's transport asks aiohttp for.
_READ_BYTES = 16 * 1024


@cache
def installed() -> bool:
    """Whether this process reads streamed answers through this fast path: decided once,
    at start-up (config/asgi.py) or else at the first answer, by the switch and the
    installed versions against WRITTEN_FOR."""
    return fastpaths.allowed("aiohttp", WRITTEN_FOR)


def aiohttp_response(response: httpx2.Response) -> aiohttp.ClientResponse | None:
    """The aiohttp response under the SDK's, or None (another HTTP transport)."""
    return getattr(getattr(response.stream, "_stream", None), "_aiohttp_response", None)


class _ReadDeadline:
    """The read timeout of a streamed body (OPENAI_TIMEOUT: at most so long without a
    byte), with one timer per timeout rather than one per read.

    aiohttp cancels and sets its own timer on every piece of data it receives: a third of
    the timer work of every window of every answer. Here aiohttp's is switched off (its
    public `read_timeout`, as aiohttp itself does for websockets), the body's reads note
    when they brought bytes (`progressed`), and one timer, due a timeout after that, looks
    when it fires: a read since sets it again for a timeout after that read; none, and
    no byte received either, ends the body with aiohttp's own timeout error, as aiohttp's
    timer would (its `_on_read_timeout`). Bytes are read within a coalescing window of
    their arrival, so the timeout runs out that much late at most, never early.
    """

    def __init__(self, protocol: ResponseHandler, content: aiohttp.StreamReader) -> None:
        self._protocol, self._content = protocol, content
        self._seconds = protocol.read_timeout
        protocol.read_timeout = None  # aiohttp drops its timer at the next data
        self._loop = asyncio.get_running_loop()
        self._read_at = self._loop.time()
        self._received = content.total_bytes
        self._handle = self._loop.call_at(self._read_at + self._seconds, self._look)

    def progressed(self) -> None:
        """A read brought bytes."""
        self._read_at = self._loop.time()

    def _look(self) -> None:
        if self._content.is_eof():
            return  # the body is complete: its connection may be serving another request
        now, due = self._loop.time(), self._read_at + self._seconds
        if due <= now and self._content.total_bytes == self._received:
            self._protocol._on_read_timeout()
            return
        self._received = self._content.total_bytes
        self._handle = self._loop.call_at(due if due > now else now + self._seconds, self._look)

    def cancel(self) -> None:
        self._handle.cancel()


class _Held:
    """The connection under a streamed answer, not read by the event loop between two
    paced reads.

    Held by aiohttp's own hold for a buffer it cannot drain yet: its flow control, which
    resumes the transport on every read of the body, leaves the transport alone while
    it is held. When the body is read from aiohttp's reader (`direct`) and the transport
    is asyncio's own socket transport, what came meanwhile is received after each wait
    with the call the event loop makes for a readable socket, and the connection stays
    held for the next wait: an upstream that sends a token per window or more costs no
    selector change and no wake-up per window. Only a wait after which nothing had come
    lets the event loop read again (the next read waits for the upstream). A TLS or
    uvloop transport, or a body read through httpx2, is let go after each wait.
    """

    def __init__(self, raw: aiohttp.ClientResponse, *, direct: bool) -> None:
        connection = raw.connection
        # None once the body is complete (the connection is back in the pool).
        self._protocol = connection.protocol if connection is not None else None
        self._receive = getattr(connection.transport, "_read_ready", None) if direct and connection else None
        self._content = raw.content
        self._held = False
        # Bytes of the body read from aiohttp's reader (direct only).
        self.consumed = 0
        self._deadline: _ReadDeadline | None = None
        if direct and self._protocol is not None and self._protocol.read_timeout:
            self._deadline = _ReadDeadline(self._protocol, self._content)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from aiohttp's reader, as it arrives (`direct`).

        read(n), not readany(): that one leaves what its own flow control refills while
        it drains, so every other paced read would bring a single token.
        """
        deadline = self._deadline
        while chunk := await self._content.read(_READ_BYTES):
            self.consumed += len(chunk)
            if deadline is not None:
                deadline.progressed()
            yield chunk

    def close(self) -> None:
        self.release()
        if self._deadline is not None:
            self._deadline.cancel()

    async def wait(self, seconds: float) -> None:
        if self._protocol is None:
            await asyncio.sleep(seconds)
            return
        if not self._held:
            self._protocol._pause_reading_for_buffer()
            self._held = True
        await asyncio.sleep(seconds)
        if self._receive is None:
            self.release()
            return
        content = self._content
        if content.total_bytes == self.consumed:
            self._receive()  # what came meanwhile, now, in one receive
        # Nothing came (the next read waits for the upstream), or the body is complete
        # (the connection is back in the pool): the event loop reads it again.
        if content.total_bytes == self.consumed or content.is_eof():
            self.release()

    def release(self) -> None:
        """Let the event loop read the connection again."""
        if self._held:
            self._held = False
            self._protocol._resume_reading_for_buffer()


async def paced(
    response: httpx2.Response, raw: aiohttp.ClientResponse, pace: Callable[[], float]
) -> AsyncIterator[bytes]:
    """The body's chunks, read at most once per `pace()` seconds, the connection held
    between two reads; `raw` is `aiohttp_response(response)`.

    A body without content encoding comes from aiohttp's reader itself: the same bytes as
    through httpx2 (aiohttp undoes the chunking; the SDK's transport leaves decoding to
    httpx2, hence identity only). Errors are aiohttp's own then, which the provider maps
    as it maps httpx2's. A gzipped body goes through httpx2, which decodes it.
    """
    direct = response.headers.get("content-encoding", "identity") == "identity"
    held = _Held(raw, direct=direct)
    try:
        async for chunk in held.chunks() if direct else response.aiter_bytes():
            yield chunk
            wait = pace()
            if wait > 0:
                await held.wait(wait)
            else:
                held.release()  # the next read may have to wait for the upstream
    finally:
        held.close()
