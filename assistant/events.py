"""Event stream: channel naming, the replay log, publishing and the SSE body.

One channel per conversation (`conversation-<uuid>`). Every event is appended to the
replay log, encoded for the wire once, and then the streams subscribed to its channel
are woken. A stream always reads from the log after its own position, so a client
reconnecting with `Last-Event-ID` gets exactly what it missed, once, in order, however
many wake-ups it coalesced or missed.

Event ids count per channel: a channel's first id is one above the wall clock in µs
when its log is created, then +1 per event. So the ids of one conversation say nothing
about any other's traffic, and ids handed out before a restart (or before Redis lost its
data) are older than anything the new log knows: they answer a `stream-reset`, after
which the client re-renders from the database. A channel without events in the log has
the clock as its current position.

Two logs behind one interface (`replay_log`, `publish`, `apublish`, `stream`):

- `ReplayLog` (the default): in this process's memory, woken through
  django-eventstream's listener manager.
- `RedisReplayLog` (when `REDIS_URL` is set): one log shared by every server process,
  so a position taken from any process can be resumed on any other. Appending,
  trimming and waking happen in one Lua script, so a reader never sees a later id of a
  channel before an earlier one. Each process holds one pub/sub connection that wakes
  its local streams, and reconnects when Redis drops
  (docs/architecture.md, "Scale-out").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django_eventstream.views import Listener, get_listener_manager

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "conversation-"

# How many events a channel keeps for replay. A page that reloads resumes from the
# position persisted with the partial text (a fraction of a second old), so this only
# has to cover connections that drop for a while.
REPLAY_EVENTS_PER_CHANNEL = 2000
# A channel with no new event for this long is forgotten.
REPLAY_IDLE_SECONDS = 15 * 60
# Events sent in one write when a client catches up.
CATCH_UP_BATCH = 500

# A stream that cannot read the log (Redis down) tries again after this long, doubling
# up to the maximum; keep-alives go on meanwhile.
RETRY_MIN_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0
# Events that could not be published (Redis down) are retried in the background this long.
DEFER_SECONDS = 600.0


def channel_for(conversation_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{conversation_id}"


# What orjson refuses (a lone surrogate, an integer beyond 64 bits): json, the same JSON.
_wire_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_data(payload: dict[str, Any]) -> str:
    """JSON for the wire: UTF-8 as is, so "Grüße" travels as Grüße.

    JSON escapes every control character, so the data is always one SSE line and
    model output cannot forge `event:`, `id:` or `retry:` fields. orjson: 0.14 µs for a
    delta of three tokens, json 1.7 µs, for the same text.
    """
    try:
        return orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return _wire_json.encode(payload)


# Positions are event ids, which Redis and the databases hold as signed 64-bit integers.
POSITION_MAX = 2**63 - 1
POSITION_DIGITS_MAX = len(str(POSITION_MAX))


def position_token(channel: str, event_id: int) -> str:
    """The `Last-Event-ID` value for a position (django-eventstream's `channel:id` format)."""
    return f"{channel}:{event_id}"


def position_from(channel: str, token: str | None) -> int | None:
    """The position in a `Last-Event-ID` value; None when it is absent, malformed, not
    ours or out of range (over-long numbers are not parsed: `int()` of 5,000 digits raises)."""
    if not token:
        return None
    name, _, number = token.rpartition(":")
    if name != channel or not (number.isascii() and number.isdigit()) or len(number) > POSITION_DIGITS_MAX:
        return None
    position = int(number)
    return position if position <= POSITION_MAX else None


def _frame(channel: str, event_type: str, event_id: int, data: str) -> str:
    return f"event: {event_type}\nid: {channel}:{event_id}\ndata: {data}\n\n"


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    frame: str  # the event as it goes on the wire


@dataclass(frozen=True, slots=True)
class Published:
    """Ids of events just appended, and the channel's floor before they were.

    Every position from `floor` on could be resumed right before the append. An answer
    whose previous event is older than that lost events on the wire (Redis restarted
    empty), and replays itself whole (see generation._Answer).
    """

    ids: list[int]
    floor: int


@dataclass(frozen=True, slots=True)
class Pushed:
    """Frames that came with a wake-up: nothing of the channel lies between `previous`
    and `first`, so a stream at a position in between sends them as they are."""

    previous: int
    first: int
    last: int
    frames: str

    @classmethod
    def parse(cls, message: bytes) -> tuple[str, Pushed]:
        channel, previous, first, last, frames = message.split(b"\n", 4)
        return channel.decode(), cls(int(previous), int(first), int(last), frames.decode())


class PositionUnknown(Exception):
    """The log cannot resume from this position; the client must re-render."""


class EventsUnavailable(Exception):
    """The shared event log (Redis) cannot be reached right now."""


# A batch to append: (event type, data already encoded with encode_data).
Items = Sequence[tuple[str, str]]


class _ChannelLog:
    __slots__ = ("appended", "events", "floor", "last", "read")

    def __init__(self, floor: int, last: int) -> None:
        self.events: deque[LoggedEvent] = deque()
        # Any position from `floor` on can be resumed: nothing after it was dropped.
        self.floor = floor
        # The channel's newest id; its next event gets the one after it.
        self.last = last
        self.appended = self.read = time.monotonic()


def _idle_us() -> int:
    return int(REPLAY_IDLE_SECONDS * 1_000_000)


class ReplayLog:
    """Recent events of every channel in this process, with resumable positions.

    Each channel counts its own ids: its first id is one above the wall clock in µs
    when the process first logs an event of it, then +1 per event, so its ids say
    nothing about other channels. A channel this process does not know (never used
    here, forgotten, or from before a restart) has the clock as its current position
    and resumes only positions from the last idle time, and none from before this
    process started.
    """

    # Positions are this process's own: another process cannot resume them.
    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, _ChannelLog] = {}
        # Positions below it predate this process. The clock never goes back (a
        # position handed out from it stays below every later id of its channel).
        self._base = self._clock = time.time_ns() // 1000
        self._next_sweep = time.monotonic() + REPLAY_IDLE_SECONDS

    def _now(self) -> int:
        """The wall clock in µs, never lower than before; with the lock held."""
        self._clock = max(self._clock, time.time_ns() // 1000)
        return self._clock

    def _unknown_floor(self, now: int) -> int:
        # A channel forgotten here had no event for the idle time: its ids are older.
        return max(self._base, now - _idle_us())

    def append(self, channel: str, event_type: str, data: str) -> int:
        return self.append_batch(channel, [(event_type, data)]).ids[0]

    def append_batch(self, channel: str, items: Items) -> Published:
        return self._append(channel, items)[0]

    def _append(self, channel: str, items: Items) -> tuple[Published, Pushed]:
        """The appended events' ids and, for the wake-up, their frames."""
        with self._lock:
            log = self._channels.get(channel)
            if log is None:
                now = self._now()
                # Above every position handed out for it so far (the clock, at most `now`).
                log = self._channels[channel] = _ChannelLog(self._unknown_floor(now), now)
            floor = log.floor
            previous = log.events[-1].id if log.events else floor
            ids, frames = [], []
            for event_type, data in items:
                log.last += 1
                ids.append(log.last)
                frames.append(_frame(channel, event_type, log.last, data))
                log.events.append(LoggedEvent(log.last, frames[-1]))
            log.appended = log.read = time.monotonic()
            while len(log.events) > REPLAY_EVENTS_PER_CHANNEL:
                log.floor = log.events.popleft().id
            if log.appended >= self._next_sweep:
                self._forget_idle(log.appended)
            return Published(ids, floor), Pushed(previous, ids[0], ids[-1], "".join(frames))

    def _forget_idle(self, now: float) -> None:
        """Drop the events of channels without a new one for the idle time, and the whole
        channel once no stream read it for that long either."""
        for name, log in list(self._channels.items()):
            if now - log.read > REPLAY_IDLE_SECONDS:
                del self._channels[name]
            elif now - log.appended > REPLAY_IDLE_SECONDS and log.events:
                log.events.clear()
                log.floor = log.last
        self._next_sweep = now + REPLAY_IDLE_SECONDS

    def forget(self, channel: str) -> None:
        """Drop a channel's events (its conversation was deleted); its old positions reset."""
        with self._lock:
            log = self._channels.get(channel)
            if log is not None:
                log.events.clear()
                log.floor = log.last

    def _window(self, log: _ChannelLog | None) -> tuple[int, int]:
        if log is None:
            now = self._now()
            return self._unknown_floor(now), now
        return log.floor, log.last

    def can_resume(self, channel: str, position: int) -> bool:
        with self._lock:
            floor, newest = self._window(self._channels.get(channel))
            return floor <= position <= newest

    def window(self, channel: str) -> tuple[int, int]:
        """(floor, newest id): the positions of `channel` that can be resumed right now."""
        with self._lock:
            return self._window(self._channels.get(channel))

    def read(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> tuple[list[LoggedEvent], int]:
        """Events after `position`, oldest first, and the position after them.

        With no event to send, the position moves up to the newest id: nothing of this
        channel lies in between, and a position that keeps up never ages out of the log.
        A read keeps the channel's position known (a stream reads at least once per
        keep-alive interval). PositionUnknown if `position` cannot be resumed.
        """
        with self._lock:
            log = self._channels.get(channel)
            floor, newest = self._window(log)
            if not floor <= position <= newest:
                raise PositionUnknown(position)
            if log is None:
                return [], newest
            log.read = time.monotonic()
            newer: list[LoggedEvent] = []
            # Newest first: a caught-up client costs one comparison.
            for event in reversed(log.events):
                if event.id <= position:
                    break
                newer.append(event)
            if not newer:
                return [], newest
            newer.reverse()
            newer = newer[:limit]
            return newer, newer[-1].id

    def since(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> list[LoggedEvent]:
        """Events after `position`, oldest first; PositionUnknown if it cannot be resumed."""
        return self.read(channel, position, limit)[0]

    def current_id(self, channel: str) -> int:
        """A position that is up to date on `channel`: its newest id, or the clock for a
        channel without events here (its first id will be above it)."""
        with self._lock:
            return self._window(self._channels.get(channel))[1]

    # The async side, as the stream and the generation use it. Memory never blocks.

    async def aread(self, channel: str, position: int, limit: int = CATCH_UP_BATCH):
        return self.read(channel, position, limit)

    async def acurrent_id(self, channel: str) -> int:
        return self.current_id(channel)

    def publish_batch(self, channel: str, items: Items) -> Published:
        published, pushed = self._append(channel, items)
        # The frames come with the wake-up: a stream that keeps up reads no log.
        get_listener_manager().add_to_queues(channel, pushed)
        return published

    async def apublish_batch(self, channel: str, items: Items, token: str | None = None) -> Published:
        return self.publish_batch(channel, items)

    def defer(self, channel: str, items: Items) -> None:  # pragma: no cover - memory never fails
        self.publish_batch(channel, items)

    def request_cancel(self, message_id: int) -> None:
        """Other processes learn of stop requests from the database (their poll)."""

    def request_revoke(self, key: str) -> None:
        """No other process shares this log; the caller ends its own streams."""

    def start_fanout(
        self,
        on_cancel: Callable[[int], object] | None = None,
        on_revoke: Callable[[str], object] | None = None,
    ) -> None:
        """Nothing to listen to: publishing wakes this process's streams directly."""

    def close(self) -> None:
        """Nothing to close."""

    async def aclose(self) -> None:
        """Nothing to close."""


# --- Redis ----------------------------------------------------------------------------------

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
# The pub/sub connection pings this often and counts as dead after this long in silence.
_PING_SECONDS = 5.0
_SILENCE_SECONDS = 15.0


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


class RedisReplayLog:
    """The replay log in Redis, shared by every server process; see the module docstring.

    Keys (prefix `ASSISTANT_REDIS_PREFIX`, default `assistant`):

        <p>:events:clock              the Redis clock in µs as last used, never going back
        <p>:events:floor              positions below it predate what Redis remembers
        <p>:events:ch:<channel>       the channel's frames, sorted set scored by id,
                                      at most REPLAY_EVENTS_PER_CHANNEL, expiring when idle
        <p>:events:chpos:<channel>    hash: `last`, the channel's newest id, and `floor`,
                                      below which it lost events; expires when neither
                                      written nor read by a stream for the idle time
        <p>:events:sent:<token>       ids of an appended batch, so a retry stores it once
        <p>:events:wake               pub/sub: a channel name, published with every append
        <p>:cancel                    pub/sub: an answer's id, a stop request for its process
        <p>:revoke                    pub/sub: a user's or session's key, whose streams end
    """

    shared = True

    def __init__(self, url: str, prefix: str = "assistant") -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.url = url
        self.prefix = prefix
        self.clock_key = f"{prefix}:events:clock"
        self.floor_key = f"{prefix}:events:floor"
        self.wake_channel = f"{prefix}:events:wake"
        self.cancel_channel = f"{prefix}:cancel"
        self.revoke_channel = f"{prefix}:revoke"
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
        self._fanout: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deferred: set[asyncio.Task] = set()
        self.on_cancel: Callable[[int], object] | None = None
        self.on_revoke: Callable[[str], object] | None = None
        # True while this process's pub/sub connection is up (for tests and /readyz).
        self.connected = False

    # keys and arguments

    def _keys(self, channel: str) -> list[str]:
        return [
            self.clock_key,
            self.floor_key,
            f"{self.prefix}:events:ch:{channel}",
            f"{self.prefix}:events:chpos:{channel}",
        ]

    @staticmethod
    def _idle_us() -> int:
        return int(REPLAY_IDLE_SECONDS * 1_000_000)

    def _append_args(self, channel: str, items: Items, token: str | None):
        keys = [*self._keys(channel), f"{self.prefix}:events:sent:{token}" if token else ""]
        args: list[Any] = [
            channel,
            self.wake_channel,
            REPLAY_EVENTS_PER_CHANNEL,
            int(REPLAY_IDLE_SECONDS) + _EXPIRY_SLACK_SECONDS,
            self._idle_us(),
            _DEDUP_SECONDS,
        ]
        for event_type, data in items:
            args += [event_type, data]
        return keys, args

    def _read_args(self, channel: str, position: int | None, limit: int):
        ttl = int(REPLAY_IDLE_SECONDS) + _EXPIRY_SLACK_SECONDS
        return self._keys(channel), ["" if position is None else str(position), limit, self._idle_us(), ttl]

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
                args=[int(REPLAY_IDLE_SECONDS) + _EXPIRY_SLACK_SECONDS, self._idle_us()],
            )
        except _redis_errors() as exc:
            logger.warning(
                "Redis unavailable: events of %s expire within %d s instead of now (%s)",
                channel,
                int(REPLAY_IDLE_SECONDS) + _EXPIRY_SLACK_SECONDS,
                type(exc).__name__,
            )

    def request_cancel(self, message_id: int) -> None:
        """Tell every process at once; the owner stops it (the database poll stays the fallback)."""
        try:
            self._sync.publish(self.cancel_channel, str(message_id))
        except _redis_errors():
            logger.warning("stop request %s not sent through Redis; the database poll carries it", message_id)

    def request_revoke(self, key: str) -> None:
        """Tell every process to end the streams under `key` (assistant.stream_endpoint)."""
        try:
            self._sync.publish(self.revoke_channel, key)
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
        loop = self._loop
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
        tasks = [*self._deferred, *([self._fanout] if self._fanout else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fanout = None
        if self._async is not None and self._async[0] is asyncio.get_running_loop():
            await self._async[1].aclose()
            await self._async[1].connection_pool.disconnect()
        self._async = None

    # the pub/sub side: one connection per process wakes its streams

    def start_fanout(
        self,
        on_cancel: Callable[[int], object] | None = None,
        on_revoke: Callable[[str], object] | None = None,
    ) -> None:
        """Start this loop's pub/sub listener once (idempotent); it runs until the loop ends."""
        if on_cancel is not None:
            self.on_cancel = on_cancel
        if on_revoke is not None:
            self.on_revoke = on_revoke
        loop = asyncio.get_running_loop()
        if self._fanout is None or self._fanout.done() or self._fanout.get_loop() is not loop:
            self._loop = loop
            # A fresh context: the task outlives whichever request started it.
            import contextvars

            self._fanout = loop.create_task(self._listen_forever(), context=contextvars.Context())

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
                client_name=f"{self.prefix}-fanout",
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.wake_channel, self.cancel_channel, self.revoke_channel)
                self.connected = True
                if failed:
                    logger.warning("event wake-ups from Redis are back")
                failed = False
                delay = RETRY_MIN_SECONDS
                _wake_all()
                await self._dispatch(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                if not failed:
                    logger.warning("event wake-ups from Redis lost (%s); reconnecting", type(exc).__name__)
                failed = True
                # Streams retry their reads meanwhile; none waits for a wake-up that is lost.
                _wake_all()
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
                        manager.add_to_queues(*Pushed.parse(message["data"]))
                    elif message["channel"] == revoke:
                        if self.on_revoke is not None:
                            self.on_revoke(message["data"].decode())
                    elif self.on_cancel is not None:
                        try:
                            self.on_cancel(int(message["data"]))
                        except Exception:
                            logger.exception("stop request %r failed", message["data"])
            if now >= next_ping:
                next_ping = now + _PING_SECONDS
                await pubsub.ping()
            if now - heard > _SILENCE_SECONDS:
                raise ConnectionError("Redis did not answer a ping")


def _wake_all() -> None:
    """Make every stream of this process read the log again."""
    manager = get_listener_manager()
    with manager.lock:
        channels = list(manager.listeners_by_channel)
    for channel in channels:
        manager.add_to_queues(channel, None)  # not Pushed: read the log


def _make_log() -> ReplayLog | RedisReplayLog:
    url = getattr(settings, "REDIS_URL", "")
    if url:
        return RedisReplayLog(url, getattr(settings, "ASSISTANT_REDIS_PREFIX", "assistant"))
    return ReplayLog()


replay_log = _make_log()


# --- publishing -------------------------------------------------------------------------------


def _items(events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """(type, payload) pairs as the log takes them: each payload encoded for the wire."""
    return [(kind, encode_data(data)) for kind, data in events]


def publish(channel: str, event_type: str, payload: dict[str, Any]) -> int:
    """Log an event for replay and wake the streams of its channel; returns its id.

    For sync code (views, threads). EventsUnavailable when Redis cannot be reached.
    """
    return replay_log.publish_batch(channel, _items([(event_type, payload)])).ids[0]


async def apublish(channel: str, event_type: str, payload: dict[str, Any]) -> int:
    """`publish` for code on the event loop: never blocks it."""
    return (await replay_log.apublish_batch(channel, _items([(event_type, payload)]))).ids[0]


def publish_batch(channel: str, events: Sequence[tuple[str, dict[str, Any]]]) -> Published:
    """Several events of one channel, with consecutive ids: all or none are logged.

    For sync code; EventsUnavailable when Redis cannot be reached."""
    return replay_log.publish_batch(channel, _items(events))


async def apublish_batch(channel: str, events: Sequence[tuple[str, dict[str, Any]]]) -> Published:
    """`publish_batch` for code on the event loop: never blocks it."""
    return await replay_log.apublish_batch(channel, _items(events))


def publish_or_defer(channel: str, event_type: str, payload: dict[str, Any]) -> None:
    """Publish now, or, with Redis unavailable, as soon as it is back (for a while)."""
    items = _items([(event_type, payload)])
    try:
        replay_log.publish_batch(channel, items)
    except EventsUnavailable:
        logger.warning("Redis unavailable: the %s event for %s goes out later", event_type, channel)
        replay_log.defer(channel, items)


async def apublish_or_defer(channel: str, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """`publish_or_defer` for the event loop, for a batch."""
    items = _items(events)
    try:
        await replay_log.apublish_batch(channel, items)
    except EventsUnavailable:
        logger.warning("Redis unavailable: %d events for %s go out later", len(items), channel)
        replay_log.defer(channel, items)


# --- the SSE body -----------------------------------------------------------------------------


class _StreamListener(Listener):
    """django_eventstream's listener, woken directly when the publisher runs on the
    stream's own event loop (every publication of this process's answers): the
    thread-safe way writes to the loop's self-pipe and costs an extra loop turn per
    event. Publishers in other threads still go through it."""

    def wake_threadsafe(self) -> None:
        if asyncio._get_running_loop() is self.loop:
            self.aevent.set()
        else:
            super().wake_threadsafe()


class _KeepAlive:
    """When a quiet stream owes a keep-alive, with one timer per quiet interval rather
    than one per wait: a write only moves the deadline; the timer, firing before the
    deadline as it is by then, sets itself for it again, and once due wakes the stream."""

    __slots__ = ("_event", "_handle", "_loop", "_seconds", "due")

    def __init__(self, event: asyncio.Event, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._event, self._seconds = event, seconds
        self._handle: asyncio.TimerHandle | None = None
        self.wrote()

    def wrote(self) -> None:
        self.due = self._loop.time() + self._seconds
        if self._handle is None:
            self._handle = self._loop.call_at(self.due, self._fire)

    def overdue(self) -> bool:
        return self._loop.time() >= self.due

    def _fire(self) -> None:
        if self.overdue():
            self._handle = None
            self._event.set()
        else:
            self._handle = self._loop.call_at(self.due, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


STREAM_OPEN = "retry: 2000\nevent: stream-open\ndata:\n\n"
# An event, not a comment: the page sees it, so it can tell a quiet stream from a dead one.
KEEP_ALIVE = "event: keep-alive\ndata:\n\n"


def _reset_frame(channel: str, position: int) -> str:
    return (
        f"event: stream-reset\nid: {position_token(channel, position)}\n"
        f"data: {encode_data({'channels': [channel]})}\n\n"
    )


def _continue(pushed: list | None, overflow: bool, position: int) -> tuple[str, int] | None:
    """The frames that came with wake-ups and continue `position` exactly, and the
    position after them; None when the log must be read (a plain wake-up, a gap, a
    dropped wake-up). Frames up to `position` were sent already and are skipped."""
    if overflow:
        return None
    frames = []
    for item in pushed or ():
        if not isinstance(item, Pushed):
            return None
        if item.last <= position:
            continue
        if not item.previous <= position < item.first:
            return None
        frames.append(item.frames)
        position = item.last
    return "".join(frames), position


async def stream(channel: str, position: int | None) -> AsyncIterator[str]:
    """The SSE body of one subscriber, from `position` (None: from now) until it leaves.

    It reads the log on connecting, on a plain wake-up, after a keep-alive and whenever
    the frames that came with wake-ups (Redis) do not continue its position exactly; so
    a stream that keeps up costs no read per event. While the log cannot be read (Redis
    down), the connection stays open with its keep-alives and reads again after a short
    wait or at once when the pub/sub connection is back; the position decides what is
    sent, so nothing is lost or sent twice.
    """
    log = replay_log
    log.start_fanout()
    manager = get_listener_manager()
    listener = _StreamListener()
    listener.channels = {channel}
    listener.assign_loop()
    manager.add_listener(listener)
    loop = asyncio.get_running_loop()
    keep_alive = _KeepAlive(listener.aevent, settings.ASSISTANT_KEEPALIVE_SECONDS)
    try:
        yield STREAM_OPEN
        keep_alive.wrote()
        reset = False
        read = True  # the log must be read, not only the frames pushed with wake-ups
        retry = None  # seconds until the next read while the log is unavailable
        while True:
            with manager.lock:
                pushed = listener.channel_items.get(channel)
                overflow = listener.overflow
                listener.channel_items = {}
                listener.overflow = False
                listener.aevent.clear()
            try:
                if position is None:
                    position = await log.acurrent_id(channel)
                if reset:
                    reset = False
                    keep_alive.wrote()
                    yield _reset_frame(channel, position)
                if not read:
                    continued = _continue(pushed, overflow, position)
                    if continued is None:
                        read = True
                    elif continued[0]:
                        text, position = continued
                        keep_alive.wrote()
                        yield text
                        continue
                if read:
                    found, position = await log.aread(channel, position)
                    # A full batch: there may be more.
                    read = len(found) >= CATCH_UP_BATCH
                    if found:
                        retry = None
                        keep_alive.wrote()
                        yield "".join(event.frame for event in found)
                        continue
            except PositionUnknown:
                position, reset, read = None, True, True
                continue
            except EventsUnavailable:
                retry = RETRY_MIN_SECONDS if retry is None else min(retry * 2, RETRY_MAX_SECONDS)
            else:
                retry = None
            if retry is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(keep_alive.due - loop.time(), retry)):
                        await listener.aevent.wait()
            elif not keep_alive.overdue():
                await listener.aevent.wait()  # keep_alive sets it when one is due
            if keep_alive.overdue():
                keep_alive.wrote()
                read = True  # whatever a lost wake-up left behind
                yield KEEP_ALIVE
    finally:
        keep_alive.cancel()
        manager.remove_listener(listener)
