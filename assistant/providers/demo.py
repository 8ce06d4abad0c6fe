"""The offline demo model: prepared replies that show what the app can do, so it works
with no network and no model configured.

Deterministic: the question picks the reply (keywords in English and German: a table,
code, a long answer, German, an answer cut at the length limit, else a help reply that
lists these), and the language of the question picks its language; a question with no
clear language is answered in the page's. The texts are in demo_replies.py.

Sources of documents in the system message make it quote them, cited as [n]
(demo_sources.py). A system message of one of the shipped assistants, or a guided flow's
tool, makes it play that assistant instead, tool calls included (demo_personas.py). It keeps to `max_tokens`
as a model does: a longer reply is cut there and ends for `length`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

from django.conf import settings
from django.utils.translation import get_language

from assistant.providers import demo_replies as replies
from assistant.providers.demo_personas import COMPLETE_PHASE, persona_reply
from assistant.providers.demo_sources import sources_reply
from assistant.providers.values import Finish, ToolCall, tool_names, unpaced

# The first pattern the question matches picks the reply: a cut answer before the rest,
# so "cut a long table" still shows the length limit.
_KINDS = (
    ("cut", r"cut|truncat\w*|limit\w*|abgeschnitten\w*|abschneiden|abbr(?:echen|uch\w*)|längengrenze"),
    ("table", r"tables?|tabellen?\w*|compar\w*|vergleich\w*"),
    ("code", r"code|python|javascript|program\w*|programm\w*|skript\w*|script\w*"),
    ("long", r"long|lang|lange[nr]?|ausführlich\w*|explain\w*|erklär\w*"),
    ("german", r"deutsch|german"),
)
_KIND_PATTERNS = tuple((kind, re.compile(rf"\b(?:{words})\b", re.IGNORECASE)) for kind, words in _KINDS)

_GERMAN_WORDS = re.compile(
    r"\b(?:der|die|das|und|ist|ich|nicht|wie|was|bitte|mir|mich|ein|eine|einen|zeig|zeige|"
    r"mit|auf|für|über|warum|wer|wo|kannst|können|sie|du|es|schreib|schreibe|gib|hallo|danke|"
    r"zwei|drei|antworte|vergleich\w*|erklär\w*|tabelle\w*|ausführlich|abgeschnitten)\b"
    r"|[äöüß]",
    re.IGNORECASE,
)
_ENGLISH_WORDS = re.compile(
    r"\b(?:the|and|is|are|what|how|please|me|my|show|give|with|for|about|why|can|you|write|"
    r"of|to|an|in|hello|thanks|two|three|answer|compar\w*|explain\w*|tables?|long|cut)\b",
    re.IGNORECASE,
)
# Tokens as a model streams them: each carries the whitespace before it.
_TOKENS = re.compile(r"\s*\S+|\s+")


def _question(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def reply_language(question: str) -> str:
    """`de` or `en`: the question's language when its words say it, else the page's."""
    if re.search(r"\bdeutsch\b", question, re.IGNORECASE):
        return "de"
    german = len(_GERMAN_WORDS.findall(question))
    english = len(_ENGLISH_WORDS.findall(question))
    if german != english:
        return "de" if german > english else "en"
    return "de" if (get_language() or "en")[:2] == "de" else "en"


def reply_kind(question: str) -> str:
    """Which prepared reply the question asks for: cut, table, code, long, german or help."""
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(question):
            return kind
    return "help"


def demo_reply(messages: list[dict[str, str]]) -> tuple[str, str]:
    """The reply to the last question, with its label, and its finish reason. A cut reply
    is the first `CUT_WORDS` tokens of its text, ended for `length`."""
    question = _question(messages)
    kind = reply_kind(question)
    language = "de" if kind == "german" else reply_language(question)
    label = replies.LABEL[language]
    if kind == "cut":
        return label + "".join(_TOKENS.findall(replies.CUT[language])[: replies.CUT_WORDS]), "length"
    if kind == "help":
        shown = question if len(question) <= 200 else question[:200] + "…"
        return label + replies.HELP[language].format(question=shown), "stop"
    if kind == "german":
        return label + replies.GERMAN[language], "stop"
    texts = {"table": replies.TABLE, "code": replies.CODE, "long": replies.LONG}[kind]
    return label + texts[language], "stop"


def demo_answer(
    messages: list[dict[str, str]], tools: list[dict] | None = None
) -> tuple[str, str, list[ToolCall]]:
    """The reply to the last question as the assistant of the system message plays it, or
    the prepared one: its text, its finish reason and the tools it calls."""
    language = reply_language(_question(messages))
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    cited = sources_reply(system, language) if COMPLETE_PHASE not in tool_names(tools) else None
    if cited is not None:
        return cited, "stop", []
    persona = persona_reply(messages, tools, language=language)
    if persona is not None:
        return persona.text, persona.finish_reason, persona.calls
    reply, finish_reason = demo_reply(messages)
    return reply, finish_reason, []


def continuation(answer: str) -> str:
    """The rest of a cut demo answer whose text so far is `answer`: what its full text has
    beyond it; a short note for any other answer."""
    for language, text in replies.CUT.items():
        whole = replies.LABEL[language] + text
        if answer.strip() and whole.startswith(answer.rstrip()):
            return whole[len(answer.rstrip()) :]
    language = reply_language(answer)
    return replies.NOTHING_TO_CONTINUE[language]


class DemoProvider:
    """Prepared replies at a human reading pace, so the app works with no network."""

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        pace: Callable[[], float] = unpaced,
        tools: list[dict] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str | ToolCall | Finish]:
        """The reply a word at a time at the demo pace, then the tools it calls; `pace` has
        nothing to batch here, and `temperature` changes nothing: the demo is the same
        each time.

        When the last message is the assistant's (a Continue of a cut answer), the rest of
        that answer, ended for `stop`."""
        if messages and messages[-1]["role"] == "assistant":
            reply, finish_reason, calls = continuation(messages[-1]["content"]), "stop", []
        else:
            reply, finish_reason, calls = demo_answer(messages, tools)
        tokens = _TOKENS.findall(reply)
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens, finish_reason, calls = tokens[:max_tokens], "length", []
        rate = settings.ASSISTANT_DEMO_TOKENS_PER_SECOND
        started = time.monotonic()
        for index, token in enumerate(tokens):
            if rate:
                await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            yield token
        for call in calls:
            yield call
        prompt_chars = sum(len(m["content"]) for m in messages)
        yield Finish(finish_reason, max(1, prompt_chars // 4), len(tokens))

    async def complete(self, *, model: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The first words of the last question's first line: a title without a model."""
        first_line = next((line for line in _question(messages).splitlines() if line.strip()), "")
        return " ".join(first_line.split()[:6])
