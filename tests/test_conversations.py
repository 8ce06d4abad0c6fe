"""Managing conversations (rename, archive, delete, list, search), feedback and editing a
question, through the JSON API in-process. Streaming parts run over daphne (marked live)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import Conversation, Message, ServerProcess
from tests.helpers.chat import create_conversation, fake, send, text_of
from tests.helpers.sse import answer_events


def call(client: Client, method: str, url: str, body=None, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body if body is not None else {})
    return getattr(client, method)(url, data=data, content_type="application/json", **extra)


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, title="Reise nach Köln", model="demo")


def exchange(conversation: Conversation, question: str, answer: str = "Antwort") -> tuple[Message, Message]:
    return (
        Message.objects.create(conversation=conversation, role="user", content=question),
        Message.objects.create(conversation=conversation, role="assistant", content=answer, status="done"),
    )


def detail_url(conversation: Conversation) -> str:
    return reverse("api_conversation", args=[conversation.pk])


def listed(client: Client, **params) -> list[dict]:
    response = client.get(reverse("api_conversations"), params)
    assert response.status_code == 200
    return response.json()["conversations"]


# --- rename and archive -----------------------------------------------------------------------


def test_conversation_rename_stores_the_title_as_chosen(alice_client, conversation):
    response = call(alice_client, "patch", detail_url(conversation), {"title": "  Urlaub\n in  Köln  "})

    assert response.status_code == 200
    data = response.json()
    assert data["title"] == "Urlaub in Köln"
    assert data["id"] == str(conversation.pk)
    assert data["archived"] is False
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_chosen) == ("Urlaub in Köln", True)


def test_conversation_rename_keeps_its_place_in_the_list(alice_client, alice, conversation):
    newer = Conversation.objects.create(owner=alice, title="Neuer", model="demo")
    before = Conversation.objects.get(pk=conversation.pk).updated_at

    call(alice_client, "patch", detail_url(conversation), {"title": "Umbenannt"})

    assert Conversation.objects.get(pk=conversation.pk).updated_at == before
    assert [c["id"] for c in listed(alice_client)] == [str(newer.pk), str(conversation.pk)]


@pytest.mark.parametrize(
    "body",
    [
        {"title": ""},
        {"title": "   \n "},
        {"title": None},
        {"title": "x" * 201},
        {"title": 42},
        {"title": ["Titel"]},
        {"title": "null \x00 byte"},
        '{"title": "\\ud800 lone surrogate"}',
        {"archived": "yes"},
        {"archived": 1},
        {"archived": None},
        "{not json",
        "[1]",
    ],
)
def test_conversation_update_rejects_bad_input_and_changes_nothing(alice_client, conversation, body):
    response = call(alice_client, "patch", detail_url(conversation), body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid", "invalid_json"}
    assert response.json()["error"]["message"]
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_chosen, conversation.archived) == (
        "Reise nach Köln",
        False,
        False,
    )


def test_conversation_title_may_have_200_characters(alice_client, conversation):
    response = call(alice_client, "patch", detail_url(conversation), {"title": "ä" * 200})
    assert response.status_code == 200
    assert Conversation.objects.get(pk=conversation.pk).title == "ä" * 200


def test_conversation_archive_and_unarchive(alice_client, conversation):
    response = call(alice_client, "patch", detail_url(conversation), {"archived": True})

    assert response.status_code == 200
    assert response.json()["archived"] is True
    assert listed(alice_client) == []
    assert [c["id"] for c in listed(alice_client, archived="1")] == [str(conversation.pk)]
    # Archiving is not renaming.
    assert not Conversation.objects.get(pk=conversation.pk).title_chosen

    response = call(alice_client, "patch", detail_url(conversation), {"archived": False})

    assert response.json()["archived"] is False
    assert [c["id"] for c in listed(alice_client)] == [str(conversation.pk)]
    assert listed(alice_client, archived="1") == []


def test_conversation_update_of_another_users_or_a_missing_conversation_is_404(bob_client, conversation):
    response = call(bob_client, "patch", detail_url(conversation), {"title": "Meins", "archived": True})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    conversation.refresh_from_db()
    assert (conversation.title, conversation.archived) == ("Reise nach Köln", False)
    missing = "/api/conversations/00000000-0000-0000-0000-000000000000/"
    assert call(bob_client, "patch", missing, {"title": "x"}).status_code == 404


# --- delete ---------------------------------------------------------------------------------


def test_conversation_delete_removes_it_with_its_messages(alice_client, conversation):
    exchange(conversation, "Frage")

    response = alice_client.delete(detail_url(conversation))

    assert response.status_code == 204
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert alice_client.delete(detail_url(conversation)).status_code == 404


def test_conversation_delete_of_another_users_conversation_is_404(bob_client, conversation):
    exchange(conversation, "Frage")

    response = bob_client.delete(detail_url(conversation))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert Message.objects.count() == 2


def test_conversation_delete_asks_the_generating_process_to_stop(alice_client, conversation):
    """An answer streaming in another (live) process: that process is told to stop."""
    ServerProcess.objects.create(pk="other-process", heartbeat_at=timezone.now())
    Message.objects.create(conversation=conversation, role="user", content="Frage")
    Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", generated_by="other-process"
    )

    response = alice_client.delete(detail_url(conversation))

    assert response.status_code == 204
    assert not Message.objects.exists()


def test_conversation_api_requires_login_and_csrf(alice, conversation):
    anonymous = Client()
    assert call(anonymous, "patch", detail_url(conversation), {"title": "x"}).status_code == 401
    assert anonymous.delete(detail_url(conversation)).status_code == 401
    assert anonymous.get(reverse("api_conversations")).status_code == 401
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert call(strict, "patch", detail_url(conversation), {"title": "x"}).status_code == 403
    assert strict.delete(detail_url(conversation)).status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Reise nach Köln"


# --- list and search ------------------------------------------------------------------------


def test_conversation_list_is_newest_first_and_only_own(alice_client, alice, bob):
    older = Conversation.objects.create(owner=alice, title="Älter", model="demo")
    newer = Conversation.objects.create(owner=alice, title="Neuer", model="demo")
    Conversation.objects.filter(pk=older.pk).update(updated_at=timezone.now() - timedelta(days=1))
    Conversation.objects.create(owner=bob, title="Bobs", model="demo")

    conversations = listed(alice_client)

    assert [c["title"] for c in conversations] == ["Neuer", "Älter"]
    assert conversations[0] == {
        "id": str(newer.pk),
        "title": "Neuer",
        "url": f"/c/{newer.pk}/",
        "updated_at": Conversation.objects.get(pk=newer.pk).updated_at.isoformat(),
        "archived": False,
        "origin": "page",
    }


def test_conversation_list_has_at_most_100(alice_client, alice):
    Conversation.objects.bulk_create(
        Conversation(owner=alice, title=f"Nr. {n}", model="demo") for n in range(101)
    )
    assert len(listed(alice_client)) == 100


def test_conversation_search_finds_titles_and_message_text(alice_client, alice, bob, conversation):
    by_text = Conversation.objects.create(owner=alice, title="Steuern", model="demo")
    # Three matching messages, one conversation in the result. (SQLite folds the case of
    # ASCII letters only: "KÖLN" would not match "köln" there.)
    exchange(by_text, "Wie komme ich nach Köln?", "Mit dem Zug nach Köln.")
    exchange(by_text, "Und zurück aus köln?", "Auch mit dem Zug.")
    exchange(Conversation.objects.create(owner=alice, title="Anderes", model="demo"), "Bonn")
    exchange(Conversation.objects.create(owner=bob, title="Köln bei Bob", model="demo"), "Köln")

    found = listed(alice_client, q="köln")

    assert sorted(c["id"] for c in found) == sorted([str(conversation.pk), str(by_text.pk)])
    assert [c["id"] for c in listed(alice_client, q="  zug ")] == [str(by_text.pk)]
    assert listed(alice_client, q="Hamburg") == []


def test_conversation_search_respects_the_archive(alice_client, alice, conversation):
    archived = Conversation.objects.create(owner=alice, title="Köln, alt", model="demo", archived=True)

    assert [c["id"] for c in listed(alice_client, q="Köln")] == [str(conversation.pk)]
    assert [c["id"] for c in listed(alice_client, q="Köln", archived="1")] == [str(archived.pk)]
    assert [c["id"] for c in listed(alice_client, q="Köln", archived="0")] == [str(conversation.pk)]


@pytest.mark.parametrize("params", [{"archived": "yes"}, {"archived": "2"}, {"q": "x" * 201}])
def test_conversation_list_rejects_bad_parameters(alice_client, params):
    response = alice_client.get(reverse("api_conversations"), params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("query", ["", "Frage"])
def test_conversation_list_queries_do_not_grow_with_conversations(
    alice_client, alice, django_assert_num_queries, count, query
):
    for n in range(count):
        exchange(Conversation.objects.create(owner=alice, title=f"Nr. {n}", model="demo"), "Frage")

    # The user, the conversations (the session comes from memory).
    with django_assert_num_queries(2):
        assert len(listed(alice_client, q=query)) == count


# --- feedback -------------------------------------------------------------------------------


def feedback_url(message: Message) -> str:
    return reverse("api_message_feedback", args=[message.pk])


def test_feedback_is_stored_shown_and_cleared(alice_client, conversation):
    _question, answer = exchange(conversation, "Frage")

    response = call(alice_client, "post", feedback_url(answer), {"rating": "up"})

    assert response.status_code == 200
    assert response.json() == {"id": answer.pk, "feedback": "up", "feedback_comment": ""}
    answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_at is not None) == (1, True)

    response = call(
        alice_client, "post", feedback_url(answer), {"rating": "down", "comment": " Falsche Zahl. "}
    )

    assert response.json() == {"id": answer.pk, "feedback": "down", "feedback_comment": "Falsche Zahl."}
    detail = alice_client.get(detail_url(conversation)).json()
    assert detail["messages"][1]["feedback"] == "down"
    assert detail["messages"][1]["feedback_comment"] == "Falsche Zahl."

    response = call(alice_client, "post", feedback_url(answer), {"rating": None, "comment": "weg"})

    assert response.json() == {"id": answer.pk, "feedback": None, "feedback_comment": ""}
    answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_comment, answer.feedback_at) == (None, "", None)


def test_feedback_comment_may_have_2000_characters(alice_client, conversation):
    _question, answer = exchange(conversation, "Frage")
    response = call(alice_client, "post", feedback_url(answer), {"rating": "down", "comment": "ö" * 2000})
    assert response.status_code == 200
    assert len(Message.objects.get(pk=answer.pk).feedback_comment) == 2000


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"comment": "nur ein Kommentar"},
        {"rating": "sideways"},
        {"rating": 1},
        {"rating": True},
        {"rating": "down", "comment": "x" * 2001},
        {"rating": "down", "comment": 5},
        '{"rating": "up", "comment": "\\udc00"}',
        "{not json",
    ],
)
def test_feedback_rejects_bad_input(alice_client, conversation, body):
    _question, answer = exchange(conversation, "Frage")

    response = call(alice_client, "post", feedback_url(answer), body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid", "invalid_json"}
    answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_comment) == (None, "")


def test_feedback_on_a_question_or_another_users_answer_is_404(alice_client, bob_client, conversation):
    question, answer = exchange(conversation, "Frage")

    assert call(alice_client, "post", feedback_url(question), {"rating": "up"}).status_code == 404
    response = call(bob_client, "post", feedback_url(answer), {"rating": "down"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert call(alice_client, "post", "/api/messages/999999/feedback/", {"rating": "up"}).status_code == 404
    assert not Message.objects.filter(feedback__isnull=False).exists()


def test_feedback_needs_post(alice_client, conversation):
    _question, answer = exchange(conversation, "Frage")
    assert alice_client.get(feedback_url(answer)).status_code == 405


# --- edit the last question -----------------------------------------------------------------


def edit_url(message: Message) -> str:
    return reverse("api_message_edit", args=[message.pk])


@pytest.mark.parametrize(
    "body",
    [{}, {"content": ""}, {"content": "  \n"}, {"content": 7}, {"content": "x" * 32_001}, "{not json"],
)
def test_edit_rejects_bad_input_and_changes_nothing(alice_client, conversation, body):
    question, _answer = exchange(conversation, "Frage")

    response = call(alice_client, "post", edit_url(question), body)

    assert response.status_code == 400
    assert Message.objects.count() == 2
    assert not Message.objects.filter(superseded=True).exists()


def test_edit_of_an_earlier_question_is_409_not_latest(alice_client, conversation):
    first, _ = exchange(conversation, "Erste Frage")
    exchange(conversation, "Zweite Frage")

    response = call(alice_client, "post", edit_url(first), {"content": "Neu"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_latest"
    assert Message.objects.count() == 4
    assert not Message.objects.filter(superseded=True).exists()


def test_edit_of_a_superseded_question_is_409_not_latest(alice_client, conversation):
    old, _ = exchange(conversation, "Alte Frage")
    Message.objects.filter(conversation=conversation).update(superseded=True)
    exchange(conversation, "Neue Frage")

    response = call(alice_client, "post", edit_url(old), {"content": "Noch neuer"})

    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_latest")


def test_edit_while_the_answer_streams_is_409_and_changes_nothing(alice_client, conversation):
    ServerProcess.objects.create(pk="other-process", heartbeat_at=timezone.now())
    question = Message.objects.create(conversation=conversation, role="user", content="Frage")
    Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", generated_by="other-process"
    )

    response = call(alice_client, "post", edit_url(question), {"content": "Andere Frage"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "answer_in_progress"
    assert Message.objects.count() == 2
    assert not Message.objects.filter(superseded=True).exists()


def test_edit_of_an_answer_or_another_users_question_is_404(alice_client, bob_client, conversation):
    question, answer = exchange(conversation, "Frage")

    assert call(alice_client, "post", edit_url(answer), {"content": "Neu"}).status_code == 404
    assert call(bob_client, "post", edit_url(question), {"content": "Neu"}).status_code == 404
    assert Message.objects.count() == 2


# --- over daphne ----------------------------------------------------------------------------


@pytest.mark.live
def test_conversation_delete_stops_the_streaming_answer(alice_http, live, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(never_end=True, tps=50))
    answer_id = sent["assistant_message"]["id"]
    seen = []
    with alice_http.stream(
        "GET",
        conversation["events_url"],
        headers={"Last-Event-ID": sent["assistant_message"]["last_event_id"]},
    ) as response:
        for event in answer_events(response, answer_id):
            seen.append(event)
            if len(seen) == 3:
                assert alice_http.delete(conversation["detail_url"]).status_code == 204

    # The answer was stopped (and said so) before its rows went.
    assert seen[-1].event == "done"
    assert seen[-1].json()["finish_reason"] == "cancelled"
    assert text_of(seen)
    assert not Conversation.objects.filter(pk=conversation["id"]).exists()
    assert not Message.objects.filter(pk=answer_id).exists()
    assert alice_http.get(conversation["detail_url"]).status_code == 404
    time.sleep(0.3)
    assert f"generating answer {answer_id} failed" not in live.log_text()
