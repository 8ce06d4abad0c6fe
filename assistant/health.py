"""Readiness checks for /readyz: the database, event delivery and, on request, the upstream.

Each check answers "ok" or "error: <kind>", where the kind is an exception's class or a
ProviderError's type: never a message, URL or credential, since the answer is public.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from assistant.generation.running import background_task
from assistant.providers.demo import DemoProvider
from assistant.providers.errors import ProviderError
from assistant.providers.openai_compatible import OpenAIProvider

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 5.0
LLM_TIMEOUT_SECONDS = 10.0
# /readyz?llm=1 is public: one upstream request per process per this many seconds at most.
LLM_RESULT_SECONDS = 30.0

OK = "ok"
SKIPPED = "skipped"


def _error(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return f"error: {exc.type}"
    if isinstance(exc, TimeoutError):
        return "error: timeout"
    return f"error: {type(exc).__name__}"


def _database_ping() -> None:
    # The shared thread keeps its connection between requests: one the database dropped
    # (a restart, a failover) is replaced once before the check reports an error.
    for attempt in (1, 2):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return
        except DatabaseError:
            connection.close()
            if attempt == 2:
                raise


async def database_status() -> str:
    try:
        # Outside the request's context: the shared thread, not one of the request's own.
        await asyncio.wait_for(background_task(sync_to_async(_database_ping)()), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        return _error(exc)
    return OK


async def events_status() -> str:
    """Redis when REDIS_URL is configured (scale-out), else the in-process log: always up."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return OK
    try:
        import redis.asyncio as redis  # installed only for scale-out

        client = redis.from_url(url, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=2)
        try:
            await asyncio.wait_for(client.ping(), CHECK_TIMEOUT_SECONDS)
        finally:
            await client.aclose()
    except Exception as exc:
        logger.warning("readiness: redis check failed: %s", type(exc).__name__)
        return _error(exc)
    return OK


async def _llm_probe() -> str:
    # A provider of its own, closed at the end: a fresh connection is the honest test, and
    # the shared provider's pooled connections belong to the loop that made them.
    provider = DemoProvider() if settings.ASSISTANT_DEMO_MODE else OpenAIProvider()
    try:
        await asyncio.wait_for(
            provider.complete(
                model=settings.ASSISTANT_MODELS[0],
                messages=[{"role": "user", "content": "Reply with OK."}],
                max_tokens=1,
            ),
            LLM_TIMEOUT_SECONDS,
        )
    except Exception as exc:
        logger.warning("readiness: upstream check failed: %s", _error(exc))
        return _error(exc)
    finally:
        if isinstance(provider, OpenAIProvider):
            await provider.client.close()
    return OK


_llm_task: asyncio.Task[str] | None = None
_llm_started = 0.0


async def llm_status() -> str:
    """One tiny completion; concurrent and repeated checks share one result for a while."""
    global _llm_task, _llm_started
    loop = asyncio.get_running_loop()
    stale = _llm_task is None or _llm_task.get_loop() is not loop
    if not stale and _llm_task.done() and time.monotonic() - _llm_started > LLM_RESULT_SECONDS:
        stale = True
    if stale:
        _llm_task = background_task(_llm_probe())
        _llm_started = time.monotonic()
    # Shielded: a prober that hangs up does not cancel the check the others wait for.
    return await asyncio.shield(_llm_task)


async def readiness(*, check_llm: bool) -> dict[str, str]:
    """Each check's status; the database and event checks run concurrently."""
    database, events = await asyncio.gather(database_status(), events_status())
    return {
        "database": database,
        "events": events,
        "llm": await llm_status() if check_llm else SKIPPED,
    }


def is_ready(checks: dict[str, str]) -> bool:
    return all(status in (OK, SKIPPED) for status in checks.values())
