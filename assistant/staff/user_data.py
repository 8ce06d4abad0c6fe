"""One person's data (GDPR Art. 15 and 17): all of it exported, or erased.

The erasure leaves the reviewers' accountability record (the access log, anonymised) and
the usage totals (anonymised per day, model and assistant), and a `DeletionRecord`
without names. A person's personal instructions (`Preferences`) are their data like
their conversations: exported, and erased with them. So are the documents they uploaded:
exported with their metadata and their text as stored (the passages), erased with their
chunks, vectors and files (the files leave storage once the erasure commits).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet, Sum
from django.utils import timezone

# Its post_delete removes a deleted document's file from storage once the deletion commits:
# imported here too, so that a command that deletes documents has it connected.
from assistant.documents import ingest as _document_files  # noqa: F401
from assistant.events.publish import replay_log
from assistant.events.wire import channel_for
from assistant.models import (
    AccessLog,
    ApiToken,
    AssistantVersion,
    Chunk,
    DeletionRecord,
    Document,
    Message,
    Preferences,
    UsageRecord,
)
from assistant.staff.common import DeletionSummary, deletion_summary, document_counts, user_streams_end
from assistant.staff.export import (
    EXPORT_CHUNK,
    conversation_export_json,
    conversations_logged,
    conversations_select,
    message_export_json,
)
from assistant.usage import usage_anonymise


def _deleted_name(user) -> str:
    return f"deleted user #{user.pk}"


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _access_json(entry: AccessLog) -> dict[str, Any]:
    return {
        "accessed_at": entry.accessed_at.isoformat(),
        "reviewer": entry.reviewer_username,
        "owner": entry.owner_username,
        "conversation_id": str(entry.conversation_id),
        "reason": entry.reason,
    }


def _preferences_json(user) -> dict[str, Any] | None:
    preferences = Preferences.objects.filter(user=user).first()
    if preferences is None:
        return None
    return {
        "about_me": preferences.about_me,
        "answer_style": preferences.answer_style,
        "updated_at": preferences.updated_at.isoformat(),
    }


USER_DATA_EXPORT_REASON = "the user's own data, at their request (GDPR Art. 15)"


def user_data_export(*, user, actor: str) -> dict[str, Any]:
    """Everything stored about `user`: the account (no password hash), their personal
    instructions, their API tokens (what they are, not their secrets), their conversations
    with every message (each with the assistant it ran
    with and the personal instructions it started with), the documents they uploaded
    (metadata and text, passage by passage), the feedback they gave, and the access log
    entries about them (their transcripts opened by reviewers) and by them (transcripts
    they opened).

    Reading their conversations for this goes on the access log first, by `actor`.
    """
    conversations = [
        conversation
        for batch in conversations_logged(
            conversations_select(owner=user),
            reviewer=None,
            reviewer_username=actor,
            reason=USER_DATA_EXPORT_REASON,
        )
        for conversation in batch
    ]
    feedback = Message.objects.filter(conversation__owner=user, feedback__isnull=False).order_by("pk")
    # Read after their conversations went on the access log (the documents are theirs).
    documents = (
        _documents(user)
        .order_by("created_at", "pk")
        .prefetch_related(
            Prefetch("chunks", queryset=Chunk.objects.order_by("ordinal").only("document_id", "page", "text"))
        )
    )
    return {
        "exported_at": timezone.now().isoformat(),
        "account": {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_active": user.is_active,
            "is_staff": user.is_staff,
            "is_superuser": user.is_superuser,
            "date_joined": _when(user.date_joined),
            "last_login": _when(user.last_login),
            "groups": sorted(user.groups.values_list("name", flat=True)),
        },
        "preferences": _preferences_json(user),
        # What the tokens are, never their secrets (none is stored).
        "api_tokens": [
            {
                "name": token.name,
                "prefix": token.prefix,
                "created_at": _when(token.created_at),
                "last_used_at": _when(token.last_used_at),
                "expires_at": _when(token.expires_at),
                "revoked_at": _when(token.revoked_at),
            }
            for token in ApiToken.objects.filter(user=user).order_by("created_at", "pk")
        ],
        "conversations": [conversation_export_json(c) for c in conversations],
        "documents": [_document_json(d) for d in documents.iterator(chunk_size=EXPORT_CHUNK)],
        "feedback": [
            {"conversation_id": str(m.conversation_id), **message_export_json(m)}
            for m in feedback.iterator(chunk_size=EXPORT_CHUNK)
        ],
        "access_log": {
            "about_them": [
                _access_json(e) for e in AccessLog.objects.filter(owner=user).order_by("accessed_at")
            ],
            "by_them": [
                _access_json(e) for e in AccessLog.objects.filter(reviewer=user).order_by("accessed_at")
            ],
        },
    }


def _document_json(document: Document) -> dict[str, Any]:
    """A document they uploaded: its metadata and its text as stored, passage by passage
    (with the page each starts on; neighbouring passages overlap a little)."""
    return {
        "id": str(document.pk),
        "name": document.name,
        "kind": document.kind,
        "size": document.size,
        "sha256": document.sha256,
        "status": document.status,
        "pages": document.pages,
        "error_code": document.error_code or None,
        "conversation_id": str(document.conversation_id),
        "created_at": document.created_at.isoformat(),
        "passages": [{"page": chunk.page, "text": chunk.text} for chunk in document.chunks.all()],
    }


def _documents(user) -> QuerySet[Document]:
    """Their documents: those of their conversations, and any they own elsewhere."""
    return Document.objects.filter(
        Q(conversation__in=conversations_select(owner=user).values("pk")) | Q(owner=user)
    )


def _user_summary(user) -> DeletionSummary:
    summary = deletion_summary(conversations_select(owner=user))
    summary.documents = document_counts(_documents(user))
    summary.extra = {
        "feedback": Message.objects.filter(conversation__owner=user, feedback__isnull=False).count(),
        "streaming_answers": Message.objects.filter(
            conversation__owner=user, status=Message.Status.STREAMING
        ).count(),
        "access_log_about_them": AccessLog.objects.filter(owner=user).count(),
        "access_log_by_them": AccessLog.objects.filter(reviewer=user).count(),
        "usage_answers": UsageRecord.objects.filter(user=user).aggregate(n=Sum("answers"))["n"] or 0,
        "preferences": Preferences.objects.filter(user=user).count(),
    }
    return summary


def user_data_preview(*, user) -> DeletionSummary:
    """What `user_data_delete` would remove or anonymise; changes nothing."""
    return _user_summary(user)


def user_data_delete(
    *, user, actor: str, keep_account: bool = False
) -> tuple[DeletionSummary, DeletionRecord]:
    """Erase `user`'s conversations, messages, documents, personal instructions and API tokens,
    anonymise the access log and the usage record, delete the account.

    Streaming answers are stopped first (wherever they generate; that process finds the
    row gone and ends quietly). Assistant versions they saved keep their content and name
    them "deleted user #<id>" as the saver. Access log rows stay, as the reviewers' accountability
    record, with the person named "deleted user #<id>" and unlinked. Their usage rows
    become counted rows per day, model and assistant without user or message
    (`usage_anonymise`), so usage totals do not change. With `keep_account` the account
    stays as it is (only its data goes). The `DeletionRecord` holds counts (documents,
    chunks and vectors among them), the range of last activity and the user's id, never
    names or content.
    """
    user_streams_end(user=user)
    with transaction.atomic():
        summary = _user_summary(user)
        conversation_ids = list(conversations_select(owner=user).values_list("pk", flat=True))
        conversations_select(owner=user).delete()
        # Their documents went with their conversations (chunks and vectors too; each
        # file leaves storage once this commits); any left owned elsewhere go here.
        Document.objects.filter(owner=user).delete()
        # Also when the account stays (with it, they would go anyway); a token's open
        # streams end by the account poll when its row is gone.
        Preferences.objects.filter(user=user).delete()
        summary.extra["api_tokens"] = ApiToken.objects.filter(user=user).delete()[0]
        name = _deleted_name(user)
        AccessLog.objects.filter(owner=user).update(owner=None, owner_username=name)
        AccessLog.objects.filter(reviewer=user).update(reviewer=None, reviewer_username=name)
        # The versions they saved stay as they were, but for the name of who saved them.
        AssistantVersion.objects.filter(created_by=user.get_username()).update(created_by=name)
        summary.extra["usage_answers"] = usage_anonymise(user=user)
        record = DeletionRecord.objects.create(
            kind=DeletionRecord.Kind.USER_DATA,
            actor=actor[:150],
            conversations=summary.conversations,
            messages=summary.messages,
            oldest=summary.oldest,
            newest=summary.newest,
            parameters={
                "user_id": user.pk,
                "account": "kept" if keep_account else "deleted",
                "access_log_anonymised": summary.extra["access_log_about_them"]
                + summary.extra["access_log_by_them"],
                "usage_answers_anonymised": summary.extra["usage_answers"],
                "preferences_deleted": summary.extra["preferences"],
                "api_tokens_deleted": summary.extra["api_tokens"],
                **summary.documents.parameters("_deleted"),
            },
        )
        if not keep_account:
            user.delete()
    for conversation_id in conversation_ids:
        replay_log.forget(channel_for(conversation_id))
    return summary, record
