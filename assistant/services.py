"""Domain logic: keyword-only functions the views, commands and tests call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from assistant import events, generation
from assistant.models import Conversation, Message

TITLE_WORDS_CHARS = 60


class ServiceError(Exception):
    """A request the service refuses; `status` and `code` go to the client as they are."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found() -> ServiceError:
    # The same answer for "does not exist" and "is not yours".
    return ServiceError(404, "not_found", _("Not found."))


@contextmanager
def found_or_404() -> Iterator[None]:
    """Turn a missing (or malformed-id) lookup into the 404 ServiceError."""
    try:
        yield
    except (ObjectDoesNotExist, ValueError, ValidationError):
        raise not_found() from None


def model_validate(model: str | None) -> str:
    """The requested model if it is on the allowlist; the default when none is asked for."""
    if not model:
        return settings.ASSISTANT_MODELS[0]
    if model not in settings.ASSISTANT_MODELS:
        raise ServiceError(400, "unknown_model", _("Unknown model: %(model)s") % {"model": model})
    return model


def title_from(content: str) -> str:
    """A provisional title: the first words of the first question."""
    words = " ".join(content.split())
    if len(words) <= TITLE_WORDS_CHARS:
        return words
    return words[:TITLE_WORDS_CHARS].rsplit(" ", 1)[0] + "…"


def conversation_get(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    with found_or_404():
        return Conversation.objects.get(pk=conversation_id, owner=user)


async def aconversation_get(*, user, conversation_id: uuid.UUID | str) -> Conversation:
    with found_or_404():
        return await Conversation.objects.aget(pk=conversation_id, owner=user)


def conversation_create(*, user, title: str = "", model: str | None = None) -> Conversation:
    return Conversation.objects.create(owner=user, title=title, model=model_validate(model))


@dataclass(frozen=True)
class Exchange:
    """A question and the answer generating for it."""

    user_message: Message
    assistant_message: Message


@transaction.atomic
def _exchange_create(*, user, conversation_id, content: str, model: str | None) -> Exchange:
    with found_or_404():
        # The row lock makes "one answer at a time" hold under concurrent sends.
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)
    model = model_validate(model) if model else conversation.model
    if conversation.messages.filter(status=Message.Status.STREAMING).exists():
        raise ServiceError(409, "answer_in_progress", _("An answer is still being generated."))
    user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content)
    # Nothing of this answer is on the channel before this position.
    assistant_message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        event_id=events.replay_log.current_id(),
    )
    conversation.model = model
    if not conversation.title:
        conversation.title = title_from(content)
    conversation.save(update_fields=["model", "title", "updated_at"])
    return Exchange(user_message, assistant_message)


async def message_send(
    *, user, conversation_id: uuid.UUID | str, content: str, model: str | None, language: str
) -> Exchange:
    """Store a question and start generating its answer; returns at once.

    Shielded: a client that disconnects mid-request must not leave a stored answer
    that no task generates.
    """
    return await asyncio.shield(
        _message_send(
            user=user,
            conversation_id=conversation_id,
            content=content,
            model=model,
            language=language,
        )
    )


async def _message_send(*, user, conversation_id, content, model, language) -> Exchange:
    exchange = await sync_to_async(_exchange_create)(
        user=user, conversation_id=conversation_id, content=content, model=model
    )
    answer = exchange.assistant_message
    events.publish(
        events.channel_for(conversation_id),
        "start",
        {
            "message": answer.pk,
            "model": answer.model,
            "user_message": {"id": exchange.user_message.pk, "content": content},
        },
    )
    generation.start(message_id=answer.pk, language=language)
    return exchange


def _message_get(*, user, message_id: int) -> Message:
    with found_or_404():
        return Message.objects.get(pk=message_id, conversation__owner=user)


async def message_cancel(*, user, message_id: int) -> Message:
    """Stop generating an answer. Stopping one that already ended changes nothing."""
    message = await sync_to_async(_message_get)(user=user, message_id=message_id)
    if message.role != Message.Role.ASSISTANT:
        raise not_found()
    if message.is_streaming:
        generation.cancel(message.pk)
    return message


@dataclass(frozen=True)
class ConversationState:
    """What a page renders, and the stream position that continues exactly from it."""

    conversation: Conversation
    messages: list[Message]
    last_event_id: str


def conversation_state(*, user, conversation_id: uuid.UUID | str) -> ConversationState:
    # Read the position before the messages: events after it are either already in the
    # rows read below (and replayed `start` events reset an answer before rebuilding it)
    # or not yet there. A streaming answer resumes from its own persisted position.
    position = events.replay_log.current_id()
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    messages = list(conversation.messages.order_by("pk"))
    streaming = [m.event_id for m in messages if m.is_streaming]
    if streaming:
        position = min(streaming)
    return ConversationState(conversation, messages, events.position_token(conversation.channel, position))


def conversations_recent(*, user, limit: int = 100) -> list[Conversation]:
    return list(Conversation.objects.filter(owner=user).only("id", "title", "updated_at")[:limit])
