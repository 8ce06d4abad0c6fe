"""The JSON API in-process: validation, ownership and CSRF. Streaming is in test_streaming."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import iscoroutinefunction
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, get_resolver, reverse
from django.utils import timezone

from assistant.events.publish import replay_log
from assistant.models import Conversation, Message, ServerProcess


def post_json(client: Client, url: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **extra)


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model="demo")


def test_conversation_create_returns_urls(alice_client, alice):
    response = post_json(alice_client, reverse("api_conversations"), {"title": "Reise nach Köln"})
    assert response.status_code == 201
    data = response.json()
    conversation = Conversation.objects.get(pk=data["id"])
    assert conversation.owner == alice
    assert data["title"] == "Reise nach Köln"
    assert data["model"] == "demo"
    assert data["url"] == f"/c/{conversation.pk}/"
    assert data["events_url"] == f"/api/conversations/{conversation.pk}/events/"


def test_conversation_create_rejects_unknown_model(alice_client):
    response = post_json(alice_client, reverse("api_conversations"), {"model": "gpt-9"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_model"
    assert not Conversation.objects.exists()


BAD_QUESTIONS = [
    ({"content": ""}, "invalid"),
    ({"content": "   \n\t "}, "invalid"),
    ({"content": "x" * 32_001}, "invalid"),
    ({"content": 123}, "invalid"),
    ({"content": ["a"]}, "invalid"),
    ({"content": {"nested": {"deeper": 1}}}, "invalid"),
    ({"content": "hi", "model": "gpt-9"}, "unknown_model"),
    ({"content": "null byte \x00 inside"}, "invalid"),
    ('{"content": "\\ud800 lone surrogate"}', "invalid"),
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    (b'{"content": "\xff\xfe invalid utf-8"}', "invalid_json"),
]


@pytest.mark.parametrize(("body", "code"), [({}, "invalid"), *BAD_QUESTIONS])
def test_message_send_rejects_bad_input_and_stores_nothing(alice_client, conversation, body, code):
    url = reverse("api_messages", args=[conversation.pk])
    response = post_json(alice_client, url, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(("body", "code"), BAD_QUESTIONS)
def test_a_new_conversation_with_a_bad_first_question_is_refused_and_nothing_stored(alice_client, body, code):
    response = post_json(alice_client, reverse("api_conversations"), body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)  # the answer's task writes from another thread
def test_a_new_conversation_with_its_question_writes_each_row_once_and_reads_no_messages(alice_client):
    """Nothing to check or read back in a conversation made in the same transaction: no
    streaming answer, no history but the question, title and model set on creation."""
    with CaptureQueriesContext(connection) as queries:
        response = post_json(alice_client, reverse("api_conversations"), {"content": "Wie  spät\nist es?"})
    assert response.status_code == 201
    statements = [q["sql"] for q in queries.captured_queries if "assistant_serverprocess" not in q["sql"]]
    writes = [sql.split(" (")[0] for sql in statements if sql.startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes == [
        'INSERT INTO "assistant_conversation"',
        'INSERT INTO "assistant_message"',
        'INSERT INTO "assistant_message"',
        'INSERT INTO "assistant_usagerecord"',  # the answer counts from now on
    ]
    assert not [sql for sql in statements if sql.startswith("SELECT") and '"assistant_message"' in sql]
    usage_reads = [sql for sql in statements if sql.startswith("SELECT") and '"assistant_usagerecord"' in sql]
    assert len(usage_reads) == 1
    assert "SUM(CASE" in usage_reads[0]  # the limits
    conversation = Conversation.objects.get()
    assert (conversation.title, conversation.title_chosen) == ("Wie spät ist es?", False)
    assert conversation.model == "demo"


def test_message_send_rejects_a_body_over_the_limit_with_413(alice_client, conversation, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    url = reverse("api_messages", args=[conversation.pk])
    response = post_json(alice_client, url, {"content": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not Message.objects.exists()


def test_message_send_to_another_users_conversation_is_404(bob, conversation):
    client = Client()
    client.force_login(bob)
    response = post_json(client, reverse("api_messages", args=[conversation.pk]), {"content": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert not Message.objects.exists()


def test_message_send_to_a_missing_conversation_is_404(alice_client):
    url = "/api/conversations/00000000-0000-0000-0000-000000000000/messages/"
    response = post_json(alice_client, url, {"content": "hi"})
    assert response.status_code == 404


def test_conversation_id_that_is_not_a_uuid_is_404(alice_client):
    response = post_json(alice_client, "/api/conversations/123/messages/", {"content": "hi"})
    assert response.status_code == 404


def test_message_send_while_an_answer_streams_is_409(alice_client, conversation):
    ServerProcess.objects.create(pk="other-process", heartbeat_at=timezone.now())
    Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", generated_by="other-process"
    )
    response = post_json(alice_client, reverse("api_messages", args=[conversation.pk]), {"content": "hi"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "answer_in_progress"
    assert Message.objects.count() == 1


def test_api_requires_login(db, conversation):
    client = Client()
    assert post_json(client, reverse("api_conversations"), {}).status_code == 401
    response = post_json(client, reverse("api_messages", args=[conversation.pk]), {"content": "hi"})
    assert response.status_code == 401
    assert not Message.objects.exists()


def test_api_requires_csrf_token_and_refuses_in_its_error_shape(alice, conversation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = post_json(client, reverse("api_messages", args=[conversation.pk]), {"content": "hi"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert response.json()["error"]["message"]
    assert post_json(client, reverse("api_conversations"), {}).json()["error"]["code"] == "csrf_failed"
    assert not Message.objects.exists()
    assert Conversation.objects.count() == 1


def test_pages_refuse_a_missing_csrf_token_with_djangos_page(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("logout"))
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


def test_cancel_of_another_users_message_is_404(bob, conversation):
    message = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    client = Client()
    client.force_login(bob)
    response = post_json(client, reverse("api_message_cancel", args=[message.pk]), {})
    assert response.status_code == 404
    message.refresh_from_db()
    assert message.status == "streaming"


def test_conversation_detail_lists_messages_and_position(alice_client, conversation):
    Message.objects.create(conversation=conversation, role="user", content="Hallo")
    position = replay_log.current_id(conversation.channel)
    answer = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="Hal", event_id=position
    )
    response = alice_client.get(reverse("api_conversation", args=[conversation.pk]))
    assert response.status_code == 200
    data = response.json()
    assert [m["content"] for m in data["messages"]] == ["Hallo", "Hal"]
    assert data["messages"][1]["id"] == answer.pk
    # A streaming answer resumes from the position its stored text reflects.
    assert data["last_event_id"] == f"conversation-{conversation.pk}:{position}"


def test_conversation_detail_waits_from_now_for_an_answer_streamed_elsewhere(alice_client, conversation):
    """A streaming answer whose events this process never had (a restart, another process)."""
    Message.objects.create(conversation=conversation, role="assistant", status="streaming", event_id=42)
    before = replay_log.current_id(conversation.channel)
    data = alice_client.get(reverse("api_conversation", args=[conversation.pk])).json()
    after = replay_log.current_id(conversation.channel)
    # A channel without events: its current position is the clock.
    channel, _, position = data["last_event_id"].rpartition(":")
    assert channel == conversation.channel
    assert before <= int(position) <= after


def test_get_never_changes_state(alice_client, conversation):
    assert alice_client.get(reverse("api_messages", args=[conversation.pk])).status_code == 405
    # GET on the collection lists conversations; it creates none.
    assert alice_client.get(reverse("api_conversations")).status_code == 200
    assert Conversation.objects.count() == 1
    assert not Message.objects.exists()


def test_views_are_sync_but_readyz():
    # Django's middleware chain is sync: an async view behind it costs a trip to the
    # event loop and back. readyz runs its checks together on the loop, with timeouts.
    async_views = {
        pattern.name
        for pattern in get_resolver().url_patterns
        if isinstance(pattern, URLPattern) and iscoroutinefunction(pattern.callback)
    }
    assert async_views == {"readyz"}
