"""django-eventstream's extension points: the seam through which any Django code publishes.

    EVENTSTREAM_STORAGE_CLASS = "assistant.events.eventstream.ReplayLogStorage"
    EVENTSTREAM_CHANNELMANAGER_CLASS = "assistant.events.eventstream.ConversationChannels"

With these settings the library's ordinary API reaches a conversation's page: a view or a
signal handler calls `django_eventstream.send_event(channel_for(conversation_id), "title",
{...})`, the event goes into this process's replay log with the conversation's next id,
and its open streams get it like any other (with REDIS_URL also those of every other
process, and from any process, a management command's too). Who may read a channel is
`ConversationChannels.can_read_channel`, which the stream endpoint asks.

The answers' own events do not take this path: `publish.apublish_batch` publishes from the
event loop without blocking it, and costs a fraction of `send_event`'s CPU per event
(docs/architecture.md, "The event stream").
"""

from __future__ import annotations

import json
import re
import uuid

from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase

from assistant.events import publish
from assistant.events.log import PositionUnknown
from assistant.events.wire import CHANNEL_PREFIX, channel_for, encode_data
from assistant.models import Conversation

# An event type goes on the wire as it is (`event: <type>`): a name, never a new line.
EVENT_TYPE = re.compile(r"[a-z][a-z0-9-]{0,49}")


def conversation_of(channel: str) -> uuid.UUID | None:
    """The conversation whose channel this is; None for any other name."""
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    try:
        conversation_id = uuid.UUID(channel.removeprefix(CHANNEL_PREFIX))
    except ValueError:
        return None
    return conversation_id if channel_for(conversation_id) == channel else None


def _payload(data: object) -> object:
    """What `send_event` hands over: JSON text (its default, json_encode=True), or with
    json_encode=False the value itself, which must be JSON-serialisable."""
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            raise ValueError(
                "send_event data for a conversation must be JSON: pass a dict (json_encode=True)"
            ) from None
    return data


def _parsed(channel: str, frame: str) -> Event:
    """A logged frame (`event:`, `id:`, `data:` lines) as the library's Event."""
    fields = dict(line.split(": ", 1) for line in frame.strip("\n").split("\n"))
    event_id = int(fields["id"].rpartition(":")[2])
    return Event(channel, fields["event"], json.loads(fields["data"]), id=event_id)


class ReplayLogStorage(StorageBase):
    """The library's storage: this process's replay log (memory, or Redis)."""

    def append_event(self, channel: str, event_type: str, data: object) -> Event:
        if conversation_of(channel) is None:
            raise ValueError(f"{channel!r} is not a conversation's channel (events.wire.channel_for)")
        if not EVENT_TYPE.fullmatch(event_type):
            raise ValueError(f"{event_type!r} is not an event type: lower-case letters, digits and '-'")
        payload = _payload(data)
        # Appended and its streams woken here; the library wakes this process's again.
        event_id = publish.replay_log.publish_batch(channel, [(event_type, encode_data(payload))]).ids[0]
        return Event(channel, event_type, payload, id=event_id)

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        try:
            found = publish.replay_log.since(channel, last_id, limit)
        except PositionUnknown:
            current = publish.replay_log.current_id(channel)
            raise EventDoesNotExist(f"{channel}: position {last_id} cannot be resumed", current) from None
        return [_parsed(channel, event.frame) for event in found]

    def get_current_id(self, channel: str) -> int:
        return publish.replay_log.current_id(channel)


class ConversationChannels(ChannelManagerBase):
    """One channel per conversation, readable by its owner only."""

    def get_channels_for_request(self, request, view_kwargs) -> set[str]:
        return {channel_for(view_kwargs["conversation_id"])}

    def can_read_channel(self, user, channel: str) -> bool:
        conversation_id = conversation_of(channel)
        if conversation_id is None or user is None or not user.is_authenticated:
            return False
        return Conversation.objects.filter(pk=conversation_id, owner=user).exists()

    def is_channel_reliable(self, channel: str) -> bool:
        return True
