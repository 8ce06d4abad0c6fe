"""The answer task: the provider's stream into an answer, from its start to its end."""

from __future__ import annotations

import asyncio
import functools
import logging

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.utils import translation

from assistant import titles
from assistant.events.wire import channel_for
from assistant.generation import running
from assistant.generation.answer import Answer, Continuation
from assistant.generation.ending import interrupted_error
from assistant.generation.leases import answer_loop, cancel_anywhere, ensure_supervisor
from assistant.models import Message
from assistant.providers.configured import get_provider
from assistant.providers.errors import ProviderError, provider_error
from assistant.providers.values import Finish, ToolCall

logger = logging.getLogger(__name__)

Status = Message.Status


def start(
    *,
    message: Message,
    history: list[dict[str, str]],
    language: str,
    start_event: dict,
    start_id: int | None = None,
    continuation: Continuation | None = None,
    options: dict | None = None,
) -> None:
    """Start generating an assistant message on the running event loop.

    `message` comes with its conversation, `history` is what goes upstream (the system
    message of personas.prompt, then `history_before(message)`) and `options` the
    request's options (tools, temperature, max_tokens): all read by the request, so the
    task's first step is the upstream call. `start_event` is
    the answer's `start` payload, `start_id` its id on the wire (None: it could not be
    published, so the answer publishes it with its first text). A `continuation` is the
    text the answer goes on from: on the wire in one delta after the start (then
    `start_id` is that delta's id), and the first part of the answer's text.
    """
    message_id = message.pk
    task = running.background_task(
        _generate(message, history, language, start_event, start_id, continuation, options or {})
    )
    running.answers[message_id] = running.Running(task)
    task.add_done_callback(lambda _: running.answers.pop(message_id, None))


def start_from_thread(**kwargs) -> None:
    """`start` for synchronous code in a thread of the process (a request's): the answer's
    task starts on the event loop this process's answers run on (see supervise_from_thread)."""
    loop = answer_loop()
    if loop is None:
        # No event loop of this process runs answers (a synchronous caller such as the
        # test client): the answer starts on the loop of this call.
        async_to_sync(_start_supervised)(**kwargs)
    else:
        loop.call_soon_threadsafe(functools.partial(start, **kwargs))


async def _start_supervised(**kwargs) -> None:
    await ensure_supervisor()
    start(**kwargs)


STOP_WAIT_SECONDS = 5.0


async def stop(message_id: int) -> None:
    """Stop an answer wherever it runs; one running here has stored its end on return.

    For deleting: the task of an answer generating here is done writing before the row
    goes. One in another process stops within a poll and finds its row gone.
    """
    here = running.answers.get(message_id)
    if here is None:
        await sync_to_async(cancel_anywhere)(message_id)
        return
    running.cancel(message_id)
    await asyncio.wait([here.task], timeout=STOP_WAIT_SECONDS)


# Sent after an answer's text to make it go on: a trailing assistant message alone is not
# continued by every OpenAI-compatible server (most answer it anew).
CONTINUE_INSTRUCTION = (
    "Continue your last answer exactly where it stopped, without repeating any of it "
    "and without any introduction. If it stopped mid-word, finish the word."
)


def history_before(message: Message) -> list[dict[str, str]]:
    """The conversation up to the answer `message` (its shown branch), as the provider wants it."""
    earlier = Message.objects.filter(
        conversation_id=message.conversation_id, pk__lt=message.pk, superseded=False
    )
    return [
        {"role": m.role, "content": m.content}
        for m in earlier.only("role", "content").order_by("pk")
        if m.role == Message.Role.USER or m.content
    ]


def history_to_continue(message: Message) -> list[dict[str, str]]:
    """The history that makes the model go on with the answer `message` from its text."""
    return [
        *history_before(message),
        {"role": Message.Role.ASSISTANT.value, "content": message.content},
        {"role": Message.Role.USER.value, "content": CONTINUE_INSTRUCTION},
    ]


async def _generate(
    message: Message,
    history: list[dict[str, str]],
    language: str,
    start_event: dict,
    start_id: int | None,
    continuation: Continuation | None = None,
    options: dict | None = None,
) -> None:
    options = options or {}
    answer = Answer(
        message=message,
        channel=channel_for(message.conversation_id),
        start_event=start_event,
        event_id=message.event_id if start_id is None else start_id,
        replay=start_id is None,
        prompt_chars=sum(len(item["content"]) for item in history),
        continuation=continuation,
    )
    if continuation is not None:
        answer.parts.append(continuation.text)
        # On the wire with the start, unless the answer replays itself whole anyway.
        answer.sent = 0 if answer.replay else 1
    with translation.override(language):
        try:
            if answer.replay:
                answer.flush()  # publishes the start as soon as Redis answers
            finish = None
            async with asyncio.timeout(settings.ASSISTANT_MAX_ANSWER_SECONDS):
                stream = get_provider().stream(
                    model=message.model, messages=history, pace=answer.pace, **options
                )
                try:
                    async for item in stream:
                        if isinstance(item, Finish):
                            finish = item
                        elif isinstance(item, ToolCall):
                            answer.tool_called(item)
                        else:
                            answer.add(item)
                finally:
                    # Closes the upstream response, also when cancelled.
                    await stream.aclose()
            if finish is None:
                raise provider_error("upstream_error", 502)
            await answer.finish(Status.DONE, finish=finish)
            questions = [m["content"] for m in history if m["role"] == Message.Role.USER]
            if continuation is None and len(questions) == 1 and not message.conversation.title_chosen:
                running.follow_up(
                    titles.conversation_title(
                        answer_id=message.pk,
                        conversation_id=message.conversation_id,
                        model=message.model,
                        question=questions[0],
                        answer=answer.content,
                    )
                )
        except asyncio.CancelledError:
            here = running.answers.get(message.pk)
            if here is not None and here.cancel_requested:
                await answer.finish(Status.CANCELLED)
            else:
                # The server is shutting down: keep the text, say why it stopped.
                await answer.finish(Status.INTERRUPTED, error=interrupted_error())
        except TimeoutError:
            await answer.finish(Status.ERROR, error=provider_error("timeout", 504))
        except Exception as exc:
            # The provider raises ProviderError alone: anything else is Assistant's own fault.
            error = exc if isinstance(exc, ProviderError) else provider_error("internal", 500)
            if not isinstance(exc, ProviderError):
                logger.exception("generating answer %s failed", message.pk)
            await answer.finish(Status.ERROR, error=error)
