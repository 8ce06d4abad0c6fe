"""The retention policy: conversations without activity for a number of days, deleted.

"Older than" is last activity (`Conversation.updated_at`); a conversation with an answer
streaming is kept. Each batch is deleted in one transaction with the `DeletionRecord` it
adds to, so the record always matches what is gone. The documents uploaded into them go
with them: their chunks and vectors in the same transaction, their files from storage
once it commits (the documents' post_delete); the record counts documents, chunks and
vectors in its parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Max, Min, QuerySet
from django.utils import timezone

# Its post_delete removes a deleted document's file from storage once the deletion commits:
# imported here too, so that a command that deletes documents has it connected.
from assistant.documents import ingest as _document_files  # noqa: F401
from assistant.events.publish import replay_log
from assistant.events.wire import channel_for
from assistant.models import Conversation, DeletionRecord, Message
from assistant.staff.common import (
    DeletionSummary,
    StaffError,
    deletion_summary,
    document_counts,
    documents_of,
)

RETENTION_BATCH = 500


def retention_days_parse(value: str | int | None, *, source: str = "--older-than") -> int:
    """Days from `90d`, `90` or 90: a whole number of at least one. `source` names it in errors."""
    if value is None:
        raise StaffError("No retention period: give --older-than (e.g. 90d) or set ASSISTANT_RETENTION_DAYS.")
    text = str(value).strip().lower().removesuffix("d").strip()
    try:
        days = int(text)
    except ValueError:
        raise StaffError(f"{source} must be a number of days like 90d, got {value!r}.") from None
    if days < 1:
        raise StaffError(f"{source} must be at least one day, got {value!r}.")
    return days


def retention_candidates(*, cutoff: datetime) -> QuerySet[Conversation]:
    """Conversations with no activity since `cutoff` and no answer streaming."""
    streaming = Message.objects.filter(status=Message.Status.STREAMING).values("conversation_id")
    return Conversation.objects.filter(updated_at__lt=cutoff).exclude(pk__in=streaming)


def retention_cutoff(days: int, *, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=days)


def retention_preview(*, days: int, now: datetime | None = None) -> DeletionSummary:
    """What `retention_purge` would delete now; changes nothing."""
    return deletion_summary(retention_candidates(cutoff=retention_cutoff(days, now=now)))


def retention_purge(
    *,
    days: int,
    actor: str,
    batch_size: int = RETENTION_BATCH,
    now: datetime | None = None,
    on_batch: Callable[[DeletionSummary], None] | None = None,
) -> tuple[DeletionSummary, DeletionRecord | None]:
    """Delete conversations (with their messages and documents) inactive for more than `days` days.

    In batches of `batch_size` conversations, each in its own transaction together with
    the `DeletionRecord` it adds to, so the record always matches what is gone even if
    a later batch fails. A conversation with an answer streaming is kept. The deleted
    conversations' events leave this process's replay log too. No record when nothing
    was deleted.
    """
    cutoff = retention_cutoff(days, now=now)
    summary = DeletionSummary()
    record: DeletionRecord | None = None
    while True:
        with transaction.atomic():
            candidates = retention_candidates(cutoff=cutoff)
            ids = list(
                candidates.select_for_update()
                .order_by("updated_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            batch = retention_candidates(cutoff=cutoff).filter(pk__in=ids)
            ranges = batch.aggregate(oldest=Min("updated_at"), newest=Max("updated_at"))
            # Their documents go by cascade (the chunks, vectors and full-text rows with
            # them), each document's file from storage once this commits.
            documents = document_counts(documents_of(batch))
            _total, deleted = batch.delete()
            conversations = deleted.get(Conversation._meta.label, 0)
            messages = deleted.get(Message._meta.label, 0)
            if not conversations:
                break  # cannot happen under the lock; never loop on it
            summary.add(conversations, messages, ranges["oldest"], ranges["newest"], documents)
            if record is None:
                record = DeletionRecord(
                    kind=DeletionRecord.Kind.RETENTION,
                    actor=actor[:150],
                    parameters={"older_than_days": days, "cutoff": cutoff.isoformat()},
                )
            record.parameters.update(summary.documents.parameters())
            record.conversations, record.messages = summary.conversations, summary.messages
            record.oldest, record.newest = summary.oldest, summary.newest
            record.save()
        for conversation_id in ids:
            replay_log.forget(channel_for(conversation_id))
        if on_batch is not None:
            on_batch(summary)
    return summary, record
