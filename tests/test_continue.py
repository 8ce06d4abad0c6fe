"""Continuing an answer cut by the length limit or stopped: the same answer goes on, over a
real daphne against the fake upstream, and in-process for the refusals."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.generation.task import CONTINUE_INSTRUCTION
from assistant.models import Conversation, Message, ServerProcess, UsageRecord
from tests.helpers.chat import (
    create_conversation,
    fake,
    last_answer_request,
    send,
    stop_mid_answer,
    stream_answer,
    text_of,
    wait_for_final,
)
from tests.helpers.live import session_client
from tests.helpers.resume import follow, rebuilt, seeded, snapshot_from_api, words
from tests.helpers.sse import answer_events


def continue_url(message_id: int) -> str:
    return reverse("api_message_continue", args=[message_id])


def post(client, url: str):
    return client.post(url, data="{}", content_type="application/json")


def cut_answer(client, conversation: dict, text: str = "Eins zwei drei") -> tuple[str, dict]:
    question = fake(text=text, finish_reason="length")
    sent = send(client, conversation, question)
    events = stream_answer(client, conversation, sent)
    assert events[-1].json()["finish_reason"] == "length"
    return question, sent


@pytest.mark.live
def test_continue_extends_the_same_answer_and_adds_its_tokens(alice_http, upstream):
    conversation = create_conversation(alice_http)
    question, sent = cut_answer(alice_http, conversation)
    answer_id = sent["assistant_message"]["id"]
    before = Message.objects.get(pk=answer_id)
    counted_before = UsageRecord.objects.get(message_id=answer_id)
    upstream.set(text=" vier fünf")

    response = alice_http.post(continue_url(answer_id))

    assert response.status_code == 202, response.text
    continued = response.json()
    assert continued["assistant_message"]["id"] == answer_id
    assert continued["assistant_message"]["continues"] is True
    events = stream_answer(alice_http, conversation, continued)
    start, first, *_rest, done = events
    assert start.event == "start"
    assert start.json()["continues"] is True
    # The text so far comes again right after the start: rebuilt from the start, it is whole.
    assert (first.event, first.json()["text"]) == ("delta", "Eins zwei drei")
    assert rebuilt("Eins zwei drei", events) == text_of(events) == "Eins zwei drei vier fünf"
    assert done.json()["finish_reason"] == "stop"
    answer = Message.objects.get(pk=answer_id)
    assert (answer.status, answer.content, answer.finish_reason) == (
        "done",
        "Eins zwei drei vier fünf",
        "stop",
    )
    # The upstream got the conversation, the answer so far and the instruction to go on.
    assert last_answer_request(upstream)["body"]["messages"] == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "Eins zwei drei"},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    # Both requests count: the answer's figures and its usage record add up.
    assert answer.completion_tokens == before.completion_tokens + 2
    assert done.json()["usage"]["completion_tokens"] == answer.completion_tokens
    counted = UsageRecord.objects.get(message_id=answer_id)
    assert counted.completion_tokens == counted_before.completion_tokens + 2
    assert counted.prompt_tokens > counted_before.prompt_tokens
    assert Message.objects.filter(conversation_id=conversation["id"]).count() == 2


@pytest.mark.live
def test_a_stopped_answer_can_be_continued(alice_http, live, alice, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(never_end=True, tps=50))
    with session_client(live, alice) as stopper:
        stop_mid_answer(alice_http, stopper, conversation, sent)
    answer_id = sent["assistant_message"]["id"]
    stopped = Message.objects.get(pk=answer_id).content
    upstream.set(text=" und Schluss.")

    response = alice_http.post(continue_url(answer_id))

    assert response.status_code == 202, response.text
    events = stream_answer(alice_http, conversation, response.json())
    assert text_of(events) == stopped + " und Schluss."
    answer = wait_for_final(answer_id)
    assert (answer.status, answer.content) == ("done", stopped + " und Schluss.")


@pytest.mark.live
def test_a_continuation_resumed_mid_way_shows_no_word_twice(alice_http, upstream):
    conversation = create_conversation(alice_http)
    _question, sent = cut_answer(alice_http, conversation, "Anfang der Antwort")
    answer_id = sent["assistant_message"]["id"]
    rest = " " + words(seeded(7), 80)
    upstream.set(text=rest, tps=20)
    continued = alice_http.post(continue_url(answer_id)).json()
    position = continued["assistant_message"]["last_event_id"]

    # A tab follows from before the start and drops the connection after a few deltas.
    seen = []
    with alice_http.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": position}
    ) as response:
        for event in answer_events(response, answer_id):
            seen.append(event)
            if sum(e.event == "delta" for e in seen) >= 4:
                break
    shown = rebuilt("Anfang der Antwort", seen)
    assert shown.startswith("Anfang der Antwort")
    assert len(shown) > len("Anfang der Antwort")
    # A tab reloading now starts from the stored state; this one reconnects from its last event.
    stored, status, reload_position = snapshot_from_api(alice_http, conversation, answer_id)
    resumed = follow(alice_http, conversation, seen[-1].id, answer_id)
    reloaded = follow(alice_http, conversation, reload_position, answer_id)

    final = "Anfang der Antwort" + rest
    assert rebuilt(shown, resumed) == final
    assert rebuilt(stored, reloaded) == final
    assert status == "streaming"
    assert Message.objects.get(pk=answer_id).content == final


# --- refusals, in-process -----------------------------------------------------------------------


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model="demo")


def ended(conversation: Conversation, *, status="done", finish_reason="length", content="Teil") -> Message:
    question = Message.objects.create(conversation=conversation, role="user", content="Frage")
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=question,
        status=status,
        finish_reason=finish_reason,
        content=content,
    )


@pytest.mark.parametrize(
    ("status", "finish_reason", "content"),
    [("done", "stop", "Teil"), ("error", "", "Teil"), ("interrupted", "", "Teil"), ("done", "length", "")],
)
def test_continue_of_an_answer_that_did_not_stop_short_is_400(
    alice_client, conversation, status, finish_reason, content
):
    answer = ended(conversation, status=status, finish_reason=finish_reason, content=content)

    response = post(alice_client, continue_url(answer.pk))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "not_continuable"
    assert error["message"]
    answer.refresh_from_db()
    assert (answer.status, answer.content) == (status, content)


def test_continue_of_an_earlier_answer_is_400(alice_client, conversation):
    earlier = ended(conversation)
    question = Message.objects.create(
        conversation=conversation, role="user", content="Noch eine", parent=earlier
    )
    Message.objects.create(conversation=conversation, role="assistant", content="Ja", parent=question)

    response = post(alice_client, continue_url(earlier.pk))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_continuable"


def test_continue_of_another_users_answer_or_a_question_is_404(bob, alice_client, conversation):
    answer = ended(conversation)
    bob_client = Client()
    bob_client.force_login(bob)

    assert post(bob_client, continue_url(answer.pk)).status_code == 404
    assert post(alice_client, continue_url(answer.parent_id)).status_code == 404
    answer.refresh_from_db()
    assert answer.status == "done"


def test_continue_while_an_answer_streams_is_409(alice_client, conversation):
    answer = ended(conversation, status="cancelled", finish_reason="cancelled")
    ServerProcess.objects.create(pk="other-process", heartbeat_at=timezone.now())
    answer.status, answer.generated_by = "streaming", "other-process"
    answer.save()

    response = post(alice_client, continue_url(answer.pk))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "answer_in_progress"


def test_continue_needs_post_and_login(db, conversation):
    answer = ended(conversation)
    assert (
        Client()
        .post(continue_url(answer.pk), data=json.dumps({}), content_type="application/json")
        .status_code
        == 401
    )
