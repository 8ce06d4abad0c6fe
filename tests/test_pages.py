"""Pages: first-run setup, login, the chat page and its ownership rules."""

from __future__ import annotations

import json
import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from assistant.models import Assistant, Conversation, Document, Message, Preferences
from assistant.personas.versions import version_save


def test_login_leads_to_setup_while_no_user_exists(db):
    response = Client().get(reverse("login"))
    assert response.status_code == 302
    assert response["Location"] == reverse("setup")


def test_setup_creates_the_first_administrator_and_logs_in(db):
    client = Client()
    response = client.post(
        reverse("setup"),
        {"username": "admin", "password1": "Korrekt-Pferd-42", "password2": "Korrekt-Pferd-42"},
    )
    assert response.status_code == 302
    user = get_user_model().objects.get()
    assert user.username == "admin"
    assert user.is_superuser
    assert user.is_staff
    assert client.get(reverse("chat")).status_code == 200


def test_setup_rejects_mismatched_or_weak_passwords(db):
    client = Client()
    response = client.post(reverse("setup"), {"username": "admin", "password1": "a", "password2": "b"})
    assert response.status_code == 200
    assert not get_user_model().objects.exists()
    response = client.post(reverse("setup"), {"username": "admin", "password1": "1234", "password2": "1234"})
    assert response.status_code == 200
    assert not get_user_model().objects.exists()


def test_setup_is_gone_once_a_user_exists(alice):
    client = Client()
    assert client.get(reverse("setup")).status_code == 404
    response = client.post(
        reverse("setup"),
        {"username": "mallory", "password1": "Korrekt-Pferd-42", "password2": "Korrekt-Pferd-42"},
    )
    assert response.status_code == 404
    assert not get_user_model().objects.filter(username="mallory").exists()


def test_login_uses_the_standard_fields(alice):
    client = Client()
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content
    assert b'name="password"' in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("chat")


def test_logout_is_a_post(alice):
    client = Client()
    client.force_login(alice)
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("chat")).status_code == 302


def test_a_signed_in_request_reads_its_session_from_memory_until_logout(alice):
    """One process (no REDIS_URL): sessions are cached in memory and written through."""
    client = Client()
    client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"})
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("api_conversations")).status_code == 200
    assert not [q["sql"] for q in queries.captured_queries if "django_session" in q["sql"]]
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert Session.objects.filter(session_key=session_key).exists()  # in the database too

    assert client.post(reverse("logout")).status_code == 302
    assert not Session.objects.filter(session_key=session_key).exists()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key  # the old cookie, replayed
    assert client.get(reverse("api_conversations")).status_code == 401


def test_chat_requires_login(db):
    response = Client().get(reverse("chat"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_chat_page_lists_only_own_conversations(alice_client, alice, bob):
    Conversation.objects.create(owner=alice, title="Urlaubsantrag", model="demo")
    Conversation.objects.create(owner=bob, title="Bobs Geheimnis", model="demo")
    page = alice_client.get(reverse("chat")).content.decode()
    assert "Urlaubsantrag" in page
    assert "Bobs Geheimnis" not in page
    assert "Demo mode" in page


def test_conversation_page_renders_history_escaped(alice_client, alice):
    conversation = Conversation.objects.create(owner=alice, title="t", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="<script>alert(1)</script>")
    Message.objects.create(conversation=conversation, role="assistant", content="Grüße 👋")
    page = alice_client.get(reverse("conversation", args=[conversation.pk])).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Grüße 👋" in page
    assert 'id="page-data"' in page
    # No inline script: every script tag loads a file or carries JSON data.
    for tag in re.findall(r"<script[^>]*>", page):
        assert 'src="/static/' in tag or 'type="application/json"' in tag


def test_conversation_page_of_another_user_is_404(alice, bob):
    conversation = Conversation.objects.create(owner=alice, title="t", model="demo")
    client = Client()
    client.force_login(bob)
    assert client.get(reverse("conversation", args=[conversation.pk])).status_code == 404


def test_chat_page_is_german_for_german_browsers(alice_client):
    page = alice_client.get(reverse("chat"), headers={"accept-language": "de"}).content.decode()
    assert 'lang="de"' in page
    assert "Neuer Chat" in page
    assert "Nachricht an Assistant" in page


def test_api_errors_speak_german_to_german_users(alice_client):
    response = alice_client.post(
        reverse("api_conversations"),
        data="[]",
        content_type="application/json",
        headers={"accept-language": "de"},
    )
    assert response.json()["error"]["message"] == "Der Inhalt der Anfrage muss ein JSON-Objekt sein."


# --- the new chat's assistants ---------------------------------------------------------------


def assistant_for(slug: str, name: str, **access) -> Assistant:
    assistant = Assistant.objects.create(slug=slug, **access)
    version_save(
        assistant, {"name": name, "instructions": f"Du bist {name}.", "starters": [f"{name}?"]}, by="t"
    )
    return assistant


def test_chat_page_offers_only_the_assistants_the_user_may_use(alice_client, bob):
    assistant_for("kollege", "Lieblingskollege")
    assistant_for("nur-bob", "Bobs Helfer", everyone=False).users.add(bob)
    assistant_for("alt", "Ausgemustert", active=False)

    page = alice_client.get(reverse("chat")).content.decode()

    assert 'data-assistant="kollege"' in page
    assert "Bobs Helfer" not in page
    assert "Ausgemustert" not in page


def test_chat_page_without_assistants_has_no_gallery(alice_client):
    assistant_for("nur-bob", "Bobs Helfer", everyone=False)

    page = alice_client.get(reverse("chat")).content.decode()

    assert 'id="assistant-gallery"' not in page


def test_chat_page_address_chooses_an_assistant_and_its_examples(alice_client):
    assistant_for("kollege", "Lieblingskollege")

    page = alice_client.get(reverse("chat"), {"assistant": "kollege"}).content.decode()

    assert re.search(r'data-assistant="kollege" aria-pressed="true"', page)
    assert '<button type="button" class="starter">Lieblingskollege?</button>' in page
    unknown = alice_client.get(reverse("chat"), {"assistant": "nur-bob"}).content.decode()
    assert re.search(r'data-assistant="" aria-pressed="true"', unknown)


# --- settings ---------------------------------------------------------------------------------


def test_settings_require_login(db):
    response = Client().get(reverse("settings"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert Client().post(reverse("settings"), {"about_me": "x"}).status_code == 302
    assert not Preferences.objects.exists()


def test_settings_page_shows_the_form_and_the_chat_links_to_it(alice_client):
    page = alice_client.get(reverse("settings")).content.decode()

    assert 'name="csrfmiddlewaretoken"' in page
    assert '<label for="id_about_me">About me</label>' in page
    assert '<label for="id_answer_style">How should Assistant answer?</label>' in page
    assert 'maxlength="1500"' in page
    assert "0 of 1500 characters" in page
    assert "from now on" in page
    assert f'href="{reverse("settings")}"' in alice_client.get(reverse("chat")).content.decode()


def test_settings_save_utf8_and_say_so(alice_client, alice):
    response = alice_client.post(
        reverse("settings"),
        {"about_me": "  Ich leite den Einkauf in Köln. 😊\r\nZweite Zeile  ", "answer_style": "Kurz, Grüße"},
        follow=True,
    )

    assert response.redirect_chain == [(reverse("settings"), 302)]
    preferences = Preferences.objects.get(user=alice)
    assert preferences.about_me == "Ich leite den Einkauf in Köln. 😊\nZweite Zeile"
    assert preferences.answer_style == "Kurz, Grüße"
    page = response.content.decode()
    assert "Saved. Your instructions apply to the chats you start from now on." in page
    assert "Ich leite den Einkauf in Köln. 😊\nZweite Zeile</textarea>" in page
    # Saved again, and emptied: one row per user, updated.
    alice_client.post(reverse("settings"), {"about_me": "", "answer_style": "Kurz"})
    assert Preferences.objects.get(user=alice).about_me == ""
    assert Preferences.objects.count() == 1


def test_settings_count_a_line_break_as_one_character(alice_client, alice):
    text = ("x" * 99 + "\r\n") * 15  # 1,500 characters as the page counts them, 1,515 as sent

    response = alice_client.post(reverse("settings"), {"about_me": text, "answer_style": ""})

    assert response.status_code == 302
    assert len(Preferences.objects.get(user=alice).about_me) == 1500 - 1  # the last line break stripped


def test_settings_refuse_too_long_and_keep_what_was_typed(alice_client, alice):
    response = alice_client.post(reverse("settings"), {"about_me": "ä" * 1501, "answer_style": "Kurz"})

    assert response.status_code == 200
    page = response.content.decode()
    assert 'role="alert"' in page
    assert "Ensure this value has at most 1500 characters (it has 1501)." in page
    assert 'aria-invalid="true"' in page
    assert "ä" * 1501 + "</textarea>" in page
    assert not Preferences.objects.filter(user=alice).exists()


def test_settings_need_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(reverse("settings"), {"about_me": "x"}).status_code == 403
    assert not Preferences.objects.exists()


def test_settings_are_each_users_own_and_reach_new_chats_only(alice_client, alice, bob_client, bob):
    before = Conversation.objects.create(owner=alice, title="vorher", model="demo")
    alice_client.post(reverse("settings"), {"about_me": "Einkauf", "answer_style": "Kurz"})

    assert "Einkauf" not in bob_client.get(reverse("settings")).content.decode()
    assert "Einkauf</textarea>" in alice_client.get(reverse("settings")).content.decode()
    created = alice_client.post(reverse("api_conversations"), data={}, content_type="application/json")
    conversation = Conversation.objects.get(pk=created.json()["id"])
    assert conversation.personal_instructions == "About the user: Einkauf\nHow to answer: Kurz"
    before.refresh_from_db()
    assert before.personal_instructions == ""


# --- documents and sources ----------------------------------------------------------------


def page_data(page: str) -> dict:
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def document_for(conversation: Conversation, name: str, **fields) -> Document:
    return Document.objects.create(
        owner=conversation.owner,
        conversation=conversation,
        name=name,
        kind=fields.pop("kind", "md"),
        size=fields.pop("size", 1234),
        sha256=name,
        file=f"documents/{name}",
        **fields,
    )


def test_conversation_page_gives_its_documents_and_their_urls(alice_client, alice, bob):
    conversation = Conversation.objects.create(owner=alice, title="Verträge", model="demo")
    ready = document_for(conversation, "Vertrag.md", status="ready", pages=1, pages_done=1)
    failed = document_for(
        conversation, "Scan.pdf", kind="pdf", status="failed", error_code="no_text", error_detail="Kein Text."
    )
    other = Conversation.objects.create(owner=alice, title="Anderes", model="demo")
    document_for(other, "Fremd.md")
    bobs = Conversation.objects.create(owner=bob, title="Bobs", model="demo")
    document_for(bobs, "Bobs.md")

    data = page_data(alice_client.get(reverse("conversation", args=[conversation.pk])).content.decode())

    assert [d["name"] for d in data["documents"]] == ["Vertrag.md", "Scan.pdf"]
    assert data["documents"][0]["status"] == "ready"
    assert data["documents"][0]["file_url"] == reverse("document_file", args=[ready.pk])
    assert data["documents"][1]["error"] == {"code": "no_text", "message": "Kein Text."}
    urls = data["document_urls"]
    assert urls["list"].replace("{id}", str(conversation.pk)) == reverse(
        "api_conversation_documents", args=[conversation.pk]
    )
    assert urls["detail"].replace("{id}", str(failed.pk)) == reverse("api_document", args=[failed.pk])
    assert urls["file"].replace("{id}", str(failed.pk)) == reverse("document_file", args=[failed.pk])
    assert data["message_urls"]["sources"].replace("{id}", "7") == reverse("api_message_sources", args=[7])


def test_chat_page_offers_the_file_input_with_the_types_and_the_limit(alice_client, settings):
    settings.ASSISTANT_UPLOAD_MAX_BYTES = 5 * 1024 * 1024

    page = alice_client.get(reverse("chat")).content.decode()

    accept = re.search(r'<input type="file" id="document-input"[^>]* accept="([^"]*)"', page).group(1)
    kinds = {".pdf", ".docx", ".odt", ".pptx", ".xlsx", ".csv", ".txt", ".md", ".html"}
    assert set(accept.split(",")) >= kinds
    assert '<label for="document-input" id="attach-button"' in page
    assert "at most 5.0\xa0MB each" in page
    data = page_data(page)
    assert data["upload"] == {
        "max_bytes": 5 * 1024 * 1024,
        "too_large": "The file is larger than 5.0\xa0MB, the limit for documents.",
    }
    assert "documents" not in data  # a new chat has none yet


def test_conversation_page_gives_the_sources_each_answer_cites(alice_client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Verträge", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="Frist?")
    source = {"n": 1, "document": "d1", "name": "Vertrag.pdf", "page": 3, "chunk": 9, "text": "Passus 77"}
    answer = Message.objects.create(
        conversation=conversation, role="assistant", content="Frist [1].", status="done", sources=[source]
    )
    plain = Message.objects.create(conversation=conversation, role="assistant", content="Ja.", status="done")

    page = alice_client.get(reverse("conversation", args=[conversation.pk])).content.decode()

    data = page_data(page)
    assert data["sources"] == {
        str(answer.pk): [{"n": 1, "document": "d1", "name": "Vertrag.pdf", "page": 3, "where": "page 3"}]
    }
    assert str(plain.pk) not in data["sources"]
    # The passage itself is fetched when a citation is opened, not sent with every page.
    assert "Passus 77" not in page
