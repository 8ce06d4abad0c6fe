"""The offline demo model: a labelled canned reply, so the app works with no network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from django.conf import settings
from django.utils.translation import get_language

from assistant.providers.values import Finish, unpaced

DEMO_REPLY = {
    "en": (
        "This is the offline demo model. No language model is configured, so I cannot "
        "really answer, but everything else works as it will with a real one: streaming, "
        "history, stop, reload.\n\nYou wrote: “{question}”\n\nTo connect a real model, set "
        "OPENAI_API_KEY (and OPENAI_BASE_URL for any OpenAI-compatible server) and restart."
    ),
    "de": (
        "Dies ist das Offline-Demomodell. Es ist kein Sprachmodell eingerichtet, daher "
        "kann ich nicht wirklich antworten – alles andere funktioniert aber wie mit einem "
        "echten Modell: Streaming, Verlauf, Stopp, Neuladen.\n\nSie schrieben: „{question}“\n\n"
        "Für ein echtes Modell OPENAI_API_KEY setzen (und OPENAI_BASE_URL für jeden "
        "OpenAI-kompatiblen Server) und neu starten."
    ),
}


class DemoProvider:
    """A labelled canned reply at a human reading pace, so the app works with no network."""

    async def stream(
        self, *, model: str, messages: list[dict[str, str]], pace: Callable[[], float] = unpaced
    ) -> AsyncIterator[str | Finish]:
        """The reply a word at a time at the demo pace; `pace` has nothing to batch here."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if len(question) > 200:
            question = question[:200] + "…"
        language = (get_language() or "en")[:2]
        reply = DEMO_REPLY.get(language, DEMO_REPLY["en"]).format(question=question)
        words = reply.split(" ")
        pace = settings.ASSISTANT_DEMO_TOKENS_PER_SECOND
        started = time.monotonic()
        for index, word in enumerate(words):
            if pace:
                await asyncio.sleep(max(0.0, started + index / pace - time.monotonic()))
            yield word if index == 0 else " " + word
        prompt_chars = sum(len(m["content"]) for m in messages)
        yield Finish("stop", max(1, prompt_chars // 4), len(words))

    async def complete(self, *, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The first words of the last question's first line: a title without a model."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        first_line = next((line for line in question.splitlines() if line.strip()), "")
        return " ".join(first_line.split()[:6])
