"""Event stream: channel naming and permission, the replay log, and publishing.

One channel per conversation (`conversation-<uuid>`). django-eventstream serves it;
this module decides who may read it and keeps the recent events so that a client
reconnecting with `Last-Event-ID` gets exactly what it missed.

Event ids come from one counter per process that starts at the wall clock in
microseconds, so ids handed out before a restart are never mistaken for positions
in the new process: they are older than anything it knows and answer a
`stream-reset`, after which the client re-renders from the database.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from typing import Any

from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase
from django_eventstream.views import get_listener_manager

CHANNEL_PREFIX = "conversation-"

# How many events a channel keeps for replay. A page that reloads resumes from the
# position persisted with the partial text (a fraction of a second old), so this only
# has to cover connections that drop for a while.
REPLAY_EVENTS_PER_CHANNEL = 2000
# A channel with no new event for this long is forgotten.
REPLAY_IDLE_SECONDS = 15 * 60


def channel_for(conversation_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{conversation_id}"


def conversation_id_from(channel: str) -> uuid.UUID | None:
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    try:
        return uuid.UUID(channel.removeprefix(CHANNEL_PREFIX))
    except ValueError:
        return None


def encode_data(payload: dict[str, Any]) -> str:
    """JSON for the wire: UTF-8 as is, so "Grüße" travels as Grüße."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class _ChannelLog:
    __slots__ = ("events", "floor", "touched")

    def __init__(self, floor: int) -> None:
        self.events: deque[Event] = deque()
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

    def append(self, channel: str, event_type: str, data: str) -> Event:
        with self._lock:
            self._last_id += 1
            event = Event(channel, event_type, data, id=self._last_id)
            log = self._channels.get(channel)
            if log is None:
                log = self._channels[channel] = _ChannelLog(self._forgotten_floor)
            log.events.append(event)
            log.touched = time.monotonic()
            if len(log.events) > REPLAY_EVENTS_PER_CHANNEL:
                log.floor = log.events.popleft().id
            if log.touched >= self._next_sweep:
                self._forget_idle(log.touched)
            return event

    def _forget_idle(self, now: float) -> None:
        for name, log in list(self._channels.items()):
            if now - log.touched > REPLAY_IDLE_SECONDS:
                del self._channels[name]
                self._forgotten_floor = max(self._forgotten_floor, log.events[-1].id)
        self._next_sweep = now + REPLAY_IDLE_SECONDS

    def since(self, channel: str, last_id: int, limit: int) -> list[Event]:
        """Events after `last_id`, oldest first; EventDoesNotExist if it cannot be resumed."""
        with self._lock:
            log = self._channels.get(channel)
            floor = log.floor if log else self._forgotten_floor
            if not floor <= last_id <= self._last_id:
                raise EventDoesNotExist(f"Position {last_id} cannot be resumed", self._last_id)
            if log is None or not log.events or log.events[-1].id <= last_id:
                return []
            newer = [event for event in log.events if event.id > last_id]
            return newer[:limit]

    def current_id(self) -> int:
        """A position that is up to date on every channel: the newest id handed out."""
        return self._last_id


replay_log = ReplayLog()


class ReplayStorage(StorageBase):
    """django-eventstream storage over the process's replay log (it loads one per thread)."""

    def append_event(self, channel: str, event_type: str, data: str) -> Event:
        return replay_log.append(channel, event_type, data)

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        return replay_log.since(channel, last_id, limit)

    def get_current_id(self, channel: str) -> int:
        return replay_log.current_id()


class ConversationChannelManager(ChannelManagerBase):
    """Only the active owner of a conversation may read its channel."""

    def get_channels_for_request(self, request, view_kwargs) -> set[str]:
        # Only the channel the view resolved from the URL; never one from the query string.
        return {view_kwargs["channel"]}

    def can_read_channel(self, user, channel: str) -> bool:
        from assistant.models import Conversation

        conversation_id = conversation_id_from(channel)
        if user is None or not user.is_active or conversation_id is None:
            return False
        return Conversation.objects.filter(pk=conversation_id, owner=user).exists()

    def is_channel_reliable(self, channel: str) -> bool:
        return True


def publish(channel: str, event_type: str, payload: dict[str, Any]) -> int:
    """Store an event for replay and wake the listeners of its channel; returns its id.

    This is django-eventstream's send_event minus its GRIP proxy publishing (not used
    here) and plus the event id, which the caller persists as the stream position.
    """
    event = replay_log.append(channel, event_type, encode_data(payload))
    get_listener_manager().add_to_queues(channel, event)
    return event.id


def position_token(channel: str, event_id: int) -> str:
    """The `Last-Event-ID` value for a position, in django-eventstream's format."""
    return f"{channel}:{event_id}"
