"""CONCURRENCY: requests that race each other on one conversation, over real HTTP.

Two sends at once (one 202, one 409), a double submit of the same message, a stop racing
the answer's own end, a retry racing a stop, an edit racing the stream. Afterwards each
conversation is consistent: nothing streams any more, every question that counts has
exactly one answer that counts, and the event stream, replayed from the start, ends each
answer exactly once with the event its stored state calls for and the stored text.
There is no idempotency key: a double submit while the first answer streams is refused
like any second send (409, nothing stored); once that answer ended it is a new question.
Sequential cases (a send while an answer streams, a retry or edit of an older message)
are in tests/test_streaming.py, tests/test_recovery.py and tests/test_conversations.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import pytest

from assistant.models import Message
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import session_client
from tests.helpers.sse import parse_sse, sse_lines

pytestmark = pytest.mark.live

ROUNDS = 10
FINAL = {
    ("done", "stop"): ("done", "stop"),
    ("cancelled", "cancelled"): ("done", "cancelled"),
}


def at_once(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Run the calls in threads released together; their responses in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def settle(conversation_id: str) -> list[Message]:
    """The conversation's messages once none streams any more."""
    for message in Message.objects.filter(conversation_id=conversation_id, status=Message.Status.STREAMING):
        wait_for_final(message.pk)
    return list(Message.objects.filter(conversation_id=conversation_id).order_by("pk"))


def assert_consistent(client: httpx.Client, conversation: dict, since: str) -> list[Message]:
    """The stored conversation and its event stream from `since` tell the same story."""
    messages = settle(conversation["id"])
    current = [m for m in messages if not m.superseded]
    assert [m.role for m in current] == ["user", "assistant"] * (len(current) // 2), current
    answers = {m.pk: m for m in messages if m.role == Message.Role.ASSISTANT}
    texts: dict[int, str] = {}
    finals: dict[int, list] = {pk: [] for pk in answers}
    deadline = time.monotonic() + 20
    with client.stream("GET", conversation["events_url"], headers={"Last-Event-ID": since}) as response:
        for event in parse_sse(sse_lines(response)):
            assert time.monotonic() < deadline, (finals, event)
            if event.event not in {"start", "delta", "done", "error"}:
                continue
            data = event.json()
            if event.event == "start":
                texts[data["message"]] = ""  # a replayed start rebuilds the answer
            elif event.event == "delta":
                texts[data["message"]] += data["text"]
            else:
                finals[data["message"]].append((event.event, data.get("finish_reason") or data.get("type")))
            if all(finals.values()):
                break
    for pk, answer in answers.items():
        expected = FINAL.get((answer.status, answer.finish_reason), ("error", answer.error_type))
        assert finals[pk] == [expected], (pk, answer.status, finals[pk])
        assert texts[pk] == answer.content, pk
    return messages


@pytest.mark.parametrize("double_submit", [False, True], ids=["different", "same_message"])
def test_two_sends_at_once_get_one_202_and_one_409(live, alice, upstream, double_submit):
    outcomes = []
    with session_client(live, alice) as first, session_client(live, alice) as second:
        for round_ in range(ROUNDS):
            conversation = create_conversation(first, title="race")
            # The answer lasts longer than the race: the 409 is for an answer in progress.
            questions = [fake(text=f"Antwort {round_}.", ttft=5), fake(text=f"Andere {round_}.", ttft=5)]
            if double_submit:
                questions[1] = questions[0]
            responses = at_once(
                *(
                    partial(client.post, conversation["messages_url"], json={"content": question})
                    for client, question in zip((first, second), questions, strict=True)
                )
            )
            statuses = sorted(r.status_code for r in responses)
            outcomes.append(statuses)
            assert statuses == [202, 409], [r.text for r in responses]
            accepted = next(r.json() for r in responses if r.status_code == 202)
            refused = next(r.json() for r in responses if r.status_code == 409)
            assert refused["error"]["code"] == "answer_in_progress"
            messages = assert_consistent(first, conversation, accepted["assistant_message"]["last_event_id"])
            assert [m.pk for m in messages] == [
                accepted["user_message"]["id"],
                accepted["assistant_message"]["id"],
            ]
    assert outcomes == [[202, 409]] * ROUNDS


def test_stop_racing_the_answers_end_leaves_one_final_state(alice_http, upstream):
    """A stop sent as the answer finishes: whichever wins, stream and database agree."""
    outcomes = []
    for round_ in range(2 * ROUNDS):
        conversation = create_conversation(alice_http, title="race")
        sent = send(alice_http, conversation, fake(tokens=6, tps=60))
        time.sleep(round_ * 0.01)  # from at once to after the end
        stop = alice_http.post(f"/api/messages/{sent['assistant_message']['id']}/cancel/")
        assert stop.status_code == 202
        [_question, answer] = assert_consistent(
            alice_http, conversation, sent["assistant_message"]["last_event_id"]
        )
        outcomes.append(answer.status)
    assert set(outcomes) <= {"done", "cancelled"}


def test_retry_racing_a_stop_supersedes_only_what_it_replaces(alice_http, upstream):
    outcomes = []
    for _ in range(ROUNDS):
        conversation = create_conversation(alice_http, title="race")
        sent = send(alice_http, conversation, fake(never_end=True, tps=50))
        answer_id = sent["assistant_message"]["id"]
        stop, retry = at_once(
            partial(alice_http.post, f"/api/messages/{answer_id}/cancel/"),
            partial(alice_http.post, f"/api/messages/{answer_id}/retry/"),
        )
        assert stop.status_code == 202
        assert retry.status_code in {202, 409}, retry.text
        if retry.status_code == 202:
            # The retry asked the same never-ending question: stop it too.
            alice_http.post(f"/api/messages/{retry.json()['assistant_message']['id']}/cancel/")
        else:
            assert retry.json()["error"]["code"] == "answer_in_progress"
        messages = assert_consistent(alice_http, conversation, sent["assistant_message"]["last_event_id"])
        first = next(m for m in messages if m.pk == answer_id)
        assert first.superseded is (retry.status_code == 202)
        assert len(messages) == (3 if retry.status_code == 202 else 2)
        outcomes.append(retry.status_code)
    assert set(outcomes) <= {202, 409}


def test_edit_racing_the_stream_keeps_one_current_exchange(alice_http, upstream):
    outcomes = []
    for round_ in range(ROUNDS):
        conversation = create_conversation(alice_http, title="race")
        sent = send(alice_http, conversation, fake(tokens=6, tps=60))
        time.sleep(round_ * 0.02)
        edit = alice_http.post(
            f"/api/messages/{sent['user_message']['id']}/edit/", json={"content": fake(text="Neu.")}
        )
        assert edit.status_code in {202, 409}, edit.text
        messages = assert_consistent(alice_http, conversation, sent["assistant_message"]["last_event_id"])
        superseded = [m.pk for m in messages if m.superseded]
        if edit.status_code == 202:
            assert superseded == [sent["user_message"]["id"], sent["assistant_message"]["id"]]
            assert next(m.content for m in messages if not m.superseded) == fake(text="Neu.")
        else:
            assert edit.json()["error"]["code"] == "answer_in_progress"
            assert superseded == []
            assert len(messages) == 2
        outcomes.append(edit.status_code)
    assert set(outcomes) <= {202, 409}
