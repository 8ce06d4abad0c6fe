"""The replay log in Redis Streams, shared by every server process (`REDIS_URL`).

A position taken from any process can be resumed on any other. `redis_stream` says what
goes to Redis (the streams, the appends without a script); this module runs it: on a
sync client for views, commands and threads, on async clients for the event loop, where
the appends of 20 ms go to Redis in one pipeline on a connection of their own and
their wake-ups in one message (`redis_fanout`). docs/architecture.md, "Scale-out",
describes what users see while Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator
from typing import Any

from django_eventstream.views import get_listener_manager

from assistant.events.log import (
    CATCH_UP_BATCH,
    DEFER_SECONDS,
    REPLAY_EVENTS_PER_CHANNEL,
    REPLAY_IDLE_SECONDS,
    RETRY_MAX_SECONDS,
    RETRY_MIN_SECONDS,
    EventsUnavailable,
    Items,
    LoggedEvent,
    Published,
    Pushed,
)
from assistant.events.redis_fanout import Fanout, wake_message
from assistant.events.redis_stream import Command, StreamSteps, publish_command, reads

logger = logging.getLogger(__name__)

# Redis connections per process and kind (sync, async), besides the pub/sub one.
POOL_CONNECTIONS = 32
# The event loop's appends wait this long for others to share their pipeline: each
# round trip costs about 100 µs of redis-py's work however few commands it carries
# (docs/architecture.md, "Scale-out", has the figures).
GATHER_SECONDS = 0.02


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def _unavailable(exc: BaseException) -> EventsUnavailable:
    return EventsUnavailable(f"{type(exc).__name__}: {exc}")


class RedisReplayLog:
    """The replay log in Redis Streams, shared by every server process.

    Keys (prefix `ASSISTANT_REDIS_PREFIX`, default `assistant`):

        <p>:events:stream:<channel>   stream: one entry per appended batch, at most
                                      `events_per_channel` entries; expires when neither
                                      written nor read for the idle time (plus a minute)
        <p>:events:start              the clock in µs when this prefix's log was first
                                      used or found lost: older positions predate it
        <p>:events:wake               pub/sub: the frames of appended batches (redis_fanout)
        <p>:cancel, <p>:revoke        pub/sub: stop requests and stream revocations
    """

    shared = True

    def __init__(
        self,
        url: str,
        prefix: str = "assistant",
        *,
        events_per_channel: int = REPLAY_EVENTS_PER_CHANNEL,
        idle_seconds: float = REPLAY_IDLE_SECONDS,
    ) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.url = url
        self.steps = StreamSteps(prefix, events_per_channel=events_per_channel, idle_seconds=idle_seconds)
        self.fanout = Fanout(url, prefix)
        # Each command is retried twice on a dropped connection: an append retried after
        # a lost reply finds its own batch (redis_stream). At most
        # POOL_CONNECTIONS connections per pool: past that, a command waits for one.
        self._options = {
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            "health_check_interval": 30,
            "client_name": f"{prefix}-events",
            "max_connections": POOL_CONNECTIONS,
            "timeout": 5,
        }
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
        pool = redis.BlockingConnectionPool.from_url(url, retry=retry, **self._options)
        self._sync = redis.Redis(connection_pool=pool, retry=retry)
        self._async: tuple[asyncio.AbstractEventLoop, Any, Any] | None = None
        # The event loop's appends waiting for the next pipeline, and the task sending it.
        self._queued: list[tuple[str, list[tuple[str, str]], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self._deferred: set[asyncio.Task] = set()

    # --- the sync side: views, commands, threads

    def _run_sync(self, steps: Generator) -> Any:
        try:
            commands = next(steps)
            while True:
                pipe = self._sync.pipeline(transaction=reads(commands))
                for name, args, kwargs in commands:
                    getattr(pipe, name)(*args, **kwargs)
                commands = steps.send(pipe.execute(raise_on_error=False))
        except StopIteration as done:
            return done.value
        except _redis_errors() as exc:
            raise _unavailable(exc) from exc

    def append(self, channel: str, event_type: str, data: str) -> int:
        return self.append_batch(channel, [(event_type, data)]).ids[0]

    def append_batch(self, channel: str, items: Items) -> Published:
        return self.publish_batch(channel, items)

    def publish_batch(self, channel: str, items: Items) -> Published:
        appended = self._run_sync(self.steps.append_steps(channel, list(items)))
        self._wake_local(channel, appended.pushed)
        try:
            self._sync.publish(
                self.fanout.wake_channel, wake_message(self.fanout.origin, [(channel, appended.pushed)])
            )
        except _redis_errors() as exc:
            # Stored: other processes' streams find it at their next read.
            logger.warning("wake-up for %s not sent (%s)", channel, type(exc).__name__)
        return appended.published

    def read(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> tuple[list[LoggedEvent], int]:
        state, found = self._run_sync(self.steps.read_steps(channel, position, limit))
        return found, (found[-1].id if found else max(position, state.newest))

    def since(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> list[LoggedEvent]:
        return self.read(channel, position, limit)[0]

    def can_resume(self, channel: str, position: int) -> bool:
        floor, newest = self.window(channel)
        return floor <= position <= newest

    def window(self, channel: str) -> tuple[int, int]:
        state = self._run_sync(self.steps.read_steps(channel, None, 0))[0]
        return state.floor, state.newest

    def current_id(self, channel: str) -> int:
        return self.window(channel)[1]

    def forget(self, channel: str) -> None:
        """Drop a channel's events now, keeping its position (old positions reset); with
        Redis unreachable they expire when idle."""
        try:
            self._run_sync(self.steps.forget_steps(channel))
        except (EventsUnavailable, *_redis_errors()) as exc:
            logger.warning(
                "Redis unavailable: events of %s expire within %d s instead of now (%s)",
                channel,
                self.steps.ttl_ms() // 1000,
                type(exc).__name__,
            )

    def request_cancel(self, message_id: int) -> None:
        """Tell every process at once; the owner stops it (the database poll stays the fallback)."""
        try:
            self._sync.publish(self.fanout.cancel_channel, str(message_id))
        except _redis_errors():
            logger.warning("stop request %s not sent through Redis; the database poll carries it", message_id)

    def request_revoke(self, key: str) -> None:
        """Tell every process to end the streams under `key` (assistant.open_streams)."""
        try:
            self._sync.publish(self.fanout.revoke_channel, key)
        except _redis_errors():
            logger.warning("stream revocation not sent through Redis; the account poll carries deactivations")

    # --- the async side: streams and generations on the event loop

    def _client(self, *, appends: bool = False):
        """This event loop's async client for reads, or for the appends (a client is bound
        to one loop). The appends have a connection of their own: streams reading at once
        cannot keep them waiting for one, and a wait would fail them (a replay)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff

            def client(connections: int):
                retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
                options = {**self._options, "max_connections": connections}
                pool = aredis.BlockingConnectionPool.from_url(self.url, retry=retry, **options)
                return aredis.Redis(connection_pool=pool, retry=retry)

            # One pipeline of appends at a time, and its wake-up.
            self._async = (loop, client(POOL_CONNECTIONS), client(1))
        return self._async[2 if appends else 1]

    async def _execute(
        self, commands: list[Command], *, transaction: bool | None = None, appends: bool = False
    ) -> list:
        client = self._client(appends=appends)
        pipe = client.pipeline(transaction=reads(commands) if transaction is None else transaction)
        for name, args, kwargs in commands:
            getattr(pipe, name)(*args, **kwargs)
        try:
            return await pipe.execute(raise_on_error=False)
        except _redis_errors() as exc:
            raise _unavailable(exc) from exc

    async def _run_async(
        self, steps: Generator, results: list | None = None, *, appends: bool = False
    ) -> Any:
        try:
            commands = next(steps) if results is None else steps.send(results)
            while True:
                commands = steps.send(await self._execute(commands, appends=appends))
        except StopIteration as done:
            return done.value

    async def aread(self, channel: str, position: int, limit: int = CATCH_UP_BATCH):
        state, found = await self._run_async(self.steps.read_steps(channel, position, limit))
        return found, (found[-1].id if found else max(position, state.newest))

    async def acurrent_id(self, channel: str) -> int:
        state = (await self._run_async(self.steps.read_steps(channel, None, 0)))[0]
        return state.newest

    async def apublish_batch(self, channel: str, items: Items) -> Published:
        """Append on the next pipeline of this loop: the appends gathered meanwhile go to
        Redis together, their wake-ups in one message."""
        future = asyncio.get_running_loop().create_future()
        self._queued.append((channel, list(items), future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())
        return await future

    async def _send_queued(self) -> None:
        """Started for the first append after a pipeline, it sends every append queued
        within GATHER_SECONDS in one. The wake-up of a pipeline's appends goes with the
        next pipeline, or alone when no append came meanwhile."""
        wake: bytes | None = None
        try:
            # It ends only with nothing queued and no await after that check: an append
            # queued while it awaits anything is sent by it.
            while self._queued or wake is not None:
                await asyncio.sleep(GATHER_SECONDS)
                if self._queued:
                    queued, self._queued = self._queued, []
                    try:
                        wake = await self._send(queued, wake)
                    except Exception as exc:  # a fault here must not leave an answer waiting
                        logger.exception("appending %d batches failed", len(queued))
                        for _, _, future in queued:
                            if not future.done():
                                future.set_exception(_unavailable(exc))
                        wake = None
                    continue
                message, wake = wake, None
                try:
                    await self._execute([publish_command(self.fanout.wake_channel, message)], appends=True)
                except EventsUnavailable as exc:
                    # Stored: the other processes' streams find them at their next read.
                    logger.warning("wake-ups of appends not sent (%s)", exc)
        finally:
            self._sender = None

    async def _send(
        self, queued: list[tuple[str, list[tuple[str, str]], asyncio.Future]], wake: bytes | None
    ) -> bytes | None:
        """One pipeline for the first step of every queued append (and the wake-up of the
        pipeline before), the rest one by one; returns the wake-up of these appends."""
        steps = [self.steps.append_steps(channel, items) for channel, items, _ in queued]
        firsts = []
        for step in steps:
            try:
                firsts.append(next(step))
            except Exception as exc:
                firsts.append(exc)
        batched = [commands for commands in firsts if isinstance(commands, list)]
        if wake is not None:
            batched.insert(0, [publish_command(self.fanout.wake_channel, wake)])
        try:
            results = await self._execute(
                [command for commands in batched for command in commands], transaction=False, appends=True
            )
        except EventsUnavailable as exc:
            for _, _, future in queued:
                if not future.done():
                    future.set_exception(exc)
            return None
        woken = []
        offset = 0 if wake is None else 1
        for (channel, _, future), step, commands in zip(queued, steps, firsts, strict=True):
            if not isinstance(commands, list):
                future.set_exception(commands)
                continue
            mine = results[offset : offset + len(commands)]
            offset += len(commands)
            try:
                appended = await self._run_async(step, mine, appends=True)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, EventsUnavailable) else _unavailable(exc))
                continue
            self._wake_local(channel, appended.pushed)
            woken.append((channel, appended.pushed))
            if not future.done():
                future.set_result(appended.published)
        return wake_message(self.fanout.origin, woken) if woken else None

    @staticmethod
    def _wake_local(channel: str, pushed: Pushed) -> None:
        # This process's streams get the frames at once; the others through the fan-out.
        get_listener_manager().add_to_queues(channel, pushed)

    def defer(self, channel: str, items: Items) -> None:
        """Publish `items` once Redis answers again, retrying in the background for a while."""
        loop = self.fanout.loop
        if loop is None or loop.is_closed():
            logger.error("events for %s lost: Redis is unavailable and nothing here retries", channel)
            return
        items = list(items)

        def schedule() -> None:
            task = loop.create_task(self._publish_eventually(channel, items))
            self._deferred.add(task)
            task.add_done_callback(self._deferred.discard)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            schedule()
        else:
            loop.call_soon_threadsafe(schedule)

    async def _publish_eventually(self, channel: str, items: Items) -> None:
        deadline = time.monotonic() + DEFER_SECONDS
        delay = RETRY_MIN_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                await self.apublish_batch(channel, items)
            except EventsUnavailable:
                if time.monotonic() > deadline:
                    logger.error(
                        "gave up publishing %d events for %s: Redis unavailable", len(items), channel
                    )
                    return
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            logger.info("published %d delayed events for %s", len(items), channel)
            return

    def start_fanout(
        self,
        on_cancel: Callable[[int], object] | None = None,
        on_revoke: Callable[[str], object] | None = None,
    ) -> None:
        """Start this loop's pub/sub listener once (idempotent); it runs until the loop ends."""
        self.fanout.start(on_cancel, on_revoke)

    def close(self) -> None:
        """Close the sync connections (the async ones: `aclose`, on their loop)."""
        self._sync.close()
        self._sync.connection_pool.disconnect()

    async def aclose(self) -> None:
        """Stop this loop's listener and deferred publications, and close its connections."""
        for task in self._deferred:
            task.cancel()
        await asyncio.gather(*self._deferred, return_exceptions=True)
        await self.fanout.stop()
        if self._async is not None and self._async[0] is asyncio.get_running_loop():
            for client in self._async[1:]:
                await client.aclose()
                await client.connection_pool.disconnect()
        self._async = None
