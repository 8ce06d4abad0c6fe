"""Any OpenAI-compatible chat completions server, through the official SDK: the only
module that imports openai.

The answer streams as text deltas, then the tools it called, then one `Finish`; a short
request (a title) completes in one piece. Texts become vectors through `/v1/embeddings`
(`OpenAIEmbeddings`, synchronous: the document readers and the searches that need them
run on threads). Whatever the SDK or its HTTP client raises becomes one `ProviderError`
(assistant/providers/errors.py).
"""

from __future__ import annotations

import array
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import aiohttp
import httpx2
import openai
import orjson
from aiohttp import http_exceptions
from django.conf import settings

from assistant.providers.errors import ProviderError, provider_error
from assistant.providers.sse import Completion, sse_line_batches
from assistant.providers.values import Finish, ToolCall, model_text, tool_names, unpaced
from config.fastpaths import aiohttp as fast_aiohttp

logger = logging.getLogger(__name__)

# Longer than any wait a model service means: a larger Retry-After is read as this.
RETRY_AFTER_MAX_SECONDS = 3600.0


def _status_error(status: int, retry_after: float | None) -> ProviderError:
    if not 100 <= status <= 599:
        return provider_error("upstream_error", 502)  # no status HTTP defines
    if status in (401, 403):
        return provider_error("auth_failed", status)
    if status == 404:
        return provider_error("model_not_found", status)
    if status == 408:
        return provider_error("timeout", status)
    if status == 409:
        return provider_error("conflict", status)
    if status == 429:
        return provider_error("rate_limited", status, retry_after)
    if status >= 500:
        return provider_error("upstream_unavailable", status, retry_after)
    return provider_error("bad_request", status)


def _retry_after(headers) -> float | None:
    """The Retry-After header's seconds, at most RETRY_AFTER_MAX_SECONDS; None when absent
    or not a number of seconds (an HTTP date, a negative, inf or nan)."""
    try:
        value = float(headers.get("retry-after", ""))
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, RETRY_AFTER_MAX_SECONDS)


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from, outermost first."""
    while exc is not None:
        yield exc
        exc = exc.__cause__


# The connection broke off while the answer's body was read: the upstream (or a proxy on
# the way) closed or reset it, or it ended before its length (chunked or Content-Length)
# was complete. The SDK turns a failure before the response into an APIConnectionError
# (upstream_unavailable); these come from reading the body, through httpx2 (the public
# path and a gzipped body) or from aiohttp itself (the fast path).
_CONNECTION_DROPS = (
    ConnectionError,  # reset, aborted, broken pipe
    aiohttp.ClientConnectionError,  # the server disconnected; an OSError under aiohttp
    httpx2.ReadError,
    httpx2.RemoteProtocolError,  # "peer closed connection without sending complete message body"
    http_exceptions.TransferEncodingError,
    http_exceptions.ContentLengthError,
)
# A body that arrived but cannot be decoded is a broken answer, not a dropped connection.
_UNDECODABLE = (http_exceptions.ContentEncodingError, http_exceptions.DecompressSizeError)


def _connection_dropped(exc: BaseException) -> bool:
    """Whether `exc` says the connection broke off mid-body; a timer that ran out (aiohttp's
    ServerTimeoutError is a ClientConnectionError too) is a timeout, not a drop."""
    causes = list(_causes(exc))
    if any(isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__ for cause in causes):
        return False
    return any(isinstance(cause, _CONNECTION_DROPS) for cause in causes) and not any(
        isinstance(cause, _UNDECODABLE) for cause in causes
    )


def error_from_exception(exc: BaseException) -> ProviderError:
    """Map anything the SDK or its HTTP client raises to a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc.status_code, _retry_after(exc.response.headers))
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        if not any(isinstance(cause, TimeoutError) for cause in _causes(exc)):
            # The aiohttp transport reports a refused or dropped connection as a
            # ConnectTimeout; only a timer that ran out is a timeout.
            return provider_error("upstream_unavailable", 503)
        return provider_error("timeout", 504)
    if isinstance(exc, openai.APIConnectionError):
        return provider_error("upstream_unavailable", 503)
    if _connection_dropped(exc):
        return provider_error("connection_lost", 502)
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return provider_error("upstream_error", 502)
    # An in-stream error object, or the HTTP client failing mid-body some other way (bad
    # chunking, a body it cannot decode): the SDK version decides which class it is, and
    # all of them mean a broken answer.
    name = type(exc).__name__
    if "Timeout" in name:
        return provider_error("timeout", 504)
    if isinstance(exc, openai.APIError | OSError) or "Error" in name:
        return provider_error("upstream_error", 502)
    return provider_error("internal", 500)


def _paced(response: httpx2.Response, pace: Callable[[], float]) -> AsyncIterator[bytes]:
    """The body's chunks, read at most once per `pace()` seconds.

    What the upstream writes between two reads, a token at a time, comes in one read, one
    chunk through the HTTP client's layers and the line parser instead of one per token:
    the answer's coalescing window holds text back as long anyway. Through the fast path
    `aiohttp` (config/fastpaths/aiohttp.py) when it is installed and the SDK's aiohttp
    transport carries the response; otherwise through httpx2's public `aiter_bytes()`.
    """
    raw = fast_aiohttp.aiohttp_response(response) if fast_aiohttp.installed() else None
    if raw is not None:
        return fast_aiohttp.paced(response, raw, pace)
    return _read_paced(response, pace)


async def _read_paced(response: httpx2.Response, pace: Callable[[], float]) -> AsyncIterator[bytes]:
    """`_paced` on public ground: the HTTP client keeps receiving while we wait, and each
    read brings all it has."""
    async for chunk in response.aiter_bytes():
        yield chunk
        wait = pace()
        if wait > 0:
            await asyncio.sleep(wait)


def _http_client(base_url: str) -> openai.DefaultAioHttpClient | None:
    """The SDK's aiohttp transport; None (the SDK's default) for a URL with credentials.

    aiohttp parses HTTP in C: reading a streamed answer costs a fraction of the CPU per
    token of the default transport (h11 and an anyio cancel scope per read). It refuses
    credentials in the URL next to the API key's header, which the default transport
    sends as Basic auth instead of the key: a proxy in front of the model may want that.
    """
    if urlsplit(base_url).username is not None:
        return None
    return openai.DefaultAioHttpClient()


class OpenAIProvider:
    """Any OpenAI-compatible chat completions server, through the official SDK.

    Streams through the SDK's raw response and parses the `data:` lines itself: building
    a pydantic object per chunk is the SDK's main CPU cost at high token rates.
    """

    def __init__(self) -> None:
        self.client = openai.AsyncOpenAI(
            api_key=settings.OPENAI_API_KEY or "not-needed",
            base_url=settings.OPENAI_BASE_URL or None,
            max_retries=settings.OPENAI_MAX_RETRIES,
            timeout=openai.Timeout(settings.OPENAI_TIMEOUT, connect=settings.OPENAI_CONNECT_TIMEOUT),
            http_client=_http_client(settings.OPENAI_BASE_URL),
        )

    @contextlib.asynccontextmanager
    async def _streamed(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        tools: list[dict] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[httpx2.Response]:
        """The streaming chat completion's HTTP response, body unread; closed on leaving.

        Through the SDK's documented request for custom bodies (its retries, timeouts,
        headers and error classes all apply), not `chat.completions.create`: that one first
        walks the whole history against the parameters' TypedDicts, about 0.15 ms per
        message on the event loop, 30 ms for a conversation of 200 messages. The body goes
        as JSON bytes encoded here (the SDK's `content`; its Content-Type stays JSON): its
        own encoder, json with a fallback for its types, takes 0.48 ms on the event loop
        for a history of 200 messages, orjson 0.01 ms, for the same JSON.
        """
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # Each only when given: the server's own default otherwise, and a server that knows
        # no tools sees the request it always did.
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        response = await self.client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            content=orjson.dumps(body),
            stream=True,
            stream_cls=None,
        )
        try:
            yield response
        finally:
            await response.aclose()

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        pace: Callable[[], float] = unpaced,
        tools: list[dict] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str | ToolCall | Finish]:
        """The answer's text as it arrives, then the tools it called, then its Finish; the
        body is read at most once per `pace()` seconds, and each item is all the text one
        read brought.

        `tools` (OpenAI tool definitions), `temperature` and `max_tokens` go upstream when
        given. A call of a tool not among `tools`, or with arguments that are not a JSON
        object, is a `tool_error` after the text.
        """
        offered = tool_names(tools)  # Assistant's own definitions: a fault in them is its own
        completion = Completion()
        try:
            async with self._streamed(
                model=model, messages=messages, tools=tools, temperature=temperature, max_tokens=max_tokens
            ) as response:
                async for lines in sse_line_batches(_paced(response, pace)):
                    text = completion.text(lines)
                    if text:
                        yield text
                    if completion.error is not None:
                        raise completion.error
                    if completion.done:
                        break
            calls = completion.tool_calls()
            if any(call.name not in offered for call in calls):
                raise provider_error("tool_error", 502)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            error = error_from_exception(exc)
            # Class and mapping only: an exception's text may quote the upstream's body.
            logger.warning("upstream failed: %s -> %s", type(exc).__name__, error.type)
            raise error from None
        for call in calls:
            yield call
        yield completion.finish()

    async def complete(self, *, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """A short answer in one piece, not streamed; ProviderError on any failure."""
        try:
            response = await self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=False
            )
            content = response.choices[0].message.content if response.choices else None
            if content is not None and not isinstance(content, str):
                raise provider_error("upstream_error", 502)  # the SDK builds its objects unchecked
            return model_text(content or "")
        except Exception as exc:
            # The caller logs the mapped type; the exception's text may quote the upstream.
            raise error_from_exception(exc) from None


# A vector's length at most: the largest embedding models have a few thousand dimensions.
EMBEDDING_DIMENSIONS_MAX = 16384


class OpenAIEmbeddings:
    """Texts as vectors from any OpenAI-compatible `/v1/embeddings`, through the SDK's
    synchronous client: thread-safe, with no event loop to belong to."""

    def __init__(
        self, *, api_key: str, base_url: str, max_retries: int, timeout: float, connect: float
    ) -> None:
        self.client = openai.OpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url or None,
            max_retries=max_retries,
            timeout=openai.Timeout(timeout, connect=connect),
        )

    def embed(self, texts: list[str], *, model: str, timeout: float | None = None) -> list[bytes]:
        """Each text's vector, in order, as float32 little-endian bytes (as the model gave
        it, not normalised); ProviderError on any failure, an answer that is not one
        vector of one length per text included."""
        try:
            # base64, which the SDK asks for too: a quarter of the bytes of JSON numbers,
            # and no float objects to build. A server that knows only floats sends those.
            response = self.client.embeddings.create(
                input=texts,
                model=model,
                encoding_format="base64",
                **({"timeout": timeout} if timeout is not None else {}),
            )
            return _vectors(response.data, len(texts))
        except Exception as exc:
            # The synchronous transport's timer running out is httpx2's, not asyncio's.
            timed_out = any(
                isinstance(cause, httpx2.TimeoutException) and not isinstance(cause, httpx2.ConnectTimeout)
                for cause in _causes(exc)
            )
            error = provider_error("timeout", 504) if timed_out else error_from_exception(exc)
            logger.warning("embeddings failed: %s -> %s", type(exc).__name__, error.type)
            raise error from None

    def close(self) -> None:
        self.client.close()


def _vectors(data: list, count: int) -> list[bytes]:
    """The vectors of an embeddings answer in input order, as float32 LE bytes."""
    if not isinstance(data, list) or len(data) != count:
        raise provider_error("upstream_error", 502)
    vectors: list[bytes | None] = [None] * count
    for item in data:
        index = getattr(item, "index", None)
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise provider_error("upstream_error", 502)
        vectors[index] = _vector_bytes(getattr(item, "embedding", None))
    sizes = {len(vector) for vector in vectors}
    if len(sizes) != 1 or not 0 < sizes.pop() <= 4 * EMBEDDING_DIMENSIONS_MAX:
        raise provider_error("upstream_error", 502)
    return vectors  # type: ignore[return-value] -- every index was filled once


def _vector_bytes(embedding: object) -> bytes:
    """One embedding (base64 of float32 LE, or a list of numbers) as float32 LE bytes."""
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except (binascii.Error, ValueError):
            raise provider_error("upstream_error", 502) from None
        if len(raw) % 4:
            raise provider_error("upstream_error", 502)
        return raw  # little-endian, as the server wrote it
    if isinstance(embedding, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in embedding
    ):
        try:
            vector = array.array("f", embedding)
        except OverflowError:
            raise provider_error("upstream_error", 502) from None
        if sys.byteorder != "little":
            vector.byteswap()
        return vector.tobytes()
    raise provider_error("upstream_error", 502)
