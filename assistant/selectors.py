"""Reads: what the views, the stream endpoint and the commands show. Nothing here writes.

The writes are in assistant/services.py; both raise `errors.ServiceError`.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.utils import timezone
from django.utils.translation import gettext as _

from assistant.documents.conversation_vectors import ConversationVector, conversation_vectors_catch_up
from assistant.documents.embeddings import EmbeddingError, embed_query, embeddings_enabled, similarities
from assistant.errors import ServiceError, found_or_404
from assistant.events.log import EventsUnavailable
from assistant.events.publish import replay_log
from assistant.events.wire import channel_for, position_token
from assistant.models import Conversation, Message, StarterPrompt, UsageRecord, sql_names


def conversation_get(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    with found_or_404():
        return Conversation.objects.select_related("assistant_version__assistant").get(
            pk=conversation_id, owner=user
        )


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
class Versions:
    """The versions of a message: the messages of its conversation with the same parent
    and role (a question's edits, an answer's regenerations), oldest first."""

    ids: tuple[int, ...]
    index: int

    def json(self) -> dict:
        return {"index": self.index, "count": len(self.ids), "ids": list(self.ids)}


def branch_parents(rows: list[tuple[int, int | None, str, bool]]) -> dict[int, int | None]:
    """Each message's parent, from (id, parent id, role, superseded) of a whole
    conversation in id order. A row stored without one (written by hand) gets the parent
    it would have had: a question the shown answer before it, an answer the question
    before it (as migration 0008 did for the messages stored before versions)."""
    parents: dict[int, int | None] = {}
    question = shown_answer = None
    for pk, parent, role, superseded in rows:
        if role == Message.Role.USER:
            parents[pk] = parent if parent is not None else shown_answer
            question = pk
        else:
            parents[pk] = parent if parent is not None else question
            if not superseded:
                shown_answer = pk
    return parents


def versions_of(rows: list[tuple[int, int | None, str, bool]]) -> dict[int, Versions]:
    """The versions of every message of a conversation, rows as for `branch_parents`."""
    parents = branch_parents(rows)
    groups: dict[tuple[int | None, str], list[int]] = {}
    for pk, _parent, role, _superseded in rows:
        groups.setdefault((parents[pk], role), []).append(pk)
    versions = {}
    for ids in groups.values():
        siblings = tuple(ids)
        for index, pk in enumerate(siblings):
            versions[pk] = Versions(siblings, index)
    return versions


def message_rows(messages: list[Message]) -> list[tuple[int, int | None, str, bool]]:
    return [(m.pk, m.parent_id, m.role, m.superseded) for m in messages]


def conversation_versions(*, conversation_id: uuid.UUID | str) -> dict[int, Versions]:
    """`versions_of` a conversation, read in one query."""
    rows = Message.objects.filter(conversation_id=conversation_id).order_by("pk")
    return versions_of(list(rows.values_list("pk", "parent_id", "role", "superseded")))


@dataclass(frozen=True)
class ConversationState:
    """What a page renders, and the stream position that continues exactly from it.

    `messages` is the shown branch; `versions` has every shown message's versions.
    """

    conversation: Conversation
    messages: list[Message]
    last_event_id: str
    versions: dict[int, Versions]


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
    # Every version in the one read: the page shows the branch and counts the versions.
    stored = list(conversation.messages.order_by("pk"))
    versions = versions_of(message_rows(stored))
    messages = [m for m in stored if not m.superseded]
    shown = {m.pk: versions[m.pk] for m in messages}
    channel = conversation.channel
    if position is None:
        # Redis is down: a position outside every log, answered with a reset once it is back.
        return ConversationState(conversation, messages, position_token(channel, 0), shown)
    try:
        floor, newest = log.window(channel)
    except EventsUnavailable:
        return ConversationState(conversation, messages, position_token(channel, 0), shown)

    def resumable(event_id: int) -> bool:
        return floor <= event_id <= newest

    ended = [m.event_id for m in stored if not m.is_streaming and resumable(m.event_id)]
    position = max([position, *ended])
    streaming = [m.event_id for m in stored if m.is_streaming]
    if streaming:
        if resumable(min(streaming)):
            position = min(streaming)
        elif log.shared:
            # Redis lost the answer's events (it restarted empty): its generator replays
            # it whole after the floor, so the page listens from there.
            position = max([floor, *ended])
        # In-process: a position of another process or from before a restart. The page
        # waits from now on for the answer's end or its interruption.
    return ConversationState(conversation, messages, position_token(channel, position), shown)


@dataclass(frozen=True)
class ConversationPage:
    """A page of the conversation list and the cursor of the next (older) one, if any."""

    conversations: list[Conversation]
    next: str | None
    # A search's snippet of each conversation's first matching message (`snippet_parts`), by id.
    snippets: dict[uuid.UUID, list[dict[str, Any]]] = field(default_factory=dict)


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


# What the sidebar and the list API show of a conversation (views/api.py, conversation_summary_json).
LISTED_FIELDS = ("id", "title", "updated_at", "archived", "origin")


def conversations_list(
    *, user, query: str = "", archived: bool | None = False, limit: int = 100, before: str = ""
) -> ConversationPage:
    """The user's conversations, newest first; with a `query`, the search's ranking instead.

    `archived`: the archive (True), the rest (False) or both (None). `before` is a page's
    `next` cursor: the list continues after the last one shown, however many
    conversations are there (no offset to count through).
    """
    conversations = Conversation.objects.filter(owner=user)
    if archived is not None:
        conversations = conversations.filter(archived=archived)
    query = query.strip()
    if query:
        return _conversations_search(conversations, user=user, query=query, limit=limit, before=before)
    if before:
        moment, pk = _cursor_parse(before)
        conversations = conversations.filter(Q(updated_at__lte=moment) & ~Q(updated_at=moment, pk__gte=pk))
    # The id breaks ties in `updated_at`, so no conversation falls between two pages.
    rows = list(conversations.order_by("-updated_at", "-pk").only(*LISTED_FIELDS)[: limit + 1])
    return ConversationPage(rows[:limit], conversation_cursor(rows[limit - 1]) if len(rows) > limit else None)


# --- search -----------------------------------------------------------------------------------


class GlobMatch(Func):
    """`text GLOB pattern`: SQLite's case-sensitive match, the pattern's classes folding case."""

    arg_joiner = " GLOB "
    template = "(%(expressions)s)"
    output_field = BooleanField()


def _glob_pattern(query: str) -> str:
    """`query` as a GLOB pattern for text that contains it in any case: "Öl*" -> "*[Öö][Ll][*]*"."""
    pattern = []
    for char in query:
        cases = sorted({char, char.lower(), char.upper(), char.swapcase()} - {""})
        cases = [case for case in cases if len(case) == 1]  # "ß".upper() is "SS"
        pattern.append(char if cases == [char] and char not in "*?[" else f"[{''.join(cases)}]")
    return f"*{''.join(pattern)}*"


def text_matches(field_name: str, query: str) -> Q:
    """`field_name` contains `query`, case ignored, umlauts included, on every database.

    SQLite's LIKE (Django's `icontains`) folds the case of ASCII letters only, so there a
    query with other letters is a GLOB with a class per letter; PostgreSQL's UPPER folds all.
    """
    if connection.vendor == "sqlite" and not query.isascii():
        return Q(GlobMatch(F(field_name), Value(_glob_pattern(query))))
    return Q(**{f"{field_name}__icontains": query})


# The text of a snippet: from a little before the first match, about this many characters.
SNIPPET_BEFORE = 60
SNIPPET_CHARS = 200
_SPACE = re.compile(r"\s+")


def snippet_parts(text: str, query: str) -> list[dict[str, Any]]:
    """The text around the first match of `query`, as parts `{"text", "match"}`, every match
    in it marked: a client shows them as text, never as HTML. Whitespace runs become one
    space; "…" stands for text left out. Empty when the text does not contain `query`."""
    return _snippet(text, re.compile(re.escape(query), re.IGNORECASE))


def _snippet(text: str, pattern: re.Pattern[str], *, or_beginning: bool = False) -> list[dict[str, Any]]:
    """snippet_parts for the matches of `pattern`; without any, empty, or with
    `or_beginning` the text's beginning."""
    first = pattern.search(text)
    if first is None:
        if not or_beginning or not text.strip():
            return []
        first = re.compile(r"\A\s*").match(text)
    start = max(0, first.start() - SNIPPET_BEFORE)
    if start and (space := _SPACE.search(text, start, first.start())):
        start = space.end()  # at a word's beginning
    end = max(first.end(), min(len(text), start + SNIPPET_CHARS))
    if end < len(text):
        spaces = [match.start() for match in _SPACE.finditer(text, first.end(), end)]
        end = spaces[-1] if spaces else end
    pieces: list[tuple[str, bool]] = [("…", False)] if start else []
    position = start
    for match in pattern.finditer(text, start, end):
        if match.end() == match.start():
            continue
        pieces += [(text[position : match.start()], False), (match.group(), True)]
        position = match.end()
    pieces += [(text[position:end], False), ("…" if end < len(text) else "", False)]
    parts: list[dict[str, Any]] = []
    for text_piece, is_match in pieces:
        text_piece = _SPACE.sub(" ", text_piece)
        if parts and not parts[-1]["match"] and not is_match:
            parts[-1]["text"] += text_piece
        elif text_piece:
            parts.append({"text": text_piece, "match": is_match})
    if parts and not parts[0]["match"]:
        parts[0]["text"] = parts[0]["text"].lstrip()
    if parts and not parts[-1]["match"]:
        parts[-1]["text"] = parts[-1]["text"].rstrip()
    return [part for part in parts if part["text"]]


def _search_cursor(conversation: Conversation) -> str:
    """The ranked list's position after `conversation`: its rank, then as `conversation_cursor`."""
    return f"{conversation.title_match}.{conversation.hits}.{conversation_cursor(conversation)}"


def _search_cursor_parse(cursor: str) -> tuple[int, int, datetime, uuid.UUID]:
    try:
        title_match, hits, position = cursor.split(".", 2)
        return (int(title_match), int(hits), *_cursor_parse(position))
    except ValueError:
        raise ServiceError(400, "invalid", _("before: Not a position in the list.")) from None


def _conversations_search(
    conversations: QuerySet[Conversation], *, user, query: str, limit: int, before: str
) -> ConversationPage:
    """`conversations` whose title or messages contain `query`, ranked in one query: title
    matches first, then more matching messages, then the more recent; with each one's
    first matching message for its snippet (docs/architecture.md, "Search").

    Where an embeddings model is configured, by meaning too (_conversations_by_meaning)."""
    if embeddings_enabled():
        found = _conversations_by_meaning(conversations, user=user, query=query, limit=limit, before=before)
        if found is not None:
            return found
    return _conversations_containing(conversations, user=user, query=query, limit=limit, before=before)


def _conversations_containing(
    conversations: QuerySet[Conversation], *, user, query: str, limit: int, before: str
) -> ConversationPage:
    """The full-text search of _conversations_search."""
    matching = Message.objects.filter(text_matches("content", query))
    in_conversation = matching.filter(conversation=OuterRef("pk"))
    conversations = conversations.filter(
        # A subquery, not a join: a conversation with many matching messages is listed once.
        text_matches("title", query)
        | Q(pk__in=matching.filter(conversation__owner=user).values("conversation_id"))
    ).annotate(
        title_match=Case(
            When(text_matches("title", query), then=Value(1)), default=Value(0), output_field=IntegerField()
        ),
        # COUNT without GROUP BY: 0, not NULL, for a conversation found by its title alone.
        hits=Subquery(
            in_conversation.order_by().annotate(count=Func(F("pk"), function="COUNT")).values("count")
        ),
        first_text=Subquery(in_conversation.order_by("pk").values("content")[:1]),
    )
    if before:
        title_match, hits, moment, pk = _search_cursor_parse(before)
        conversations = conversations.filter(
            Q(title_match__lt=title_match)
            | Q(title_match=title_match, hits__lt=hits)
            | Q(title_match=title_match, hits=hits, updated_at__lt=moment)
            | Q(title_match=title_match, hits=hits, updated_at=moment, pk__lt=pk)
        )
    rows = list(
        conversations.order_by("-title_match", "-hits", "-updated_at", "-pk").only(*LISTED_FIELDS)[
            : limit + 1
        ]
    )
    return ConversationPage(
        rows[:limit],
        _search_cursor(rows[limit - 1]) if len(rows) > limit else None,
        {row.pk: snippet_parts(row.first_text or "", query) for row in rows[:limit]},
    )


# --- search by meaning ------------------------------------------------------------------------

# A conversation whose vector's cosine with the search's is below this is not found by
# meaning (full text may still find it). Unrelated texts score about 0.0-0.2 with current
# embeddings models (OpenAI's text-embedding-3, the fake upstream's), related ones more.
SEMANTIC_MIN_SIMILARITY = 0.25
# At most this many conversations found by meaning, and by full text, are fused.
SEMANTIC_RESULTS_MAX = 50
FULLTEXT_RESULTS_MAX = 500
# Reciprocal rank fusion's constant (as assistant/documents/retrieval.py).
SEARCH_RRF_K = 60
_SEMANTIC_CURSOR = re.compile(r"s(\d{1,6})")
_SEARCH_WORD = re.compile(r"[^\W_]{3,}")


@functools.lru_cache(maxsize=256)
def _search_vector(model: str, query: str) -> bytes:
    """The vector of a search (typed again, paged through: asked for once)."""
    return embed_query(query)


def _conversations_by_meaning(
    conversations: QuerySet[Conversation], *, user, query: str, limit: int, before: str
) -> ConversationPage | None:
    """`conversations` found by full text (as _conversations_containing ranks them) and by
    meaning (the cosine of their vectors with the search's, SEMANTIC_MIN_SIMILARITY at
    least), fused by reciprocal rank; None when the model service fails, for full text
    alone. The cursor is the position in the fused list ("s<n>"). A conversation found by
    meaning alone has the beginning of its first question as its snippet, the search's
    words in it marked. Stale vectors of the user's are queued (conversation_vectors)."""
    offset = 0
    if before:
        if not (cursor := _SEMANTIC_CURSOR.fullmatch(before)):
            raise ServiceError(400, "invalid", _("before: Not a position in the list."))
        offset = int(cursor.group(1))
    try:
        vector = _search_vector(settings.ASSISTANT_EMBEDDINGS_MODEL, query)
    except EmbeddingError:
        return None
    conversation_vectors_catch_up(user, conversations)
    literal = _conversations_containing(
        conversations, user=user, query=query, limit=FULLTEXT_RESULTS_MAX, before=""
    )
    stored = list(
        ConversationVector.objects.filter(
            conversation__in=conversations.values("pk"), model=settings.ASSISTANT_EMBEDDINGS_MODEL
        ).values_list("conversation_id", "embedding")
    )
    stored = [(pk, bytes(embedding)) for pk, embedding in stored if len(embedding) == len(vector)]
    scores = similarities(vector, [embedding for pk, embedding in stored])
    meaning = sorted(
        (
            (float(score), pk)
            for (pk, embedding), score in zip(stored, scores, strict=True)
            if score >= SEMANTIC_MIN_SIMILARITY
        ),
        key=lambda item: (-item[0], str(item[1])),
    )[:SEMANTIC_RESULTS_MAX]
    fused: dict[uuid.UUID, float] = {}
    for ranking in ([row.pk for row in literal.conversations], [pk for score, pk in meaning]):
        for rank, pk in enumerate(ranking, start=1):
            fused[pk] = fused.get(pk, 0.0) + 1.0 / (SEARCH_RRF_K + rank)
    order = sorted(fused, key=lambda pk: (-fused[pk], str(pk)))
    shown = order[offset : offset + limit]
    known = {row.pk: row for row in literal.conversations}
    first_question = (
        Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.USER)
        .order_by("pk")
        .values("content")[:1]
    )
    others = conversations.filter(pk__in=[pk for pk in shown if pk not in known]).annotate(
        first_text=Subquery(first_question)
    )
    rows = {**known, **{row.pk: row for row in others.only(*LISTED_FIELDS)}}
    words = sorted(set(_SEARCH_WORD.findall(query)), key=len, reverse=True)
    marks = re.compile("|".join(re.escape(word) for word in words) or r"(?!)", re.IGNORECASE)
    snippets = {
        pk: (
            literal.snippets[pk]
            if pk in known
            else _snippet(rows[pk].first_text or "", marks, or_beginning=True)
        )
        for pk in shown
        if pk in rows
    }
    return ConversationPage(
        [rows[pk] for pk in shown if pk in rows],
        f"s{offset + limit}" if offset + limit < len(order) else None,
        snippets,
    )


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


def starter_prompts(*, language: str) -> list[str]:
    """The active example prompts for a new chat in `language` ("de", "de-at") and for any, in order."""
    languages = {"", language, language.split("-")[0]}
    prompts = StarterPrompt.objects.filter(active=True, language__in=languages)
    return list(prompts.order_by("position", "pk").values_list("text", flat=True))
