"""Writes: keyword-only functions the views and commands call to change something.

The reads are in assistant/selectors.py; both raise `errors.ServiceError`.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from assistant import throttle
from assistant.documents.sources import Source, sources_json
from assistant.errors import ServiceError, found_or_404, not_found
from assistant.events.log import EventsUnavailable
from assistant.events.publish import publish_batch, publish_or_defer, replay_log
from assistant.events.wire import channel_for
from assistant.generation import leases, running, task
from assistant.generation.answer import Continuation
from assistant.limits import answers_allow, writes_allow
from assistant.models import Conversation, Message, Origin, Preferences, UsageRecord
from assistant.personas.access import assistant_get, version_usable
from assistant.personas.flows import FlowState, flow_state
from assistant.personas.prompt import Prompt, personal_instructions, prompt_for
from assistant.processes import PROCESS_ID
from assistant.selectors import (
    Versions,
    branch_parents,
    conversation_get,
    conversation_versions,
)
from assistant.usage import usage_answer_add

TITLE_WORDS_CHARS = 60


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


def conversation_create(
    *,
    user,
    title: str = "",
    model: str | None = None,
    question: str = "",
    assistant: str = "",
    origin: str = Origin.PAGE,
) -> Conversation:
    """A conversation; without a `title`, its first `question`'s first words stand in.
    `origin` says where it came from (the page, an API client, the gateway).

    With an `assistant` (its slug; 404 unless the user may use it) it runs with that
    assistant's current version for good, on the assistant's model unless one is asked
    for. It keeps the user's personal instructions as they are now.
    """
    writes_allow(user, throttle.conversations_limit())
    version = assistant_get(user=user, slug=assistant).current if assistant else None
    if not model and version is not None:
        model = version.model
    return Conversation.objects.create(
        owner=user,
        title=title or title_from(question),
        title_chosen=bool(title),
        model=model_validate(model),
        assistant_version=version,
        personal_instructions=personal_instructions(Preferences.objects.filter(user=user).first()),
        origin=origin,
    )


def conversation_update(
    *, user, conversation_id: uuid.UUID | str, title: str | None = None, archived: bool | None = None
) -> Conversation:
    """Rename or (un)archive a conversation; a title given here is never replaced automatically.

    Neither moves the conversation in the newest-first list: `updated_at` stays.
    """
    writes_allow(user, throttle.writes_limit())
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    fields = []
    if title is not None:
        conversation.title, conversation.title_chosen = title, True
        fields += ["title", "title_chosen"]
    if archived is not None:
        conversation.archived = archived
        fields.append("archived")
    if fields:
        conversation.save(update_fields=fields)
    if title is not None:
        # Other open pages of this conversation show the new name.
        publish_or_defer(
            conversation.channel, "title", {"conversation": str(conversation.pk), "title": title}
        )
    return conversation


def conversation_delete(*, user, conversation_id: uuid.UUID | str) -> None:
    """Delete a conversation with its messages; an answer still streaming is stopped first.

    In the request's thread, which a client that disconnects midway does not stop: an
    answer is never left stopped but its conversation kept, or the other way round.
    """
    writes_allow(user, throttle.writes_limit())
    conversation = conversation_get(user=user, conversation_id=conversation_id)
    streaming = conversation.messages.filter(status=Message.Status.STREAMING)
    for message_id in list(streaming.values_list("pk", flat=True)):
        # On the event loop, where an answer generating in this process runs.
        async_to_sync(task.stop)(message_id)
    conversation.delete()


@dataclass(frozen=True)
class Exchange:
    """A question and the answer generating for it.

    `replaces` and `replaces_question` name what the new answer takes the place of on the
    page (a retry replaces an answer, an edit also the question); both stay stored.
    """

    user_message: Message
    assistant_message: Message
    replaces: int | None = None
    replaces_question: int | None = None
    # Set when the answer goes on from the text it has (`message_continue`).
    continuation: Continuation | None = None
    # The versions of the question and the answer (docs/protocol.md), once stored.
    versions: dict[int, Versions] = field(default_factory=dict)


def _none_streaming(conversation: Conversation) -> None:
    """409 while an answer of `conversation` streams; call inside its lock."""
    if conversation.messages.filter(status=Message.Status.STREAMING).exists():
        raise ServiceError(409, "answer_in_progress", _("An answer is still being generated."))


def _answer_create(conversation: Conversation, model: str, *, question: Message) -> Message:
    """A streaming answer to `question` owned by this process; call inside the
    conversation's lock.

    Raising here rolls back the whole transaction, the question included.
    """
    _none_streaming(conversation)
    return _answer_insert(conversation, model, question=question)


def channel_position(conversation: Conversation) -> int:
    """The channel's position: nothing of an answer starting now is on it before this."""
    try:
        return replay_log.current_id(conversation.channel)
    except EventsUnavailable:
        raise ServiceError(
            503, "unavailable", _("Answers cannot be delivered right now. Try again in a moment.")
        ) from None


def _assistant_check(conversation: Conversation) -> FlowState | None:
    """409 when the conversation's assistant was retired or is no longer its owner's to
    use (the conversation stays readable); else where its flow stands, if it is one."""
    if conversation.assistant_version_id is None:
        return None
    if not version_usable(user=conversation.owner, version=conversation.assistant_version):
        raise ServiceError(
            409,
            "assistant_unavailable",
            _("This assistant is no longer available. Start a new chat to go on."),
        )
    return flow_state(conversation)


def _answer_insert(conversation: Conversation, model: str, *, question: Message) -> Message:
    """`_answer_create` for a conversation known to have no answer streaming."""
    flow = _assistant_check(conversation)
    answers_allow(conversation.owner_id)
    position = channel_position(conversation)
    answer = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        generated_by=PROCESS_ID,
        event_id=position,
        parent=question,
        phase=None if flow is None else flow.phase,
    )
    version = conversation.assistant_version if conversation.assistant_version_id else None
    # Counted with the answer, in its transaction: from now on, whatever is deleted.
    usage_answer_add(
        user_id=conversation.owner_id,
        model=model,
        assistant=version.assistant.slug if version is not None else "",
        origin=conversation.origin,
        message_id=answer.pk,
        created_at=answer.created_at,
    )
    return answer


def _conversation_locked(*, user, conversation_id) -> Conversation:
    with found_or_404():
        # The row lock makes "one answer at a time" hold under concurrent requests.
        return Conversation.objects.select_for_update().get(pk=conversation_id, owner=user)


def _shown_tail(conversation: Conversation, *, before: int | None = None) -> int | None:
    """The id of the last message of the shown branch (before the id `before`), if any."""
    shown = conversation.messages.filter(superseded=False)
    if before is not None:
        shown = shown.filter(pk__lt=before)
    return shown.order_by("-pk").values_list("pk", flat=True).first()


def _question_create(
    conversation: Conversation,
    *,
    content: str,
    model: str | None,
    parent: int | None,
    replaces: int | None = None,
    replaces_question: int | None = None,
) -> Exchange:
    """A question after the message `parent` with its streaming answer; call inside the
    conversation's lock."""
    model = model_validate(model) if model else conversation.model
    user_message = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=content, parent_id=parent
    )
    assistant_message = _answer_create(conversation, model, question=user_message)
    conversation.model = model
    if not conversation.title:
        conversation.title = title_from(content)
    conversation.save(update_fields=["model", "title", "updated_at"])
    return Exchange(user_message, assistant_message, replaces, replaces_question)


@transaction.atomic
def _exchange_create(*, user, conversation_id, content: str, model: str | None) -> Exchange:
    conversation = _conversation_locked(user=user, conversation_id=conversation_id)
    return _question_create(conversation, content=content, model=model, parent=_shown_tail(conversation))


@transaction.atomic
def _edit_create(*, user, message_id: int, content: str, model: str | None) -> Exchange:
    with found_or_404():
        previous = Message.objects.get(pk=message_id, conversation__owner=user, role=Message.Role.USER)
    conversation = _conversation_locked(user=user, conversation_id=previous.conversation_id)
    questions = conversation.messages.filter(role=Message.Role.USER, superseded=False)
    if questions.order_by("-pk").values_list("pk", flat=True).first() != previous.pk:
        raise ServiceError(409, "not_latest", _("Only the latest question can be edited."))
    # The shown messages after the latest question are its answer (the version shown).
    shown = _shown_tail(conversation)
    parent = previous.parent_id
    if parent is None:
        parent = _shown_tail(conversation, before=previous.pk)  # None: the first question
    # The question and its answers become earlier versions: out of the shown branch.
    conversation.messages.filter(pk__gte=previous.pk, superseded=False).update(
        superseded=True, updated_at=timezone.now()
    )
    if not conversation.title_chosen and not questions.filter(pk__lt=previous.pk).exists():
        # The provisional title came from the question being replaced.
        conversation.title = ""
    return _question_create(
        conversation,
        content=content,
        model=model,
        parent=parent,
        replaces=shown if shown != previous.pk else None,
        replaces_question=previous.pk,
    )


@transaction.atomic
def _retry_create(*, user, message_id: int) -> tuple[Exchange, Message]:
    with found_or_404():
        previous = Message.objects.get(pk=message_id, conversation__owner=user, role=Message.Role.ASSISTANT)
    conversation = _conversation_locked(user=user, conversation_id=previous.conversation_id)
    _none_streaming(conversation)
    if _shown_tail(conversation) != previous.pk:
        raise ServiceError(409, "not_latest", _("Only the latest answer can be regenerated."))
    question = _question_of(conversation, previous)
    if question is None:
        raise ServiceError(409, "not_latest", _("Only the latest answer can be regenerated."))
    previous.superseded = True
    previous.save(update_fields=["superseded", "updated_at"])
    answer = _answer_insert(conversation, previous.model or conversation.model, question=question)
    conversation.save(update_fields=["updated_at"])
    return Exchange(question, answer, replaces=previous.pk)


def _question_of(conversation: Conversation, answer: Message) -> Message | None:
    """The question `answer` answers: its parent (or, for a row stored without one, the
    latest question before it)."""
    questions = conversation.messages.filter(role=Message.Role.USER)
    if answer.parent_id is not None:
        return questions.filter(pk=answer.parent_id).first()
    return questions.filter(pk__lt=answer.pk).order_by("-pk").first()


# An answer may go on when the model's length limit cut it or its user stopped it.
CONTINUABLE = {(Message.Status.DONE, "length"), (Message.Status.CANCELLED, "cancelled")}


@transaction.atomic
def _continue_create(*, user, message_id: int) -> Exchange:
    with found_or_404():
        answer = Message.objects.get(pk=message_id, conversation__owner=user, role=Message.Role.ASSISTANT)
    conversation = _conversation_locked(user=user, conversation_id=answer.conversation_id)
    _none_streaming(conversation)
    answer.refresh_from_db()  # as it ended, now that nothing streams
    if _shown_tail(conversation) != answer.pk:
        raise ServiceError(400, "not_continuable", _("Only the latest answer can be continued."))
    _assistant_check(conversation)
    if (answer.status, answer.finish_reason) not in CONTINUABLE or not answer.content:
        raise ServiceError(
            400,
            "not_continuable",
            _("Only an answer that was cut off at its length limit or stopped can be continued."),
        )
    question = _question_of(conversation, answer)
    if question is None:
        raise ServiceError(400, "not_continuable", _("Only the latest answer can be continued."))
    answers_allow(conversation.owner_id)
    counted = (
        UsageRecord.objects.filter(message_id=answer.pk).values("prompt_tokens", "completion_tokens").first()
    )
    continuation = Continuation(
        text=answer.content,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        counted=counted or {},
    )
    streaming = {
        "status": Message.Status.STREAMING,
        "finish_reason": "",
        "error_code": None,
        "error_type": "",
        "error_detail": "",
        "generated_by": PROCESS_ID,
        "cancel_requested": False,
        "event_id": channel_position(conversation),
    }
    for name, value in streaming.items():
        setattr(answer, name, value)
    answer.save(update_fields=[*streaming, "updated_at"])
    conversation.save(update_fields=["updated_at"])
    return Exchange(question, answer, continuation=continuation)


@transaction.atomic
def _show(*, user, message_id: int) -> Conversation:
    with found_or_404():
        target = Message.objects.get(pk=message_id, conversation__owner=user)
    conversation = _conversation_locked(user=user, conversation_id=target.conversation_id)
    _none_streaming(conversation)
    rows = list(conversation.messages.order_by("pk").values_list("pk", "parent_id", "role", "superseded"))
    parents = branch_parents(rows)
    hidden = {pk for pk, _parent, _role, superseded in rows if superseded}
    children: dict[int | None, list[int]] = {}
    for pk in parents:
        children.setdefault(parents[pk], []).append(pk)
    branch, node = set(), target.pk
    while node is not None and node not in branch:
        branch.add(node)
        node = parents.get(node)
    node = target.pk
    while children.get(node):
        # Below it, the version shown there before, else the latest one.
        shown = [pk for pk in children[node] if pk not in hidden]
        node = shown[-1] if shown else children[node][-1]
        branch.add(node)
    now, messages = timezone.now(), conversation.messages
    messages.filter(superseded=False).exclude(pk__in=branch).update(superseded=True, updated_at=now)
    messages.filter(superseded=True, pk__in=branch).update(superseded=False, updated_at=now)
    return conversation


def _prompt(exchange: Exchange, history: list[dict[str, str]]) -> Prompt:
    """What goes upstream for the exchange's answer. A new answer stores the sources it
    is given; one that goes on keeps those it had, so its citations stay the same."""
    answer = exchange.assistant_message
    kept = None
    if exchange.continuation is not None:
        kept = [Source(**source) for source in answer.sources or []]
    prompt = prompt_for(answer.conversation, history, question=exchange.user_message.content, sources=kept)
    if prompt.sources and kept is None:
        answer.sources = [source.json() for source in prompt.sources]
        Message.objects.filter(pk=answer.pk).update(sources=answer.sources)
    return prompt


def _answer_start(exchange: Exchange, history: list[dict[str, str]], *, language: str) -> None:
    answer = exchange.assistant_message
    prompt = _prompt(exchange, history)
    start = {
        "message": answer.pk,
        "model": answer.model,
        "user_message": {"id": exchange.user_message.pk, "content": exchange.user_message.content},
    }
    if prompt.sources:
        start["sources"] = sources_json(answer.sources)
    if exchange.replaces is not None:
        start["replaces"] = exchange.replaces
    if exchange.replaces_question is not None:
        start["replaces_question"] = exchange.replaces_question
    if exchange.versions:
        start["user_message"]["versions"] = exchange.versions[exchange.user_message.pk].json()
        start["versions"] = exchange.versions[answer.pk].json()
    events = [("start", start)]
    if exchange.continuation is not None:
        # Like a replay: the start, then the text so far in one delta, so a client that
        # rebuilds the answer from its start (reconnecting, reloading) shows it once.
        start["continues"] = True
        events.append(("delta", {"message": answer.pk, "text": exchange.continuation.text}))
    try:
        start_id = publish_batch(channel_for(answer.conversation_id), events).ids[-1]
    except EventsUnavailable:
        start_id = None  # the answer publishes its start with its first text
    task.start_from_thread(
        message=answer,
        history=prompt.messages,
        options=prompt.options,
        language=language,
        start_event=start,
        start_id=start_id,
        continuation=exchange.continuation,
    )


def _exchange_start(
    create: Callable[[], Exchange], *, language: str, history: list[dict[str, str]] | None = None
) -> Exchange:
    """Store an exchange with `create` and start generating its answer; returns at once.

    Synchronous, in the request's thread: storing it, reading its history (unless the
    caller knows it) and publishing its start take no trip through the event loop, and
    the answer's task then starts there with the upstream call. A client that
    disconnects meanwhile does not stop a thread, so no stored answer is left that no
    task generates.
    """
    leases.supervise_from_thread()
    exchange = create()
    if history is None:
        versions = conversation_versions(conversation_id=exchange.assistant_message.conversation_id)
    else:
        # The caller knows the history: a first question, the only version of itself.
        first = (exchange.user_message.pk, exchange.assistant_message.pk)
        versions = {pk: Versions((pk,), 0) for pk in first}
    exchange = dataclasses.replace(exchange, versions=versions)
    if history is None and exchange.continuation is not None:
        history = task.history_to_continue(exchange.assistant_message)
    elif history is None:
        history = task.history_before(exchange.assistant_message)
    _answer_start(exchange, history, language=language)
    return exchange


def conversation_start(
    *,
    user,
    title: str = "",
    content: str,
    model: str | None,
    language: str,
    assistant: str = "",
    origin: str = Origin.PAGE,
) -> Exchange:
    """A new conversation with its first question, stored together or not at all (a limit
    refusing the question leaves no empty conversation), and its answer started."""
    create = functools.partial(
        _first_exchange_create,
        user=user,
        title=title,
        content=content,
        model=model,
        assistant=assistant,
        origin=origin,
    )
    # The question is all there is before the answer: nothing to read back.
    history = [{"role": Message.Role.USER.value, "content": content}]
    return _exchange_start(create, language=language, history=history)


@transaction.atomic
def _first_exchange_create(
    *, user, title: str, content: str, model: str | None, assistant: str, origin: str
) -> Exchange:
    """Stored as it will stay: a new conversation has no answer streaming to check for,
    and its title and model need no second write."""
    conversation = conversation_create(
        user=user, title=title, model=model, question=content, assistant=assistant, origin=origin
    )
    user_message = Message.objects.create(conversation=conversation, role=Message.Role.USER, content=content)
    return Exchange(user_message, _answer_insert(conversation, conversation.model, question=user_message))


def message_send(
    *, user, conversation_id: uuid.UUID | str, content: str, model: str | None, language: str
) -> Exchange:
    """Store a question and start generating its answer; returns at once."""
    create = functools.partial(
        _exchange_create, user=user, conversation_id=conversation_id, content=content, model=model
    )
    return _exchange_start(create, language=language)


def message_retry(*, user, message_id: int, language: str) -> Exchange:
    """Generate the latest answer of a conversation again, whatever its end (a regeneration).

    The earlier answer stays stored as an earlier version of the new one, out of the
    shown branch and so out of the history sent upstream.
    """
    create = functools.partial(_retry_create, user=user, message_id=message_id)
    return _exchange_start(create, language=language)


def message_continue(*, user, message_id: int, language: str) -> Exchange:
    """Let the latest answer go on where the length limit or its user stopped it.

    The same answer: it streams again, its new text appended to the stored one, its
    tokens added to what it cost before.
    """
    create = functools.partial(_continue_create, user=user, message_id=message_id)
    return _exchange_start(create, language=language)


def message_show(*, user, message_id: int) -> Conversation:
    """Show the version `message_id` of a question or an answer, and what follows it.

    The shown branch goes through it; below it each message shows the version shown there
    before, else its latest one. Every other message is kept, out of the branch.
    """
    return _show(user=user, message_id=message_id)


def message_edit(*, user, message_id: int, content: str, model: str | None, language: str) -> Exchange:
    """Ask the latest question again in new words; the old question and its answers stay stored.

    The new question is a version of the old one; the old one and its answers leave the
    shown branch, so the history sent upstream.
    """
    create = functools.partial(_edit_create, user=user, message_id=message_id, content=content, model=model)
    return _exchange_start(create, language=language)


def _message_get(*, user, message_id: int) -> Message:
    with found_or_404():
        return Message.objects.get(pk=message_id, conversation__owner=user)


def message_feedback(*, user, message_id: int, rating: int | None, comment: str = "") -> Message:
    """Rate one of the user's answers (1 up, -1 down), or clear the rating with None."""
    writes_allow(user, throttle.writes_limit())
    with found_or_404():
        message = Message.objects.get(pk=message_id, conversation__owner=user, role=Message.Role.ASSISTANT)
    message.feedback = rating
    message.feedback_comment = comment if rating is not None else ""
    message.feedback_at = timezone.now() if rating is not None else None
    # Only these columns: the generation task may be writing the answer's text meanwhile.
    message.save(update_fields=["feedback", "feedback_comment", "feedback_at"])
    return message


def message_cancel(*, user, message_id: int) -> Message:
    """Stop generating an answer. Stopping one that already ended changes nothing."""
    writes_allow(user, throttle.writes_limit())
    message = _message_get(user=user, message_id=message_id)
    if message.role != Message.Role.ASSISTANT:
        raise not_found()
    if message.is_streaming and not async_to_sync(_cancel_here)(message.pk):
        leases.cancel_anywhere(message.pk)
    return message


async def _cancel_here(message_id: int) -> bool:
    # On the event loop: the task of an answer generating in this process is there.
    return running.cancel(message_id)
