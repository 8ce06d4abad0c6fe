"""Publishing: this process's replay log, and the calls that append events to it.

`replay_log` is the memory log, or the Redis log when `REDIS_URL` is set. Each call
encodes its payloads for the wire once, appends them with their channel's next ids and
wakes the channel's streams, wherever they are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from assistant.events.log import EventsUnavailable, Published
from assistant.events.memory_log import ReplayLog
from assistant.events.redis_log import RedisReplayLog
from assistant.events.wire import encode_data

logger = logging.getLogger(__name__)


def _make_log() -> ReplayLog | RedisReplayLog:
    url = getattr(settings, "REDIS_URL", "")
    if url:
        return RedisReplayLog(url, getattr(settings, "ASSISTANT_REDIS_PREFIX", "assistant"))
    return ReplayLog()


replay_log = _make_log()


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
