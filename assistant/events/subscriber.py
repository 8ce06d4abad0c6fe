"""The SSE body of one subscriber: its events from the replay log, in order, once each.

A stream clears its wake-up flag, reads all events after its own position from the log
(or takes the frames that came with the wake-ups when they continue its position
exactly), writes them in one chunk, and waits. The log is the only source of what gets
sent, so wake-ups can be coalesced, dropped or duplicated without effect on the output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from django.conf import settings
from django_eventstream.views import Listener, get_listener_manager

from assistant.events import publish
from assistant.events.log import (
    CATCH_UP_BATCH,
    RETRY_MAX_SECONDS,
    RETRY_MIN_SECONDS,
    EventsUnavailable,
    PositionUnknown,
    Pushed,
)
from assistant.events.wire import KEEP_ALIVE, STREAM_OPEN, reset_frame


class _StreamListener(Listener):
    """django_eventstream's listener, woken directly when the publisher runs on the
    stream's own event loop (every publication of this process's answers): the
    thread-safe way writes to the loop's self-pipe and costs an extra loop turn per
    event. Publishers in other threads still go through it."""

    def wake_threadsafe(self) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop: a request's, a command's
            here = None
        if here is self.loop:
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


async def position_now(channel: str) -> int:
    """The position of a stream whose client gave none: the channel's current one, taken
    before the stream's 200 goes out, so that every event published once the client has
    its 200 is sent. While Redis cannot be reached, 0: a reset once it is back."""
    try:
        return await publish.replay_log.acurrent_id(channel)
    except EventsUnavailable:
        return 0


async def stream(channel: str, position: int) -> AsyncIterator[str]:
    """The SSE body of one subscriber, from `position` until it leaves.

    It reads the log on connecting, on a plain wake-up, after a keep-alive and whenever
    the frames that came with wake-ups (Redis) do not continue its position exactly; so
    a stream that keeps up costs no read per event. While the log cannot be read (Redis
    down), the connection stays open with its keep-alives and reads again after a short
    wait or at once when the pub/sub connection is back; the position decides what is
    sent, so nothing is lost or sent twice.
    """
    log = publish.replay_log
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
                if reset:
                    position = await log.acurrent_id(channel)
                    reset = False
                    keep_alive.wrote()
                    yield reset_frame(channel, position)
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
                reset, read = True, True
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
