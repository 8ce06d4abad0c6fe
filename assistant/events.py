"""Event stream: channel naming, the replay log, publishing and the SSE body.

One channel per conversation (`conversation-<uuid>`). Every event is appended to the
replay log, encoded for the wire once, and then django-eventstream's listener manager
wakes the streams subscribed to its channel. A stream always reads from the log after
its own position, so a client reconnecting with `Last-Event-ID` gets exactly what it
missed, once, in order, however many wake-ups it coalesced or missed.

Event ids come from one counter per process that starts at the wall clock in
microseconds, so ids handed out before a restart are never mistaken for positions in
the new process: they are older than anything it knows and answer a `stream-reset`,
after which the client re-renders from the database.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django_eventstream.views import Listener, get_listener_manager

CHANNEL_PREFIX = "conversation-"

# How many events a channel keeps for replay. A page that reloads resumes from the
# position persisted with the partial text (a fraction of a second old), so this only
# has to cover connections that drop for a while.
REPLAY_EVENTS_PER_CHANNEL = 2000
# A channel with no new event for this long is forgotten.
REPLAY_IDLE_SECONDS = 15 * 60
# Events sent in one write when a client catches up.
CATCH_UP_BATCH = 500


def channel_for(conversation_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{conversation_id}"


def encode_data(payload: dict[str, Any]) -> str:
    """JSON for the wire: UTF-8 as is, so "Grüße" travels as Grüße.

    json.dumps escapes every control character, so the data is always one SSE line and
    model output cannot forge `event:`, `id:` or `retry:` fields.
    """
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def position_token(channel: str, event_id: int) -> str:
    """The `Last-Event-ID` value for a position (django-eventstream's `channel:id` format)."""
    return f"{channel}:{event_id}"


def position_from(channel: str, token: str | None) -> int | None:
    """The position in a `Last-Event-ID` value; None when it is absent, malformed or not ours."""
    if not token:
        return None
    name, _, number = token.rpartition(":")
    if name != channel or not (number.isascii() and number.isdigit()):
        return None
    return int(number)


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    frame: str  # the event as it goes on the wire


class PositionUnknown(Exception):
    """The log cannot resume from this position; the client must re-render."""


class _ChannelLog:
    __slots__ = ("events", "floor", "touched")

    def __init__(self, floor: int) -> None:
        self.events: deque[LoggedEvent] = deque()
        # Any position from `floor` on can be resumed: nothing after it was dropped.
        self.floor = floor
        self.touched = time.monotonic()


class ReplayLog:
    """Recent events of every channel in this process, with resumable positions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, _ChannelLog] = {}
        self._base = time.time_ns() // 1000
        self._last_id = self._base
        # Positions older than this are unknown for channels this process forgot.
        self._forgotten_floor = self._base
        self._next_sweep = time.monotonic() + REPLAY_IDLE_SECONDS

    def append(self, channel: str, event_type: str, data: str) -> int:
        with self._lock:
            self._last_id += 1
            event_id = self._last_id
            frame = f"event: {event_type}\nid: {channel}:{event_id}\ndata: {data}\n\n"
            log = self._channels.get(channel)
            if log is None:
                log = self._channels[channel] = _ChannelLog(self._forgotten_floor)
            log.events.append(LoggedEvent(event_id, frame))
            log.touched = time.monotonic()
            if len(log.events) > REPLAY_EVENTS_PER_CHANNEL:
                log.floor = log.events.popleft().id
            if log.touched >= self._next_sweep:
                self._forget_idle(log.touched)
            return event_id

    def _forget_idle(self, now: float) -> None:
        for name, log in list(self._channels.items()):
            if now - log.touched > REPLAY_IDLE_SECONDS:
                del self._channels[name]
                self._forgotten_floor = max(self._forgotten_floor, log.events[-1].id)
        self._next_sweep = now + REPLAY_IDLE_SECONDS

    def forget(self, channel: str) -> None:
        """Drop a channel's events (its conversation was deleted); its old positions reset."""
        with self._lock:
            log = self._channels.pop(channel, None)
            if log is not None and log.events:
                self._forgotten_floor = max(self._forgotten_floor, log.events[-1].id)

    def _floor(self, log: _ChannelLog | None) -> int:
        return log.floor if log else self._forgotten_floor

    def _resumable(self, log: _ChannelLog | None, position: int) -> bool:
        floor = log.floor if log else self._forgotten_floor
        return floor <= position <= self._last_id

    def can_resume(self, channel: str, position: int) -> bool:
        with self._lock:
            return self._resumable(self._channels.get(channel), position)

    def since(self, channel: str, position: int, limit: int = CATCH_UP_BATCH) -> list[LoggedEvent]:
        """Events after `position`, oldest first; PositionUnknown if it cannot be resumed."""
        with self._lock:
            log = self._channels.get(channel)
            if not self._resumable(log, position):
                raise PositionUnknown(position)
            if log is None:
                return []
            newer: list[LoggedEvent] = []
            # Newest first: a caught-up client costs one comparison.
            for event in reversed(log.events):
                if event.id <= position:
                    break
                newer.append(event)
            newer.reverse()
            return newer[:limit]

    def current_id(self) -> int:
        """A position that is up to date on every channel: the newest id handed out."""
        return self._last_id


replay_log = ReplayLog()


def publish(channel: str, event_type: str, payload: dict[str, Any]) -> int:
    """Log an event for replay and wake the streams of its channel; returns its id."""
    event_id = replay_log.append(channel, event_type, encode_data(payload))
    get_listener_manager().add_to_queues(channel, event_id)
    return event_id


STREAM_OPEN = "retry: 2000\nevent: stream-open\ndata:\n\n"
# An event, not a comment: the page sees it, so it can tell a quiet stream from a dead one.
KEEP_ALIVE = "event: keep-alive\ndata:\n\n"


async def stream(channel: str, position: int | None) -> AsyncIterator[str]:
    """The SSE body of one subscriber, from `position` (None: from now) until it leaves."""
    manager = get_listener_manager()
    listener = Listener()
    listener.channels = {channel}
    listener.assign_loop()
    manager.add_listener(listener)
    try:
        yield STREAM_OPEN
        if position is None:
            position = replay_log.current_id()
        while True:
            with manager.lock:
                # Wake-ups only say "look again"; the log is what gets read.
                listener.channel_items = {}
                listener.overflow = False
                listener.aevent.clear()
            try:
                events = replay_log.since(channel, position)
            except PositionUnknown:
                position = replay_log.current_id()
                yield (
                    f"event: stream-reset\nid: {position_token(channel, position)}\n"
                    f"data: {encode_data({'channels': [channel]})}\n\n"
                )
                continue
            if events:
                position = events[-1].id
                yield "".join(event.frame for event in events)
                continue
            try:
                async with asyncio.timeout(settings.ASSISTANT_KEEPALIVE_SECONDS):
                    await listener.aevent.wait()
            except TimeoutError:
                yield KEEP_ALIVE
    finally:
        manager.remove_listener(listener)
