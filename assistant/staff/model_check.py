"""The model service check: a tiny request per model, timed, or a diagnosis of its failure."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from assistant.providers.errors import ProviderError
from assistant.providers.openai_compatible import error_from_exception
from assistant.providers.values import Finish

CHECK_PROMPT = [{"role": "user", "content": "Reply with the single word OK."}]
CHECK_MAX_TOKENS = 5


@dataclass
class ModelCheck:
    model: str
    ok: bool
    complete_ms: int | None = None
    first_token_ms: int | None = None
    stream_ms: int | None = None
    error: ProviderError | None = None
    diagnosis: str = ""


def base_url_shown() -> str:
    """OPENAI_BASE_URL without any user:password in it (or the SDK's default)."""
    url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def _reachable(url: str, timeout: float) -> str | None:
    """None when a TCP connection to `url`'s host opens; else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"the host name {parts.hostname!r} does not resolve"
    except TimeoutError:
        return f"no answer from {parts.hostname}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or exc}"


def diagnose(error: ProviderError, *, model: str) -> str:
    """What a failed check means, in the terms of the settings to look at. Never the key."""
    url = base_url_shown()
    if error.type == "auth_failed":
        return f"the API key was refused (HTTP {error.code}): check OPENAI_API_KEY for {url}"
    if error.type == "model_not_found":
        return (
            f"the server does not know model {model!r} (HTTP 404): check ASSISTANT_MODELS "
            "(when every model fails so, check that OPENAI_BASE_URL has the API's path, e.g. /v1)"
        )
    if error.type == "timeout":
        return (
            f"no answer in time from {url} (connect {settings.OPENAI_CONNECT_TIMEOUT:g} s, "
            f"read {settings.OPENAI_TIMEOUT:g} s): check OPENAI_BASE_URL, the network, or the timeouts"
        )
    if error.type == "rate_limited":
        return "the server is rate-limiting this key (HTTP 429): try again later or raise the limit"
    if error.type == "upstream_unavailable":
        unreachable = _reachable(settings.OPENAI_BASE_URL or url, settings.OPENAI_CONNECT_TIMEOUT)
        if unreachable:
            return f"cannot reach OPENAI_BASE_URL {url}: {unreachable}"
        return f"{url} is reachable but answered HTTP {error.code} (unavailable or overloaded)"
    if error.type == "bad_request":
        return f"the server rejected the request (HTTP {error.code}): is {url} an OpenAI-compatible API?"
    return f"{error.type} (HTTP {error.code}): {error.detail}"


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def model_check(provider, *, model: str) -> ModelCheck:
    """One tiny non-streamed request and one tiny streamed one to `model`, timed."""
    check = ModelCheck(model=model, ok=False)
    try:
        started = time.monotonic()
        await provider.complete(model=model, messages=CHECK_PROMPT, max_tokens=CHECK_MAX_TOKENS)
        check.complete_ms = _ms_since(started)
        started = time.monotonic()
        stream = provider.stream(model=model, messages=CHECK_PROMPT)
        try:
            async for item in stream:
                if check.first_token_ms is None and not isinstance(item, Finish):
                    check.first_token_ms = _ms_since(started)
        finally:
            await stream.aclose()
        check.stream_ms = _ms_since(started)
    except Exception as exc:
        check.error = error_from_exception(exc)
        check.diagnosis = await asyncio.to_thread(diagnose, check.error, model=model)
        return check
    check.ok = True
    return check
