"""Example prompts of a new chat: shipped defaults, edited in the admin, in the page data per language."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from assistant.models import Conversation, StarterPrompt
from tests.helpers.live import logged_in


@pytest.fixture
def admin_client(db) -> Client:
    admin = get_user_model().objects.create_superuser("ada", password="ada-password-1")
    return logged_in(admin)


def page_prompts(client: Client, language: str | None = None) -> list[str]:
    headers = {"accept-language": language} if language else {}
    response = client.get(reverse("chat"), headers=headers)
    assert response.status_code == 200
    return response.context["page_data"]["starter_prompts"]


def test_defaults_are_shipped_in_english_and_german(db):
    english = list(StarterPrompt.objects.filter(language="en").values_list("text", flat=True))
    german = list(StarterPrompt.objects.filter(language="de").values_list("text", flat=True))

    assert 3 <= len(english) <= 4
    assert 3 <= len(german) <= 4
    assert "Vergleiche PostgreSQL und SQLite in einer Tabelle" in german
    assert "Compare PostgreSQL and SQLite in a table" in english


def test_page_data_has_the_prompts_of_the_users_language(alice_client):
    StarterPrompt.objects.all().delete()
    StarterPrompt.objects.bulk_create(
        [
            StarterPrompt(text="Zweitens", language="de", position=2),
            StarterPrompt(text="Erstens", language="de", position=1),
            StarterPrompt(text="Firstly", language="en", position=1),
            StarterPrompt(text="Überall · everywhere", language="", position=3),
            StarterPrompt(text="Abgeschaltet", language="de", position=0, active=False),
        ]
    )

    assert page_prompts(alice_client, "de") == ["Erstens", "Zweitens", "Überall · everywhere"]
    assert page_prompts(alice_client, "en") == ["Firstly", "Überall · everywhere"]


def test_page_data_of_a_conversation_has_no_prompts(alice_client, alice):
    conversation = Conversation.objects.create(owner=alice, model="demo")
    page_data = alice_client.get(reverse("conversation", args=[conversation.pk])).context["page_data"]
    assert "starter_prompts" not in page_data


def test_page_data_without_prompts_is_an_empty_list(alice_client):
    StarterPrompt.objects.all().delete()
    assert page_prompts(alice_client) == []


def test_admin_adds_edits_and_deactivates_a_prompt(admin_client, alice_client):
    StarterPrompt.objects.all().delete()
    add_url = reverse("admin:assistant_starterprompt_add")

    response = admin_client.post(
        add_url, {"text": "Erkläre Docker in drei Sätzen", "position": "5", "language": "de", "active": "on"}
    )

    assert response.status_code == 302
    prompt = StarterPrompt.objects.get()
    assert (prompt.text, prompt.position, prompt.language, prompt.active) == (
        "Erkläre Docker in drei Sätzen",
        5,
        "de",
        True,
    )
    assert page_prompts(alice_client, "de") == ["Erkläre Docker in drei Sätzen"]

    change_url = reverse("admin:assistant_starterprompt_change", args=[prompt.pk])
    response = admin_client.post(change_url, {"text": prompt.text, "position": "5", "language": "de"})

    assert response.status_code == 302
    assert page_prompts(alice_client, "de") == []
    list_page = admin_client.get(reverse("admin:assistant_starterprompt_changelist"))
    assert "Erkläre Docker in drei Sätzen" in list_page.content.decode()


def test_admin_refuses_a_language_the_site_does_not_speak(admin_client):
    response = admin_client.post(
        reverse("admin:assistant_starterprompt_add"), {"text": "Bonjour", "position": "0", "language": "fr"}
    )
    assert response.status_code == 200
    assert not StarterPrompt.objects.filter(text="Bonjour").exists()


def test_non_staff_users_cannot_edit_prompts(alice_client):
    response = alice_client.get(reverse("admin:assistant_starterprompt_changelist"))
    assert response.status_code == 302


@pytest.mark.parametrize("count", [1, 8])
def test_chat_page_reads_the_prompts_in_one_query(alice_client, django_assert_num_queries, count):
    StarterPrompt.objects.all().delete()
    StarterPrompt.objects.bulk_create(StarterPrompt(text=f"Nr. {n}", language="en") for n in range(count))

    # The user, the sidebar's page, the prompts, the assistants to choose from (the
    # session comes from memory).
    with django_assert_num_queries(4):
        assert len(page_prompts(alice_client, "en")) == count
