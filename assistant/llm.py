"""LLM access: the only module that imports openai.

A provider streams an answer as text deltas followed by one `Finish`, and completes short
requests (titles) in one piece. Every failure,
before or during the stream, becomes one `ProviderError` with a safe message (never the
upstream's body, URL or key) and a `retryable` flag the browser shows as a Retry button.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import urlsplit

import httpx2
import openai
import orjson
from django.conf import settings
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from config.fastpaths import aiohttp as fast_aiohttp

logger = logging.getLogger(__name__)


# The largest token count kept: a billion, far beyond any model's context. Counts go to
# 32-bit columns (PositiveIntegerField), and SQL adds an answer's two in that type (the
# usage limits): 2**31 - 1 in each made every later send of the user fail on PostgreSQL.
TOKENS_MAX = 1_000_000_000
# The reasons an OpenAI-compatible server gives for ending an answer. Anything else an
# upstream says (a long text, a number, an object, "cancelled", which only a stop
# decides) is stored and published as OTHER_FINISH_REASON.
FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls", "function_call"})
OTHER_FINISH_REASON = "other"
# Longer than any wait a model service means: a larger Retry-After is read as this.
RETRY_AFTER_MAX_SECONDS = 3600.0


def token_count(value: object) -> int | None:
    """A usage figure from the upstream as Assistant stores it: a whole number from 0 to
    TOKENS_MAX, or None (not said, or not a count).

    A figure out of range is None, not clamped: no answer has a billion tokens, and the
    maximum stored in its place would pass for a measurement.
    """
    if type(value) is float and value.is_integer():  # 12.0; never inf or nan
        value = int(value)
    if type(value) is not int:  # bool is an int, but true is not a count; "12" is a string
        return None
    return value if 0 <= value <= TOKENS_MAX else None


def finish_reason_of(value: object) -> str:
    """The upstream's finish_reason as Assistant stores it: one of FINISH_REASONS,
    `stop` when it said none, OTHER_FINISH_REASON for anything else."""
    if value is None or value == "":
        return "stop"
    return value if isinstance(value, str) and value in FINISH_REASONS else OTHER_FINISH_REASON


@dataclass(frozen=True)
class Finish:
    """How an answer ended, as the upstream said, always within what the database stores:
    every provider's values pass through `finish_reason_of` and `token_count` here."""

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "finish_reason", finish_reason_of(self.finish_reason))
        object.__setattr__(self, "prompt_tokens", token_count(self.prompt_tokens))
        object.__setattr__(self, "completion_tokens", token_count(self.completion_tokens))


@dataclass
class ProviderError(Exception):
    """What went wrong upstream, in terms safe to show to the user."""

    code: int
    type: str
    detail: str
    retryable: bool
    retry_after: float | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.code} {self.type}: {self.detail}"


# type -> (retryable, user-facing detail)
_ERRORS: dict[str, tuple[bool, str]] = {
    "bad_request": (False, _("The model service rejected the request.")),
    "auth_failed": (False, _("The model service refused the configured credentials.")),
    "model_not_found": (False, _("The model service does not know this model.")),
    "timeout": (True, _("The model service took too long to answer.")),
    "conflict": (True, _("The model service reported a conflict.")),
    "rate_limited": (True, _("The model service is busy (rate limit). Try again shortly.")),
    "upstream_unavailable": (True, _("The model service is unavailable right now.")),
    "upstream_error": (True, _("The model service sent a broken answer.")),
    "internal": (True, _("Something went wrong while generating the answer.")),
    "interrupted": (
        True,
        _("The server restarted while writing this answer. The text so far is kept; you can retry."),
    ),
}


RETRYABLE_TYPES = frozenset(type_ for type_, (retryable, _detail) in _ERRORS.items() if retryable)


def provider_error(type_: str, code: int, retry_after: float | None = None) -> ProviderError:
    retryable, detail = _ERRORS[type_]
    return ProviderError(code, type_, str(detail), retryable, retry_after)


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
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return provider_error("upstream_error", 502)
    # An in-stream error object, or the HTTP client failing mid-body (reset, bad chunking):
    # the SDK version decides which class it is, and all of them mean a broken answer.
    name = type(exc).__name__
    if "Timeout" in name:
        return provider_error("timeout", 504)
    if isinstance(exc, openai.APIError | OSError) or "Error" in name:
        return provider_error("upstream_error", 502)
    return provider_error("internal", 500)


# NUL, which PostgreSQL cannot store, and lone surrogates (a JSON escape such as \ud800 with
# no pair), which have no UTF-8 form and would break the stream and the database write.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def model_text(text: str) -> str:
    """The model's text as Assistant publishes and stores it: NUL and lone surrogates become
    U+FFFD (as an HTML parser shows them); every other character is kept."""
    return _UNSTORABLE.sub("\ufffd", text)


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of an SSE body at CR, LF or CRLF, and the rest still to come.

    Only those: str.splitlines (which the SDK's iter_lines() uses) also breaks at U+2028,
    U+2029 and U+0085, characters a model may well write raw in UTF-8 JSON.
    """
    held = b""
    if buffer.endswith(b"\r"):
        # Maybe the first half of a CRLF split across reads.
        buffer, held = buffer[:-1], b"\r"
    *lines, rest = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return lines, rest + held


async def sse_line_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The lines of an SSE body arriving in chunks: those each chunk completes, together."""
    pending = b""
    async for chunk in chunks:
        lines, pending = split_lines(pending + chunk)
        if lines:
            yield lines
    if pending.rstrip(b"\r"):
        yield [pending.rstrip(b"\r")]


def _unpaced() -> float:
    return 0.0


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


def _chunk(data: bytes) -> dict:
    """One data line's JSON: orjson, a quarter of json's CPU per token (0.7 against 2.8 µs
    for a chunk of one token), and json for what orjson refuses and json takes (a lone
    surrogate's escape: model_text replaces it)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode())  # str: json skips guessing the encoding


def _broken() -> ProviderError:
    return provider_error("upstream_error", 502)


@dataclass
class _Completion:
    """What the data lines of a streamed chat completion said so far.

    Every value is checked where it is read: a chunk that is not shaped as the protocol
    says (not an object, choices that are not a list of objects, text that is not a
    string) is a broken answer, and what the upstream says about the answer's end (its
    finish_reason, its usage figures) is kept only as `Finish` stores it.
    """

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done: bool = False
    # A broken line (invalid JSON, an in-stream error): the text before it still counts.
    error: Exception | None = None

    def text(self, lines: list[bytes]) -> str:
        """The text of these lines up to the end or a broken line; notes what they said."""
        texts = []
        try:
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self.done = True
                    break
                self._read(_chunk(data), texts)
        except Exception as exc:
            self.error = exc
        return model_text("".join(texts))

    def _read(self, chunk: object, texts: list[str]) -> None:
        if not isinstance(chunk, dict) or "error" in chunk:
            raise _broken()
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self.prompt_tokens = token_count(usage.get("prompt_tokens"))
            self.completion_tokens = token_count(usage.get("completion_tokens"))
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise _broken()
        for choice in choices:
            if not isinstance(choice, dict):
                raise _broken()
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _broken()
            text = delta.get("content")
            if text is not None and not isinstance(text, str):
                raise _broken()
            if text:
                texts.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = finish_reason_of(choice["finish_reason"])

    def finish(self) -> Finish:
        return Finish(self.finish_reason, self.prompt_tokens, self.completion_tokens)


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
        self, *, model: str, messages: list[dict[str, str]]
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
        self, *, model: str, messages: list[dict[str, str]], pace: Callable[[], float] = _unpaced
    ) -> AsyncIterator[str | Finish]:
        """The answer's text as it arrives, then its Finish; the body is read at most once
        per `pace()` seconds, and each item is all the text one read brought."""
        completion = _Completion()
        try:
            async with self._streamed(model=model, messages=messages) as response:
                async for lines in sse_line_batches(_paced(response, pace)):
                    text = completion.text(lines)
                    if text:
                        yield text
                    if completion.error is not None:
                        raise completion.error
                    if completion.done:
                        break
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            error = error_from_exception(exc)
            # Class and mapping only: an exception's text may quote the upstream's body.
            logger.warning("upstream failed: %s -> %s", type(exc).__name__, error.type)
            raise error from None
        yield completion.finish()

    async def complete(self, *, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """A short answer in one piece, not streamed; ProviderError on any failure."""
        try:
            response = await self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=False
            )
            content = response.choices[0].message.content if response.choices else None
            if content is not None and not isinstance(content, str):
                raise _broken()  # the SDK builds its objects without checking types
            return model_text(content or "")
        except Exception as exc:
            # The caller logs the mapped type; the exception's text may quote the upstream.
            raise error_from_exception(exc) from None


DEMO_REPLY = {
    "en": (
        "This is the offline demo model. No language model is configured, so I cannot "
        "really answer, but everything else works as it will with a real one: streaming, "
        "history, stop, reload.\n\nYou wrote: “{question}”\n\nTo connect a real model, set "
        "OPENAI_API_KEY (and OPENAI_BASE_URL for any OpenAI-compatible server) and restart."
    ),
    "de": (
        "Dies ist das Offline-Demomodell. Es ist kein Sprachmodell eingerichtet, daher "
        "kann ich nicht wirklich antworten – alles andere funktioniert aber wie mit einem "
        "echten Modell: Streaming, Verlauf, Stopp, Neuladen.\n\nSie schrieben: „{question}“\n\n"
        "Für ein echtes Modell OPENAI_API_KEY setzen (und OPENAI_BASE_URL für jeden "
        "OpenAI-kompatiblen Server) und neu starten."
    ),
}


class DemoProvider:
    """A labelled canned reply at a human reading pace, so the app works with no network."""

    async def stream(
        self, *, model: str, messages: list[dict[str, str]], pace: Callable[[], float] = _unpaced
    ) -> AsyncIterator[str | Finish]:
        """The reply a word at a time at the demo pace; `pace` has nothing to batch here."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if len(question) > 200:
            question = question[:200] + "…"
        language = (get_language() or "en")[:2]
        reply = DEMO_REPLY.get(language, DEMO_REPLY["en"]).format(question=question)
        words = reply.split(" ")
        pace = settings.ASSISTANT_DEMO_TOKENS_PER_SECOND
        started = time.monotonic()
        for index, word in enumerate(words):
            if pace:
                await asyncio.sleep(max(0.0, started + index / pace - time.monotonic()))
            yield word if index == 0 else " " + word
        prompt_chars = sum(len(m["content"]) for m in messages)
        yield Finish("stop", max(1, prompt_chars // 4), len(words))

    async def complete(self, *, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The first words of the last question's first line: a title without a model."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        first_line = next((line for line in question.splitlines() if line.strip()), "")
        return " ".join(first_line.split()[:6])


@cache
def get_provider() -> OpenAIProvider | DemoProvider:
    """The configured provider, built on first use (settings are final by then)."""
    return DemoProvider() if settings.ASSISTANT_DEMO_MODE else OpenAIProvider()


async def provider_close() -> None:
    """Close the provider's connections, if one was built: they belong to this event loop.

    The next get_provider() builds a new one.
    """
    if get_provider.cache_info().currsize:
        provider = get_provider()
        get_provider.cache_clear()
        if isinstance(provider, OpenAIProvider):
            await provider.client.close()
