"""What the two replay logs share: their limits, what they return and how they fail.

A replay log keeps, per channel, the recent events as SSE frames with ids counted per
channel: a channel's first id is one above the wall clock in µs when its log is created,
then +1 per event. So the ids of one conversation say nothing about any other's traffic,
and ids handed out before a restart (or before Redis lost its data) are older than
anything the new log knows: they answer a `stream-reset`, after which the client
re-renders from the database. A channel without events in the log has the clock as its
current position.

Two implementations offer the same methods: `memory_log.ReplayLog` (one process) and
`redis_log.RedisReplayLog` (shared by every process); `publish.replay_log` is the one
this process uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

# A batch to append: (event type, data already encoded with wire.encode_data).
Items = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    frame: str  # the event as it goes on the wire


@dataclass(frozen=True, slots=True)
class Published:
    """Ids of events just appended, and the channel's floor before they were.

    Every position from `floor` on could be resumed right before the append. An answer
    whose previous event is older than that lost events on the wire (Redis restarted
    empty), and replays itself whole (see generation/answer.py).
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


class PositionUnknown(Exception):
    """The log cannot resume from this position; the client must re-render."""


class EventsUnavailable(Exception):
    """The shared event log (Redis) cannot be reached right now."""
