"""The Redis replay log's streams: what goes to Redis, and how its answers read.

One stream per channel, `<p>:events:stream:<channel>`. An entry is one appended batch: its
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
starts again above the Redis clock in µs, and `<p>:events:start` (written when found
missing) tells positions from before Redis lost its data.

No I/O here: an append or a read is a generator that yields the commands of one
pipeline and takes their results; `redis_log` runs it on a sync or an async client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from assistant.events.log import EventsUnavailable, Items, LoggedEvent, PositionUnknown, Published, Pushed
from assistant.events.wire import frame

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
class Appended:
    published: Published
    pushed: Pushed


class StreamSteps:
    """The commands of this process's appends and reads, and where it last saw each
    channel's stream end (shared by its sync and async sides)."""

    def __init__(self, prefix: str, *, events_per_channel: int, idle_seconds: float) -> None:
        if events_per_channel < 1 or idle_seconds < 0:
            raise ValueError("a replay log keeps at least one event, for no negative time")
        self.prefix = prefix
        self.events_per_channel = events_per_channel
        self.idle_seconds = idle_seconds
        self.start_key = f"{prefix}:events:start"
        self._lock = threading.Lock()
        self._ends: dict[str, _End] = {}

    def _key(self, channel: str) -> str:
        return f"{self.prefix}:events:stream:{channel}"

    def ttl_ms(self) -> int:
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
            commands.append(("pexpire", (self._key(channel), self.ttl_ms()), {}))
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
            ("set", (self.start_key, str(time.time_ns() // 1000)), {"nx": True, "get": True}),
        ]

    def append_steps(self, channel: str, items: Items) -> Generator[list[Command], list, Appended]:
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
                if isinstance(added, Exception) and not is_stale(added):
                    raise added
            # Where does the stream end? (Gone, or overtaken by another writer.)
            state = State.of((yield self._state_commands(channel)), self._idle_us())
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
            if isinstance(added, Exception) and not is_stale(added):
                raise added
            fast = None  # someone else started it meanwhile
        raise EventsUnavailable(f"appending to {channel} lost to other writers {_APPEND_ATTEMPTS} times")

    @staticmethod
    def _appended(first: int, count: int, floor: int, previous: int, frames: str) -> Appended:
        ids = list(range(first, first + count))
        return Appended(Published(ids, floor), Pushed(previous, first, ids[-1], frames))

    def forget_steps(self, channel: str) -> Generator[list[Command], list, None]:
        """Drop a channel's events, keeping its position: old positions reset."""
        state = State.of((yield self._state_commands(channel)), self._idle_us())
        key = self._key(channel)
        # One transaction: an entry without events at the channel's position, its floor.
        results = yield [
            ("delete", (key,), {}),
            ("xadd", (key, {"f": "", "floor": str(state.newest)}), {"id": f"{state.newest}-0"}),
            ("pexpire", (key, self.ttl_ms()), {}),
        ]
        for result in results:
            if isinstance(result, Exception):
                raise result
        self._remember(channel, _End(state.newest + 1, state.newest))

    def read_steps(
        self, channel: str, position: int | None, limit: int
    ) -> Generator[list[Command], list, tuple[State, list[LoggedEvent]]]:
        """The channel's state and, from a position, the events after it (at most
        `limit`); a read keeps the channel's stream from expiring while a page is open."""
        key = self._key(channel)
        commands = self._state_commands(channel)
        if position is not None:
            commands += [
                ("xrevrange", (key, f"{position}-0", "-"), {"count": 1}),  # the entry holding it
                ("xrange", (key, f"{position + 1}-0", "+"), {"count": limit}),
                ("pexpire", (key, self.ttl_ms()), {}),
            ]
        results = yield commands
        state = State.of(results[:4], self._idle_us())
        if state.exists:
            self._remember(channel, _End(state.next, state.floor))
        if position is None:
            return state, []
        if not state.floor <= position <= state.newest:
            raise PositionUnknown(position)
        found = [event for raw in [*results[4], *results[5]] for event in _Entry.of(raw).events()]
        found = [event for event in found if event.id > position][:limit]
        return state, found


def publish_command(channel: str, message: bytes) -> Command:
    return ("publish", (channel, message), {})


def reads(commands: list[Command]) -> bool:
    """Whether a pipeline reads a stream's state: then in a transaction, one snapshot.
    Appends go without: each XADD stands alone, and Redis runs them in order anyway."""
    return any(name not in ("xadd", "pexpire", "publish") for name, _, _ in commands)


def is_stale(error: Exception) -> bool:
    """XADD refused the id: the stream's top is at or above it (another writer, or a retry)."""
    return "equal or smaller" in str(error)


@dataclass(frozen=True, slots=True)
class State:
    """A channel's stream as one read saw it."""

    exists: bool
    floor: int  # positions from here on can be resumed
    newest: int  # the channel's newest position (its last event, or the clock)
    next: int  # the id its next event gets

    @classmethod
    def of(cls, results: Sequence, idle_us: int) -> State:
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
