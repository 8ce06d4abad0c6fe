"""The offline demo model: with no OpenAI settings the whole app works out of the box."""

from __future__ import annotations

import asyncio
import re

import pytest
from django.utils import translation

from assistant.models import Message
from assistant.providers import demo_replies
from assistant.providers.demo import DemoProvider
from assistant.providers.values import Finish
from tests.helpers.chat import create_conversation, send, stream_answer, text_of
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne


@pytest.fixture(scope="module")
def demo_server(django_db_setup, django_db_blocker, fake_upstream):
    env = live_env(fake_upstream, ASSISTANT_DEMO_TOKENS_PER_SECOND="0")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASSISTANT_MODELS"):
        env.pop(name)
    server = start_daphne(env, "daphne-demo")
    yield server
    stop_daphne(server)


@pytest.mark.live
def test_demo_model_streams_a_labelled_answer(demo_server, transactional_db, alice, upstream):
    with session_client(demo_server, alice) as client:
        conversation = create_conversation(client)
        assert conversation["model"] == "demo"
        sent = send(client, conversation, "Wie spät ist es in Köln?")
        events = stream_answer(client, conversation, sent)
    text = text_of(events)
    assert events[-1].event == "done"
    assert "Offline-Demomodell" in text  # a question in German gets a German answer
    assert "Wie spät ist es in Köln?" in text
    assert "OPENAI_API_KEY" in text
    assert len([e for e in events if e.event == "delta"]) >= 1
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == text
    assert upstream.requests == []


@pytest.mark.live
def test_demo_model_answers_in_german_for_german_users(demo_server, transactional_db, alice):
    with session_client(demo_server, alice, headers={"Accept-Language": "de"}) as client:
        conversation = create_conversation(client)
        text = text_of(stream_answer(client, conversation, send(client, conversation, "Hallo")))
    assert "Offline-Demomodell" in text


@pytest.mark.live
def test_demo_model_labels_an_english_answer_for_english_users(demo_server, transactional_db, alice):
    with session_client(demo_server, alice) as client:
        conversation = create_conversation(client)
        text = text_of(stream_answer(client, conversation, send(client, conversation, "Hello")))
    assert "Offline demo model" in text


def demo(messages: list[dict[str, str]], *, language: str = "en") -> tuple[str, Finish]:
    """The demo model's text and Finish for `messages`, unpaced, under `language`."""

    async def run() -> list:
        return [item async for item in DemoProvider().stream(model="demo", messages=messages)]

    with translation.override(language):
        items = asyncio.run(run())
    assert all(isinstance(item, str) for item in items[:-1])
    assert isinstance(items[-1], Finish)
    return "".join(items[:-1]), items[-1]


def ask(question: str, *, language: str = "en") -> tuple[str, Finish]:
    return demo([{"role": "user", "content": question}], language=language)


@pytest.fixture(autouse=True)
def _unpaced(settings) -> None:
    settings.ASSISTANT_DEMO_TOKENS_PER_SECOND = 0


def fenced_languages(text: str) -> list[str]:
    return re.findall(r"^```(\w+)\n.*?^```$", text, re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("question", ["Show me a table", "Compare two options", "Vergleiche zwei Angebote"])
def test_demo_table_question_gets_a_markdown_table(question):
    text, finish = ask(question)
    assert "|---" in text
    assert finish.finish_reason == "stop"


@pytest.mark.parametrize("question", ["Write some code", "Python please", "Schreib ein Programm"])
def test_demo_code_question_gets_python_and_javascript_blocks(question):
    text, _finish = ask(question)
    assert fenced_languages(text) == ["python", "javascript"]


@pytest.mark.parametrize(
    ("question", "language"), [("Explain it in a long answer", "en"), ("Erkläre das ausführlich", "de")]
)
def test_demo_long_question_gets_sections_and_lists_over_a_thousand_words(question, language):
    text, finish = ask(question)
    assert len(text.split()) > 1000
    assert len(re.findall(r"^## ", text, re.MULTILINE)) >= 5
    assert re.search(r"^- ", text, re.MULTILINE)
    assert re.search(r"^1\. ", text, re.MULTILINE)
    assert text.startswith(demo_replies.LABEL[language])
    assert finish.completion_tokens > 1000


@pytest.mark.parametrize(
    "question", ["Wie spät ist es in Köln?", "Zeig mir eine Tabelle", "Antworte auf Deutsch", "deutsch"]
)
def test_demo_german_question_gets_a_german_answer_whatever_the_page_language(question):
    text, _finish = ask(question, language="en")
    assert text.startswith("*Offline-Demomodell")
    assert re.search(r"\b(und|die|Sie)\b", text)


def test_demo_german_keyword_gets_the_german_sample():
    text, _finish = ask("Please answer in German")
    assert "Umlaute" in text


def test_demo_unclear_question_follows_the_page_language():
    assert ask("42", language="de")[0].startswith(demo_replies.LABEL["de"])
    assert ask("42", language="en")[0].startswith(demo_replies.LABEL["en"])


@pytest.mark.parametrize("question", ["Show me a cut answer", "Zeig eine abgeschnittene Antwort", "limit"])
def test_demo_cut_question_ends_for_length(question):
    text, finish = ask(question)
    assert finish.finish_reason == "length"
    assert not text.rstrip().endswith((".", "!", "?"))  # mid-sentence


def test_demo_other_questions_get_the_help_reply_with_the_examples_and_the_setup():
    text, finish = ask("Hello there")
    assert "Hello there" in text
    for example in ("Show me a table", "Write some code", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        assert example in text
    assert finish.finish_reason == "stop"


@pytest.mark.parametrize("question", ["Show me a table", "code", "long", "cut", "deutsch", "hi", "Hallo"])
def test_demo_every_reply_is_labelled_and_the_same_each_time(question):
    first, second = ask(question), ask(question)
    assert first == second
    assert first[0].startswith(tuple(demo_replies.LABEL.values()))


@pytest.mark.parametrize(("question", "language"), [("cut", "en"), ("abgeschnitten", "de")])
def test_demo_continuation_finishes_the_cut_answer(question, language):
    cut, finish = ask(question)
    assert finish.finish_reason == "length"
    history = [{"role": "user", "content": question}, {"role": "assistant", "content": cut}]

    rest, finish = demo(history)

    assert finish.finish_reason == "stop"
    assert cut + rest == demo_replies.LABEL[language] + demo_replies.CUT[language]
    assert demo(history) == (rest, finish)


def test_demo_continuation_of_another_answer_adds_a_note_and_stops():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Something else"}]
    rest, finish = demo(history)
    assert finish.finish_reason == "stop"
    assert rest == demo_replies.NOTHING_TO_CONTINUE["en"]
