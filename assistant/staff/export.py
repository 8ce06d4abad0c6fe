"""Conversations with their messages, exported: the admin's action and the shell's command.

One exporter for both, and for the owner's own download (assistant/views/exports.py).
`conversations_logged` reads the conversations a chunk at a time (two queries per chunk,
their owners and assistant versions joined, their messages prefetched, so memory stays
flat however many there are) and puts each chunk on the access log ("export: <reason>")
before handing it out: a reader that stops midway leaves exactly what it was given on
the record. A JSON line is `conversation_export_json` (also the conversations of
`user_data export`); CSV has one row per message with the conversation's columns, every
cell inert for spreadsheets (assistant.spreadsheet); JSON Lines keeps the exact text.

A conversation names the assistant version it ran with (`assistant`: slug, name and
version number, or null for the bare model) and the personal instructions it started
with; a message its `parent` (the tree of versions) and, in a guided flow, its `phase`
and the `phase_summary` of the answer that ended one. A retired assistant is exported
like any other: its versions stay.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TextIO

from asgiref.sync import sync_to_async
from django.db.models import Prefetch, Q, QuerySet

from assistant import spreadsheet
from assistant.models import AccessLog, Conversation, Message
from assistant.review import REASON_MAX_CHARS, REASON_MIN_CHARS, conversation_access_entry
from assistant.staff.common import Period, StaffError

EXPORT_FORMATS = ("jsonl", "csv")
EXPORT_CHUNK = 200

CSV_CONVERSATION_COLUMNS = [
    "conversation_id",
    "owner",
    "title",
    "conversation_model",
    "archived",
    "assistant",
    "assistant_name",
    "assistant_version",
    "conversation_created_at",
    "conversation_updated_at",
]
CSV_MESSAGE_COLUMNS = [
    "message_id",
    "parent_id",
    "role",
    "status",
    "model",
    "created_at",
    "content",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "superseded",
    "feedback",
    "feedback_comment",
    "error_type",
    "phase",
    "phase_ended_by",
    "phase_summary",
    "phase_points",
]


def _phase_summary(message: Message) -> dict[str, Any]:
    """The summary of the phase an answer ended, as stored ({} for any other message)."""
    return message.phase_summary if isinstance(message.phase_summary, dict) else {}


def message_export_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "finish_reason": message.finish_reason,
        "created_at": message.created_at.isoformat(),
        "usage": {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens},
        "timings": {
            "time_to_first_token_ms": message.time_to_first_token_ms,
            "duration_ms": message.duration_ms,
        },
        "error": (
            {"code": message.error_code, "type": message.error_type, "detail": message.error_detail}
            if message.error_type or message.status == Message.Status.ERROR
            else None
        ),
        "feedback": message.feedback_name,
        "feedback_comment": message.feedback_comment,
        "superseded": message.superseded,
        "phase": message.phase,
        "phase_summary": message.phase_summary,
    }


def assistant_export_json(conversation: Conversation) -> dict[str, Any] | None:
    """The assistant version a conversation ran with (its assistant loaded), or None."""
    version = conversation.assistant_version
    if version is None:
        return None
    return {"slug": version.assistant.slug, "name": version.name, "version": version.number}


def conversation_export_json(conversation: Conversation) -> dict[str, Any]:
    """One conversation with its messages (prefetched, in order), as exported."""
    return {
        "id": str(conversation.pk),
        "owner": conversation.owner.get_username(),
        "title": conversation.title,
        "model": conversation.model,
        "archived": conversation.archived,
        "assistant": assistant_export_json(conversation),
        "personal_instructions": conversation.personal_instructions,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "messages": [message_export_json(m) for m in conversation.messages.all()],
    }


def conversation_jsonl(conversation: Conversation) -> str:
    """One line of JSON Lines: the conversation with its messages, the text exactly as stored."""
    return json.dumps(conversation_export_json(conversation), ensure_ascii=False) + "\n"


def conversations_select(
    *, owner=None, period: Period | None = None, model: str | None = None
) -> QuerySet[Conversation]:
    """Conversations of `owner`, started within `period`, that used `model` (any filter may be None).

    A conversation used a model when it is its current model or any answer came from it.
    """
    conversations = Conversation.objects.all()
    if owner is not None:
        conversations = conversations.filter(owner=owner)
    if period is not None:
        conversations = period.filter(conversations, "created_at")
    if model:
        answered = Message.objects.filter(model=model).values("conversation_id")
        conversations = conversations.filter(Q(model=model) | Q(pk__in=answered))
    return conversations


def conversations_stream(
    conversations: QuerySet[Conversation], *, chunk_size: int = EXPORT_CHUNK
) -> Iterator[Conversation]:
    """`conversations` oldest first with owner, assistant version and messages: two queries
    per chunk, flat memory."""
    # Their ids only: the admin's list adds figures to each row that an export does not need.
    return (
        Conversation.objects.filter(pk__in=conversations.values("pk"))
        .select_related("owner", "assistant_version__assistant")
        .prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("pk")))
        .order_by("created_at", "pk")
        .iterator(chunk_size=chunk_size)
    )


def conversations_logged(
    conversations: QuerySet[Conversation], *, reviewer, reason: str, reviewer_username: str | None = None
) -> Iterator[list[Conversation]]:
    """`conversations_stream` a chunk at a time, each chunk on the access log first.

    Every conversation gets a row "export: <reason>" by `reviewer`, or for the shell, which
    has no reviewer account, by None named `reviewer_username`; so its owner sees the export.
    """
    stream = conversations_stream(conversations, chunk_size=EXPORT_CHUNK)
    while batch := list(islice(stream, EXPORT_CHUNK)):
        AccessLog.objects.bulk_create(
            conversation_access_entry(
                conversation,
                reviewer=reviewer,
                reviewer_username=reviewer_username,
                reason=f"export: {reason}",
            )
            for conversation in batch
        )
        yield batch


def _csv_rows(conversation: Conversation) -> Iterator[list[str]]:
    # Every cell is made inert by the writer (assistant.spreadsheet), not only these.
    version = conversation.assistant_version
    head = [
        str(conversation.pk),
        conversation.owner.get_username(),
        conversation.title,
        conversation.model,
        "yes" if conversation.archived else "no",
        version.assistant.slug if version else "",
        version.name if version else "",
        str(version.number) if version else "",
        conversation.created_at.isoformat(),
        conversation.updated_at.isoformat(),
    ]
    messages = list(conversation.messages.all())
    if not messages:
        # Listed all the same: a conversation with no messages is still a conversation.
        yield [*head, *[""] * len(CSV_MESSAGE_COLUMNS)]
    for message in messages:
        summary = _phase_summary(message)
        points = summary.get("points")
        yield [
            *head,
            str(message.pk),
            "" if message.parent_id is None else str(message.parent_id),
            message.role,
            message.status,
            message.model,
            message.created_at.isoformat(),
            message.content,
            message.finish_reason,
            "" if message.prompt_tokens is None else str(message.prompt_tokens),
            "" if message.completion_tokens is None else str(message.completion_tokens),
            "yes" if message.superseded else "no",
            message.feedback_name or "",
            message.feedback_comment,
            message.error_type,
            "" if message.phase is None else str(message.phase),
            summary.get("by", ""),
            summary.get("summary", ""),
            "\n".join(str(point) for point in points) if isinstance(points, list) else "",
        ]


def export_reason_check(reason: str | None) -> str:
    """The stated reason for an export, stripped; StaffError when missing or too short."""
    reason = " ".join((reason or "").split())
    if len(reason) < REASON_MIN_CHARS:
        raise StaffError(
            f"State why with --reason (at least {REASON_MIN_CHARS} characters): every exported "
            "conversation is written to the access log, which its owner can read."
        )
    if len(reason) > REASON_MAX_CHARS:
        raise StaffError(f"The reason is longer than {REASON_MAX_CHARS} characters.")
    return reason


@dataclass
class ExportCounts:
    conversations: int = 0
    messages: int = 0


def conversations_export(
    conversations: QuerySet[Conversation],
    out: TextIO,
    *,
    actor: str,
    reason: str,
    format: str = "jsonl",
    progress: Callable[[ExportCounts], None] | None = None,
    progress_every: int = 500,
) -> ExportCounts:
    """Write `conversations` to `out` as JSON Lines or CSV, each logged first (by `actor`,
    a name: the shell has no reviewer account). Returns the counts; `progress` is called
    every `progress_every` conversations.
    """
    if format not in EXPORT_FORMATS:
        raise StaffError(f"Unknown format {format!r}: use one of {', '.join(EXPORT_FORMATS)}.")
    reason = export_reason_check(reason)
    counts = ExportCounts()
    writer = None
    if format == "csv":
        writer = spreadsheet.writer(out, lineterminator="\n")
        writer.writerow(CSV_CONVERSATION_COLUMNS + CSV_MESSAGE_COLUMNS)
    for batch in conversations_logged(conversations, reviewer=None, reviewer_username=actor, reason=reason):
        for conversation in batch:
            if writer is None:
                out.write(conversation_jsonl(conversation))
            else:
                writer.writerows(_csv_rows(conversation))
            counts.conversations += 1
            counts.messages += len(conversation.messages.all())
            if progress is not None and counts.conversations % progress_every == 0:
                progress(counts)
    return counts


async def conversations_jsonl_stream(
    *, reviewer, conversations: QuerySet[Conversation], reason: str
) -> AsyncIterator[str]:
    """The admin's export: `conversations` as JSON Lines, each chunk logged before it is sent.

    An async iterator: under ASGI Django collects a synchronous one into memory before
    sending anything. Each chunk is read and logged in one trip to the request's thread.
    """
    batches = conversations_logged(conversations, reviewer=reviewer, reason=reason)
    next_batch = sync_to_async(next, thread_sensitive=True)
    try:
        while (batch := await next_batch(batches, None)) is not None:
            for conversation in batch:
                yield conversation_jsonl(conversation)
    finally:
        await sync_to_async(batches.close, thread_sensitive=True)()
