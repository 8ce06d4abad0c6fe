"""A fake OpenAI-compatible LLM upstream: a real HTTP/1.1 server speaking Chat Completions SSE.

Why this exists: the app under test talks to its LLM provider through the official ``openai``
SDK (``AsyncOpenAI(base_url=...)``). Mocking the SDK would hide exactly the things that break in
production -- chunk framing, keep-alive reuse, timeouts, resets, malformed or error chunks, slow
token streams, Unicode. So the tests and the benchmark point the real SDK at this real socket
server instead, and steer its behaviour per test (``set()``) or per request (``FAKE{...}`` in the
last user message).

Pure standard library: one asyncio event loop in a daemon thread, a hand-written minimal HTTP/1.1
server (request line, headers, Content-Length or chunked request bodies, keep-alive), chunked
``text/event-stream`` responses. Designed to pace hundreds of concurrent streams cheaply: one
timer per token per stream, pre-encoded chunk prefixes/suffixes, one ``write`` per token.

Tool calls stream as OpenAI streams them, the arguments' JSON split across chunks
(``tool_calls``; ``tool_call_fragments`` gives the fragments for scripting ``chunks``).
Every request's body is kept in ``requests``, so a test sees what the app sent.

``POST /v1/embeddings`` answers as OpenAI does (``input`` a string or a list of them,
``encoding_format`` float or base64, ``dimensions``, ``usage``) with ``fake_embedding``:
deterministic vectors that reward related text. Words are lower-cased, umlauts folded and
a few suffixes stripped; each word, its character trigrams (so "Kündigungsfrist" is near
"Kündigung" and "Frist") and its meaning, for the few word families in ``CONCEPTS`` (so
"Ferientage" is near "Urlaubsanspruch", with no word in common), land in hashed
dimensions. ``status``, ``status_times``, ``retry_after``, ``models``, ``headers`` and
``ttft`` (the wait before answering) apply to it as to a chat; ``FAKE{...}`` in an input
too; ``embeddings`` scripts its whole body.

CLI: ``python -m tests.helpers.upstream --port 8001 --ttft 0.2 --tps 30 --tokens 300``;
``--tool-calls '[{"name": "complete_phase", "arguments": {"summary": "..."}}]'`` and
``--text ''`` answer with a tool call alone.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import hashlib
import http
import ipaddress
import json
import logging
import re
import signal
import threading
import time
import unicodedata
import uuid
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

__all__ = [
    "BEHAVIOUR_DEFAULTS",
    "BEHAVIOUR_HELP",
    "CONCEPTS",
    "DEFAULT_MODELS",
    "FakeUpstream",
    "chunk",
    "fake_embedding",
    "split_tokens",
    "tool_call_fragments",
]

_log = logging.getLogger(__name__)

DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o-mini", "fake-model")

#: Every behaviour key with its default. ``set()``/constructor/``FAKE{...}`` accept only these.
BEHAVIOUR_DEFAULTS: dict[str, Any] = {
    "ttft": 0.0,  # seconds between response headers and the first chunk
    "role_gap": 0.0,  # seconds between the first chunk (the role, no text) and the first token
    "header_delay": 0.0,  # seconds before sending response headers at all
    "tps": 0.0,  # content tokens per second; 0 = as fast as possible
    "text": None,  # exact reply text (split with split_tokens); None -> "tok0 tok1 ..."
    "tokens": 20,  # number of generated tokens when text is None
    "status": None,  # answer this HTTP error status instead of a completion
    "retry_after": None,  # Retry-After header value for error responses
    "status_times": None,  # only the first N requests per (status, tag) get the error
    "reset_after": None,  # abort the TCP connection after k content tokens
    "malformed_after": None,  # send an invalid-JSON data line after k tokens, then end
    "error_after": None,  # send an in-stream {"error": ...} chunk after k tokens, then end
    "stall_after": None,  # go silent after k tokens until the client leaves / server stops
    "never_end": False,  # stream tokens forever
    "finish_reason": "stop",
    "usage": True,  # send the usage chunk when stream_options.include_usage is true
    "ascii_json": False,  # json ensure_ascii=True instead of raw UTF-8
    "models": None,  # list of accepted model ids (None = accept anything)
    "tag": None,  # label for token_log / status_times
    "headers": None,  # dict of extra response headers
    "stamp": False,  # streamed token i is "w<i>:<time.monotonic_ns()>", stamped as it is written
    "gzip": False,  # stream with content-encoding: gzip, flushed after every chunk
    # Data lines sent after the role chunk instead of the tokens, the finish and the usage
    # (then [DONE]): a str as it is (UTF-8, lone surrogates too), anything else as its JSON.
    "chunks": None,
    # The non-streamed answer's body instead of the completion object, the same way.
    "completion": None,
    # Tools the model calls after its text (which `text` or `tokens` give; "" for none):
    # a list of {"name", "arguments" (an object, or the raw text of the arguments), "id"?},
    # streamed as OpenAI streams them (tool_call_fragments), then finish_reason "tool_calls".
    "tool_calls": None,
    # /v1/embeddings: the vectors' dimensions unless the request asks for others.
    "embedding_dimensions": 256,
    # /v1/embeddings: its whole body instead of the vectors, as `completion` does for a chat.
    "embeddings": None,
}

_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_ENC_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ENC_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_YIELD_EVERY = 64  # with tps=0, give the loop a turn every this many tokens
ARGUMENTS_PIECE = 7  # characters of a tool call's arguments per chunk, as OpenAI splits them

_MALFORMED = b'data: {"id": "broken", "choices": [\n\n'
_STREAM_ERROR = (
    b'data: {"error": {"message": "The server had an error while processing your request.", '
    b'"type": "server_error", "code": null}}\n\n'
)
_DONE = b"data: [DONE]\n\n"
_LAST_CHUNK = b"0\r\n\r\n"

_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "invalid_request_error", None),
    404: ("The requested resource does not exist.", "invalid_request_error", "not_found"),
    408: ("Request timed out.", "timeout", None),
    409: ("Conflict, please retry.", "invalid_request_error", None),
    422: ("Unprocessable entity.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def chunk(**fields) -> dict:
    """A `chat.completion.chunk` object with `fields` (choices, usage ...): what the
    `chunks` behaviour sends, for tests that script the upstream's data lines."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        **fields,
    }


def split_tokens(text: str) -> list[str]:
    """Split text into tokens that carry their leading whitespace; ``"".join()`` restores it."""
    return _TOKEN_RE.findall(text)


def _encode_str(value: str, ascii_json: bool) -> bytes:
    if ascii_json:
        return _ENC_ASCII(value).encode("ascii")
    try:
        return _ENC_UTF8(value).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: only representable escaped
        return _ENC_ASCII(value).encode("ascii")


def _scripted(value: Any) -> bytes:
    """A scripted data line or body (`chunks`, `completion`): a str is the raw text."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return _encode_json(value)


def _frame(payload: bytes) -> bytes:
    """One HTTP chunk (chunked transfer encoding)."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _gzip_frames() -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """`_frame` and the last chunk for one gzip-encoded body: every chunk is compressed and
    flushed, so the client can decode each as it arrives; the last one ends the stream."""
    compressor = zlib.compressobj(wbits=31)

    def frame(payload: bytes) -> bytes:
        return _frame(compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))

    def last_chunk() -> bytes:
        return _frame(compressor.flush()) + _LAST_CHUNK

    return frame, last_chunk


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def tool_call_fragments(calls: list[dict[str, Any]], piece: int = ARGUMENTS_PIECE) -> list[dict[str, Any]]:
    """The `delta.tool_calls` fragments OpenAI streams for `calls` (the `tool_calls`
    behaviour's items), one per chunk: per call, one with its index, id, type and name and
    empty arguments, then its arguments' JSON in parts of `piece` characters."""
    fragments: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        fragments.append(
            {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
        )
        fragments.extend(
            {"index": index, "function": {"arguments": arguments[start : start + piece]}}
            for start in range(0, len(arguments), piece)
        )
    return fragments


def _tool_calls_valid(calls: Any) -> bool:
    return isinstance(calls, list) and all(
        isinstance(call, dict)
        and isinstance(call.get("name"), str)
        and isinstance(call.get("arguments", {}), dict | str)
        and isinstance(call.get("id", ""), str)
        for call in calls
    )


def _validate(behaviour: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(behaviour) - set(BEHAVIOUR_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown fake upstream behaviour keys: {unknown}")
    calls = behaviour.get("tool_calls")
    if calls is not None and not _tool_calls_valid(calls):
        raise ValueError('tool_calls: a list of {"name": str, "arguments": object or str, "id"?: str}')
    return behaviour


class _BadRequest(Exception):
    pass


def _user_text(messages: Any) -> str | None:
    """Text of the last message with role "user" (string or list-of-parts content)."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            return None
    return None


def _fake_override(messages: Any) -> dict[str, Any] | None:
    text = _user_text(messages)
    if not text:
        return None
    pos = text.find("FAKE{")
    if pos < 0:
        return None
    try:
        override, _ = json.JSONDecoder().raw_decode(text, pos + 4)
    except ValueError as exc:
        raise _BadRequest(f"FAKE{{...}} is not valid JSON: {exc}") from None
    try:
        return _validate(override)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None


def _prompt_chars(messages: Any) -> int:
    total = 0
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += len(part["text"])
    return total


def _token_at(tokens: list[str] | None, i: int) -> str:
    if tokens:
        return tokens[i % len(tokens)]
    return "tok0" if i == 0 else f" tok{i}"


def _stamped_token(i: int) -> str:
    """Token i with the time it is written: CLOCK_MONOTONIC is system-wide on Linux, so a
    client in another process can subtract it from its own ``time.monotonic_ns()``."""
    return f"{' ' if i else ''}w{i}:{time.monotonic_ns()}"


# --- embeddings ---------------------------------------------------------------------------------

EMBEDDING_DIMENSIONS_MAX = 4096
# Word families whose words share a meaning in fake_embedding: a word that begins with one
# of a family's stems (umlauts folded) carries the family's feature.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "vacation": ("urlaub", "ferien", "vacation", "holiday", "freizeit", "leave"),
    "termination": ("kundig", "entlass", "terminat", "dismiss", "resign"),
    "salary": ("gehalt", "lohn", "verguetung", "vergutung", "salary", "wage", "payroll", "bezahl"),
    "illness": ("krank", "arbeitsunfah", "sick", "illness", "attest"),
    "travel": ("reise", "dienstreis", "travel", "trip", "flug", "hotel"),
    "password": ("passwort", "kennwort", "password", "login", "anmeld"),
    "contract": ("vertrag", "vertrage", "contract", "agreement", "vereinbar"),
    "deadline": ("frist", "deadline", "termin", "stichtag", "due"),
}
_FOLD = str.maketrans({"ä": "a", "ö": "o", "ü": "u", "ß": "ss"})
_FAKE_STOPWORDS_TEXT = (
    "a an and are as at be by for from has have how i in is it of on or that the this to was what"
    " when which who why will with you your der die das den dem des ein eine einen einem einer"
    " und oder ist sind war wie was wer wo warum ich du er sie es wir ihr mir mich mit von zu zum"
    " zur im in auf für bei aus nach über habe hat haben kann viele viel nicht auch noch so"
)
_FAKE_STOPWORDS = frozenset(_FAKE_STOPWORDS_TEXT.translate(_FOLD).split())
_EMBED_WORD = re.compile(r"[^\W_]+")
_EMBED_SUFFIXES = ("ungen", "ung", "en", "er", "es", "e", "n", "s")


def _embed_stem(word: str) -> str:
    for suffix in _EMBED_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _embed_features(text: str) -> list[tuple[str, float]]:
    """What fake_embedding counts: each content word's stem (1.0), its trigrams (0.3 each)
    and the concepts it carries (2.0)."""
    folded = unicodedata.normalize("NFKD", text.lower().translate(_FOLD))
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    features: list[tuple[str, float]] = []
    for word in _EMBED_WORD.findall(folded):
        if word in _FAKE_STOPWORDS:
            continue
        stem = _embed_stem(word)
        features.append(("w:" + stem, 1.0))
        marked = f"#{stem}#"
        features += [("t:" + marked[i : i + 3], 0.3) for i in range(len(marked) - 2)]
        features += [
            ("c:" + concept, 2.0)
            for concept, stems in CONCEPTS.items()
            if any(word.startswith(prefix) for prefix in stems)
        ]
    return features


def fake_embedding(text: str, dimensions: int = 256) -> list[float]:
    """A deterministic unit vector of `text`: its features (_embed_features) hashed into
    `dimensions`, each with a hashed sign. Text without words gets a fixed vector."""
    vector = [0.0] * dimensions
    for feature, weight in _embed_features(text) or [("empty", 1.0)]:
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        vector[digest % dimensions] += weight if (digest >> 63) & 1 else -weight
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


class _Request:
    __slots__ = ("body", "headers", "method", "target", "version")

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class _Conn(asyncio.Protocol):
    """One TCP connection: buffers input, tracks liveness and write flow control."""

    def __init__(self, owner: FakeUpstream) -> None:
        self.owner = owner
        self.loop = owner._require_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.gone = False  # client closed/half-closed or connection lost
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # -- protocol callbacks (event loop thread) --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner._opened(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.gone = True
        self._wake()
        return True  # we close it ourselves once the handler notices

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.paused = False
        self._wake()
        self.owner._closed(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- helpers for the handler task --
    async def wait(self, max_wait: float | None = None) -> None:
        """Wait for any connection event (data, EOF, loss, resume) or ``max_wait`` seconds."""
        fut = self.loop.create_future()
        self.waiter = fut
        handle = None if max_wait is None else self.loop.call_later(max_wait, _resolve, fut)
        try:
            await fut
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()

    async def sleep_until(self, deadline: float) -> bool:
        """Sleep until loop time ``deadline``; False (early) if the client went away."""
        while not self.gone:
            remaining = deadline - self.loop.time()
            if remaining <= 0.0005:
                return True
            await self.wait(remaining)
        return False

    async def drain(self) -> bool:
        while self.paused and not self.gone:
            await self.wait()
        return not self.gone

    async def wait_gone(self) -> None:
        while not self.gone:
            await self.wait()

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if self.gone or transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def read_until(self, sep: bytes, limit: int) -> bytes | None:
        buf = self.buf
        while True:
            idx = buf.find(sep)
            if idx >= 0:
                data = bytes(buf[:idx])
                del buf[: idx + len(sep)]
                return data
            if self.gone or len(buf) > limit:
                return None
            await self.wait()

    async def read_exact(self, n: int) -> bytes | None:
        buf = self.buf
        while len(buf) < n:
            if self.gone:
                return None
            await self.wait()
        data = bytes(buf[:n])
        del buf[:n]
        return data


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FakeUpstream:
    """Real HTTP server imitating the OpenAI Chat Completions API (see module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        **defaults: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._base = {**BEHAVIOUR_DEFAULTS, **_validate(dict(defaults))}
        self._defaults: dict[str, Any] = dict(self._base)
        self._lock = threading.Lock()
        self._status_counts: dict[tuple[Any, str], int] = {}
        self.requests: list[dict[str, Any]] = []
        self.token_log: list[tuple[Any, int, float]] | None = None
        self.url = ""
        self._active = 0
        self._answering = 0
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ public API
    @property
    def active_connections(self) -> int:
        """Currently open TCP connections."""
        return self._active

    @property
    def responses_in_progress(self) -> int:
        """Requests being answered now: a client that leaves a stalled or endless response
        open shows here, unlike an idle keep-alive connection."""
        return self._answering

    @property
    def behaviour(self) -> dict[str, Any]:
        """A copy of the current default behaviour."""
        return dict(self._defaults)

    def set(self, **behaviour: Any) -> None:
        """Replace the default behaviour: constructor defaults overlaid with ``behaviour``."""
        new = {**self._base, **_validate(behaviour)}
        with self._lock:
            self._defaults = new
            self._status_counts.clear()

    def reset(self) -> None:
        """Restore the constructor defaults (and forget status_times counters)."""
        self.set()

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="fake-upstream", daemon=True)
        self._thread.start()
        started.wait()
        if self._start_error is not None or not self.url:
            self._thread.join()
            self._thread = None
            raise self._start_error or RuntimeError("fake upstream failed to start")
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        except TimeoutError:  # pragma: no cover - best effort
            _log.warning("fake upstream: shutdown timed out")
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop thread
    def _require_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_exception_handler)
        try:
            self._server = loop.run_until_complete(
                loop.create_server(
                    lambda: _Conn(self), self.host, self.port, backlog=4096, reuse_address=True
                )
            )
        except OSError as exc:
            self._start_error = exc
        finally:
            if self._server is None:
                loop.close()
                started.set()
        if self._server is None:
            return
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.port = sock_port
        address = ipaddress.ip_address(sock_host)
        if address.is_unspecified:
            address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
        url_host = f"[{address}]" if address.version == 6 else str(address)
        self.url = f"http://{url_host}:{sock_port}/v1"
        started.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for conn in list(self._conns):
            conn.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let connection_lost callbacks run
        if self._server is not None:
            await self._server.wait_closed()

    def _opened(self, conn: _Conn) -> None:
        self._active += 1
        self._conns.add(conn)
        task = self._require_loop().create_task(self._serve(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _closed(self, conn: _Conn) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self._active -= 1

    async def _serve(self, conn: _Conn) -> None:
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    break
                self._answering += 1
                try:
                    keep_alive = await self._dispatch(conn, request)
                finally:
                    self._answering -= 1
                if not keep_alive or conn.gone:
                    break
        except OSError:  # a vanished client must never produce tracebacks
            _log.debug("fake upstream connection error", exc_info=True)
        finally:
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                transport.close()

    async def _read_request(self, conn: _Conn) -> _Request | None:
        while conn.buf[:2] == b"\r\n":
            del conn.buf[:2]
        head = await conn.read_until(b"\r\n\r\n", _MAX_HEAD)
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) != 3:
            return None
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked_body(conn)
        else:
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                return None
            if length < 0 or length > _MAX_BODY:
                return None
            body = await conn.read_exact(length)
        if body is None:
            return None
        return _Request(method, target, version, headers, body)

    async def _read_chunked_body(self, conn: _Conn) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await conn.read_until(b"\r\n", 1024)
            if line is None:
                return None
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while True:  # trailers, terminated by an empty line
                    trailer = await conn.read_until(b"\r\n", _MAX_HEAD)
                    if trailer is None:
                        return None
                    if not trailer:
                        return b"".join(parts)
            total += size
            if total > _MAX_BODY:
                return None
            data = await conn.read_exact(size + 2)
            if data is None:
                return None
            parts.append(data[:-2])

    # ------------------------------------------------------------------ responses
    def _send(
        self,
        conn: _Conn,
        status: int,
        body: bytes,
        keep_alive: bool,
        extra: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> bool:
        head = [
            f"HTTP/1.1 {status} {_reason(status)}",
            f"content-type: {content_type}",
            f"content-length: {len(body)}",
            f"x-request-id: req_{uuid.uuid4().hex}",
            "connection: keep-alive" if keep_alive else "connection: close",
        ]
        head.extend(f"{k}: {v}" for k, v in extra or ())
        conn.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return keep_alive

    def _send_error(
        self,
        conn: _Conn,
        status: int,
        message: str,
        err_type: str,
        code: str | None,
        keep_alive: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> bool:
        body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
        return self._send(conn, status, json.dumps(body).encode(), keep_alive, extra)

    def _authorized(self, request: _Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _dispatch(self, conn: _Conn, request: _Request) -> bool:
        keep_alive = request.keep_alive
        path = request.target.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        if path in ("/v1/chat/completions", "/chat/completions") and request.method == "POST":
            return await self._chat(conn, request, path, keep_alive)
        if path in ("/v1/embeddings", "/embeddings") and request.method == "POST":
            return await self._embeddings(conn, request, path, keep_alive)
        if path in ("/v1/models", "/models") and request.method == "GET":
            if not self._authorized(request):
                return self._send_error(conn, 401, *_STATUS_ERRORS[401], keep_alive)
            models = self._defaults["models"] or DEFAULT_MODELS
            listing = {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake-upstream"} for m in models
                ],
            }
            return self._send(conn, 200, json.dumps(listing).encode(), keep_alive)
        return self._send_error(
            conn,
            404,
            f"Invalid URL ({request.method} {path})",
            "invalid_request_error",
            None,
            keep_alive,
        )

    def _status_applies(self, behaviour: dict[str, Any]) -> bool:
        times = behaviour["status_times"]
        if times is None:
            return True
        key = (behaviour["status"], json.dumps(behaviour["tag"], sort_keys=True, default=str))
        with self._lock:
            seen = self._status_counts.get(key, 0)
            self._status_counts[key] = seen + 1
        return seen < int(times)

    async def _chat(self, conn: _Conn, request: _Request, path: str, keep_alive: bool) -> bool:
        try:
            body = json.loads(request.body)
            if not isinstance(body, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError):
            self.requests.append({"body": None, "headers": request.headers, "path": path})
            return self._send_error(
                conn,
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
                keep_alive,
            )
        self.requests.append({"body": body, "headers": request.headers, "path": path})
        behaviour = self._defaults
        try:
            override = _fake_override(body.get("messages"))
        except _BadRequest as exc:
            return self._send_error(conn, 400, str(exc), "invalid_request_error", None, keep_alive)
        if override:
            behaviour = {**behaviour, **override}

        loop = conn.loop
        header_delay = float(behaviour["header_delay"] or 0)
        if header_delay > 0 and not await conn.sleep_until(loop.time() + header_delay):
            return False
        if not self._authorized(request):
            return self._send_error(conn, 401, *_STATUS_ERRORS[401], keep_alive)
        model = body.get("model")
        models = behaviour["models"]
        if models is not None and model not in models:
            return self._send_error(
                conn,
                404,
                f"The model `{model}` does not exist",
                "invalid_request_error",
                "model_not_found",
                keep_alive,
            )
        extra = [(str(k), str(v)) for k, v in (behaviour["headers"] or {}).items()]
        status = behaviour["status"]
        if status and int(status) != 200 and self._status_applies(behaviour):
            status = int(status)
            message, err_type, code = _STATUS_ERRORS.get(status, (f"Error {status}.", "server_error", None))
            if behaviour["retry_after"] is not None:
                extra.append(("retry-after", str(behaviour["retry_after"])))
            return self._send_error(conn, status, message, err_type, code, keep_alive, extra)
        if body.get("stream"):
            return await self._stream(conn, behaviour, body, keep_alive, extra)
        return await self._complete(conn, behaviour, body, keep_alive, extra)

    async def _embeddings(self, conn: _Conn, request: _Request, path: str, keep_alive: bool) -> bool:
        """POST /v1/embeddings: a vector per input (fake_embedding), in OpenAI's shape."""

        def invalid(message: str) -> bool:
            return self._send_error(conn, 400, message, "invalid_request_error", None, keep_alive)

        try:
            body = json.loads(request.body)
            if not isinstance(body, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError):
            self.requests.append({"body": None, "headers": request.headers, "path": path})
            return invalid("We could not parse the JSON body of your request.")
        self.requests.append({"body": body, "headers": request.headers, "path": path})
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return invalid("'input' must be a non-empty string or a non-empty list of strings.")
        if len(inputs) > 2048 or any(not text for text in inputs):
            return invalid("'input' must have at most 2048 items, none of them empty.")
        behaviour = self._defaults
        try:
            override = next(
                (o for o in (_fake_override([{"role": "user", "content": t}]) for t in inputs) if o), None
            )
        except _BadRequest as exc:
            return invalid(str(exc))
        if override:
            behaviour = {**behaviour, **override}
        ttft = float(behaviour["ttft"] or 0)
        if ttft > 0 and not await conn.sleep_until(conn.loop.time() + ttft):
            return False
        if not self._authorized(request):
            return self._send_error(conn, 401, *_STATUS_ERRORS[401], keep_alive)
        model = body.get("model")
        models = behaviour["models"]
        if not isinstance(model, str) or (models is not None and model not in models):
            return self._send_error(
                conn, 404, f"The model `{model}` does not exist", "invalid_request_error",
                "model_not_found", keep_alive,
            )  # fmt: skip
        extra = [(str(k), str(v)) for k, v in (behaviour["headers"] or {}).items()]
        status = behaviour["status"]
        if status and int(status) != 200 and self._status_applies(behaviour):
            status = int(status)
            message, err_type, code = _STATUS_ERRORS.get(status, (f"Error {status}.", "server_error", None))
            if behaviour["retry_after"] is not None:
                extra.append(("retry-after", str(behaviour["retry_after"])))
            return self._send_error(conn, status, message, err_type, code, keep_alive, extra)
        if behaviour["embeddings"] is not None:
            return self._send(conn, 200, _scripted(behaviour["embeddings"]), keep_alive, extra)
        dimensions = body.get("dimensions", behaviour["embedding_dimensions"])
        if isinstance(dimensions, bool) or not isinstance(dimensions, int):
            return invalid("'dimensions' must be an integer.")
        if not 1 <= dimensions <= EMBEDDING_DIMENSIONS_MAX:
            return invalid(f"'dimensions' must be between 1 and {EMBEDDING_DIMENSIONS_MAX}.")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return invalid("'encoding_format' must be 'float' or 'base64'.")
        data = []
        for index, text in enumerate(inputs):
            vector: Any = fake_embedding(text, dimensions)
            if encoding == "base64":
                vector = base64.b64encode(array.array("f", vector).tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(max(1, len(text) // 4) for text in inputs)
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self._send(conn, 200, json.dumps(answer).encode(), keep_alive, extra)

    async def _complete(
        self,
        conn: _Conn,
        behaviour: dict[str, Any],
        body: dict[str, Any],
        keep_alive: bool,
        extra: list[tuple[str, str]],
    ) -> bool:
        ttft = float(behaviour["ttft"] or 0)
        if ttft > 0 and not await conn.sleep_until(conn.loop.time() + ttft):
            return False
        if behaviour["reset_after"] is not None:
            conn.abort()
            return False
        if behaviour["completion"] is not None:
            return self._send(conn, 200, _scripted(behaviour["completion"]), keep_alive, extra)
        text = behaviour["text"]
        if text is not None:
            n_tokens = len(split_tokens(text))
        else:
            n_tokens = int(behaviour["tokens"])
            text = "".join(_token_at(None, i) for i in range(n_tokens))
        prompt = max(1, _prompt_chars(body.get("messages")) // 4)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        calls = behaviour["tool_calls"]
        if calls:
            # The fragments of each call, put together: its first one and its arguments.
            whole: list[dict[str, Any]] = []
            for fragment in tool_call_fragments(calls):
                if "id" in fragment:
                    whole.append({key: fragment[key] for key in ("id", "type", "function")})
                else:
                    whole[-1]["function"]["arguments"] += fragment["function"]["arguments"]
            message["tool_calls"] = whole
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(behaviour),
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": n_tokens,
                "total_tokens": prompt + n_tokens,
            },
        }
        ascii_json = bool(behaviour["ascii_json"])
        try:
            payload = json.dumps(completion, ensure_ascii=ascii_json).encode("utf-8")
        except UnicodeEncodeError:
            payload = json.dumps(completion).encode("ascii")
        return self._send(conn, 200, payload, keep_alive, extra)

    async def _stream(
        self,
        conn: _Conn,
        behaviour: dict[str, Any],
        body: dict[str, Any],
        keep_alive: bool,
        extra: list[tuple[str, str]],
    ) -> bool:
        loop = conn.loop
        ascii_json = bool(behaviour["ascii_json"])
        options = body.get("stream_options")
        include_usage = (
            bool(behaviour["usage"]) and isinstance(options, dict) and bool(options.get("include_usage"))
        )
        model = body.get("model")
        model_json = _ENC_ASCII(model).encode() if ascii_json else _encode_json(model)
        head = (
            b'data: {"id":"chatcmpl-%b","object":"chat.completion.chunk","created":%d,'
            b'"model":%b,"system_fingerprint":"fp_fake","choices":['
            % (uuid.uuid4().hex[:24].encode(), int(time.time()), model_json)
        )
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        prefix = head + b'{"index":0,"delta":{"content":'
        suffix = b'},"logprobs":null,"finish_reason":null}]' + tail

        response_head = [
            "HTTP/1.1 200 OK",
            "content-type: text/event-stream; charset=utf-8",
            "transfer-encoding: chunked",
            "cache-control: no-cache",
            f"x-request-id: req_{uuid.uuid4().hex}",
            "connection: keep-alive" if keep_alive else "connection: close",
        ]
        if behaviour["gzip"]:
            response_head.append("content-encoding: gzip")
            frame, last_chunk = _gzip_frames()
        else:
            frame, last_chunk = _frame, lambda: _LAST_CHUNK
        response_head.extend(f"{k}: {v}" for k, v in extra)
        if not conn.write(("\r\n".join(response_head) + "\r\n\r\n").encode("latin-1")):
            return False

        ttft = float(behaviour["ttft"] or 0)
        if ttft > 0 and not await conn.sleep_until(loop.time() + ttft):
            return False
        role = (
            head
            + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            + b'"logprobs":null,"finish_reason":null}]'
            + tail
        )
        if not conn.write(frame(role)):
            return False
        role_gap = float(behaviour["role_gap"] or 0)
        if role_gap > 0 and not await conn.sleep_until(loop.time() + role_gap):
            return False
        if behaviour["chunks"] is not None:
            lines = [frame(b"data: " + _scripted(chunk) + b"\n\n") for chunk in behaviour["chunks"]]
            conn.write(b"".join(lines) + frame(_DONE) + last_chunk())
            return keep_alive

        text = behaviour["text"]
        tokens = split_tokens(text) if text is not None else None
        never_end = bool(behaviour["never_end"])
        if tokens is not None and not tokens and never_end:
            tokens = None
        total = len(tokens) if tokens is not None else int(behaviour["tokens"])
        tps = float(behaviour["tps"] or 0)
        interval = 1.0 / tps if tps > 0 else 0.0
        reset_after = behaviour["reset_after"]
        malformed_after = behaviour["malformed_after"]
        error_after = behaviour["error_after"]
        stall_after = behaviour["stall_after"]
        stamp = bool(behaviour["stamp"])
        tag = behaviour["tag"]
        start = loop.time()
        i = 0
        while True:
            more = never_end or i < total
            if more and interval:
                if not await conn.sleep_until(start + i * interval):
                    return False
            elif i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if conn.gone:
                    return False
            if conn.paused and not await conn.drain():
                return False
            if i == reset_after:
                conn.abort()
                return False
            if i == malformed_after:
                conn.write(frame(_MALFORMED) + last_chunk())
                return keep_alive
            if i == error_after:
                conn.write(frame(_STREAM_ERROR) + last_chunk())
                return keep_alive
            if i == stall_after:
                await conn.wait_gone()
                return False
            if not more:
                break
            token = _stamped_token(i) if stamp else _token_at(tokens, i)
            payload = prefix + _encode_str(token, ascii_json) + suffix
            if not conn.write(frame(payload)):
                return False
            token_log = self.token_log
            if token_log is not None:
                token_log.append((tag, i, time.monotonic()))
            i += 1

        for fragment in tool_call_fragments(behaviour["tool_calls"] or []):
            if interval and not await conn.sleep_until(start + i * interval):
                return False
            if conn.paused and not await conn.drain():
                return False
            encoded = _ENC_ASCII(fragment).encode() if ascii_json else _encode_json(fragment)
            payload = (
                head
                + b'{"index":0,"delta":{"tool_calls":[%b]},"logprobs":null,"finish_reason":null}]' % encoded
                + tail
            )
            if not conn.write(frame(payload)):
                return False
            i += 1

        out = [
            frame(
                head
                + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":%b}]'
                % _encode_json(_finish_reason(behaviour))
                + tail
            )
        ]
        if include_usage:
            prompt = max(1, _prompt_chars(body.get("messages")) // 4)
            usage = {"prompt_tokens": prompt, "completion_tokens": i, "total_tokens": prompt + i}
            out.append(frame(head + b"]" + b',"usage":' + _encode_json(usage) + b"}\n\n"))
        out.append(frame(_DONE))
        out.append(last_chunk())
        conn.write(b"".join(out))
        return keep_alive


def _finish_reason(behaviour: dict[str, Any]) -> Any:
    """The answer's finish_reason: "tool_calls" for one that calls tools, unless another
    than the default "stop" was asked for."""
    if behaviour["tool_calls"] and behaviour["finish_reason"] == "stop":
        return "tool_calls"
    return behaviour["finish_reason"]


def _encode_json(value: Any) -> bytes:
    try:
        return _ENC_UTF8(value).encode("utf-8")
    except UnicodeEncodeError:
        return _ENC_ASCII(value).encode("ascii")


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), (ConnectionError, OSError)):
        return
    loop.default_exception_handler(context)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


# Every behaviour key's command-line help; main() offers each as --<key> (underscores as
# dashes), so the CLI reaches every behaviour that set(), the constructor and FAKE{...} do.
BEHAVIOUR_HELP: dict[str, str] = {
    "ttft": "seconds between the response headers and the first chunk",
    "role_gap": "seconds between the first chunk (the role, no text) and the first token",
    "header_delay": "seconds before sending the response headers at all",
    "tps": "content tokens per second; 0 = as fast as possible",
    "text": "the exact reply text (split into tokens); default: 'tok0 tok1 ...'",
    "tokens": "number of generated tokens when --text is not given",
    "status": "answer this HTTP error status instead of a completion",
    "retry_after": "Retry-After header value of error responses",
    "status_times": "only the first N requests per (status, tag) get the error status",
    "reset_after": "abort the TCP connection after K content tokens",
    "malformed_after": "send an invalid-JSON data line after K tokens, then end",
    "error_after": 'send an in-stream {"error": ...} chunk after K tokens, then end',
    "stall_after": "go silent after K tokens until the client leaves or the server stops",
    "never_end": "stream tokens forever",
    "finish_reason": "the finish_reason of the last chunk (JSON: a string, null, anything)",
    "usage": "send the usage chunk when stream_options.include_usage is true",
    "ascii_json": "encode JSON with ensure_ascii=True instead of raw UTF-8",
    "models": "JSON list of accepted model ids (others get 404); default: accept any",
    "tag": "label (JSON) for token_log and status_times",
    "headers": "JSON object of extra response headers",
    "stamp": "streamed token i is 'w<i>:<monotonic ns>', stamped as it is written",
    "gzip": "stream with content-encoding: gzip, flushed after every chunk",
    "chunks": "JSON list of data lines sent after the role chunk instead of the tokens (a string as is)",
    "completion": "JSON body of the non-streamed answer instead of the completion object",
    "tool_calls": (
        'JSON list of tool calls made after the text, e.g. [{"name": "complete_phase", "arguments": '
        '{"summary": "..."}}] (arguments: an object or its raw text); streamed as OpenAI does, '
        "the arguments split across chunks, then finish_reason tool_calls"
    ),
    "embedding_dimensions": "dimensions of /v1/embeddings vectors when the request names none",
    "embeddings": "JSON body of /v1/embeddings answers instead of the vectors (a string as is)",
}


def _json_or_text(raw: str) -> Any:
    """A command-line value: its JSON when it parses (3, 0.5, true, null, [..], {..}), else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.helpers.upstream",
        description=(
            "Fake OpenAI-compatible upstream. Each behaviour below is the default of every "
            "request; a request's last user message can override it with FAKE{...} (JSON). "
            "Values are JSON when they parse, else text."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on; 0 = any free port")
    parser.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (else 401); default: any"
    )
    behaviours = parser.add_argument_group("behaviour")
    for key, default in BEHAVIOUR_DEFAULTS.items():
        flag = isinstance(default, bool) and default is False
        if flag:
            behaviours.add_argument(
                _option(key),
                dest=key,
                action="store_const",
                const=True,
                default=None,
                help=BEHAVIOUR_HELP[key],
            )
        else:
            shown = "" if default is None else f" (default: {json.dumps(default)})"
            behaviours.add_argument(
                _option(key), dest=key, type=_json_or_text, default=None, metavar="VALUE",
                help=BEHAVIOUR_HELP[key] + shown,
            )  # fmt: skip
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any behaviour by its key, e.g. --set finish_reason='\"length\"' --set never_end=true",
    )
    args = parser.parse_args(argv)
    behaviour: dict[str, Any] = {
        key: getattr(args, key) for key in BEHAVIOUR_DEFAULTS if getattr(args, key) is not None
    }
    if "text" in behaviour:
        behaviour["text"] = args.text if isinstance(args.text, str) else json.dumps(args.text)
    for item in args.set:
        key, _, raw = item.partition("=")
        behaviour[key] = _json_or_text(raw)
    fake = FakeUpstream(args.host, args.port, args.api_key, **behaviour)
    fake.start()
    print(fake.url, flush=True)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)  # even if started with SIGINT ignored (`cmd &`)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
