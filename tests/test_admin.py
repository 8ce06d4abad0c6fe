"""Admin: reviewers read conversations with their messages; nothing is editable."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from assistant.models import Conversation, Message


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
        content="Teilantwort",
        status="error",
        error_type="rate_limited",
        error_code=429,
    )
    return conversation


def test_admin_lists_conversations_with_search_and_filters(admin_client_, conversation):
    url = reverse("admin:assistant_conversation_changelist")
    page = admin_client_.get(url).content.decode()
    assert "Quartalsbericht" in page
    assert admin_client_.get(url, {"q": "Teilantwort"}).content.decode().count("Quartalsbericht") >= 1
    assert "Quartalsbericht" not in admin_client_.get(url, {"q": "nirgends"}).content.decode()
    assert admin_client_.get(url, {"model": "demo"}).status_code == 200


def test_admin_shows_a_transcript_escaped_and_read_only(admin_client_, conversation):
    url = reverse("admin:assistant_conversation_change", args=[conversation.pk])
    response = admin_client_.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x onerror" not in page
    assert "rate_limited" in page
    response = admin_client_.post(url, {"title": "geändert"})
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Quartalsbericht"


def test_admin_cannot_delete_or_add(admin_client_, conversation):
    delete_url = reverse("admin:assistant_conversation_delete", args=[conversation.pk])
    assert admin_client_.post(delete_url, {"post": "yes"}).status_code == 403
    assert admin_client_.get(reverse("admin:assistant_conversation_add")).status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_admin_message_list_filters_by_status(admin_client_, conversation):
    url = reverse("admin:assistant_message_changelist")
    page = admin_client_.get(url, {"status__exact": "error"}).content.decode()
    assert "rate_limited" in page


def test_admin_is_closed_to_employees(alice):
    client = Client()
    client.force_login(alice)
    response = client.get(reverse("admin:assistant_conversation_changelist"))
    assert response.status_code == 302
