"""Automatic titles after the first answer, and editing the last question, end to end."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from assistant.models import Conversation, Message
from assistant.providers.demo import DemoProvider
from assistant.providers.errors import ProviderError
from assistant.providers.openai_compatible import OpenAIProvider
from assistant.services import title_from
from assistant.titles import TITLE_PROMPT, title_clean, title_messages
from tests.helpers.chat import create_conversation, fake, last_answer_request, send, stream_answer, text_of
from tests.helpers.sse import SSEEvent, parse_sse, sse_lines

LONG_TITLE = (
    "„Die lange Reise von Köln nach München über Frankfurt, Würzburg und Nürnberg, mit Umwegen“"
    "\nZweite Zeile, die kein Titel ist"
)


@pytest.mark.parametrize(
    ("reply", "title"),
    [
        ("Reise nach Köln", "Reise nach Köln"),
        ('  "Reise nach Köln"  \n', "Reise nach Köln"),
        ("**„Grüße aus Köln“**", "Grüße aus Köln"),
        ("\n\n# Steuererklärung 2024\nDanke!", "Steuererklärung 2024"),
        ("Zeilen\tmit   Abständen", "Zeilen mit Abständen"),
        ("", ""),
        (' "" ', ""),
        ("x" * 100, "x" * 79 + "…"),
        (
            LONG_TITLE,
            "Die lange Reise von Köln nach München über Frankfurt, Würzburg und Nürnberg,…",
        ),
    ],
)
def test_title_clean_makes_one_short_line(reply, title):
    assert title_clean(reply) == title
    assert len(title_clean(reply)) <= 80


def test_title_messages_hold_the_instruction_question_and_the_start_of_the_answer():
    messages = title_messages("Wie weit ist Köln?", "Etwa " + "sehr " * 500 + "weit.")
    assert messages[0] == {"role": "system", "content": TITLE_PROMPT}
    assert messages[1]["role"] == "user"
    assert messages[1]["content"].startswith("Wie weit ist Köln?\n\n")
    assert len(messages[1]["content"]) < 600


def test_demo_provider_titles_with_the_first_words_of_the_question():
    messages = title_messages("Wie spät ist es gerade in Köln am Rhein?\nZweite Zeile", "Keine Ahnung.")
    title = asyncio.run(DemoProvider().complete(model="demo", messages=messages, max_tokens=20))
    assert title == "Wie spät ist es gerade in"


@pytest.fixture
def provider(settings, upstream) -> OpenAIProvider:
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_TIMEOUT = 2
    return OpenAIProvider()


def complete(provider: OpenAIProvider, messages: list[dict[str, str]]) -> str:
    async def run() -> str:
        try:
            return await provider.complete(model="fake-model", messages=messages, max_tokens=20)
        finally:
            await provider.client.close()  # its pooled connection belongs to this loop

    return asyncio.run(run())


def test_openai_provider_completes_without_streaming(provider, upstream):
    messages = [{"role": "user", "content": fake(text="Köln im Überblick")}]
    assert complete(provider, messages) == "Köln im Überblick"
    body = upstream.requests[-1]["body"]
    assert (body["stream"], body["max_tokens"], body["messages"]) == (False, 20, messages)


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        ({"status": 429}, "rate_limited"),
        ({"status": 500}, "upstream_unavailable"),
        ({"reset_after": 0}, None),
    ],
)
def test_openai_provider_completion_failures_are_provider_errors(provider, upstream, behaviour, kind):
    messages = [{"role": "user", "content": fake(**behaviour)}]
    with pytest.raises(ProviderError) as raised:
        complete(provider, messages)
    if kind:
        assert raised.value.type == kind
    assert "test-key" not in str(raised.value)


# --- over daphne ----------------------------------------------------------------------------


def events_after(client: httpx.Client, conversation: dict, position: str, until, seconds: float = 15):
    """Events of the conversation from `position` until `until(event)` is true."""
    seen: list[SSEEvent] = []
    give_up = time.monotonic() + seconds

    def lines(response):
        # Keep-alives are lines too: the deadline is checked while nothing happens.
        for line in sse_lines(response):
            if time.monotonic() > give_up:
                raise AssertionError(f"gave up after {seconds} s: {[e.event for e in seen]}")
            yield line

    with client.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": position}, timeout=30
    ) as response:
        for event in parse_sse(lines(response)):
            seen.append(event)
            if until(event):
                return seen
    raise AssertionError("the stream ended")


def title_requests(upstream) -> list[dict]:
    return [r for r in upstream.requests if r["body"] and not r["body"].get("stream")]


def wait_for_title_request(upstream, seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if title_requests(upstream):
            return title_requests(upstream)[0]
        time.sleep(0.05)
    raise AssertionError("no title request")


@pytest.mark.live
def test_first_answer_is_followed_by_a_title_event(alice_http, upstream):
    conversation = create_conversation(alice_http)
    # Paced, so the provisional title is read before the answer (and the title after it) ends.
    question = fake(text=LONG_TITLE, tps=20)
    sent = send(alice_http, conversation, question)
    assert Conversation.objects.get(pk=conversation["id"]).title == title_from(question)

    events = events_after(
        alice_http, conversation, sent["assistant_message"]["last_event_id"], lambda e: e.event == "title"
    )

    kinds = [e.event for e in events]
    assert kinds.index("done") < kinds.index("title")
    payload = events[-1].json()
    assert payload["conversation"] == conversation["id"]
    assert payload["title"] == title_clean(LONG_TITLE)
    assert len(payload["title"]) <= 80
    stored = Conversation.objects.get(pk=conversation["id"])
    assert (stored.title, stored.title_chosen) == (payload["title"], False)
    assert alice_http.get(conversation["detail_url"]).json()["title"] == payload["title"]
    # One small request, not streamed, with the question and the start of the answer.
    [request] = title_requests(upstream)
    body = request["body"]
    assert (body["model"], body["max_tokens"]) == (conversation["model"], 20)
    assert body["messages"] == title_messages(question, LONG_TITLE)


@pytest.mark.live
def test_only_the_first_answer_names_the_conversation(alice_http, upstream):
    conversation = create_conversation(alice_http)
    first = send(alice_http, conversation, fake(text="Erster Titel"))
    events_after(
        alice_http, conversation, first["assistant_message"]["last_event_id"], lambda e: e.event == "title"
    )
    second = send(alice_http, conversation, fake(text="Zweiter Titel"))
    stream_answer(alice_http, conversation, second)
    time.sleep(0.5)
    assert len(title_requests(upstream)) == 1
    assert Conversation.objects.get(pk=conversation["id"]).title == "Erster Titel"


@pytest.mark.live
def test_a_renamed_conversation_keeps_its_title(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(text="Vom Modell", tokens=10, tps=10))
    # Renamed while the first answer is still being written.
    response = alice_http.patch(conversation["detail_url"], json={"title": "Mein Name"})
    assert response.status_code == 200

    events = stream_answer(alice_http, conversation, sent)

    assert events[-1].event == "done"
    time.sleep(0.5)
    assert title_requests(upstream) == []
    stored = Conversation.objects.get(pk=conversation["id"])
    assert (stored.title, stored.title_chosen) == ("Mein Name", True)


@pytest.mark.live
def test_a_failed_title_request_keeps_the_first_words(alice_http, live, upstream):
    conversation = create_conversation(alice_http)
    # The fake resets a non-streamed request at once, and a stream only after 50 tokens.
    question = fake(tokens=5, reset_after=50)
    sent = send(alice_http, conversation, question)

    assert stream_answer(alice_http, conversation, sent)[-1].event == "done"

    wait_for_title_request(upstream)
    time.sleep(0.3)
    assert Conversation.objects.get(pk=conversation["id"]).title == title_from(question)
    log = live.log_text()
    assert log.count(f"no title for conversation {conversation['id']}: upstream_unavailable") == 1
    assert "test-key-abc123" not in log


@pytest.mark.live
def test_edit_resends_the_last_question_and_supersedes_the_old_exchange(alice_http, bob_http, upstream):
    conversation = create_conversation(alice_http, title="Bearbeiten")
    first = send(alice_http, conversation, fake(text="Erste Antwort."))
    stream_answer(alice_http, conversation, first)
    old = send(alice_http, conversation, fake(text="Alte Antwort."))
    stream_answer(alice_http, conversation, old)
    old_question, old_answer = old["user_message"]["id"], old["assistant_message"]["id"]
    new_question = fake(text="Neue Antwort.")
    assert bob_http.post(f"/api/messages/{old_question}/edit/", json={"content": "x"}).status_code == 404

    response = alice_http.post(f"/api/messages/{old_question}/edit/", json={"content": new_question})

    assert response.status_code == 202
    edited = response.json()
    assert edited["user_message"]["content"] == new_question
    assert edited["assistant_message"]["status"] == "streaming"
    events = stream_answer(alice_http, conversation, edited)
    start = events[0].json()
    assert (start["replaces"], start["replaces_question"]) == (old_answer, old_question)
    assert (start["user_message"]["id"], start["user_message"]["content"]) == (
        edited["user_message"]["id"],
        new_question,
    )
    assert events[-1].event == "done"
    assert text_of(events) == "Neue Antwort."
    assert set(Message.objects.filter(superseded=True).values_list("pk", flat=True)) == {
        old_question,
        old_answer,
    }
    # The upstream got the conversation with the new question in place of the old exchange.
    assert [m["content"] for m in last_answer_request(upstream)["body"]["messages"]] == [
        fake(text="Erste Antwort."),
        "Erste Antwort.",
        new_question,
    ]
    # The replaced question can no longer be edited; the new one can.
    response = alice_http.post(f"/api/messages/{old_question}/edit/", json={"content": "noch mal"})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_latest")
    # The conversation shows the new exchange; the old one is its question's earlier version.
    messages = alice_http.get(conversation["detail_url"]).json()["messages"]
    assert [(m["content"], m["superseded"]) for m in messages][2:] == [
        (new_question, False),
        ("Neue Antwort.", False),
    ]
    assert messages[2]["versions"] == {"index": 1, "count": 2, "ids": [old_question, messages[2]["id"]]}
