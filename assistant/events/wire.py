"""The wire format of the event stream: channel names, positions, JSON data, SSE frames.

One channel per conversation (`conversation-<uuid>`). A position is an event id of its
channel; clients hold it as `channel:id` (`Last-Event-ID`, django-eventstream's format).
Every event is encoded here once, by its publisher, and stored in the replay log as the
frame that goes on the wire.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

CHANNEL_PREFIX = "conversation-"

# Positions are event ids, which Redis and the databases hold as signed 64-bit integers.
POSITION_MAX = 2**63 - 1
POSITION_DIGITS_MAX = len(str(POSITION_MAX))

STREAM_OPEN = "retry: 2000\nevent: stream-open\ndata:\n\n"
# An event, not a comment: the page sees it, so it can tell a quiet stream from a dead one.
KEEP_ALIVE = "event: keep-alive\ndata:\n\n"


def channel_for(conversation_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{conversation_id}"


# What orjson refuses (a lone surrogate, an integer beyond 64 bits): json, the same JSON.
_wire_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_data(payload: dict[str, Any]) -> str:
    """JSON for the wire: UTF-8 as is, so "Grüße" travels as Grüße.

    JSON escapes every control character, so the data is always one SSE line and
    model output cannot forge `event:`, `id:` or `retry:` fields.
    """
    try:
        return orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return _wire_json.encode(payload)


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


def frame(channel: str, event_type: str, event_id: int, data: str) -> str:
    """One event as it goes on the wire; `data` is already encoded (`encode_data`)."""
    return f"event: {event_type}\nid: {channel}:{event_id}\ndata: {data}\n\n"


def reset_frame(channel: str, position: int) -> str:
    """`stream-reset`: the client's position cannot be resumed; it continues from `position`."""
    return frame(channel, "stream-reset", position, encode_data({"channels": [channel]}))
