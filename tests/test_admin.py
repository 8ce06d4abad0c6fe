"""Admin: the conversation list (no content, constant queries), filters, search, deletion."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from assistant import review
from assistant.models import Conversation, Message

CHANGELIST = "admin:assistant_conversation_changelist"


@pytest.fixture
def admin_client_(db) -> Client:
    admin = get_user_model().objects.create_superuser("root", password="root-password-1")
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def conversation(alice) -> Conversation:
    conversation = Conversation.objects.create(owner=alice, title="Quartalsbericht", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="<img src=x onerror=alert(1)>")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Teilantwort über Umsätze",
        status="error",
        error_type="rate_limited",
        error_code=429,
        prompt_tokens=12,
        completion_tokens=30,
    )
    return conversation


def conversation_with_messages(owner, title: str, *, feedback: int | None = None, error: bool = False):
    conversation = Conversation.objects.create(owner=owner, title=title, model="demo")
    Message.objects.create(conversation=conversation, role="user", content=f"Frage zu {title}")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=f"Antwort zu {title}",
        status="error" if error else "done",
        error_type="upstream" if error else "",
        prompt_tokens=5,
        completion_tokens=7,
        feedback=feedback,
    )
    return conversation


def test_admin_lists_conversations_with_search_and_filters(admin_client_, conversation):
    url = reverse(CHANGELIST)
    page = admin_client_.get(url).content.decode()
    assert "Quartalsbericht" in page
    assert admin_client_.get(url, {"q": "Teilantwort"}).content.decode().count("Quartalsbericht") >= 1
    assert "Quartalsbericht" not in admin_client_.get(url, {"q": "nirgends"}).content.decode()
    assert admin_client_.get(url, {"model": "demo"}).status_code == 200


def test_conversation_list_shows_figures_but_no_message_content(reviewer_client, conversation):
    response = reviewer_client.get(reverse(CHANGELIST))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Quartalsbericht" in page
    assert "alice" in page
    assert "Teilantwort" not in page
    assert "onerror" not in page
    row = response.context["cl"].result_list[0]
    assert row.message_count == 2
    assert row.total_tokens == 42
    assert row.has_error is True
    assert row.has_negative_feedback is False


def test_conversation_search_covers_message_text_without_duplicates(reviewer_client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Reise", model="demo")
    for _ in range(3):
        Message.objects.create(conversation=conversation, role="user", content="Hotel in Hamburg")
    conversation_with_messages(alice, "Anderes")
    response = reviewer_client.get(reverse(CHANGELIST), {"q": "hamburg"})
    assert [c.pk for c in response.context["cl"].result_list] == [conversation.pk]
    response = reviewer_client.get(reverse(CHANGELIST), {"q": "alice reise"})
    assert [c.pk for c in response.context["cl"].result_list] == [conversation.pk]
    response = reviewer_client.get(reverse(CHANGELIST), {"q": str(conversation.pk)})
    assert [c.pk for c in response.context["cl"].result_list] == [conversation.pk]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"negative_feedback": "yes"}, {"Schlecht"}),
        ({"negative_feedback": "no"}, {"Gut", "Kaputt"}),
        ({"has_error": "yes"}, {"Kaputt"}),
        ({"message_status": "error"}, {"Kaputt"}),
        ({"message_status": "streaming"}, set()),
        ({"model": "demo"}, {"Gut", "Schlecht", "Kaputt"}),
    ],
)
def test_conversation_filters_select_by_messages(reviewer_client, alice, params, expected):
    conversation_with_messages(alice, "Gut", feedback=1)
    conversation_with_messages(alice, "Schlecht", feedback=-1)
    conversation_with_messages(alice, "Kaputt", error=True)
    response = reviewer_client.get(reverse(CHANGELIST), params)
    assert {c.title for c in response.context["cl"].result_list} == expected


def test_conversation_filter_by_owner(reviewer_client, alice, bob):
    conversation_with_messages(alice, "Von Alice")
    conversation_with_messages(bob, "Von Bob")
    response = reviewer_client.get(reverse(CHANGELIST), {"owner__id__exact": bob.pk})
    assert [c.title for c in response.context["cl"].result_list] == ["Von Bob"]


# User, the reviewer's user and group permissions, the model filter's values, the owner
# filter's users, the page count, the page of rows (the session comes from memory).
LIST_QUERIES = 7


@pytest.mark.parametrize("count", [1, 3])
def test_conversation_list_query_count_is_constant(reviewer_client, alice, django_assert_num_queries, count):
    for n in range(count):
        conversation_with_messages(alice, f"Gespräch {n}", feedback=-1 if n % 2 else None, error=n == 2)
    with django_assert_num_queries(LIST_QUERIES):
        response = reviewer_client.get(reverse(CHANGELIST))
    assert len(response.context["cl"].result_list) == count


def test_conversation_list_query_count_is_constant_for_300(
    reviewer_client, alice, bob, django_assert_num_queries
):
    owners = [alice, bob]
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=owners[n % 2], title=f"Gespräch {n}", model=f"model-{n % 3}") for n in range(300)
    )
    Message.objects.bulk_create(
        Message(
            conversation=c,
            role=role,
            content="x",
            feedback=-1 if role == "assistant" and n % 5 == 0 else None,
        )
        for n, c in enumerate(conversations)
        for role in ("user", "assistant")
    )
    with django_assert_num_queries(LIST_QUERIES):
        response = reviewer_client.get(reverse(CHANGELIST))
    assert response.context["cl"].result_count == 300
    assert len(response.context["cl"].result_list) == 50
    with django_assert_num_queries(LIST_QUERIES):
        reviewer_client.get(reverse(CHANGELIST), {"q": "x", "negative_feedback": "yes", "o": "4"})


def test_admin_cannot_add_or_change_conversations(admin_client_, conversation):
    assert admin_client_.get(reverse("admin:assistant_conversation_add")).status_code == 403
    url = reverse("admin:assistant_conversation_change", args=[conversation.pk])
    assert admin_client_.post(url, {"title": "geändert"}).status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Quartalsbericht"


def test_superuser_delete_shows_a_confirmation_page_without_content(admin_client_, conversation):
    url = reverse("admin:assistant_conversation_delete", args=[conversation.pk])
    response = admin_client_.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Quartalsbericht" in page
    assert "Teilantwort" not in page
    assert "onerror" not in page
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    response = admin_client_.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_superuser_bulk_delete_asks_for_confirmation_first(admin_client_, alice):
    first = conversation_with_messages(alice, "Erstes")
    second = conversation_with_messages(alice, "Zweites")
    url = reverse(CHANGELIST)
    data = {"action": "delete_selected", "_selected_action": [first.pk, second.pk]}
    response = admin_client_.post(url, data)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Are you sure" in page
    assert "Erstes" in page
    assert "Antwort zu" not in page
    assert Conversation.objects.count() == 2
    response = admin_client_.post(url, {**data, "post": "yes"})
    assert response.status_code == 302
    assert Conversation.objects.count() == 0


def test_reviewer_cannot_delete_at_all(reviewer_client, conversation):
    url = reverse("admin:assistant_conversation_delete", args=[conversation.pk])
    assert reviewer_client.get(url).status_code == 403
    assert reviewer_client.post(url, {"post": "yes"}).status_code == 403
    data = {"action": "delete_selected", "_selected_action": [conversation.pk], "post": "yes"}
    reviewer_client.post(reverse(CHANGELIST), data)
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    page = reviewer_client.get(reverse(CHANGELIST)).content.decode()
    assert "delete_selected" not in page


def test_admin_message_list_filters_by_status(admin_client_, conversation):
    url = reverse("admin:assistant_message_changelist")
    page = admin_client_.get(url, {"status__exact": "error"}).content.decode()
    assert "rate_limited" in page


def test_admin_is_closed_to_employees(alice):
    client = Client()
    client.force_login(alice)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


# User, the reviewer's user and group permissions, the model and error type filters'
# values, the page count, the page of rows (the session comes from memory).
MESSAGE_LIST_QUERIES = 7


@pytest.mark.parametrize("count", [1, 3])
def test_message_list_query_count_is_constant(reviewer_client, alice, bob, django_assert_num_queries, count):
    for n in range(count):
        conversation_with_messages([alice, bob][n % 2], f"Gespräch {n}", feedback=-1, error=n == 1)
    with django_assert_num_queries(MESSAGE_LIST_QUERIES):
        response = reviewer_client.get(reverse("admin:assistant_message_changelist"))
    assert len(response.context["cl"].result_list) == 2 * count


def test_access_log_list_filters_by_conversation(reviewer_client, alice, conversation):
    rita = get_user_model().objects.get(username="rita")
    other = conversation_with_messages(alice, "Anderes")
    review.access_record(reviewer=rita, conversation=conversation, reason="Ticket 1 about the report")
    review.access_record(reviewer=rita, conversation=other, reason="Ticket 2 about another thing")
    url = reverse("admin:assistant_accesslog_changelist")
    page = reviewer_client.get(url).content.decode()
    assert "Ticket 1 about the report" in page
    assert f"?conversation_id={conversation.pk}" in page
    assert "Export CSV" in page
    response = reviewer_client.get(url, {"conversation_id": conversation.pk})
    assert [e.reason for e in response.context["cl"].result_list] == ["Ticket 1 about the report"]
