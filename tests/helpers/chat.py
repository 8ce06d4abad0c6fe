"""The chat API as a client uses it: questions the fake upstream obeys, conversations, sends,
and an answer's events read to its end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from assistant.models import Message
from tests.helpers.sse import RecordingResponse, SSEEvent, answer_events


def fake(text_before: str = "Frage", **behaviour) -> str:
    """A question that tells the fake upstream how to answer it (see tests/helpers/upstream.py)."""
    return f"{text_before} FAKE" + json.dumps(behaviour, ensure_ascii=False)


def create_conversation(client: httpx.Client, **body) -> dict:
    response = client.post("/api/conversations/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def send(client: httpx.Client, conversation: dict, content: str, **body) -> dict:
    response = client.post(
        f"/api/conversations/{conversation['id']}/messages/", json={"content": content, **body}
    )
    assert response.status_code == 202, response.text
    return response.json()


def stream_answer(
    client: httpx.Client, conversation: dict, sent: dict, raw: bytearray | None = None
) -> list[SSEEvent]:
    """Every event of the answer, from the position the POST returned to done or error
    (and the bytes that carried them added to `raw`)."""
    answer = sent["assistant_message"]
    with client.stream(
        "GET",
        conversation["events_url"],
        headers={"Last-Event-ID": answer["last_event_id"]},
        timeout=httpx.Timeout(30, read=30),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(
            answer_events(response if raw is None else RecordingResponse(response, raw), answer["id"])
        )


@contextmanager
def following(client: httpx.Client, conversation: dict, sent: dict) -> Iterator[Iterator[SSEEvent]]:
    """The answer's events as they arrive, from the position the POST returned."""
    answer = sent["assistant_message"]
    with client.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": answer["last_event_id"]}
    ) as response:
        yield answer_events(response, answer["id"])


def last_answer_request(upstream) -> dict:
    """The latest streamed request: a conversation's first answer is followed by a
    non-streamed title request, which may reach the upstream at any moment after it."""
    return [r for r in upstream.requests if r["body"].get("stream")][-1]


def text_of(events: list[SSEEvent]) -> str:
    return "".join(e.json()["text"] for e in events if e.event == "delta")


def wait_for_final(message_id: int, timeout: float = 15) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = Message.objects.get(pk=message_id)
        if message.status != Message.Status.STREAMING:
            return message
        time.sleep(0.05)
    raise AssertionError(f"message {message_id} still streaming")


def stop_mid_answer(
    client: httpx.Client, stopper: httpx.Client, conversation: dict, sent: dict, deadline: float = 30
) -> None:
    """Follow a never-ending answer, stop it through `stopper` after some text, and check
    that it ended as cancelled with the text the client saw, within `deadline` seconds of
    following it."""
    answer_id = sent["assistant_message"]["id"]
    seen: list[SSEEvent] = []
    stopped = False
    with client.stream(
        "GET",
        conversation["events_url"],
        headers={"Last-Event-ID": sent["assistant_message"]["last_event_id"]},
    ) as response:
        for event in answer_events(response, answer_id, deadline):
            seen.append(event)
            if not stopped and event.event == "delta" and len(text_of(seen)) > 20:
                stopped = True
                assert stopper.post(f"/api/messages/{answer_id}/cancel/").status_code == 202
    assert seen[-1].event == "done"
    assert seen[-1].json()["finish_reason"] == "cancelled"
    message = Message.objects.get(pk=answer_id)
    assert message.status == "cancelled"
    assert message.content == text_of(seen)


def read_until_text(client: httpx.Client, conversation: dict, sent: dict, chars: int) -> tuple[str, str]:
    """Follow an answer until it has at least `chars` characters; return (text, last event id)."""
    seen = []
    with following(client, conversation, sent) as events:
        for event in events:
            seen.append(event)
            if len(text_of(seen)) >= chars:
                return text_of(seen), event.id
    raise AssertionError("the answer ended early")
