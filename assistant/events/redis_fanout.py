"""The wake-ups of the Redis replay log: one pub/sub connection per process.

The appends of one pipeline publish one wake-up with their frames on `<p>:events:wake`;
every other process's connection hands them to django-eventstream's listener manager,
which wakes the local streams of their channels (the appending process woke its own at
once, and skips its own wake-ups). The same connection carries
stop requests (`<p>:cancel`) and stream revocations (`<p>:revoke`). It pings, and after
an error or a silence reconnects and wakes every local stream to read the log again:
the log is the source of truth, so a wake-up lost meanwhile changes only latency.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence

from django_eventstream.views import get_listener_manager

from assistant.events.log import RETRY_MAX_SECONDS, RETRY_MIN_SECONDS, Pushed

logger = logging.getLogger(__name__)

# The pub/sub connection pings this often and counts as dead after this long in silence.
PING_SECONDS = 5.0
SILENCE_SECONDS = 15.0


def wake_message(origin: bytes, woken: Sequence[tuple[str, Pushed]]) -> bytes:
    """One wake-up for appends of several channels: the origin's line, then per channel a
    line `channel previous first last length` and `length` bytes of frames."""
    parts = [origin, b"\n"]
    for channel, pushed in woken:
        frames = pushed.frames.encode()
        parts.append(f"{channel} {pushed.previous} {pushed.first} {pushed.last} {len(frames)}\n".encode())
        parts.append(frames)
    return b"".join(parts)


def parse_wake(message: bytes) -> tuple[bytes, Iterator[tuple[str, Pushed]]]:
    """The origin of a wake-up and its (channel, frames) pairs."""
    origin, _, rest = message.partition(b"\n")

    def sections() -> Iterator[tuple[str, Pushed]]:
        at = 0
        while at < len(rest):
            end = rest.index(b"\n", at)
            channel, previous, first, last, length = rest[at:end].split(b" ")
            at = end + 1 + int(length)
            frames = rest[end + 1 : at].decode()
            yield channel.decode(), Pushed(int(previous), int(first), int(last), frames)

    return origin, sections()


def wake_all() -> None:
    """Make every stream of this process read the log again."""
    manager = get_listener_manager()
    with manager.lock:
        channels = list(manager.listeners_by_channel)
    for channel in channels:
        manager.add_to_queues(channel, None)  # not Pushed: read the log


class Fanout:
    """This process's pub/sub listener for the wake, cancel and revoke channels."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.client_name = f"{prefix}-fanout"
        self.wake_channel = f"{prefix}:events:wake"
        self.cancel_channel = f"{prefix}:cancel"
        self.revoke_channel = f"{prefix}:revoke"
        # Names this process in its wake-ups, which it skips: it woke its streams itself.
        self.origin = uuid.uuid4().hex.encode()
        self.on_cancel: Callable[[int], object] | None = None
        self.on_revoke: Callable[[str], object] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        # True while the pub/sub connection is up (for tests and /readyz).
        self.connected = False

    def start(
        self,
        on_cancel: Callable[[int], object] | None = None,
        on_revoke: Callable[[str], object] | None = None,
    ) -> None:
        """Start this loop's listener once (idempotent); it runs until the loop ends."""
        if on_cancel is not None:
            self.on_cancel = on_cancel
        if on_revoke is not None:
            self.on_revoke = on_revoke
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self.loop = loop
            # A fresh context: the task outlives whichever request started it.
            self._task = loop.create_task(self._listen_forever(), context=contextvars.Context())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _listen_forever(self) -> None:
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        delay = RETRY_MIN_SECONDS
        failed = False
        while True:
            # No retries inside redis-py: a drop must reach this loop, which wakes every
            # stream after reconnecting (wake-ups published meanwhile are lost).
            client = aredis.Redis.from_url(
                self.url,
                socket_connect_timeout=2,
                socket_timeout=None,
                retry=Retry(NoBackoff(), 0),
                client_name=self.client_name,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.wake_channel, self.cancel_channel, self.revoke_channel)
                self.connected = True
                if failed:
                    logger.warning("event wake-ups from Redis are back")
                failed = False
                delay = RETRY_MIN_SECONDS
                wake_all()
                await self._dispatch(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                if not failed:
                    logger.warning("event wake-ups from Redis lost (%s); reconnecting", type(exc).__name__)
                failed = True
                # Streams retry their reads meanwhile; none waits for a wake-up that is lost.
                wake_all()
            finally:
                self.connected = False
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: S110 - the connection is gone either way
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _dispatch(self, pubsub) -> None:
        loop = asyncio.get_running_loop()
        manager = get_listener_manager()
        wake = self.wake_channel.encode()
        revoke = self.revoke_channel.encode()
        heard = next_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = loop.time()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    if message["channel"] == wake:
                        origin, woken = parse_wake(message["data"])
                        if origin != self.origin:
                            for channel, pushed in woken:
                                manager.add_to_queues(channel, pushed)
                    elif message["channel"] == revoke:
                        if self.on_revoke is not None:
                            self.on_revoke(message["data"].decode())
                    elif self.on_cancel is not None:
                        try:
                            self.on_cancel(int(message["data"]))
                        except Exception:
                            logger.exception("stop request %r failed", message["data"])
            if now >= next_ping:
                next_ping = now + PING_SECONDS
                await pubsub.ping()
            if now - heard > SILENCE_SECONDS:
                raise ConnectionError("Redis did not answer a ping")
