"""Admin: assistants edited with their current version; a changed version field adds a
version, access and state do not; versions read-only; no deletion once conversations ran."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from assistant.models import Assistant, AssistantVersion, Conversation
from assistant.personas.versions import version_save, version_values
from tests.helpers.live import logged_in

PHASES = [
    {
        "title": "Situation",
        "goal": "Die Lage ist klar.",
        "instructions": "Frag nach Beispielen.\nBewerte nicht.",
    },
    {"title": "Ziel", "goal": "Ein Ziel steht.", "instructions": "Frag, was stattdessen sein soll."},
]


@pytest.fixture
def ada(db):
    return get_user_model().objects.create_superuser("ada", password="ada-password-1")


@pytest.fixture
def ada_client(ada) -> Client:
    return logged_in(ada)


@pytest.fixture
def coaching(db) -> Assistant:
    assistant = Assistant.objects.create(slug="coaching", position=2)
    version_save(
        assistant,
        {
            "name": "Coaching",
            "description": "Vier Schritte",
            "icon": "compass",
            "instructions": "Du bist ein Coach.\nDu duzt.",
            "temperature": 0.5,
            "starters": ["Ich möchte mich abgrenzen.", "Soll ich mich bewerben?"],
            "phases": PHASES,
        },
        by="setup",
    )
    return assistant


def change_url(assistant: Assistant) -> str:
    return reverse("admin:assistant_assistant_change", args=[assistant.pk])


def form_data(client: Client, url: str, **changes: Any) -> dict[str, Any]:
    """The form of an admin add or change page as a browser would send it, with `changes`."""
    response = client.get(url)
    assert response.status_code == 200
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data: dict[str, Any] = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is False or value is None:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    for name, value in changes.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    return data


def saved(response) -> None:
    assert response.status_code == 302, response.context["adminform"].form.errors.as_text() + str(
        [f.errors for inline in response.context["inline_admin_formsets"] for f in inline.formset.forms]
    )


def test_the_form_starts_from_the_current_version(ada_client, coaching):
    form = ada_client.get(change_url(coaching)).context["adminform"].form

    assert form["name"].value() == "Coaching"
    assert form["instructions"].value() == "Du bist ein Coach.\nDu duzt."
    assert form["starters"].value() == "Ich möchte mich abgrenzen.\nSoll ich mich bewerben?"
    assert json.loads(form["phases"].value()) == PHASES
    assert "Frag nach Beispielen." in form["phases"].value()  # umlauts and text as they are
    assert form["temperature"].value() == 0.5


def test_editing_a_version_field_adds_a_version_and_a_conversation_keeps_its_own(ada_client, coaching, alice):
    v1 = coaching.current
    conversation = Conversation.objects.create(owner=alice, model="demo", assistant_version=v1)
    url = change_url(coaching)

    response = ada_client.post(url, form_data(ada_client, url, instructions="Du bist ein strenger Coach."))

    saved(response)
    coaching.refresh_from_db()
    assert coaching.current.number == 2
    assert coaching.current.instructions == "Du bist ein strenger Coach."
    assert coaching.current.created_by == "ada"
    # Everything else carried over from version 1.
    assert coaching.current.phases == PHASES
    assert coaching.current.starters == ["Ich möchte mich abgrenzen.", "Soll ich mich bewerben?"]
    assert coaching.current.temperature == 0.5
    conversation.refresh_from_db()
    assert conversation.assistant_version_id == v1.pk
    assert AssistantVersion.objects.get(pk=v1.pk).instructions == "Du bist ein Coach.\nDu duzt."
    page = ada_client.get(response.url).content.decode()
    assert "Saved as version 2." in page


def test_editing_only_access_and_state_adds_no_version(ada_client, coaching, bob):
    vertrieb = Group.objects.create(name="Vertrieb")
    url = change_url(coaching)

    response = ada_client.post(
        url,
        form_data(
            ada_client, url, active=False, everyone=False, position="5", groups=[vertrieb.pk], users=[bob.pk]
        ),
    )

    saved(response)
    coaching.refresh_from_db()
    assert (coaching.active, coaching.everyone, coaching.position) == (False, False, 5)
    assert list(coaching.groups.all()) == [vertrieb]
    assert list(coaching.users.all()) == [bob]
    assert coaching.versions.count() == 1
    assert coaching.current.number == 1
    assert "Saved as version" not in ada_client.get(response.url).content.decode()


def test_a_model_off_the_allowlist_is_refused(ada_client, coaching, settings):
    settings.ASSISTANT_MODELS = ["demo", "gpt-4o-mini"]
    url = change_url(coaching)

    refused = ada_client.post(url, form_data(ada_client, url, model="gpt-evil"))
    allowed = ada_client.post(url, form_data(ada_client, url, model="gpt-4o-mini"))

    assert refused.status_code == 200
    assert "model" in refused.context["adminform"].form.errors
    saved(allowed)
    coaching.refresh_from_db()
    assert (coaching.current.number, coaching.current.model) == (2, "gpt-4o-mini")


def test_a_model_taken_off_the_allowlist_stays_until_changed(ada_client, coaching, settings):
    settings.ASSISTANT_MODELS = ["demo", "old-model"]
    version_save(coaching, {**version_values(coaching.current), "model": "old-model"}, by="setup")
    settings.ASSISTANT_MODELS = ["demo"]
    url = change_url(coaching)
    assert "old-model (no longer allowed)" in ada_client.get(url).content.decode()

    retire = ada_client.post(url, form_data(ada_client, url, active=False))
    saved(retire)
    coaching.refresh_from_db()
    assert (coaching.active, coaching.current.number, coaching.current.model) == (False, 2, "old-model")

    edit = ada_client.post(url, form_data(ada_client, url, name="Coaching neu"))
    assert edit.status_code == 200
    assert "model" in edit.context["adminform"].form.errors


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"temperature": "2.5"}, "temperature"),
        ({"max_tokens": "0"}, "max_tokens"),
        ({"name": ""}, "name"),
        ({"instructions": "   "}, "instructions"),
        ({"phases": '[{"title": "Nur ein Titel"}]'}, "phases"),
        ({"phases": "[{"}, "phases"),
        ({"starters": "x" * 501}, "starters"),
    ],
)
def test_invalid_version_fields_are_refused_on_their_field(ada_client, coaching, changes, field):
    url = change_url(coaching)

    response = ada_client.post(url, form_data(ada_client, url, **changes))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert coaching.versions.count() == 1


def test_adding_an_assistant_saves_version_1(ada_client):
    url = reverse("admin:assistant_assistant_add")
    data = form_data(
        ada_client,
        url,
        slug="schreibhilfe",
        name="Schreibhilfe",
        icon="pen",
        instructions="Du bist die Schreibhilfe.",
        starters="Kürze diesen Text.\n\n  Prüfe die Rechtschreibung.  \n",
        everyone=True,
        active=True,
        position="3",
    )

    saved(ada_client.post(url, data))

    assistant = Assistant.objects.get(slug="schreibhilfe")
    assert (assistant.current.number, assistant.current.created_by) == (1, "ada")
    assert assistant.current.starters == ["Kürze diesen Text.", "Prüfe die Rechtschreibung."]
    assert assistant.current.phases == []
    assert assistant.current.temperature is None


def test_the_change_page_shows_every_version_read_only(ada_client, coaching):
    version_save(
        coaching,
        {**version_values(coaching.current), "instructions": "Zweite Fassung.\n<b>fett</b>"},
        by="ada",
    )

    response = ada_client.get(change_url(coaching))
    page = response.content.decode()

    assert "Du bist ein Coach.<br>Du duzt." in page  # version 1's instructions, whole
    assert "Zweite Fassung.<br>&lt;b&gt;fett&lt;/b&gt;" in page
    assert "Situation" in page
    assert "Frag nach Beispielen.<br>Bewerte nicht." in page
    assert "setup" in page
    assert 'name="versions-0-instructions"' not in page
    versions = response.context["inline_admin_formsets"][0]
    assert [form.original.number for form in versions] == [2, 1]
    assert not versions.has_add_permission
    assert not versions.has_change_permission
    assert not versions.has_delete_permission


def test_the_list_shows_name_slug_state_version_and_access(ada_client, coaching, bob):
    private = Assistant.objects.create(slug="intern", everyone=False, active=False)
    version_save(private, {"name": "Intern", "instructions": "Nur intern."}, by="setup")
    version_save(private, {"name": "Intern 2", "instructions": "Nur intern."}, by="setup")
    private.groups.add(Group.objects.create(name="Vertrieb"))
    private.users.add(bob)

    response = ada_client.get(reverse("admin:assistant_assistant_changelist"))
    page = response.content.decode()

    rows = response.context["cl"].result_list
    assert [a.slug for a in rows] == ["intern", "coaching"]
    assert "Intern 2" in page
    assert "group Vertrieb, bob" in page
    assert ">everyone<" in page


def test_deleting_an_assistant_with_conversations_is_refused(ada_client, coaching, alice):
    Conversation.objects.create(
        owner=alice, model="demo", title="Meine Gehaltsfrage", assistant_version=coaching.current
    )
    url = reverse("admin:assistant_assistant_delete", args=[coaching.pk])

    page = ada_client.get(url).content.decode()
    ada_client.post(url, {"post": "yes"})

    assert "Coaching: 1 conversation ran with it. Retire it instead: untick “active”." in page
    assert "Meine Gehaltsfrage" not in page
    assert Assistant.objects.filter(pk=coaching.pk).exists()
    assert coaching.versions.count() == 1


def test_deleting_several_with_conversations_is_refused_too(ada_client, coaching, alice):
    Conversation.objects.create(owner=alice, model="demo", assistant_version=coaching.current)
    Conversation.objects.create(owner=alice, model="demo", assistant_version=coaching.current)
    unused = Assistant.objects.create(slug="unused")
    version_save(unused, {"name": "Unbenutzt", "instructions": "x"}, by="setup")

    response = ada_client.post(
        reverse("admin:assistant_assistant_changelist"),
        {"action": "delete_selected", "_selected_action": [coaching.pk, unused.pk], "post": "yes"},
    )

    assert "Coaching: 2 conversations ran with it." in response.content.decode()
    assert Assistant.objects.count() == 2


def test_deleting_an_assistant_nobody_used_removes_its_versions(ada_client, coaching):
    url = reverse("admin:assistant_assistant_delete", args=[coaching.pk])

    response = ada_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Assistant.objects.exists()
    assert not AssistantVersion.objects.exists()


def test_staff_need_the_model_permissions(coaching):
    staff = get_user_model().objects.create_user("sam", password="sam-password-1", is_staff=True)
    client = logged_in(staff)
    url = change_url(coaching)
    assert client.get(url).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_assistant"))
    viewing = client.get(url)
    assert viewing.status_code == 200
    assert "Du bist ein Coach.<br>Du duzt." in viewing.content.decode()  # the versions, read-only
    assert client.post(url, form_data(client, url, name="Neu")).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="change_assistant"))
    client = logged_in(staff)
    saved(client.post(url, form_data(client, url, name="Neu")))
    coaching.refresh_from_db()
    assert (coaching.current.name, coaching.current.created_by) == ("Neu", "sam")
