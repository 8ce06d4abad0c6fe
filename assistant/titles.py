"""Automatic titles: after a conversation's first answer, the model names the conversation.

Until then the first words of the question stand in (`services.title_from`), and they
stay when the model fails or says nothing usable. A title the user chose is never
replaced, also when the user renames the conversation while the model is still writing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from assistant.events.publish import apublish_or_defer
from assistant.events.wire import channel_for
from assistant.models import Conversation, Message
from assistant.providers.configured import get_provider
from assistant.providers.openai_compatible import error_from_exception

logger = logging.getLogger(__name__)

TITLE_PROMPT = (
    "Write a title of at most 6 words for this conversation, in the conversation's language. "
    "Answer with the title only."
)
TITLE_MAX_CHARS = 80
TITLE_MAX_TOKENS = 20
TITLE_TIMEOUT_SECONDS = 10
# Enough to tell the topic, small enough to keep the request cheap.
QUESTION_CHARS = 2000
ANSWER_CHARS = 500
# Quotes, and the Markdown emphasis or heading a model may wrap a title in.
_WRAPPING = "\"'`“”„‟«»‘’‚‹›*#_ "


def title_clean(text: str) -> str:
    """A model's reply as a title: its first non-empty line, unwrapped, at most 80 characters."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    title = " ".join(line.split()).strip(_WRAPPING)
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0].rstrip() + "…"
    return title


def title_messages(question: str, answer: str) -> list[dict[str, str]]:
    """The request for a title: the instruction, then the question and the start of the answer."""
    return [
        {"role": "system", "content": TITLE_PROMPT},
        {
            "role": "user",
            "content": f"{question[:QUESTION_CHARS]}\n\nStart of the answer:\n{answer[:ANSWER_CHARS]}",
        },
    ]


async def conversation_title(
    *, answer_id: int, conversation_id: uuid.UUID, model: str, question: str, answer: str
) -> None:
    """Ask the model for a title once the first answer ended `done`; publish a `title` event.

    Runs after the answer's final event, in its own task: the answer never waits for it.
    """
    wanted = Message.objects.filter(
        pk=answer_id, status=Message.Status.DONE, conversation__title_chosen=False
    )
    if not await wanted.aexists():
        return  # renamed by the user, deleted, or the answer did not end done after all
    try:
        async with asyncio.timeout(TITLE_TIMEOUT_SECONDS):
            reply = await get_provider().complete(
                model=model, messages=title_messages(question, answer), max_tokens=TITLE_MAX_TOKENS
            )
    except Exception as exc:
        error = error_from_exception(exc)
        logger.warning("no title for conversation %s: %s (%s)", conversation_id, error.type, error.code)
        return
    title = title_clean(reply)
    if not title:
        logger.warning("no title for conversation %s: the model answered with no text", conversation_id)
        return
    # The condition holds against a rename that landed while the model was writing.
    named = await Conversation.objects.filter(pk=conversation_id, title_chosen=False).aupdate(title=title)
    if named:
        await apublish_or_defer(
            channel_for(conversation_id),
            [("title", {"conversation": str(conversation_id), "title": title})],
        )
