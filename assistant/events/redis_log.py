"""The replay log in Redis, shared by every server process (`REDIS_URL`).

A position taken from any process can be resumed on any other. Appending, trimming and
waking happen in one Lua script, so a reader never sees a later id of a channel before
an earlier one; the wake-ups reach each process through its pub/sub connection
(`redis_fanout`). docs/architecture.md, "Scale-out", describes the keys and what users
see while Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

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
)
from assistant.events.redis_fanout import Fanout

logger = logging.getLogger(__name__)

# KEYS: 1 clock, 2 global floor, 3 the channel's events (sorted set, score = id),
#       4 the channel's state (hash: floor, last), 5 the batch's dedup key.
# ARGV: 1 channel, 2 wake-up pub/sub channel, 3 events kept per channel, 4 key TTL (s),
#       5 idle time (µs), 6 dedup TTL (s), then (type, data) pairs.
# Returns {floor before the append, id, id, ...}.
#
# Ids count per channel: a channel's first id is one above the Redis clock in µs when
# its state is created, then +1 per event, so a channel's ids say nothing about other
# channels. The clock key keeps the clock from going back; without it Redis lost its
# data (it keeps nothing on disk here), and the global floor moves up to now: every older
# position resets. Numbers go to Redis as "%d" strings, never as Lua numbers (which
# Redis would print with 14 digits).
_LUA_COMMON = """
local function fmt(n) return string.format('%d', n) end
local function clock()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local seen = redis.call('GET', KEYS[1])
  if not seen then
    redis.call('SET', KEYS[2], fmt(now))
  elseif tonumber(seen) >= now then
    return tonumber(seen)
  end
  redis.call('SET', KEYS[1], fmt(now))
  return now
end
-- floor, newest id, and whether the channel has a state. Without one (never used, idle
-- past its expiry, lost) its newest position is the clock, and it resumes positions
-- from the last idle time only (older ids of it may have expired unseen).
local function state_of(idle)
  local state = redis.call('HMGET', KEYS[4], 'floor', 'last')
  if state[1] and state[2] then
    local floor, last = tonumber(state[1]), tonumber(state[2])
    -- Its events expired (no new one for the idle time): only its newest position is safe.
    if redis.call('EXISTS', KEYS[3]) == 0 then floor = math.max(floor, last) end
    return floor, last, true
  end
  local now = clock()
  local floor = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now - idle)
  -- Events left without their state (evicted): their ids are taken.
  local left = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  if left[2] then floor = math.max(floor, tonumber(left[2])) end
  return floor, math.max(now, floor), false
end
"""

_APPEND_LUA = (
    _LUA_COMMON
    + """
if KEYS[5] ~= '' then
  local done = redis.call('GET', KEYS[5])
  if done then
    local answer = cjson.decode(done)
    return answer
  end
end
local ttl = tonumber(ARGV[4])
local floor, last, known = state_of(tonumber(ARGV[5]))
-- Nothing of the channel lies between `previous` and this batch.
local previous = floor
if not known then
  redis.call('DEL', KEYS[3])
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  previous = last
end
local answer = {floor}
local frames = {}
for i = 7, #ARGV, 2 do
  last = last + 1
  local id = fmt(last)
  local frame = 'event: ' .. ARGV[i] .. '\\nid: ' .. ARGV[1] .. ':' .. id
    .. '\\ndata: ' .. ARGV[i + 1] .. '\\n\\n'
  redis.call('ZADD', KEYS[3], id, frame)
  frames[#frames + 1] = frame
  answer[#answer + 1] = last
end
local cap = tonumber(ARGV[3])
local count = redis.call('ZCARD', KEYS[3])
if count > cap then
  local dropped = redis.call('ZRANGE', KEYS[3], count - cap - 1, count - cap - 1, 'WITHSCORES')
  floor = tonumber(dropped[2])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, count - cap - 1)
end
redis.call('HSET', KEYS[4], 'floor', fmt(floor), 'last', fmt(last))
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[4], ttl)
if KEYS[5] ~= '' then
  local ids = {}
  for i = 1, #answer do ids[i] = fmt(answer[i]) end
  redis.call('SET', KEYS[5], '[' .. table.concat(ids, ',') .. ']', 'EX', tonumber(ARGV[6]))
end
-- The wake-up carries the frames: a stream whose position is at least `previous` sends
-- them without reading the log.
redis.call('PUBLISH', ARGV[2], ARGV[1] .. '\\n' .. fmt(previous) .. '\\n' .. fmt(answer[2]) .. '\\n'
  .. fmt(last) .. '\\n' .. table.concat(frames))
return answer
"""
)

# KEYS: 1 clock, 2 global floor, 3 the channel's events, 4 the channel's state.
# ARGV: 1 position (digits, or '' for none), 2 limit, 3 idle time (µs), 4 key TTL (s).
# Returns {resumable 1|0, newest id, floor, frame, id, frame, id, ...}. Reading from a
# position (a stream does at least once per keep-alive interval) keeps the channel's
# state alive, so an open stream's position never ages out; its events still expire
# after the idle time without a new one.
_READ_LUA = (
    _LUA_COMMON
    + """
local floor, newest, known = state_of(tonumber(ARGV[3]))
local answer = {1, newest, floor}
if ARGV[1] == '' then return answer end
if known then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4])) end
local position = tonumber(ARGV[1])
if position < floor or position > newest then
  answer[1] = 0
  return answer
end
local limit = tonumber(ARGV[2])
if limit == 0 then return answer end
local found = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], fmt(newest),
  'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #found, 2 do
  answer[#answer + 1] = found[i]
  answer[#answer + 1] = tonumber(found[i + 1])
end
return answer
"""
)

# KEYS: 1 clock, 2 global floor, 3 the channel's events, 4 the channel's state.
# ARGV: 1 TTL (s), 2 idle time (µs).
_FORGET_LUA = (
    _LUA_COMMON
    + """
local floor, last = state_of(tonumber(ARGV[2]))
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[4], 'floor', fmt(last), 'last', fmt(last))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[1]))
return last
"""
)

# Redis connections per process and kind (sync, async), besides the pub/sub one.
POOL_CONNECTIONS = 32
# Slack for clocks: a channel's key lives this much longer than the idle time after
# which positions from before its last event are no longer trusted.
_EXPIRY_SLACK_SECONDS = 60
# Appends remembered by their token, so a retried batch is stored once.
_DEDUP_SECONDS = 600


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


class RedisReplayLog:
    """The replay log in Redis, shared by every server process.

    Keys (prefix `ASSISTANT_REDIS_PREFIX`, default `assistant`):

        <p>:events:clock              the Redis clock in µs as last used, never going back
        <p>:events:floor              positions below it predate what Redis remembers
        <p>:events:ch:<channel>       the channel's frames, sorted set scored by id,
                                      at most `events_per_channel`, expiring when idle
        <p>:events:chpos:<channel>    hash: `last`, the channel's newest id, and `floor`,
                                      below which it lost events; expires when neither
                                      written nor read by a stream for the idle time
        <p>:events:sent:<token>       ids of an appended batch, so a retry stores it once
        <p>:events:wake               pub/sub: a channel name, published with every append
        <p>:cancel                    pub/sub: an answer's id, a stop request for its process
        <p>:revoke                    pub/sub: a user's or session's key, whose streams end
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
        self.clock_key = f"{prefix}:events:clock"
        self.floor_key = f"{prefix}:events:floor"
        self.fanout = Fanout(url, prefix)
        # Each command is retried twice on a dropped connection; appends carry a token,
        # so a retry after a lost reply does not store a batch twice. At most
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
        self._sync_append = self._sync.register_script(_APPEND_LUA)
        self._sync_read = self._sync.register_script(_READ_LUA)
        self._sync_forget = self._sync.register_script(_FORGET_LUA)
        self._async: tuple[asyncio.AbstractEventLoop, Any, Any, Any] | None = None
        self._deferred: set[asyncio.Task] = set()

    # keys and arguments

    def _keys(self, channel: str) -> list[str]:
        return [
            self.clock_key,
            self.floor_key,
            f"{self.prefix}:events:ch:{channel}",
            f"{self.prefix}:events:chpos:{channel}",
        ]

    def _idle_us(self) -> int:
        return int(self.idle_seconds * 1_000_000)

    def _ttl(self) -> int:
        return int(self.idle_seconds) + _EXPIRY_SLACK_SECONDS

    def _append_args(self, channel: str, items: Items, token: str | None):
        keys = [*self._keys(channel), f"{self.prefix}:events:sent:{token}" if token else ""]
        args: list[Any] = [
            channel,
            self.fanout.wake_channel,
            self.events_per_channel,
            self._ttl(),
            self._idle_us(),
            _DEDUP_SECONDS,
        ]
        for event_type, data in items:
            args += [event_type, data]
        return keys, args

    def _read_args(self, channel: str, position: int | None, limit: int):
        position_arg = "" if position is None else str(position)
        return self._keys(channel), [position_arg, limit, self._idle_us(), self._ttl()]

    @staticmethod
    def _published(answer: list) -> Published:
        return Published([int(n) for n in answer[1:]], int(answer[0]))

    @staticmethod
    def _events(answer: list, position: int) -> tuple[list[LoggedEvent], int]:
        if not answer[0]:
            raise PositionUnknown(position)
        found = [LoggedEvent(int(answer[i + 1]), answer[i].decode()) for i in range(3, len(answer), 2)]
        return found, (found[-1].id if found else max(position, int(answer[1])))

    def _client(self):
        """This event loop's async client and scripts (a client is bound to one loop)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio as aredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff

            retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
            pool = aredis.BlockingConnectionPool.from_url(self.url, retry=retry, **self._options)
            client = aredis.Redis(connection_pool=pool, retry=retry)
            self._async = (
                loop,
                client,
                client.register_script(_APPEND_LUA),
                client.register_script(_READ_LUA),
            )
        return self._async

    # the sync side: views, commands, threads

    def append(self, channel: str, event_type: str, data: str) -> int:
        return self.append_batch(channel, [(event_type, data)]).ids[0]

    def append_batch(self, channel: str, items: Items, token: str | None = None) -> Published:
        keys, args = self._append_args(channel, items, token or uuid.uuid4().hex)
        try:
            return self._published(self._sync_append(keys=keys, args=args))
        except _redis_errors() as exc:
            raise EventsUnavailable(f"{type(exc).__name__}: {exc}") from exc

    publish_batch = append_batch  # the script publishes the wake-up itself

    def _read_sync(self, channel: str, position: int | None, limit: int) -> list:
        keys, args = self._read_args(channel, position, limit)
        try:
            return self._sync_read(keys=keys, args=args)
        except _redis_errors() as exc:
            raise EventsUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def read(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> tuple[list[LoggedEvent], int]:
        return self._events(self._read_sync(channel, position, limit), position)

    def since(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> list[LoggedEvent]:
        return self.read(channel, position, limit)[0]

    def can_resume(self, channel: str, position: int) -> bool:
        return bool(self._read_sync(channel, position, 0)[0])

    def window(self, channel: str) -> tuple[int, int]:
        answer = self._read_sync(channel, None, 0)
        return int(answer[2]), int(answer[1])

    def current_id(self, channel: str) -> int:
        return int(self._read_sync(channel, None, 0)[1])

    def forget(self, channel: str) -> None:
        """Drop a channel's events now; with Redis unreachable they expire when idle."""
        try:
            self._sync_forget(
                keys=self._keys(channel),
                args=[self._ttl(), self._idle_us()],
            )
        except _redis_errors() as exc:
            logger.warning(
                "Redis unavailable: events of %s expire within %d s instead of now (%s)",
                channel,
                self._ttl(),
                type(exc).__name__,
            )

    def request_cancel(self, message_id: int) -> None:
        """Tell every process at once; the owner stops it (the database poll stays the fallback)."""
        try:
            self._sync.publish(self.fanout.cancel_channel, str(message_id))
        except _redis_errors():
            logger.warning("stop request %s not sent through Redis; the database poll carries it", message_id)

    def request_revoke(self, key: str) -> None:
        """Tell every process to end the streams under `key` (assistant.stream_endpoint)."""
        try:
            self._sync.publish(self.fanout.revoke_channel, key)
        except _redis_errors():
            logger.warning("stream revocation not sent through Redis; the account poll carries deactivations")

    # the async side: streams and generations on the event loop

    async def aread(self, channel: str, position: int, limit: int = CATCH_UP_BATCH):
        _, _, _, read = self._client()
        keys, args = self._read_args(channel, position, limit)
        try:
            answer = await read(keys=keys, args=args)
        except _redis_errors() as exc:
            raise EventsUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return self._events(answer, position)

    async def acurrent_id(self, channel: str) -> int:
        _, _, _, read = self._client()
        keys, args = self._read_args(channel, None, 0)
        try:
            return int((await read(keys=keys, args=args))[1])
        except _redis_errors() as exc:
            raise EventsUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def apublish_batch(self, channel: str, items: Items, token: str | None = None) -> Published:
        _, _, append, _ = self._client()
        keys, args = self._append_args(channel, items, token or uuid.uuid4().hex)
        try:
            return self._published(await append(keys=keys, args=args))
        except _redis_errors() as exc:
            raise EventsUnavailable(f"{type(exc).__name__}: {exc}") from exc

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
        token = uuid.uuid4().hex  # one token for every attempt: stored once
        deadline = time.monotonic() + DEFER_SECONDS
        delay = RETRY_MIN_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                await self.apublish_batch(channel, items, token)
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
            await self._async[1].aclose()
            await self._async[1].connection_pool.disconnect()
        self._async = None

    def start_fanout(
        self,
        on_cancel: Callable[[int], object] | None = None,
        on_revoke: Callable[[str], object] | None = None,
    ) -> None:
        """Start this loop's pub/sub listener once (idempotent); it runs until the loop ends."""
        self.fanout.start(on_cancel, on_revoke)
