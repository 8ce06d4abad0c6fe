"""A user's own conversation downloaded as Markdown and as JSON: content, headers, ownership."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import AccessLog, Conversation, Message


@pytest.fixture
def conversation(alice) -> Conversation:
    conversation = Conversation.objects.create(owner=alice, title="Datenbanken: Übersicht", model="demo")
    moment = timezone.make_aware(datetime(2026, 3, 1, 9, 30))
    rows = [
        ("user", "Vergleiche PostgreSQL und SQLite", "", "done", False),
        ("assistant", "Eine erste Antwort", "demo", "done", True),
        ("assistant", "| DB | Art |\n|--|--|\n| SQLite | Datei |\n", "fake-model", "done", False),
        ("user", "Und MySQL?", "", "done", False),
        ("assistant", "MySQL ist", "demo", "cancelled", False),
    ]
    Message.objects.bulk_create(
        Message(
            conversation=conversation, role=role, content=text, model=model, status=status, superseded=old
        )
        for role, text, model, status, old in rows
    )
    for n, message in enumerate(conversation.messages.order_by("pk")):
        Message.objects.filter(pk=message.pk).update(created_at=moment + timedelta(minutes=n))
    return conversation


def markdown_url(conversation: Conversation) -> str:
    return reverse("conversation_export_markdown", args=[conversation.pk])


def json_url(conversation: Conversation) -> str:
    return reverse("conversation_export_json", args=[conversation.pk])


def test_export_markdown_has_speakers_times_and_models(alice_client, conversation, settings):
    settings.TIME_ZONE = "Europe/Berlin"

    response = alice_client.get(markdown_url(conversation))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response.content.decode() == (
        "# Datenbanken: Übersicht\n"
        "\n"
        "## You · 2026-03-01 09:30\n"
        "\n"
        "Vergleiche PostgreSQL und SQLite\n"
        "\n"
        "## Assistant (fake-model) · 2026-03-01 09:32\n"
        "\n"
        "| DB | Art |\n|--|--|\n| SQLite | Datei |\n"
        "\n"
        "## You · 2026-03-01 09:33\n"
        "\n"
        "Und MySQL?\n"
        "\n"
        "## Assistant (demo) · 2026-03-01 09:34\n"
        "\n"
        "MySQL ist\n"
        "\n"
        "*The answer ended: cancelled*\n"
    )


def test_export_markdown_speaks_the_users_language(alice_client, conversation):
    response = alice_client.get(markdown_url(conversation), headers={"accept-language": "de"})

    text = response.content.decode()
    assert response.status_code == 200
    assert text.startswith("# Datenbanken: Übersicht\n")
    assert "Vergleiche PostgreSQL und SQLite" in text


def test_export_json_is_the_staff_exporters_json(alice_client, conversation):
    response = alice_client.get(json_url(conversation))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    data = json.loads(response.content.decode("utf-8"))
    assert "Übersicht" in response.content.decode("utf-8")  # UTF-8 as is, not \u escapes
    assert data["id"] == str(conversation.pk)
    assert data["title"] == "Datenbanken: Übersicht"
    assert data["owner"] == "alice"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "assistant", "user", "assistant"]
    assert [m["superseded"] for m in data["messages"]] == [False, True, False, False, False]
    assert data["messages"][2]["model"] == "fake-model"
    assert data["messages"][0]["created_at"].startswith("2026-03-01T")
    assert data["messages"][4]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        (
            "Datenbanken: Übersicht",
            'attachment; filename="datenbanken-ubersicht.{ext}"; '
            "filename*=UTF-8''datenbanken-%C3%BCbersicht.{ext}",
        ),
        ("Plain title", 'attachment; filename="plain-title.{ext}"'),
        ("", 'attachment; filename="conversation.{ext}"'),
        ('"; evil=1 \r\n', 'attachment; filename="evil1.{ext}"'),
        (
            "日本語",
            "attachment; filename=\"conversation.{ext}\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.{ext}",
        ),
    ],
)
def test_export_filename_is_the_slugified_title(alice_client, conversation, title, expected):
    Conversation.objects.filter(pk=conversation.pk).update(title=title)

    for url, ext in ((markdown_url(conversation), "md"), (json_url(conversation), "json")):
        assert alice_client.get(url)["Content-Disposition"] == expected.format(ext=ext)


def test_export_of_another_users_conversation_is_404(bob_client, conversation):
    for url in (markdown_url(conversation), json_url(conversation)):
        response = bob_client.get(url)
        assert response.status_code == 404
        assert b"PostgreSQL" not in response.content
    assert not AccessLog.objects.exists()


def test_export_asks_anonymous_clients_to_log_in(conversation):
    response = Client().get(markdown_url(conversation))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_export_of_a_missing_conversation_is_404(alice_client):
    assert alice_client.get("/c/00000000-0000-0000-0000-000000000000/export.md").status_code == 404


def test_export_is_not_on_the_access_log(alice_client, conversation):
    alice_client.get(json_url(conversation))
    assert not AccessLog.objects.exists()


@pytest.mark.parametrize("count", [1, 30])
def test_export_queries_do_not_grow_with_messages(alice_client, alice, django_assert_num_queries, count):
    conversation = Conversation.objects.create(owner=alice, title="Lang", model="demo")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user" if n % 2 == 0 else "assistant", content=f"Nr. {n}")
        for n in range(count)
    )

    # The user, the conversation with its owner, its messages (the session comes from memory).
    with django_assert_num_queries(3):
        assert alice_client.get(markdown_url(conversation)).content.decode().count("## ") == count
    with django_assert_num_queries(3):
        assert len(json.loads(alice_client.get(json_url(conversation)).content)["messages"]) == count


def test_the_conversation_names_its_export_urls_in_the_api_and_the_page(alice_client, conversation):
    page_data = alice_client.get(reverse("conversation", args=[conversation.pk])).context["page_data"]
    detail = alice_client.get(reverse("api_conversation", args=[conversation.pk])).json()

    assert detail["export_urls"] == page_data["conversation"]["export_urls"]
    assert page_data["conversation"]["export_urls"] == {
        "markdown": markdown_url(conversation),
        "json": json_url(conversation),
    }


def test_questions_carry_their_time_in_the_api_and_the_page(alice_client, conversation):
    detail = alice_client.get(reverse("api_conversation", args=[conversation.pk])).json()
    questions = [m for m in detail["messages"] if m["role"] == "user"]
    assert questions
    assert all(m["created_at"].startswith("2026-03-01T") for m in questions)

    page = alice_client.get(reverse("conversation", args=[conversation.pk]))
    assert all(m.created_at for m in page.context["state"].messages if m.role == "user")
    assert 'data-created="2026-03-01T' in page.content.decode()
