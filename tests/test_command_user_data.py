"""user_data: everything about one person, exported (GDPR Art. 15) or erased (Art. 17)."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from django.utils import timezone

from assistant.generation import leases
from assistant.models import AccessLog, Conversation, DeletionRecord, Message, Preferences, UsageRecord
from assistant.staff.common import Period
from assistant.staff.usage_report import usage_report
from tests.helpers.commands import conversation_with, run


@pytest.fixture
def carol(db):
    return get_user_model().objects.create_user(
        "carol", email="carol@example.com", first_name="Carol", password="carol-password-1", is_staff=True
    )


@pytest.fixture
def alice_data(alice, bob, carol):
    """alice's conversations (one rated), her personal instructions, bob's conversation, and
    access log rows naming alice both ways."""
    mine = conversation_with(alice, title="Gehaltsverhandlung", answers=2)
    Preferences.objects.create(user=alice, about_me="Teamleiterin im Einkauf", answer_style="kurz, per du")
    conversation_with(alice, title="Urlaub")
    answer = mine.messages.filter(role="assistant").first()
    answer.feedback, answer.feedback_comment = -1, "zu lang"
    answer.save()
    theirs = conversation_with(bob, title="Bobs Frage")
    AccessLog.objects.create(
        reviewer=carol,
        reviewer_username="carol",
        owner=alice,
        owner_username="alice",
        conversation_id=mine.pk,
        reason="Support: alice asked for help",
    )
    AccessLog.objects.create(
        reviewer=alice,
        reviewer_username="alice",
        owner=bob,
        owner_username="bob",
        conversation_id=theirs.pk,
        reason="Quality review",
    )
    return mine


# --- export --------------------------------------------------------------------------------


def test_user_data_export_holds_everything_about_the_user(alice_data, alice):
    out, err = run("user_data", "export", "alice", "--actor", "dpo@example.com")

    data = json.loads(out)
    assert data["account"]["username"] == "alice"
    assert "password" not in json.dumps(data["account"])
    assert sorted(c["title"] for c in data["conversations"]) == ["Gehaltsverhandlung", "Urlaub"]
    assert len(data["conversations"][0]["messages"]) == 4
    assert [(f["feedback"], f["feedback_comment"]) for f in data["feedback"]] == [("down", "zu lang")]
    # Reading her conversations for the export is on the record, and in the export.
    assert [(e["reviewer"], e["reason"]) for e in data["access_log"]["about_them"]] == [
        ("carol", "Support: alice asked for help"),
        ("dpo@example.com", "export: the user's own data, at their request (GDPR Art. 15)"),
        ("dpo@example.com", "export: the user's own data, at their request (GDPR Art. 15)"),
    ]
    assert [e["owner"] for e in data["access_log"]["by_them"]] == ["bob"]
    assert "Bobs Frage" not in out
    assert "Exported alice: 2 conversations (6 messages), 1 ratings" in err
    assert "their personal instructions" in err


def test_user_data_export_to_a_file(alice_data, tmp_path):
    target = tmp_path / "alice.json"
    out, _err = run("user_data", "export", "alice", "--output", str(target))
    assert out == ""
    assert json.loads(target.read_text(encoding="utf-8"))["account"]["username"] == "alice"


def test_user_data_export_to_an_unwritable_path_is_refused(alice_data, tmp_path):
    with pytest.raises(CommandError, match="Cannot write"):
        run("user_data", "export", "alice", "--output", str(tmp_path / "nope" / "alice.json"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["export", "delete"])
def test_user_data_refuses_an_unknown_user(db, action):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("user_data", action, "nobody", "--yes" if action == "delete" else "--output=-")


# --- delete --------------------------------------------------------------------------------


def counts() -> tuple[int, int, int, int, int, int]:
    return (
        get_user_model().objects.count(),
        Conversation.objects.count(),
        Message.objects.count(),
        AccessLog.objects.filter(owner_username="alice").count(),
        DeletionRecord.objects.count(),
        Preferences.objects.count(),
    )


def test_user_data_delete_needs_yes(alice_data):
    before = counts()
    with pytest.raises(CommandError, match="add --yes"):
        run("user_data", "delete", "alice")
    assert counts() == before


def test_user_data_delete_dry_run_changes_nothing(alice_data):
    before = counts()
    out, _err = run("user_data", "delete", "alice", "--dry-run")
    assert counts() == before
    assert (
        "would stop 0 streaming answers, delete 2 conversations (6 messages, 1 rated answers) "
        "and their personal instructions" in out
    )
    assert (
        "anonymise 2 access log rows and the usage of 3 answers (kept as counts), and delete the account"
        in out
    )


def test_user_data_delete_erases_the_data_and_the_account(alice_data, alice, bob):
    out, _err = run("user_data", "delete", "alice", "--yes", "--actor", "dpo@example.com")

    assert not get_user_model().objects.filter(username="alice").exists()
    assert list(Conversation.objects.values_list("title", flat=True)) == ["Bobs Frage"]
    assert Message.objects.filter(conversation__owner=bob).count() == 2
    name = f"deleted user #{alice.pk}"
    about, by = AccessLog.objects.get(reviewer_username="carol"), AccessLog.objects.get(owner_username="bob")
    assert (about.owner_id, about.owner_username, about.reason) == (
        None,
        name,
        "Support: alice asked for help",
    )
    assert (by.reviewer_id, by.reviewer_username) == (None, name)
    record = DeletionRecord.objects.get()
    assert (record.kind, record.actor, record.conversations, record.messages) == (
        "user_data",
        "dpo@example.com",
        2,
        6,
    )
    assert record.parameters == {
        "user_id": alice.pk,
        "account": "deleted",
        "access_log_anonymised": 2,
        "usage_answers_anonymised": 3,
        "preferences_deleted": 1,
        "api_tokens_deleted": 0,
        "documents_deleted": 0,
        "chunks_deleted": 0,
        "vectors_deleted": 0,
    }
    assert not Preferences.objects.exists()
    assert "alice" not in json.dumps(record.parameters)
    assert "Einkauf" not in json.dumps(record.parameters)
    assert "Gehalt" not in str(record.__dict__)
    assert f"Deletion record #{record.pk}" in out


def test_user_data_delete_can_keep_the_account(alice_data, alice):
    run("user_data", "delete", "alice", "--yes", "--keep-account")
    alice.refresh_from_db()
    assert alice.is_active
    assert not Conversation.objects.filter(owner=alice).exists()
    assert not Preferences.objects.filter(user=alice).exists()  # her data, though she stays
    assert DeletionRecord.objects.get().parameters["account"] == "kept"


def test_user_data_delete_stops_streaming_answers_first(alice_data, alice, monkeypatch):
    streaming = conversation_with(alice, status="streaming")
    answer = streaming.messages.get(role="assistant")
    stopped = []
    original = leases.cancel_anywhere

    def cancel_anywhere(message_id):
        stopped.append((message_id, Message.objects.filter(pk=message_id).exists()))
        original(message_id)

    monkeypatch.setattr(leases, "cancel_anywhere", cancel_anywhere)
    run("user_data", "delete", "alice", "--yes")

    assert stopped == [(answer.pk, True)]  # asked to stop while the row still existed
    assert not Message.objects.filter(pk=answer.pk).exists()


def usage_rows() -> list[tuple]:
    return list(
        UsageRecord.objects.order_by("pk").values_list(
            "user", "message_id", "model", "created_at", "answers", "prompt_tokens", "completion_tokens"
        )
    )


def test_user_data_delete_keeps_usage_only_anonymised_and_counted(alice_data, alice, bob):
    """Art. 17: no row names alice or one of her messages; the counts and tokens stay."""
    conversation_with(alice, title="Vorgestern", model="other-model", days_ago=2, prompt_tokens=5)
    bobs = [row for row in usage_rows() if row[0] == bob.pk]
    before = usage_report(period=Period(), by=("model", "day"))

    run("user_data", "delete", "alice", "--yes")

    after = usage_report(period=Period(), by=("model", "day"))
    assert [(r.key, r.answers, r.prompt_tokens, r.completion_tokens) for r in after.rows] == [
        (r.key, r.answers, r.prompt_tokens, r.completion_tokens) for r in before.rows
    ]
    anonymous = [row for row in usage_rows() if row[0] != bob.pk]
    today = timezone.localdate()
    two_days_ago = today - timedelta(days=2)

    def day_start(day):
        return timezone.make_aware(datetime.combine(day, time.min))

    # One row per local day and model, at the day's start: no user, no message, counted.
    assert sorted(anonymous, key=lambda row: row[3]) == [
        (None, None, "other-model", day_start(two_days_ago), 1, 5, 20),
        (None, None, "demo", day_start(today), 3, 30, 60),
    ]
    assert [row for row in usage_rows() if row[0] == bob.pk] == bobs
    assert DeletionRecord.objects.get().parameters["usage_answers_anonymised"] == 4


def test_user_data_delete_adds_to_the_days_anonymous_usage(alice_data, alice, bob):
    """A second erasure on the same day joins the first one's row: nothing tells them apart."""
    run("user_data", "delete", "bob", "--yes")
    run("user_data", "delete", "alice", "--yes")

    assert [row[:2] + row[4:] for row in usage_rows()] == [(None, None, 4, 40, 80)]
