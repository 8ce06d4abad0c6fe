"""Company assistants and guided flows through the API: who may use which, the version a
conversation keeps, what goes upstream, and a flow's phases over a real daphne against the
fake upstream's streamed tool calls."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from assistant.models import Assistant, Conversation, Message, Preferences, UsageRecord
from assistant.personas.versions import version_clean, version_save
from tests.helpers.chat import create_conversation, fake, last_answer_request, send, stream_answer, text_of
from tests.helpers.sse import answer_events

PHASES = [
    {"title": "Situation", "goal": "Die Lage ist klar.", "instructions": "Frag nach der Lage."},
    {"title": "Ziel", "goal": "Das Ziel ist klar.", "instructions": "Frag nach dem Ziel."},
    {"title": "Optionen", "goal": "Optionen liegen vor.", "instructions": "Sammle Optionen."},
    {"title": "Nächste Schritte", "goal": "Schritte stehen fest.", "instructions": "Plane Schritte."},
]


def make_assistant(slug: str, *, phases=None, everyone: bool = True, **values) -> Assistant:
    assistant = Assistant.objects.create(slug=slug, everyone=everyone)
    version_save(
        assistant,
        {"name": slug.title(), "instructions": f"Du bist {slug}.", "phases": phases or [], **values},
        by="admin",
    )
    return assistant


def complete_phase(summary: str, text: str = "Gut, weiter.") -> str:
    """A question the fake upstream answers with `text` and a complete_phase call."""
    return fake(text=text, tool_calls=[{"name": "complete_phase", "arguments": {"summary": summary}}])


def system_of(request: dict) -> str:
    messages = request["body"]["messages"]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


# --- versions ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_version_is_added_only_when_a_version_field_changes():
    assistant = make_assistant("helfer", temperature=0.5)
    first = assistant.current

    assert version_save(assistant, {"name": "Helfer", "instructions": "Du bist helfer."}, by="x") is not None
    assistant.refresh_from_db()
    second = assistant.current
    unchanged = version_save(assistant, {"name": "Helfer", "instructions": "Du bist helfer."}, by="x")

    assert (first.number, second.number, unchanged) == (1, 2, None)
    first.refresh_from_db()
    assert first.temperature == 0.5  # the earlier version stays as it was
    assert second.temperature is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"name": "", "instructions": "x"}, "name"),
        ({"name": "A", "instructions": "  "}, "instructions"),
        ({"name": "A", "instructions": "x", "model": "not-allowed"}, "model"),
        ({"name": "A", "instructions": "x", "temperature": 2.5}, "temperature"),
        ({"name": "A", "instructions": "x", "temperature": True}, "temperature"),
        ({"name": "A", "instructions": "x", "max_tokens": 0}, "max_tokens"),
        ({"name": "A", "instructions": "x", "icon": "rocket"}, "icon"),
        ({"name": "A", "instructions": "x", "starters": ["ok", ""]}, "starters"),
        ({"name": "A", "instructions": "x", "phases": [{"title": "T", "goal": "G"}]}, "phases"),
        ({"name": "A", "instructions": "x", "phases": "Situation"}, "phases"),
    ],
)
def test_version_values_are_checked(values, field):
    with pytest.raises(ValidationError) as raised:
        version_clean(values)
    assert field in raised.value.message_dict


# --- who may use which --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_holds_only_the_assistants_the_user_may_use(alice, bob, alice_client, bob_client):
    sales = Group.objects.create(name="Vertrieb")
    alice.groups.add(sales)
    make_assistant("offen")
    make_assistant("vertrieb", everyone=False).groups.add(sales)
    make_assistant("persoenlich", everyone=False).users.add(bob)
    retired = make_assistant("alt")
    retired.active = False
    retired.save()

    def listed(client):
        response = client.get("/api/assistants/")
        assert response.status_code == 200
        return [a["slug"] for a in response.json()["assistants"]]

    assert sorted(listed(alice_client)) == ["offen", "vertrieb"]
    assert sorted(listed(bob_client)) == ["offen", "persoenlich"]
    for client, slug in [(bob_client, "vertrieb"), (alice_client, "persoenlich"), (alice_client, "alt")]:
        response = client.post("/api/conversations/", {"assistant": slug}, content_type="application/json")
        assert response.status_code == 404, slug
        assert response.json()["error"]["code"] == "not_found"
    assert not Conversation.objects.exists()


@pytest.mark.django_db
def test_the_gallery_entry_shows_the_current_version(alice_client):
    make_assistant(
        "coaching", phases=PHASES, description="Vier Schritte", starters=["Los geht's"], icon="compass"
    )

    (entry,) = alice_client.get("/api/assistants/").json()["assistants"]

    assert entry == {
        "slug": "coaching",
        "name": "Coaching",
        "description": "Vier Schritte",
        "icon": "compass",
        "starters": ["Los geht's"],
        "flow": {"phases": [{"title": p["title"], "goal": p["goal"]} for p in PHASES]},
    }


# --- over a real server -----------------------------------------------------------------------------


@pytest.mark.live
def test_a_conversation_keeps_its_version_when_the_assistant_is_edited(alice_http, upstream):
    assistant = make_assistant("helfer", temperature=0.3, max_tokens=300)
    conversation = create_conversation(alice_http, assistant="helfer")
    assert conversation["assistant"] == {
        "slug": "helfer",
        "name": "Helfer",
        "icon": "sparkles",
        "version": 1,
        "retired": False,
    }
    stream_answer(alice_http, conversation, send(alice_http, conversation, fake(text="Eins")))
    version_save(
        assistant, {"name": "Helfer", "instructions": "Neue Regeln.", "temperature": 1.0}, by="admin"
    )

    stream_answer(alice_http, conversation, send(alice_http, conversation, fake(text="Zwei")))

    request = last_answer_request(upstream)
    assert system_of(request) == "Du bist helfer."
    assert (request["body"]["temperature"], request["body"]["max_tokens"]) == (0.3, 300)
    assert "tools" not in request["body"]
    assert Conversation.objects.get(pk=conversation["id"]).assistant_version.number == 1
    # A new conversation runs with the new version.
    newer = create_conversation(alice_http, assistant="helfer")
    stream_answer(alice_http, newer, send(alice_http, newer, fake(text="Drei")))
    assert system_of(last_answer_request(upstream)) == "Neue Regeln."
    assert newer["assistant"]["version"] == 2


@pytest.mark.live
def test_personal_instructions_go_upstream_and_count_toward_usage(alice, alice_http, upstream):
    make_assistant("helfer", model="")
    Preferences.objects.create(user=alice, about_me="Ich arbeite im Einkauf.", answer_style="Kurz, bitte.")
    upstream.set(usage=False)  # the tokens are estimated from the characters sent

    conversation = create_conversation(alice_http, assistant="helfer", content=fake(text="Hallo"))
    events = stream_answer(alice_http, conversation, conversation)

    assert text_of(events) == "Hallo"
    system = system_of(last_answer_request(upstream))
    assert system == "Du bist helfer.\n\nAbout the user: Ich arbeite im Einkauf.\nHow to answer: Kurz, bitte."
    record = UsageRecord.objects.get(message_id=conversation["assistant_message"]["id"])
    assert record.assistant == "helfer"
    question = Message.objects.get(pk=conversation["user_message"]["id"]).content
    assert record.prompt_tokens == -(-(len(system) + len(question)) // 3)
    # Later edits of the preferences apply to chats started after them, not to this one.
    Preferences.objects.filter(user=alice).update(answer_style="Ausführlich.")
    stream_answer(alice_http, conversation, send(alice_http, conversation, fake(text="Noch")))
    assert "Kurz, bitte." in system_of(last_answer_request(upstream))


@pytest.mark.live
def test_a_retired_assistant_keeps_its_conversations_readable_but_closed(alice_http, upstream):
    assistant = make_assistant("helfer")
    conversation = create_conversation(alice_http, assistant="helfer", content=fake(text="Hallo"))
    stream_answer(alice_http, conversation, conversation)
    assistant.active = False
    assistant.save()

    shown = alice_http.get(conversation["detail_url"])
    refused = alice_http.post(conversation["messages_url"], json={"content": "Noch was?"})
    retried = alice_http.post(f"/api/messages/{conversation['assistant_message']['id']}/retry/")

    assert shown.status_code == 200
    assert shown.json()["assistant"]["retired"] is True
    assert [m["content"] for m in shown.json()["messages"]][1] == "Hallo"
    for response in (refused, retried):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "assistant_unavailable"
    assert Message.objects.filter(conversation_id=conversation["id"]).count() == 2


@pytest.mark.live
def test_a_flow_runs_through_its_phases_with_a_reload_in_phase_two(alice_http, upstream):
    make_assistant("coaching", phases=PHASES)
    conversation = create_conversation(alice_http, assistant="coaching")
    assert conversation["flow"]["phase"] == 1
    assert conversation["flow"]["total"] == 4

    # Phase 1: the model writes, then calls complete_phase with its arguments in pieces.
    sent = send(alice_http, conversation, complete_phase("Neues Team, zu viele Meetings."))
    events = stream_answer(alice_http, conversation, sent)
    request = last_answer_request(upstream)
    assert "Guided flow, phase 1 of 4: Situation" in system_of(request)
    assert [t["function"]["name"] for t in request["body"]["tools"]] == ["complete_phase"]
    kinds = [e.event for e in events]
    assert kinds[0] == "start"
    assert kinds[-2:] == ["phase", "done"]
    phase = events[-2].json()
    assert phase == {
        "message": sent["assistant_message"]["id"],
        "phase": 2,
        "total": 4,
        "title": "Ziel",
        "finished": False,
        "completed": {
            "phase": 1,
            "title": "Situation",
            "by": "model",
            "summary": "Neues Team, zu viele Meetings.",
            "points": [],
        },
    }
    assert events[-1].json()["finish_reason"] == "tool_calls"
    assert text_of(events) == "Gut, weiter."

    # A reload in phase 2: the stored state says so, and the stream replays the phase event.
    reloaded = alice_http.get(conversation["detail_url"]).json()
    assert (reloaded["flow"]["phase"], reloaded["flow"]["completed"][0]["summary"]) == (
        2,
        "Neues Team, zu viele Meetings.",
    )
    answer = reloaded["messages"][-1]
    assert (answer["phase"], answer["phase_summary"]["by"]) == (1, "model")
    replayed = stream_answer(alice_http, conversation, sent)
    assert [e.event for e in replayed][-2:] == ["phase", "done"]
    assert replayed[-2].id == events[-2].id

    # Phase 2: the next answer is written in it, with phase 1's summary in its context.
    sent = send(alice_http, conversation, fake(text="Was willst du erreichen?"))
    stream_answer(alice_http, conversation, sent)
    system = system_of(last_answer_request(upstream))
    assert "Guided flow, phase 2 of 4: Ziel" in system
    assert "- Situation: Neues Team, zu viele Meetings." in system
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).phase == 2

    # The user moves on by themselves; then the model ends phases 3 and 4.
    moved = alice_http.post(f"/api/conversations/{conversation['id']}/next-phase/")
    assert moved.status_code == 200, moved.text
    assert moved.json()["flow"]["phase"] == 3
    assert moved.json()["flow"]["completed"][1]["by"] == "user"
    for summary in ("Drei Wege.", "Morgen anfangen."):
        stream_answer(alice_http, conversation, send(alice_http, conversation, complete_phase(summary)))
    final = alice_http.get(conversation["detail_url"]).json()["flow"]
    assert (final["finished"], final["phase"], len(final["completed"])) == (True, 4, 4)
    stream_answer(alice_http, conversation, send(alice_http, conversation, fake(text="Fertig.")))
    request = last_answer_request(upstream)
    assert "Guided flow finished." in system_of(request)
    assert "tools" not in request["body"]
    assert alice_http.post(f"/api/conversations/{conversation['id']}/next-phase/").json()["error"][
        "code"
    ] == ("flow_finished")


@pytest.mark.live
def test_next_phase_publishes_to_an_open_stream(alice_http, upstream):
    make_assistant("coaching", phases=PHASES)
    conversation = create_conversation(alice_http, assistant="coaching")
    early = alice_http.post(f"/api/conversations/{conversation['id']}/next-phase/")
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "no_answer_yet"
    sent = send(alice_http, conversation, fake(text="Erzähl mehr."))
    events = stream_answer(alice_http, conversation, sent)

    with alice_http.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": events[-1].id}
    ) as response:
        assert alice_http.post(f"/api/conversations/{conversation['id']}/next-phase/").status_code == 200
        phase = next(
            e for e in answer_events(response, sent["assistant_message"]["id"]) if e.event == "phase"
        )

    assert (phase.json()["phase"], phase.json()["completed"]["by"]) == (2, "user")


@pytest.mark.live
@pytest.mark.parametrize(
    "calls",
    [
        [{"name": "delete_everything", "arguments": {}}],
        [{"name": "complete_phase", "arguments": "not json"}],
        [{"name": "complete_phase", "arguments": {"points": ["ohne Zusammenfassung"]}}],
        [{"name": "complete_phase", "arguments": {"summary": "a"}}] * 2,
    ],
    ids=["unknown tool", "arguments not json", "no summary", "twice"],
)
def test_a_tool_call_that_is_not_the_tools_is_an_error_and_keeps_the_text(alice_http, upstream, calls):
    make_assistant("coaching", phases=PHASES)
    conversation = create_conversation(alice_http, assistant="coaching")
    sent = send(alice_http, conversation, fake(text="Teil eins", tool_calls=calls))

    events = stream_answer(alice_http, conversation, sent)

    error = events[-1]
    assert error.event == "error"
    assert (error.json()["type"], error.json()["retryable"]) == ("tool_error", True)
    answer = Message.objects.get(pk=sent["assistant_message"]["id"])
    assert (answer.status, answer.content, answer.phase_summary) == ("error", "Teil eins", None)
    assert alice_http.get(conversation["detail_url"]).json()["flow"]["phase"] == 1


@pytest.mark.live
def test_regenerating_the_answer_that_ended_a_phase_reopens_it(alice_http, upstream):
    make_assistant("coaching", phases=PHASES)
    conversation = create_conversation(alice_http, assistant="coaching")
    sent = send(alice_http, conversation, complete_phase("Erste Fassung."))
    stream_answer(alice_http, conversation, sent)
    assert alice_http.get(conversation["detail_url"]).json()["flow"]["phase"] == 2

    retried = alice_http.post(f"/api/messages/{sent['assistant_message']['id']}/retry/")
    assert retried.status_code == 202, retried.text
    stream_answer(alice_http, conversation, retried.json())

    # The regeneration's question is the same, so the fake upstream ends the phase again.
    state = alice_http.get(conversation["detail_url"]).json()
    assert state["flow"]["phase"] == 2
    assert len(state["flow"]["completed"]) == 1
    assert Message.objects.get(pk=retried.json()["assistant_message"]["id"]).phase == 1
    assert state["messages"][-1]["phase_summary"]["summary"] == "Erste Fassung."
    # The earlier version keeps its end, out of the shown branch.
    earlier = Message.objects.get(pk=sent["assistant_message"]["id"])
    assert (earlier.superseded, earlier.phase_summary["summary"]) == (True, "Erste Fassung.")
