"""Reports and governance know about assistants: the reviewer's transcript (the version's
instructions and phases, each answer's phase), the exports, usage per assistant, the
erasure of a person's personal instructions, and retired assistants staying readable."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from assistant import review
from assistant.models import (
    AccessLog,
    Assistant,
    AssistantVersion,
    Conversation,
    DeletionRecord,
    Message,
    Preferences,
    UsageRecord,
)
from assistant.staff.common import Period
from assistant.staff.usage_report import usage_report
from tests.helpers.commands import run
from tests.helpers.live import logged_in

REASON = {"purpose": "support", "details": "Ticket 4711: alice asked for help"}
EXPORT_REASON = ("--reason", "Revision der Coaching-Gespräche", "--actor", "ops@host")
PHASES = [
    {"title": "Situation", "goal": "Die Lage ist klar", "instructions": "Frag nach der Lage."},
    {"title": "Ziel", "goal": "Ein Ziel ist benannt", "instructions": "Frag nach dem Ziel."},
    {"title": "Optionen", "goal": "Drei Optionen", "instructions": "Sammle Optionen."},
    {"title": "Nächste Schritte", "goal": "Ein erster Schritt", "instructions": "Plane den Schritt."},
]
INSTRUCTIONS = "Du bist ein <b>Coach</b>.\nDu stellst offene Fragen."
PERSONAL = "About the user: Teamleiterin im Einkauf\nHow to answer: kurz, per du"


@pytest.fixture
def rita(db):
    user = get_user_model().objects.create_user("rita", password="rita-password-1")
    review.reviewer_grant(user=user)
    return user


@pytest.fixture
def rita_client(rita):
    return logged_in(rita)


@pytest.fixture
def coaching(db) -> Assistant:
    """The coaching flow at version 3 (versions 1 and 2 before it)."""
    assistant = Assistant.objects.create(slug="coaching")
    for number in (1, 2, 3):
        version = AssistantVersion.objects.create(
            assistant=assistant,
            number=number,
            name="Coaching",
            instructions=INSTRUCTIONS if number == 3 else f"Alte Anweisung {number}",
            phases=PHASES,
            temperature=0.3,
            created_by="ops",
        )
    assistant.current = version
    assistant.save()
    return assistant


@pytest.fixture
def flow(alice, coaching) -> Conversation:
    """alice's coaching conversation in phase 3: phase 1 ended by the model, phase 2 by her."""
    conversation = Conversation.objects.create(
        owner=alice,
        title="Mein Coaching",
        model="demo",
        assistant_version=coaching.current,
        personal_instructions=PERSONAL,
    )
    parent = None
    turns = [
        ("Mein Team ist zu klein", "Erzähl mehr.", 1, None),
        (
            "Zwei Leute fehlen",
            "Verstehe.",
            1,
            {"by": "model", "summary": "=Team zu klein", "points": ["zwei Stellen offen", "Überstunden"]},
        ),
        ("Ich will entlasten", "Gutes Ziel.", 2, {"by": "user", "summary": "Entlastung", "points": []}),
        ("Was geht?", "Drei Wege: …", 3, None),
    ]
    for question, answer, phase, summary in turns:
        asked = Message.objects.create(
            conversation=conversation, role="user", content=question, parent=parent
        )
        parent = Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=answer,
            model="demo",
            parent=asked,
            phase=phase,
            phase_summary=summary,
        )
    return conversation


def change_url(conversation: Conversation) -> str:
    return reverse("admin:assistant_conversation_change", args=[conversation.pk])


def reason_url(conversation: Conversation) -> str:
    return reverse("admin:assistant_conversation_review", args=[conversation.pk])


def transcript(client, conversation: Conversation) -> str:
    """The transcript as a reviewer opens it: the reason first, then the page."""
    assert client.post(reason_url(conversation), REASON).status_code == 302
    response = client.get(change_url(conversation))
    assert response.status_code == 200
    return response.content.decode()


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# --- the transcript ------------------------------------------------------------------------


def test_transcript_names_the_version_and_shows_its_instructions_phases_and_personal_ones(
    rita_client, rita, alice, flow
):
    page = transcript(rita_client, flow)

    entry = AccessLog.objects.get()
    assert (entry.reviewer, entry.owner, entry.conversation_id) == (rita, alice, flow.pk)
    assert entry.reason == "User support request: Ticket 4711: alice asked for help"
    assert "Coaching, version 3" in page
    # The instructions as text, line breaks kept: never as HTML.
    assert "Du bist ein &lt;b&gt;Coach&lt;/b&gt;.<br>Du stellst offene Fragen." in page
    assert "<b>Coach</b>" not in page
    assert "temperature 0.3" in page
    for phase in PHASES:
        assert phase["title"] in page
        assert phase["goal"] in page
        assert phase["instructions"] in page
    assert "About the user: Teamleiterin im Einkauf<br>How to answer: kurz, per du" in page
    assert "Alte Anweisung" not in page


def test_transcript_shows_each_answers_phase_and_how_its_phase_ended(rita_client, flow):
    page = transcript(rita_client, flow)

    labels = [
        line.split("<td>")[1].split("</td>")[0]
        for line in page.splitlines()
        if '<th scope="row">Phase</th>' in line
    ]
    assert labels == ["Phase 1/4 Situation", "Phase 1/4 Situation", "Phase 2/4 Ziel", "Phase 3/4 Optionen"]
    assert (
        "Ended by the model: =Team zu klein<ul><li>zwei Stellen offen</li><li>Überstunden</li></ul>" in page
    )
    assert "Ended by the user (next phase): Entlastung</td>" in page
    assert page.count('<th scope="row">Phase ended</th>') == 2


def test_transcript_keeps_the_version_the_conversation_ran_with(rita_client, coaching, flow):
    newer = AssistantVersion.objects.create(
        assistant=coaching,
        number=4,
        name="Coaching neu",
        instructions="Ganz neue Anweisung",
        phases=PHASES[:2],
    )
    coaching.current = newer
    coaching.save()

    page = transcript(rita_client, flow)

    assert "Coaching, version 3" in page
    assert "Du stellst offene Fragen." in page
    assert "Ganz neue Anweisung" not in page
    assert "Phase 2/4 Ziel" in page


def test_instructions_and_personal_instructions_stay_behind_the_reason(rita_client, flow):
    pages = [
        rita_client.get(reverse("admin:assistant_conversation_changelist")),
        rita_client.get(reverse("admin:assistant_message_changelist")),
        rita_client.get(change_url(flow), follow=True),  # the reason form
    ]

    for response in pages:
        assert response.status_code == 200
        page = response.content.decode()
        for content in ("offene Fragen", "Teamleiterin", "Frag nach der Lage", "Team zu klein"):
            assert content not in page
    assert not AccessLog.objects.exists()


def test_transcript_of_a_retired_assistant_stays_readable(rita_client, coaching, flow):
    coaching.active = False
    coaching.save()

    page = transcript(rita_client, flow)

    assert "Coaching, version 3 (retired)" in page
    assert "Du stellst offene Fragen." in page
    assert "Phase 2/4 Ziel" in page


def test_transcript_of_the_model_alone_says_so(rita_client, alice):
    conversation = Conversation.objects.create(owner=alice, title="Ohne", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="Hallo")

    page = transcript(rita_client, conversation)

    assert "none (the model alone)" in page
    assert "transcript-instructions" not in page
    assert '<th scope="row">Phase</th>' not in page


def test_transcript_with_an_assistant_takes_no_more_queries(rita_client, alice, flow):
    bare = Conversation.objects.create(owner=alice, title="Ohne", model="demo")
    for message in flow.messages.order_by("pk"):
        Message.objects.create(conversation=bare, role=message.role, content=message.content)
    for conversation in (bare, flow):
        rita_client.post(reason_url(conversation), REASON)

    counted = []
    for conversation in (bare, flow):
        with CaptureQueriesContext(connection) as queries:
            assert rita_client.get(change_url(conversation)).status_code == 200
        counted.append(len(queries))

    assert counted[0] == counted[1]


# --- exports -------------------------------------------------------------------------------


def test_export_command_carries_the_assistant_phases_and_parents(alice, flow):
    bare = Conversation.objects.create(owner=alice, title="Ohne", model="demo")

    out, _err = run("export_conversations", *EXPORT_REASON)

    exported = {line["id"]: line for line in jsonl(out)}
    coached = exported[str(flow.pk)]
    assert coached["assistant"] == {"slug": "coaching", "name": "Coaching", "version": 3}
    assert coached["personal_instructions"] == PERSONAL
    messages = coached["messages"]
    ids = [m["id"] for m in messages]
    assert [m["parent"] for m in messages] == [None, *ids[:-1]]
    assert [m["phase"] for m in messages] == [None, 1, None, 1, None, 2, None, 3]
    assert messages[3]["phase_summary"] == {
        "by": "model",
        "summary": "=Team zu klein",
        "points": ["zwei Stellen offen", "Überstunden"],
    }
    assert messages[5]["phase_summary"] == {"by": "user", "summary": "Entlastung", "points": []}
    assert messages[1]["phase_summary"] is None
    assert exported[str(bare.pk)]["assistant"] is None
    assert exported[str(bare.pk)]["personal_instructions"] == ""
    assert sorted(e.conversation_id for e in AccessLog.objects.all()) == sorted([flow.pk, bare.pk])


def test_export_command_as_csv_has_assistant_and_phase_columns(flow):
    out, _err = run("export_conversations", *EXPORT_REASON, "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["assistant"], r["assistant_name"], r["assistant_version"]) for r in rows} == {
        ("coaching", "Coaching", "3")
    }
    assert [r["phase"] for r in rows] == ["", "1", "", "1", "", "2", "", "3"]
    assert [r["parent_id"] for r in rows] == ["", *[r["message_id"] for r in rows[:-1]]]
    ended = rows[3]
    assert ended["phase_ended_by"] == "model"
    assert ended["phase_summary"] == "'=Team zu klein"  # inert in a spreadsheet
    assert ended["phase_points"] == "zwei Stellen offen\nÜberstunden"
    assert (rows[5]["phase_ended_by"], rows[5]["phase_summary"], rows[5]["phase_points"]) == (
        "user",
        "Entlastung",
        "",
    )
    assert rows[1]["phase_ended_by"] == rows[1]["phase_summary"] == ""


def test_admin_export_carries_the_assistant_and_logs_each(rita_client, rita, flow):
    data = {
        "action": "export_jsonl",
        "_selected_action": [flow.pk],
        "export_reason": "1",
        **REASON,
    }

    response = rita_client.post(reverse("admin:assistant_conversation_changelist"), data)

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    (exported,) = jsonl(async_to_sync(collect)().decode())
    assert exported["assistant"] == {"slug": "coaching", "name": "Coaching", "version": 3}
    assert [m["phase"] for m in exported["messages"]][-1] == 3
    entry = AccessLog.objects.get()
    assert (entry.reviewer, entry.conversation_id) == (rita, flow.pk)
    assert entry.reason == "export: User support request: Ticket 4711: alice asked for help"


def test_a_retired_assistants_conversations_export_and_download_as_before(alice_client, coaching, flow):
    coaching.active = False
    coaching.save()

    (exported,) = jsonl(run("export_conversations", *EXPORT_REASON)[0])
    response = alice_client.get(reverse("conversation_export_json", args=[flow.pk]))

    assert exported["assistant"] == {"slug": "coaching", "name": "Coaching", "version": 3}
    assert response.status_code == 200
    own = json.loads(response.content)
    assert own["assistant"] == exported["assistant"]
    assert own["personal_instructions"] == PERSONAL
    assert [m["phase"] for m in own["messages"]] == [m["phase"] for m in exported["messages"]]


# --- usage ---------------------------------------------------------------------------------


@pytest.fixture
def usage(alice, bob):
    now = timezone.now()
    rows = [
        (alice, "coaching", 100, 10),
        (alice, "coaching", 200, 20),
        (alice, "", 1000, 100),
        (bob, "coaching", 50, 5),
        (bob, "schreibhilfe", 7, 3),
    ]
    for n, (user, assistant, prompt, completion) in enumerate(rows):
        UsageRecord.objects.create(
            user=user,
            model="demo",
            assistant=assistant,
            created_at=now,
            message_id=1000 + n,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )


def test_usage_report_by_assistant(usage):
    out, _err = run("usage_report", "--by", "assistant", "--format", "csv")

    assert list(csv.reader(io.StringIO(out))) == [
        ["assistant", "answers", "prompt_tokens", "completion_tokens"],
        ["(none)", "1", "1000", "100"],
        ["coaching", "3", "350", "35"],
        ["schreibhilfe", "1", "7", "3"],
    ]


def test_usage_report_by_assistant_and_user_as_a_table(usage):
    out, _err = run("usage_report", "--by", "assistant,user")

    lines = [line.split() for line in out.splitlines()[3:] if line and not line.startswith("-")]
    assert out.splitlines()[1].split()[:2] == ["assistant", "user"]
    assert lines == [
        ["(none)", "alice", "1", "1000", "100"],
        ["coaching", "alice", "2", "300", "30"],
        ["coaching", "bob", "1", "50", "5"],
        ["schreibhilfe", "bob", "1", "7", "3"],
        ["total", "5", "1357", "138"],
    ]


def usage_by_assistant() -> list[tuple]:
    report = usage_report(period=Period(), by=("assistant", "model", "day"))
    return [(r.key, r.answers, r.prompt_tokens, r.completion_tokens) for r in report.rows]


def test_erasure_keeps_usage_per_assistant_and_the_totals(usage, alice, bob):
    before = usage_by_assistant()

    run("user_data", "delete", "alice", "--yes")

    assert usage_by_assistant() == before
    anonymous = UsageRecord.objects.filter(user=None).order_by("assistant")
    assert [(r.assistant, r.answers, r.prompt_tokens, r.completion_tokens) for r in anonymous] == [
        ("", 1, 1000, 100),
        ("coaching", 2, 300, 30),
    ]
    assert {r.message_id for r in anonymous} == {None}

    # A second erasure that day adds to the rows of the same assistant, and only to those.
    run("user_data", "delete", "bob", "--yes")

    assert usage_by_assistant() == before
    anonymous = UsageRecord.objects.order_by("assistant")
    assert [(r.user_id, r.assistant, r.answers, r.prompt_tokens) for r in anonymous] == [
        (None, "", 1, 1000),
        (None, "coaching", 3, 350),
        (None, "schreibhilfe", 1, 7),
    ]


# --- one person's data ---------------------------------------------------------------------


def test_user_data_export_has_preferences_and_each_conversations_assistant(alice, flow):
    Preferences.objects.create(user=alice, about_me="Teamleiterin im Einkauf", answer_style="kurz, per du")
    Conversation.objects.create(owner=alice, title="Ohne", model="demo")

    out, _err = run("user_data", "export", "alice", "--actor", "dpo@example.com")

    data = json.loads(out)
    assert data["preferences"]["about_me"] == "Teamleiterin im Einkauf"
    assert data["preferences"]["answer_style"] == "kurz, per du"
    by_title = {c["title"]: c for c in data["conversations"]}
    assert by_title["Mein Coaching"]["assistant"] == {"slug": "coaching", "name": "Coaching", "version": 3}
    assert by_title["Mein Coaching"]["personal_instructions"] == PERSONAL
    assert by_title["Mein Coaching"]["messages"][3]["phase_summary"]["summary"] == "=Team zu klein"
    assert by_title["Ohne"]["assistant"] is None


def test_user_data_export_without_preferences_says_none(alice):
    data = json.loads(run("user_data", "export", "alice")[0])
    assert data["preferences"] is None


def test_user_data_delete_erases_preferences_and_records_counts_only(alice, bob, coaching, flow):
    Preferences.objects.create(user=alice, about_me="Teamleiterin im Einkauf", answer_style="kurz")
    Preferences.objects.create(user=bob, about_me="Bob aus dem Vertrieb")

    dry, _err = run("user_data", "delete", "alice", "--dry-run")
    assert "and their personal instructions" in dry
    assert Preferences.objects.count() == 2

    out, _err = run("user_data", "delete", "alice", "--yes", "--keep-account")

    assert "and their personal instructions" in out
    assert list(Preferences.objects.values_list("user__username", flat=True)) == ["bob"]
    record = DeletionRecord.objects.get()
    assert (record.conversations, record.messages) == (1, 8)
    assert record.parameters["preferences_deleted"] == 1
    stored = json.dumps(record.parameters)
    for content in ("Einkauf", "kurz", "alice", "Coaching", "Team zu klein"):
        assert content not in stored
    # The version the conversation ran with stays: it is the assistant's, not hers.
    assert AssistantVersion.objects.filter(assistant=coaching).count() == 3


def test_user_data_delete_renames_the_saver_of_versions_and_keeps_them(alice, coaching):
    coaching.versions.filter(number=2).update(created_by="alice")

    run("user_data", "delete", "alice", "--yes")

    savers = dict(coaching.versions.values_list("number", "created_by"))
    assert savers == {1: "ops", 2: f"deleted user #{alice.pk}", 3: "ops"}
    assert coaching.versions.get(number=2).instructions == "Alte Anweisung 2"


def test_purge_deletes_old_conversations_of_an_assistant_and_keeps_its_versions(alice, coaching, flow):
    Preferences.objects.create(user=alice, about_me="Teamleiterin im Einkauf")
    moment = timezone.now() - timedelta(days=100)
    Conversation.objects.filter(pk=flow.pk).update(updated_at=moment)

    run("purge_conversations", "--older-than", "90", "--actor", "cron")

    assert not Conversation.objects.exists()
    assert AssistantVersion.objects.filter(assistant=coaching).count() == 3
    # Personal instructions are not conversations: retention leaves them.
    assert Preferences.objects.filter(user=alice).exists()
    assert DeletionRecord.objects.get().conversations == 1


@pytest.mark.parametrize("count", [1, 3])
def test_export_of_assistant_conversations_takes_the_same_few_queries(alice, coaching, count):
    for _ in range(count):
        conversation = Conversation.objects.create(
            owner=alice, model="demo", assistant_version=coaching.current
        )
        Message.objects.create(conversation=conversation, role="assistant", content="Hallo", phase=1)

    with CaptureQueriesContext(connection) as queries:
        out, _err = run("export_conversations", *EXPORT_REASON)

    assert [line["assistant"]["version"] for line in jsonl(out)] == [3] * count
    # The count for the summary, the conversations (their owners and versions joined),
    # their messages, the access log.
    assert len(queries) == 4


def test_own_download_of_a_flow_names_the_assistant_in_the_same_queries(
    alice_client, flow, django_assert_num_queries
):
    # The user, the conversation with its owner and version, its messages.
    with django_assert_num_queries(3):
        response = alice_client.get(reverse("conversation_export_json", args=[flow.pk]))
    assert json.loads(response.content)["assistant"]["name"] == "Coaching"


def test_own_markdown_download_names_the_assistant_phases_and_their_ends(alice_client, flow):
    response = alice_client.get(reverse("conversation_export_markdown", args=[flow.pk]))

    text = response.content.decode()
    assert text.startswith("# Mein Coaching\n\n*Coaching, version 3*\n")
    headings = [line for line in text.splitlines() if line.startswith("## Assistant")]
    assert [heading.rsplit(" · ", 1)[1] for heading in headings] == [
        "Phase 1/4 Situation",
        "Phase 1/4 Situation",
        "Phase 2/4 Ziel",
        "Phase 3/4 Optionen",
    ]
    assert "*Phase completed: =Team zu klein*" in text
    assert "*Phase completed: Entlastung*" in text
