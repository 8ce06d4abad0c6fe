"""The replay log in Redis Streams, shared by every server process (`REDIS_URL`).

One stream per channel, `<p>:events:ch:<channel>`. An entry is one appended batch: its
id is `<first event id>-0`, its field `f` the batch's SSE frames (each one line of
data, ended by a blank line, so the frames of an entry split on "\\n\\n"). The first
entry of a stream also carries `floor`, the position below which the channel's events
predate the stream. Event ids are contiguous within a stream: the next batch starts
right after the newest entry's last event.

Appends need no script. A process remembers where each channel it wrote or read ends,
and adds the next batch with `XADD … NOMKSTREAM MAXLEN` at exactly that id: Redis
refuses an id that is not above the stream's top, so two writers (or a retried command)
never store a batch twice or out of order; the writer that was refused reads where the
stream ends, finds its own batch there if a lost reply hid its success, and otherwise
appends after it. A stream that is gone (expired, forgotten, Redis restarted empty)
starts again above the Redis clock in µs, and `<p>:events:floor` (written when found
missing) tells positions from before Redis lost its data. The event loop's appends of
one turn go to Redis in one pipeline, and their wake-ups in one message
(`redis_fanout`). docs/architecture.md, "Scale-out", describes what users see while
Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
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
    PositionUnknown,
    Published,
    Pushed,
)
from assistant.events.redis_fanout import Fanout, wake_message
from assistant.events.wire import frame

logger = logging.getLogger(__name__)

# Redis connections per process and kind (sync, async), besides the pub/sub one.
POOL_CONNECTIONS = 32
# Slack for clocks: a channel's stream lives this much longer than the idle time after
# which positions from before its last event are no longer trusted.
_EXPIRY_SLACK_SECONDS = 60
# Channels whose end this process remembers, at most.
_KNOWN_CHANNELS_MAX = 20_000
# An append sets the stream's expiry again when this process last did so this long ago
# (less than the slack of the expiry: a stream lives on for the idle time after its
# last event at least).
_EXPIRY_REFRESH_SECONDS = 30
# Attempts at an append that others' appends to the same channel keep overtaking.
_APPEND_ATTEMPTS = 5

# A step of an append or read: commands for one pipeline, as (method name, args, kwargs).
Command = tuple[str, tuple, dict]


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def _unavailable(exc: BaseException) -> EventsUnavailable:
    return EventsUnavailable(f"{type(exc).__name__}: {exc}")


@dataclass(slots=True)
class _End:
    """Where a channel's stream ends, as this process last saw it."""

    next: int  # the id its next event gets
    floor: int  # positions from here on can be resumed (as far as this process knows)
    # When its expiry is due for a refresh (time.monotonic()); 0: with the next append.
    refresh_at: float = 0.0


@dataclass(frozen=True, slots=True)
class _Entry:
    first: int
    frames: str
    floor: int | None  # only on a stream's first entry

    @classmethod
    def of(cls, raw: tuple[bytes, dict[bytes, bytes]]) -> _Entry:
        entry_id, fields = raw
        floor = fields.get(b"floor")
        return cls(
            int(entry_id.split(b"-", 1)[0]),
            fields.get(b"f", b"").decode(),
            None if floor is None else int(floor),
        )

    @property
    def count(self) -> int:
        return self.frames.count("\n\n")

    @property
    def last(self) -> int:
        """The entry's last event; an entry without events (a forgotten channel's) stands
        for its id."""
        return self.first + max(self.count - 1, 0)

    def events(self) -> list[LoggedEvent]:
        return [
            LoggedEvent(self.first + n, text + "\n\n")
            for n, text in enumerate(self.frames.split("\n\n")[:-1])
        ]


@dataclass(frozen=True, slots=True)
class _Appended:
    published: Published
    pushed: Pushed


class RedisReplayLog:
    """The replay log in Redis Streams, shared by every server process.

    Keys (prefix `ASSISTANT_REDIS_PREFIX`, default `assistant`):

        <p>:events:ch:<channel>   stream: one entry per appended batch, at most
                                  `events_per_channel` entries; expires when neither
                                  written nor read for the idle time (plus a minute)
        <p>:events:floor          the Redis clock in µs when this prefix's data was
                                  first found missing: older positions predate it
        <p>:events:wake           pub/sub: the frames of appended batches (redis_fanout)
        <p>:cancel, <p>:revoke    pub/sub: stop requests and stream revocations
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

        if events_per_channel < 1 or idle_seconds < 0:
            raise ValueError("a replay log keeps at least one event, for no negative time")
        self.url = url
        self.prefix = prefix
        self.events_per_channel = events_per_channel
        self.idle_seconds = idle_seconds
        self.floor_key = f"{prefix}:events:floor"
        self.fanout = Fanout(url, prefix)
        # Each command is retried twice on a dropped connection: an append retried after
        # a lost reply finds its own batch (see the module docstring). At most
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
        self._lock = threading.Lock()
        self._ends: dict[str, _End] = {}
        # The event loop's appends waiting for the next pipeline, and the task sending it.
        self._queued: list[tuple[str, list[tuple[str, str]], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self._deferred: set[asyncio.Task] = set()

    # --- what both sides share: the steps, as commands and the reading of their results

    def _key(self, channel: str) -> str:
        return f"{self.prefix}:events:ch:{channel}"

    def _ttl_ms(self) -> int:
        return int((self.idle_seconds + _EXPIRY_SLACK_SECONDS) * 1000)

    def _idle_us(self) -> int:
        return int(self.idle_seconds * 1_000_000)

    def _remember(self, channel: str, end: _End) -> None:
        with self._lock:
            if channel not in self._ends and len(self._ends) >= _KNOWN_CHANNELS_MAX:
                self._ends.pop(next(iter(self._ends)))  # the longest known
            self._ends[channel] = end

    def _xadd(
        self, channel: str, first: int, frames: str, floor: int | None, *, new: bool, expire: bool = True
    ) -> list[Command]:
        fields = {"f": frames} if floor is None else {"f": frames, "floor": str(floor)}
        options = {"id": f"{first}-0", "maxlen": self.events_per_channel, "approximate": False}
        if not new:
            options["nomkstream"] = True  # a stream that is gone is not silently started again
        commands: list[Command] = [("xadd", (self._key(channel), fields), options)]
        if expire:
            commands.append(("pexpire", (self._key(channel), self._ttl_ms()), {}))
        return commands

    def _fast_append(self, channel: str, items: Items) -> tuple[list[Command], list[str], int] | None:
        """The commands for appending where this process last saw the channel end, or
        None when it does not know the end."""
        with self._lock:
            end = self._ends.get(channel)
        if end is None:
            return None
        frames = [frame(channel, kind, end.next + n, data) for n, (kind, data) in enumerate(items)]
        expire = time.monotonic() >= end.refresh_at
        commands = self._xadd(channel, end.next, "".join(frames), None, new=False, expire=expire)
        return commands, frames, end.next

    def _state_commands(self, channel: str) -> list[Command]:
        key = self._key(channel)
        return [
            ("xrevrange", (key, "+", "-"), {"count": 1}),  # the newest entry
            ("xrange", (key, "-", "+"), {"count": 1}),  # the oldest
            ("time", (), {}),
            # Set only when missing: when Redis lost its data, this process's clock then.
            ("set", (self.floor_key, str(time.time_ns() // 1000)), {"nx": True, "get": True}),
        ]

    def _append_steps(self, channel: str, items: Items) -> Generator[list[Command], list, _Appended]:
        """Append `items` as one entry; yields pipelines and takes their results."""
        fast = self._fast_append(channel, items)
        for _attempt in range(_APPEND_ATTEMPTS):
            if fast is not None:
                commands, frames, first = fast
                added = (yield commands)[0]
                if isinstance(added, bytes):
                    # The stream was there and ended right before `first` (an id below its
                    # top is refused, and a stream that starts again starts above the
                    # clock): nothing of it was lost since this process saw its end.
                    with self._lock:
                        known = self._ends.get(channel)
                    floor = known.floor if known is not None else first - 1
                    refresh_at = known.refresh_at if known is not None else 0.0
                    if len(commands) > 1:  # the expiry went with it
                        refresh_at = time.monotonic() + _EXPIRY_REFRESH_SECONDS
                    self._remember(channel, _End(first + len(items), floor, refresh_at))
                    return self._appended(first, len(items), floor, first - 1, "".join(frames))
                if isinstance(added, Exception) and not _is_stale(added):
                    raise added
            # Where does the stream end? (Gone, or overtaken by another writer.)
            state = _State.of((yield self._state_commands(channel)), self._idle_us())
            if fast is not None and state.exists and fast[2] <= state.newest:
                found = (yield [("xrange", (self._key(channel), f"{fast[2]}-0", f"{fast[2]}-0"), {})])[0]
                if found and _Entry.of(found[0]).frames == "".join(fast[1]):
                    # A command retried after a lost reply: its first try had stored the batch.
                    self._remember(channel, _End(state.next, state.floor))
                    return self._appended(fast[2], len(items), state.floor, fast[2] - 1, "".join(fast[1]))
            if state.exists:
                self._remember(channel, _End(state.next, state.floor))
                fast = self._fast_append(channel, items)
                continue
            # A new stream: above the clock, above anything this channel had.
            first = state.next
            frames = [frame(channel, kind, first + n, data) for n, (kind, data) in enumerate(items)]
            added = (yield self._xadd(channel, first, "".join(frames), state.floor, new=True))[0]
            if isinstance(added, bytes):
                refresh_at = time.monotonic() + _EXPIRY_REFRESH_SECONDS
                self._remember(channel, _End(first + len(items), state.floor, refresh_at))
                # Nothing of the channel lies between its floor and this first event.
                return self._appended(first, len(items), state.floor, state.floor, "".join(frames))
            if isinstance(added, Exception) and not _is_stale(added):
                raise added
            fast = None  # someone else started it meanwhile
        raise EventsUnavailable(f"appending to {channel} lost to other writers {_APPEND_ATTEMPTS} times")

    @staticmethod
    def _appended(first: int, count: int, floor: int, previous: int, frames: str) -> _Appended:
        ids = list(range(first, first + count))
        return _Appended(Published(ids, floor), Pushed(previous, first, ids[-1], frames))

    def _read_steps(
        self, channel: str, position: int | None, limit: int
    ) -> Generator[list[Command], list, tuple[_State, list[LoggedEvent]]]:
        """The channel's state and, from a position, the events after it (at most
        `limit`); a read keeps the channel's stream from expiring while a page is open."""
        key = self._key(channel)
        commands = self._state_commands(channel)
        if position is not None:
            commands += [
                ("xrevrange", (key, f"{position}-0", "-"), {"count": 1}),  # the entry holding it
                ("xrange", (key, f"{position + 1}-0", "+"), {"count": limit}),
                ("pexpire", (key, self._ttl_ms()), {}),
            ]
        results = yield commands
        state = _State.of(results[:4], self._idle_us())
        if state.exists:
            self._remember(channel, _End(state.next, state.floor))
        if position is None:
            return state, []
        if not state.floor <= position <= state.newest:
            raise PositionUnknown(position)
        found = [event for raw in [*results[4], *results[5]] for event in _Entry.of(raw).events()]
        found = [event for event in found if event.id > position][:limit]
        return state, found

    # --- the sync side: views, commands, threads

    def _run_sync(self, steps: Generator) -> Any:
        try:
            commands = next(steps)
            while True:
                pipe = self._sync.pipeline(transaction=_reads(commands))
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
        appended = self._run_sync(self._append_steps(channel, list(items)))
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
        state, found = self._run_sync(self._read_steps(channel, position, limit))
        return found, (found[-1].id if found else max(position, state.newest))

    def since(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> list[LoggedEvent]:
        return self.read(channel, position, limit)[0]

    def can_resume(self, channel: str, position: int) -> bool:
        floor, newest = self.window(channel)
        return floor <= position <= newest

    def window(self, channel: str) -> tuple[int, int]:
        state = self._run_sync(self._read_steps(channel, None, 0))[0]
        return state.floor, state.newest

    def current_id(self, channel: str) -> int:
        return self.window(channel)[1]

    def forget(self, channel: str) -> None:
        """Drop a channel's events now, keeping its position (old positions reset); with
        Redis unreachable they expire when idle."""
        try:
            state = self._run_sync(self._read_steps(channel, None, 0))[0]
            pipe = self._sync.pipeline(transaction=True)
            pipe.delete(self._key(channel))
            # An entry without events at the channel's position, which is also its floor.
            pipe.xadd(self._key(channel), {"f": "", "floor": str(state.newest)}, id=f"{state.newest}-0")
            pipe.pexpire(self._key(channel), self._ttl_ms())
            pipe.execute()
            self._remember(channel, _End(state.newest + 1, state.newest))
        except (EventsUnavailable, *_redis_errors()) as exc:
            logger.warning(
                "Redis unavailable: events of %s expire within %d s instead of now (%s)",
                channel,
                self._ttl_ms() // 1000,
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
        pipe = client.pipeline(transaction=_reads(commands) if transaction is None else transaction)
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
        state, found = await self._run_async(self._read_steps(channel, position, limit))
        return found, (found[-1].id if found else max(position, state.newest))

    async def acurrent_id(self, channel: str) -> int:
        state = (await self._run_async(self._read_steps(channel, None, 0)))[0]
        return state.newest

    async def apublish_batch(self, channel: str, items: Items) -> Published:
        """Append on the next pipeline of this loop: the appends of one turn of the
        event loop go to Redis together, their wake-ups in one message."""
        future = asyncio.get_running_loop().create_future()
        self._queued.append((channel, list(items), future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())
        return await future

    async def _send_queued(self) -> None:
        """Started for the first append of a turn of the event loop, it runs on the next
        one: every append of this turn is queued by then. The wake-up of a pipeline's
        appends goes with the next pipeline, or alone when no append came meanwhile."""
        wake: bytes | None = None
        try:
            # It ends only with nothing queued and no await after that check: an append
            # queued while it awaits anything is sent by it.
            while self._queued or wake is not None:
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
                    await self._execute([_publish(self.fanout.wake_channel, message)], appends=True)
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
        steps = [self._append_steps(channel, items) for channel, items, _ in queued]
        firsts = []
        for step in steps:
            try:
                firsts.append(next(step))
            except Exception as exc:
                firsts.append(exc)
        batched = [commands for commands in firsts if isinstance(commands, list)]
        if wake is not None:
            batched.insert(0, [_publish(self.fanout.wake_channel, wake)])
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


def _publish(channel: str, message: bytes) -> Command:
    return ("publish", (channel, message), {})


def _reads(commands: list[Command]) -> bool:
    """Whether a pipeline reads a stream's state: then in a transaction, one snapshot.
    Appends go without: each XADD stands alone, and Redis runs them in order anyway."""
    return any(name not in ("xadd", "pexpire", "publish") for name, _, _ in commands)


def _is_stale(error: Exception) -> bool:
    """XADD refused the id: the stream's top is at or above it (another writer, or a retry)."""
    return "equal or smaller" in str(error)


@dataclass(frozen=True, slots=True)
class _State:
    """A channel's stream as one read saw it."""

    exists: bool
    floor: int  # positions from here on can be resumed
    newest: int  # the channel's newest position (its last event, or the clock)
    next: int  # the id its next event gets

    @classmethod
    def of(cls, results: Sequence, idle_us: int) -> _State:
        newest_raw, oldest_raw, (seconds, micros), lost_at = results[:4]
        for result in (newest_raw, oldest_raw):
            if isinstance(result, Exception):
                raise result
        now = int(seconds) * 1_000_000 + int(micros)
        # Redis lost its data when this key was missing (just set to the clock).
        gone_before = int(lost_at) if lost_at is not None else now
        if newest_raw:
            newest, oldest = _Entry.of(newest_raw[0]), _Entry.of(oldest_raw[0])
            floor = oldest.floor if oldest.floor is not None else oldest.first - 1
            return cls(True, floor, newest.last, newest.last + 1)
        # No stream (never used, expired, lost): its position is the clock, and it resumes
        # positions from the last idle time only, never from before Redis lost its data.
        floor = max(gone_before, now - idle_us)
        newest = max(now, floor)
        return cls(False, floor, newest, newest + 1)
