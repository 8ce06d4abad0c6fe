"""Reads: what the views, the stream endpoint and the commands show. Nothing here writes.

The writes are in assistant/services.py; both raise `errors.ServiceError`.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from assistant.errors import ServiceError, found_or_404
from assistant.events.log import EventsUnavailable
from assistant.events.publish import replay_log
from assistant.events.wire import channel_for, position_token
from assistant.models import Conversation, Message, UsageRecord, sql_names


def conversation_get(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    with found_or_404():
        return Conversation.objects.get(pk=conversation_id, owner=user)


async def aconversation_get(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    with found_or_404():
        return await Conversation.objects.aget(pk=conversation_id, owner=user)


@dataclass(frozen=True)
class Usage:
    """What a user asked for today and in the last minute, against the limits."""

    answers_last_minute: int
    tokens_today: int
    rate_limit: int
    daily_quota: int

    @property
    def quota_left(self) -> int | None:
        return None if not self.daily_quota else max(0, self.daily_quota - self.tokens_today)


def local_midnight(moment: datetime) -> datetime:
    return timezone.localtime(moment).replace(hour=0, minute=0, second=0, microsecond=0)


@functools.cache
def _usage_sql() -> str:
    """Both limits' figures in one statement, built once: it runs before every answer.

    Written out, not an ORM aggregate: Django took about 1 ms of CPU to build and compile
    that aggregate (conditional counts and sums), the database a tenth of it to run it.
    """
    # The usage record, not the messages: deleting a conversation must not give its
    # answers back to the limits. Its (user, created_at) index serves the WHERE.
    table, user, created_at, answers, prompt, completion = sql_names(
        UsageRecord, "user", "created_at", "answers", "prompt_tokens", "completion_tokens"
    )
    return (
        f"SELECT COALESCE(SUM(CASE WHEN {created_at} > %s THEN {answers} ELSE 0 END), 0), "  # noqa: S608
        f"COALESCE(SUM(CASE WHEN {created_at} >= %s THEN {prompt} + {completion} ELSE 0 END), 0) "
        f"FROM {table} WHERE {user} = %s AND {created_at} >= %s"
    )


def usage_get(*, user, now: datetime | None = None) -> Usage:
    """`user` is a user or a user id."""
    now = now or timezone.now()
    minute_ago, midnight = now - timedelta(minutes=1), local_midnight(now)
    moment = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            _usage_sql(),
            [
                moment(minute_ago),
                moment(midnight),
                getattr(user, "pk", user),
                moment(min(minute_ago, midnight)),
            ],
        )
        answers_last_minute, tokens_today = cursor.fetchone()
    return Usage(
        answers_last_minute=int(answers_last_minute),
        # int(): PostgreSQL sums BIGINT columns as NUMERIC, which arrives as a Decimal.
        tokens_today=int(tokens_today),
        rate_limit=settings.ASSISTANT_RATE_LIMIT_PER_MINUTE,
        daily_quota=settings.ASSISTANT_DAILY_TOKEN_QUOTA,
    )


@dataclass(frozen=True)
class ConversationState:
    """What a page renders, and the stream position that continues exactly from it."""

    conversation: Conversation
    messages: list[Message]
    last_event_id: str


def conversation_state(*, user, conversation_id: uuid.UUID | str) -> ConversationState:
    # Read the position before the rows: events after it are either not in the rows yet,
    # or belong to an answer the rows show whole. An ended answer stores the position of
    # its last delta with its final text, so the page starts after that; a streaming one
    # resumes from the position stored with its partial text.
    log = replay_log
    try:
        # The channel's own position (ids count per conversation); a malformed id is
        # conversation_get's 404.
        position = log.current_id(channel_for(uuid.UUID(str(conversation_id))))
    except (EventsUnavailable, ValueError):
        position = None
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    messages = list(conversation.messages.order_by("pk"))
    channel = conversation.channel
    if position is None:
        # Redis is down: a position outside every log, answered with a reset once it is back.
        return ConversationState(conversation, messages, position_token(channel, 0))
    try:
        floor, newest = log.window(channel)
    except EventsUnavailable:
        return ConversationState(conversation, messages, position_token(channel, 0))

    def resumable(event_id: int) -> bool:
        return floor <= event_id <= newest

    ended = [m.event_id for m in messages if not m.is_streaming and resumable(m.event_id)]
    position = max([position, *ended])
    streaming = [m.event_id for m in messages if m.is_streaming]
    if streaming:
        if resumable(min(streaming)):
            position = min(streaming)
        elif log.shared:
            # Redis lost the answer's events (it restarted empty): its generator replays
            # it whole after the floor, so the page listens from there.
            position = max([floor, *ended])
        # In-process: a position of another process or from before a restart. The page
        # waits from now on for the answer's end or its interruption.
    return ConversationState(conversation, messages, position_token(channel, position))


@dataclass(frozen=True)
class ConversationPage:
    """A page of the conversation list and the cursor of the next (older) one, if any."""

    conversations: list[Conversation]
    next: str | None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def conversation_cursor(conversation: Conversation) -> str:
    """The list position just after `conversation`: its `updated_at` in µs and its id."""
    return f"{(conversation.updated_at - EPOCH) // timedelta(microseconds=1)}.{conversation.pk.hex}"


def _cursor_parse(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        micros, pk = cursor.split(".")
        return EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=pk)
    except (ValueError, OverflowError):
        raise ServiceError(400, "invalid", _("before: Not a position in the list.")) from None


def conversations_list(
    *, user, query: str = "", archived: bool = False, limit: int = 100, before: str = ""
) -> ConversationPage:
    """The user's conversations, newest first; `query` matches titles and message text.

    `before` is a page's `next` cursor: the list continues after the last one shown,
    however many conversations are there (no offset to count through).
    """
    conversations = Conversation.objects.filter(owner=user, archived=archived)
    query = query.strip()
    if query:
        # A subquery, not a join: a conversation with many matching messages is listed once.
        matching = Message.objects.filter(conversation__owner=user, content__icontains=query)
        conversations = conversations.filter(
            Q(title__icontains=query) | Q(pk__in=matching.values("conversation_id"))
        )
    if before:
        moment, pk = _cursor_parse(before)
        conversations = conversations.filter(Q(updated_at__lte=moment) & ~Q(updated_at=moment, pk__gte=pk))
    # The id breaks ties in `updated_at`, so no conversation falls between two pages.
    rows = list(
        conversations.order_by("-updated_at", "-pk").only("id", "title", "updated_at", "archived")[
            : limit + 1
        ]
    )
    return ConversationPage(rows[:limit], conversation_cursor(rows[limit - 1]) if len(rows) > limit else None)


@dataclass(frozen=True)
class ConversationGroup:
    label: str
    conversations: list[Conversation]


def recency_groups(*, today: date) -> list[tuple[str, datetime | None]]:
    """The sidebar's sections, newest first: each label and the moment it starts (local time)."""
    days = [
        (_("Today"), today),
        (_("Yesterday"), today - timedelta(days=1)),
        (_("Previous 7 days"), today - timedelta(days=7)),
        (_("Previous 30 days"), today - timedelta(days=30)),
    ]
    starts = [(label, timezone.make_aware(datetime.combine(day, time.min))) for label, day in days]
    return [*starts, (_("Older"), None)]


def group_by_recency(conversations: list[Conversation], *, today: date) -> list[ConversationGroup]:
    """The conversations (newest first) in the sidebar's sections; empty sections left out."""
    bounds = recency_groups(today=today)
    groups: dict[str, list[Conversation]] = {label: [] for label, _start in bounds}
    for conversation in conversations:
        label = next(label for label, start in bounds if start is None or conversation.updated_at >= start)
        groups[label].append(conversation)
    return [ConversationGroup(label, items) for label, items in groups.items() if items]
