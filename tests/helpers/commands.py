"""Management commands in process, and the stored data they work on."""

from __future__ import annotations

import io
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from assistant.models import Conversation, Message, UsageRecord


def run(*args, **options) -> tuple[str, str]:
    """Run a command; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def conversation_with(owner, *, title="Reise nach Köln", model="demo", days_ago=0, answers=1, **answer):
    """A conversation of `owner` with `answers` question/answer pairs, last active `days_ago`."""
    conversation = Conversation.objects.create(owner=owner, title=title, model=model)
    for n in range(answers):
        Message.objects.create(conversation=conversation, role="user", content=f"Frage {n}: Grüße")
        reply = Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=answer.get("content", f"Antwort {n}"),
            status=answer.get("status", "done"),
            model=model,
            prompt_tokens=answer.get("prompt_tokens", 10),
            completion_tokens=answer.get("completion_tokens", 20),
        )
        # The answer's usage record, as sending and generating it leave it.
        UsageRecord.objects.create(
            user=owner,
            model=model,
            created_at=reply.created_at,
            message_id=reply.pk,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
    if days_ago:
        moment = timezone.now() - timedelta(days=days_ago)
        Conversation.objects.filter(pk=conversation.pk).update(created_at=moment, updated_at=moment)
        Message.objects.filter(conversation=conversation).update(created_at=moment)
        UsageRecord.objects.filter(message_id__in=conversation.messages.values("pk")).update(
            created_at=moment
        )
    conversation.refresh_from_db()
    return conversation
