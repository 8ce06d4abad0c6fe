"""The replay log in this process's memory: the default, one server process.

Publishing appends here and wakes the channel's streams through django-eventstream's
listener manager, with the appended frames, so a stream that keeps up reads no log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from django_eventstream.views import get_listener_manager

from assistant.events.log import (
    CATCH_UP_BATCH,
    REPLAY_EVENTS_PER_CHANNEL,
    REPLAY_IDLE_SECONDS,
    Items,
    LoggedEvent,
    PositionUnknown,
    Published,
    Pushed,
)
from assistant.events.wire import frame


class _ChannelLog:
    __slots__ = ("appended", "events", "floor", "last", "read")

    def __init__(self, floor: int, last: int) -> None:
        self.events: deque[LoggedEvent] = deque()
        # Any position from `floor` on can be resumed: nothing after it was dropped.
        self.floor = floor
        # The channel's newest id; its next event gets the one after it.
        self.last = last
        self.appended = self.read = time.monotonic()


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

    def __init__(
        self,
        *,
        events_per_channel: int = REPLAY_EVENTS_PER_CHANNEL,
        idle_seconds: float = REPLAY_IDLE_SECONDS,
    ) -> None:
        if events_per_channel < 1 or idle_seconds < 0:
            raise ValueError("a replay log keeps at least one event, for no negative time")
        self.events_per_channel = events_per_channel
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._channels: dict[str, _ChannelLog] = {}
        # Positions below it predate this process. The clock never goes back (a
        # position handed out from it stays below every later id of its channel).
        self._base = self._clock = time.time_ns() // 1000
        self._next_sweep = time.monotonic() + idle_seconds

    def _now(self) -> int:
        """The wall clock in µs, never lower than before; with the lock held."""
        self._clock = max(self._clock, time.time_ns() // 1000)
        return self._clock

    def _unknown_floor(self, now: int) -> int:
        # A channel forgotten here had no event for the idle time: its ids are older.
        return max(self._base, now - int(self.idle_seconds * 1_000_000))

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
                frames.append(frame(channel, event_type, log.last, data))
                log.events.append(LoggedEvent(log.last, frames[-1]))
            log.appended = log.read = time.monotonic()
            while len(log.events) > self.events_per_channel:
                log.floor = log.events.popleft().id
            if log.appended >= self._next_sweep:
                self._forget_idle(log.appended)
            return Published(ids, floor), Pushed(previous, ids[0], ids[-1], "".join(frames))

    def _forget_idle(self, now: float) -> None:
        """Drop the events of channels without a new one for the idle time, and the whole
        channel once no stream read it for that long either."""
        for name, log in list(self._channels.items()):
            if now - log.read > self.idle_seconds:
                del self._channels[name]
            elif now - log.appended > self.idle_seconds and log.events:
                log.events.clear()
                log.floor = log.last
        self._next_sweep = now + self.idle_seconds

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

    async def apublish_batch(self, channel: str, items: Items) -> Published:
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
