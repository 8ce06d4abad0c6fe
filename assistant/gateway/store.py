"""What the gateway writes: the usage record of each completion and, with
ASSISTANT_GATEWAY_STORE on, the exchange as a conversation (origin "gateway").

The usage row is written when the completion is accepted, so the per-minute limit
counts it at once, and gets its tokens at the end, like the page's answers
(assistant/usage.py). The exchange is written once, at the end, in one transaction:
the request's messages and the answer with its status, tokens and timings. It is an
ordinary conversation from then on: listed for its owner, kept and purged under the
retention policy, read in review like any other. The request's system (and developer)
messages are the instructions its answer was written with: they are kept as the
conversation's instructions (`personal_instructions`, shown in the transcript and sent
again if the user goes on with the conversation on the page).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from assistant.gateway.parsing import ChatRequest
from assistant.models import Conversation, Message, Origin, UsageRecord
from assistant.providers.errors import ProviderError
from assistant.providers.values import Finish
from assistant.rendering import rendered_fields
from assistant.services import title_from

Status = Message.Status


@dataclass(frozen=True)
class Outcome:
    """How a completion ended: its status as a stored answer has it, its text, and the
    upstream's Finish (done) or the error (error)."""

    status: str
    text: str
    finish: Finish | None = None
    error: ProviderError | None = None
    first_token_ms: int | None = None
    duration_ms: int | None = None


def usage_start(*, user_id: int, model: str) -> int:
    """Count a completion as it starts; the id of its usage row."""
    record = UsageRecord.objects.create(
        user_id=user_id, model=model, origin=Origin.GATEWAY, created_at=timezone.now(), answers=1
    )
    return record.pk


def completion_end(
    *, usage_id: int, user_id: int, request: ChatRequest, outcome: Outcome, usage: dict[str, int], store: bool
) -> None:
    """The completion's tokens on its usage row, then (`store`) the exchange. The tokens
    in a statement of their own first, whatever becomes of the rest: they were spent."""
    UsageRecord.objects.filter(pk=usage_id).update(**usage)
    if store:
        with transaction.atomic():
            answer = _exchange_store(user_id=user_id, request=request, outcome=outcome)
            UsageRecord.objects.filter(pk=usage_id).update(message_id=answer.pk)


def _exchange_store(*, user_id: int, request: ChatRequest, outcome: Outcome) -> Message:
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    turns = [m for m in request.messages if m["role"] != "system"]
    first_question = next(m["content"] for m in turns if m["role"] == "user")
    conversation = Conversation.objects.create(
        owner_id=user_id,
        title=title_from(first_question),
        model=request.model,
        personal_instructions=system,
        origin=Origin.GATEWAY,
    )
    parent = None
    for turn in turns:
        # The branch as the client sent it: each message follows the one before.
        parent = Message.objects.create(
            conversation=conversation, role=turn["role"], content=turn["content"], parent=parent
        )
    finish, error = outcome.finish, outcome.error
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        parent=parent,
        status=outcome.status,
        content=outcome.text,
        model=request.model,
        finish_reason=(
            finish.finish_reason
            if finish is not None
            else "cancelled"
            if outcome.status == Status.CANCELLED
            else ""
        ),
        prompt_tokens=None if finish is None else finish.prompt_tokens,
        completion_tokens=None if finish is None else finish.completion_tokens,
        error_code=None if error is None else error.code,
        error_type="" if error is None else error.type,
        error_detail="" if error is None else error.detail,
        time_to_first_token_ms=outcome.first_token_ms,
        duration_ms=outcome.duration_ms,
        **rendered_fields(outcome.text),
    )
