"""Versions of questions and answers: regenerating, editing, the shown branch, switching it,
and the history sent upstream. Over a real daphne against the fake upstream, and
in-process for the refusals and for rows stored before versions existed."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import Conversation, Message, ServerProcess
from tests.helpers.chat import create_conversation, fake, last_answer_request, send, stream_answer, text_of


def show(client, message_id: int):
    """POST .../show/ with Django's test client or an httpx client."""
    url = reverse("api_message_show", args=[message_id])
    if isinstance(client, Client):
        return client.post(url, data="{}", content_type="application/json")
    return client.post(url, json={})


def shown(client, conversation: dict) -> list[tuple[str, int, int]]:
    """The shown branch: (content, version index, version count) of each message."""
    response = client.get(conversation["detail_url"])
    assert response.status_code == 200
    return [
        (m["content"], m["versions"]["index"], m["versions"]["count"]) for m in response.json()["messages"]
    ]


def asked(client, conversation: dict, question: str) -> dict:
    sent = send(client, conversation, question)
    assert stream_answer(client, conversation, sent)[-1].event == "done"
    return sent


@pytest.mark.live
def test_regenerating_a_good_answer_keeps_it_as_an_earlier_version(alice_http, upstream):
    conversation = create_conversation(alice_http)
    question = fake(text="Erste Fassung.")
    first = asked(alice_http, conversation, question)
    answer_id = first["assistant_message"]["id"]
    upstream.requests.clear()

    response = alice_http.post(reverse("api_message_retry", args=[answer_id]))

    assert response.status_code == 202, response.text
    again = response.json()
    versions = again["assistant_message"]["versions"]
    assert versions == {"index": 1, "count": 2, "ids": [answer_id, again["assistant_message"]["id"]]}
    events = stream_answer(alice_http, conversation, again)
    assert events[0].json()["replaces"] == answer_id
    assert events[0].json()["versions"] == versions
    assert text_of(events) == "Erste Fassung."
    # Sent upstream: the question alone, not the answer it replaces.
    assert last_answer_request(upstream)["body"]["messages"] == [{"role": "user", "content": question}]
    assert shown(alice_http, conversation) == [(question, 0, 1), ("Erste Fassung.", 1, 2)]
    assert Message.objects.get(pk=answer_id).superseded


@pytest.mark.live
def test_switching_versions_changes_the_branch_and_the_history_sent_upstream(alice_http, upstream):
    conversation = create_conversation(alice_http)
    q1, q2, q2_edited, q3 = (fake(text=t) for t in ("A1.", "A2.", "A2 neu.", "A3."))
    asked(alice_http, conversation, q1)
    second = asked(alice_http, conversation, q2)
    edit = alice_http.post(
        reverse("api_message_edit", args=[second["user_message"]["id"]]), json={"content": q2_edited}
    )
    assert edit.status_code == 202, edit.text
    edited = edit.json()
    assert edited["user_message"]["versions"]["index"] == 1
    assert edited["user_message"]["versions"]["count"] == 2
    stream_answer(alice_http, conversation, edited)
    assert shown(alice_http, conversation) == [
        (q1, 0, 1),
        ("A1.", 0, 1),
        (q2_edited, 1, 2),
        ("A2 neu.", 0, 1),
    ]

    # Back to the first version of the question: its own answer comes with it.
    response = show(alice_http, second["user_message"]["id"])

    assert response.status_code == 200, response.text
    branch = [(m["content"], m["versions"]["index"]) for m in response.json()["messages"]]
    assert branch == [(q1, 0), ("A1.", 0), (q2, 0), ("A2.", 0)]
    assert shown(alice_http, conversation) == [(q1, 0, 1), ("A1.", 0, 1), (q2, 0, 2), ("A2.", 0, 1)]
    # A new question follows the shown branch, and only it goes upstream.
    asked(alice_http, conversation, q3)
    assert [m["content"] for m in last_answer_request(upstream)["body"]["messages"]] == [
        q1,
        "A1.",
        q2,
        "A2.",
        q3,
    ]

    # The edited version again: the question after the other one is out of the branch.
    show(alice_http, edited["user_message"]["id"])
    assert [c for c, _i, _n in shown(alice_http, conversation)] == [q1, "A1.", q2_edited, "A2 neu."]
    show(alice_http, second["assistant_message"]["id"])  # an answer of the first version
    assert [c for c, _i, _n in shown(alice_http, conversation)] == [q1, "A1.", q2, "A2.", q3, "A3."]
    # Nothing is lost: every version stays stored.
    assert Message.objects.filter(conversation_id=conversation["id"]).count() == 8


# --- in-process ---------------------------------------------------------------------------------


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model="demo")


def test_show_of_another_users_message_is_404(bob, conversation):
    question = Message.objects.create(conversation=conversation, role="user", content="Frage")
    client = Client()
    client.force_login(bob)

    assert show(client, question.pk).status_code == 404
    assert show(client, 9_999_999).status_code == 404


def test_show_while_an_answer_streams_is_409_and_changes_nothing(alice_client, conversation):
    old = Message.objects.create(conversation=conversation, role="user", content="Alt", superseded=True)
    new = Message.objects.create(conversation=conversation, role="user", content="Neu")
    ServerProcess.objects.create(pk="other-process", heartbeat_at=timezone.now())
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=new,
        status="streaming",
        generated_by="other-process",
    )

    response = show(alice_client, old.pk)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "answer_in_progress"
    assert Message.objects.get(pk=old.pk).superseded


def test_rows_stored_before_versions_read_as_earlier_versions(alice_client, conversation):
    """As migration 0008 leaves them (and as tests write them): no parents, superseded flags."""

    def row(role: str, content: str, superseded: bool = False) -> Message:
        return Message.objects.create(
            conversation=conversation, role=role, content=content, superseded=superseded, status="done"
        )

    row("user", "Q1")
    row("assistant", "A1", superseded=True)
    row("assistant", "A1 neu")
    old_question = row("user", "Q2", superseded=True)
    row("assistant", "A2", superseded=True)
    row("user", "Q2 neu")
    row("assistant", "A2 neu")
    client_conversation = {"detail_url": reverse("api_conversation", args=[conversation.pk])}

    assert shown(alice_client, client_conversation) == [
        ("Q1", 0, 1),
        ("A1 neu", 1, 2),
        ("Q2 neu", 1, 2),
        ("A2 neu", 0, 1),
    ]
    response = show(alice_client, old_question.pk)
    assert response.status_code == 200
    assert [m["content"] for m in response.json()["messages"]] == ["Q1", "A1 neu", "Q2", "A2"]
