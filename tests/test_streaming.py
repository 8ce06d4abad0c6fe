"""Streaming through a real daphne server over real HTTP, against the fake upstream."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from assistant.events.log import Published
from assistant.generation import partials, running
from assistant.generation.answer import Answer, coalesce_seconds
from assistant.models import Message
from assistant.rendering import html_key, render_markdown
from tests.helpers.chat import (
    create_conversation,
    fake,
    following,
    last_answer_request,
    send,
    stop_mid_answer,
    stream_answer,
    text_of,
    wait_for_final,
)
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne, wait_until

pytestmark = pytest.mark.live

GREETING = "Grüße aus Köln! Straße, Maß, Öl — 👩‍💻🇩🇪 “Anführungszeichen” 你好 שלום\nZeile zwei."


def test_stream_delivers_the_exact_text_and_stores_it(alice_http, upstream):
    """... and its rendered HTML, so a page of stored answers renders none again."""
    conversation = create_conversation(alice_http, model="fake-model")
    sent = send(alice_http, conversation, fake(text=GREETING, tps=200))

    events = stream_answer(alice_http, conversation, sent)

    assert events[0].event == "start"
    assert events[0].json()["user_message"]["content"] == fake(text=GREETING, tps=200)
    assert events[-1].event == "done"
    done = events[-1].json()
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] > 0
    assert text_of(events) == GREETING
    # Event ids increase strictly: that is what Last-Event-ID resumes from.
    ids = [int(e.id.rsplit(":", 1)[1]) for e in events]
    assert ids == sorted(set(ids))
    message = Message.objects.get(pk=sent["assistant_message"]["id"])
    assert message.status == "done"
    assert message.content == GREETING
    assert message.finish_reason == "stop"
    assert message.completion_tokens == done["usage"]["completion_tokens"]
    assert message.time_to_first_token_ms is not None
    assert message.duration_ms >= message.time_to_first_token_ms
    assert message.html_key == html_key(GREETING)
    assert message.html == render_markdown(GREETING)
    # The upstream got the conversation and the configured key, nothing else.
    request = last_answer_request(upstream)
    assert request["headers"]["authorization"] == "Bearer test-key-abc123"
    assert request["body"]["model"] == "fake-model"
    assert request["body"]["messages"] == [{"role": "user", "content": fake(text=GREETING, tps=200)}]


def test_new_conversation_with_its_first_question_in_one_request(alice_http, alice, upstream):
    question = fake(text=GREETING, tps=200)
    response = alice_http.post("/api/conversations/", json={"model": "fake-model", "content": question})
    assert response.status_code == 201, response.text
    started = response.json()
    assert started["model"] == "fake-model"
    assert started["user_message"]["content"] == question
    assert started["assistant_message"]["status"] == "streaming"

    events = stream_answer(alice_http, started, started)

    assert events[0].json()["user_message"]["content"] == question
    assert (events[-1].event, text_of(events)) == ("done", GREETING)
    conversation = alice.conversations.get()
    assert str(conversation.pk) == started["id"]
    assert conversation.title == started["title"] != ""  # from the question, not chosen
    assert not conversation.title_chosen
    assert [(m.role, m.content) for m in conversation.messages.order_by("pk")] == [
        ("user", question),
        ("assistant", GREETING),
    ]


def test_stream_sends_utf8_bytes_as_is(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(text="Grüße 👩‍💻", ascii_json=True))
    answer = sent["assistant_message"]
    raw = b""
    with alice_http.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": answer["last_event_id"]}
    ) as response:
        for chunk in response.iter_bytes():
            raw += chunk
            if b"event: done" in raw:
                break
    assert "Grüße".encode() in raw
    assert "👩‍💻".encode() in raw
    assert b"\\u00fc" not in raw


def test_stream_follows_the_conversation_history(alice_http, upstream):
    conversation = create_conversation(alice_http)
    first = send(alice_http, conversation, fake(text="Erste Antwort."))
    stream_answer(alice_http, conversation, first)
    second = send(alice_http, conversation, fake(text="Zweite Antwort."))
    assert text_of(stream_answer(alice_http, conversation, second)) == "Zweite Antwort."
    assert [m["content"] for m in last_answer_request(upstream)["body"]["messages"]] == [
        fake(text="Erste Antwort."),
        "Erste Antwort.",
        fake(text="Zweite Antwort."),
    ]


def test_answer_completes_when_nobody_listens(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=40, tps=200))
    message = wait_for_final(sent["assistant_message"]["id"])
    assert message.status == "done"
    assert message.content == "tok0" + "".join(f" tok{i}" for i in range(1, 40))


def test_ten_concurrent_streams_deliver_every_token_once_in_order(live, alice, upstream):
    results: dict[int, str] = {}
    failures: list[BaseException] = []

    def one(index: int) -> None:
        try:
            with session_client(live, alice) as client:
                conversation = create_conversation(client)
                expected = " ".join(f"s{index}-w{n}" for n in range(60))
                sent = send(client, conversation, fake(text=expected, tps=100, ttft=0.05))
                results[index] = text_of(stream_answer(client, conversation, sent))
                assert results[index] == expected
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert len(results) == 10
    assert Message.objects.filter(role="assistant", status="done").count() == 10


def test_second_message_while_streaming_is_409(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=50, tps=20))
    response = alice_http.post(
        f"/api/conversations/{conversation['id']}/messages/", json={"content": "noch eine"}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "answer_in_progress"
    assert Message.objects.filter(conversation_id=conversation["id"]).count() == 2
    alice_http.post(f"/api/messages/{sent['assistant_message']['id']}/cancel/")
    wait_for_final(sent["assistant_message"]["id"])


def test_cancel_stops_the_answer_and_keeps_the_text(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(never_end=True, tps=50))
    stop_mid_answer(alice_http, alice_http, conversation, sent)
    # The upstream response was closed, not left streaming: the fake answers it until its
    # client leaves. (Counting open connections would also count the idle keep-alive ones
    # that title requests leave in the pool.)
    assert wait_until(lambda: upstream.responses_in_progress == 0)


ERROR_CASES = [
    pytest.param({"status": 400}, 400, "bad_request", False, id="400"),
    pytest.param({"status": 401}, 401, "auth_failed", False, id="401"),
    pytest.param({"status": 403}, 403, "auth_failed", False, id="403"),
    pytest.param({"status": 404}, 404, "model_not_found", False, id="404"),
    pytest.param({"status": 408}, 408, "timeout", True, id="408"),
    pytest.param({"status": 409}, 409, "conflict", True, id="409"),
    pytest.param({"status": 429, "retry_after": 7}, 429, "rate_limited", True, id="429"),
    pytest.param({"status": 500}, 500, "upstream_unavailable", True, id="500"),
    pytest.param({"status": 503}, 503, "upstream_unavailable", True, id="503"),
    pytest.param({"header_delay": 4}, 504, "timeout", True, id="no-headers"),
    pytest.param({"stall_after": 3}, 504, "timeout", True, id="stall"),
    pytest.param({"reset_after": 3}, 502, "connection_lost", True, id="reset"),
    pytest.param({"malformed_after": 3}, 502, "upstream_error", True, id="malformed"),
    pytest.param({"error_after": 3}, 502, "upstream_error", True, id="in-stream-error"),
]


@pytest.mark.parametrize(("behaviour", "code", "kind", "retryable"), ERROR_CASES)
def test_upstream_failure_becomes_an_error_event_and_keeps_partial_text(
    alice_http, upstream, behaviour, code, kind, retryable
):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=10, **behaviour))

    events = stream_answer(alice_http, conversation, sent)

    error = events[-1]
    assert error.event == "error"
    payload = error.json()
    assert payload["code"] == code
    assert payload["type"] == kind
    assert payload["retryable"] is retryable
    assert payload["detail"]
    assert "test-key" not in error.data
    assert "127.0.0.1" not in error.data
    if "retry_after" in behaviour:
        assert payload["retry_after"] == behaviour["retry_after"]
    partial = text_of(events)
    failing_after = [
        behaviour[k]
        for k in ("stall_after", "reset_after", "malformed_after", "error_after")
        if k in behaviour
    ]
    assert partial == " ".join(f"tok{i}" for i in range(failing_after[0] if failing_after else 0))
    message = Message.objects.get(pk=sent["assistant_message"]["id"])
    assert message.status == "error"
    assert message.content == partial
    assert (message.error_code, message.error_type) == (code, kind)


@pytest.mark.parametrize("reason", ["length", "content_filter"])
def test_finish_reason_is_reported_and_stored(alice_http, upstream, reason):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=5, finish_reason=reason))
    events = stream_answer(alice_http, conversation, sent)
    assert events[-1].event == "done"
    assert events[-1].json()["finish_reason"] == reason
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).finish_reason == reason


def test_stream_keeps_unicode_line_separators_inside_a_line(alice_http, upstream):
    """Raw UTF-8 from the upstream may hold U+2028, U+2029 and U+0085: they are not line breaks."""
    text = "eins\u2028zwei\u2029drei\u0085vier\r\nfünf"
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(text=text))
    events = stream_answer(alice_http, conversation, sent)
    assert events[-1].event == "done"
    assert text_of(events) == text
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == text


@pytest.fixture
def wide_window_server(transactional_db, fake_upstream):
    """A daphne of its own whose coalescing window is half a second (function-scoped, as
    test_resume's keepalive_server, for the same reason)."""
    env = live_env(fake_upstream, ASSISTANT_COALESCE_SECONDS="0.5", ASSISTANT_COALESCE_MAX_SECONDS="0.5")
    server = start_daphne(env, "daphne-wide-window")
    yield server
    stop_daphne(server)


def test_the_first_text_goes_out_as_it_comes_then_once_per_window(wide_window_server, alice, upstream):
    with session_client(wide_window_server, alice) as client:
        conversation = create_conversation(client, title="Fenster")
        # The role chunk at once, the first token 0.3 s later, then one every 50 ms.
        sent = send(client, conversation, fake(role_gap=0.3, tokens=8, tps=20))
        with following(client, conversation, sent) as events:
            deltas = [event for event in events if event.event == "delta"]
    assert text_of(deltas) == " ".join(f"tok{i}" for i in range(8))
    # The first token alone: held back by a read pace begun at the role chunk, it would
    # have gone out at 0.5 s with the four after it.
    assert deltas[0].json()["text"] == "tok0"
    # The other seven came within 0.35 s of it: one window, one event.
    assert len(deltas) == 2


@pytest.mark.parametrize(
    ("answers", "window"), [(0, 0.03), (30, 0.03), (50, 0.05), (75, 0.075), (100, 0.1), (1000, 0.1)]
)
def test_the_coalescing_window_grows_with_the_answers_generating(monkeypatch, answers, window):
    """A busy process joins more deltas per event: one base window more per 30 answers, capped."""
    monkeypatch.setattr(running, "answers", dict.fromkeys(range(answers)))
    assert coalesce_seconds() == pytest.approx(window)


def test_reads_follow_the_flushes_so_a_window_that_grew_holds_text_back_once(monkeypatch, settings):
    """Reads paced as the answer asks (`pace()`) while the window grows with the answers
    arriving: a read that finds its window open waits for it once; the next read comes a
    window after that flush, so its text goes out as it comes, not held back for good."""
    monkeypatch.setattr(partials.writer, "add", lambda answer: None)  # no database here
    settings.ASSISTANT_COALESCE_MAX_SECONDS = 1

    async def reads() -> list[float]:
        """How long each read's text is held back: until the flush it finds scheduled on
        the event loop (the loop's due time, not when the flush got to run), else none."""
        flushed = asyncio.Event()

        def publish_batch(channel, batch):
            flushed.set()
            return Published([1], 0)

        monkeypatch.setattr("assistant.generation.answer.publish_batch", publish_batch)
        answer = Answer(message=Message(pk=1), channel="conversation-x", start_event={})
        held = []
        for step in range(12):
            # 30 ms growing by 20 ms a read up to 150 ms, as if answers kept arriving, then steady.
            settings.ASSISTANT_COALESCE_SECONDS = min(0.03 + 0.02 * step, 0.15)
            read_at = time.monotonic()
            flushed.clear()
            answer.add(f"t{step} ")
            held.append(0.0 if answer.flush_handle is None else answer.flush_due - read_at)
            wait = answer.pace()
            await flushed.wait()
            await asyncio.sleep(max(0.0, wait - (time.monotonic() - read_at)))
        return held

    held = asyncio.run(reads())
    # Once the window stops growing, reads come as it closes: about no wait. Paced a window
    # from each read instead, every text would wait the growth so far, over 100 ms.
    assert sorted(held[-5:])[2] < 0.04, held
