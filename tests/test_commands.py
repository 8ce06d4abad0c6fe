"""Staff commands: export_conversations, purge_conversations, usage_report, and every
command's --help. user_data, check_llm, chat and create_users have files of their own
(tests/test_command_*.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command, load_command_class
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from assistant.events.log import PositionUnknown
from assistant.events.publish import publish, replay_log
from assistant.models import AccessLog, Conversation, DeletionRecord, Message, UsageRecord
from assistant.staff import common, export
from tests.helpers.commands import conversation_with, run

REASON = ("--reason", "Quartalsarchiv für die Revision", "--actor", "ops@host")
COMMANDS = [
    "export_conversations",
    "purge_conversations",
    "usage_report",
    "user_data",
    "check_llm",
    "chat",
    "create_users",
]


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# --- every command -------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_a_docstring_and_a_help_that_explains(name):
    command = load_command_class("assistant", name)
    module = __import__(type(command).__module__, fromlist=["__doc__"])
    assert module.__doc__
    assert "Why it exists" in module.__doc__
    text = command.create_parser("manage.py", name).format_help()
    assert len(command.help) > 100
    assert " ".join(command.help.split()[:5]) in " ".join(text.split())


# --- export_conversations ------------------------------------------------------------------


def test_export_writes_one_json_line_per_conversation_with_its_messages(alice, bob):
    first = conversation_with(alice, days_ago=2)
    second = conversation_with(bob, title="Zweite", answers=2)

    out, err = run("export_conversations", *REASON)

    lines = jsonl(out)
    assert [line["id"] for line in lines] == [str(first.pk), str(second.pk)]
    assert lines[0]["owner"] == "alice"
    assert lines[0]["title"] == "Reise nach Köln"
    assert [m["content"] for m in lines[1]["messages"]] == [
        "Frage 0: Grüße",
        "Antwort 0",
        "Frage 1: Grüße",
        "Antwort 1",
    ]
    assert "Grüße" in out  # UTF-8 as is, not \\u escapes
    assert "Exported 2 conversations (6 messages)" in err
    logged = AccessLog.objects.order_by("pk")
    assert [(e.conversation_id, e.owner_username, e.reviewer_username, e.reason) for e in logged] == [
        (first.pk, "alice", "ops@host", "export: Quartalsarchiv für die Revision"),
        (second.pk, "bob", "ops@host", "export: Quartalsarchiv für die Revision"),
    ]


@pytest.mark.parametrize("reason", [[], ["--reason", "weil"]])
def test_export_needs_a_reason_for_the_access_log(alice, reason):
    conversation_with(alice)
    with pytest.raises(CommandError, match="reason"):
        run("export_conversations", *reason)
    assert not AccessLog.objects.exists()


def test_export_filters_by_user_period_and_model(alice, bob):
    old = conversation_with(alice, days_ago=40)
    recent = conversation_with(alice, model="other-model")
    conversation_with(bob)
    today = timezone.localdate()

    def exported(*args: str) -> list[str]:
        return [line["id"] for line in jsonl(run("export_conversations", *REASON, *args)[0])]

    assert exported("--user", "alice") == [str(old.pk), str(recent.pk)]
    assert exported("--user", "alice", "--since", str(today - timedelta(days=1))) == [str(recent.pk)]
    assert exported("--until", str(today - timedelta(days=30))) == [str(old.pk)]
    assert exported("--model", "other-model") == [str(recent.pk)]


def test_export_as_csv_has_one_row_per_message_with_the_conversation_columns(alice):
    conversation = conversation_with(alice, content="=HYPERLINK('http://x')")
    empty = Conversation.objects.create(owner=alice, title="Leer", model="demo")

    out, _err = run("export_conversations", *REASON, "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["conversation_id"], row["role"]) for row in rows] == [
        (str(conversation.pk), "user"),
        (str(conversation.pk), "assistant"),
        (str(empty.pk), ""),
    ]
    assert rows[0]["title"] == "Reise nach Köln"
    assert rows[1]["content"] == "'=HYPERLINK('http://x')"  # a spreadsheet shows it, never runs it
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == ("10", "20")


@pytest.mark.parametrize("count", [1, 3])
def test_export_takes_the_same_few_queries_for_any_number_of_conversations(alice, count):
    for _ in range(count):
        conversation_with(alice, answers=2)
    with CaptureQueriesContext(connection) as queries:
        out, _err = run("export_conversations", *REASON, "--user", "alice")
    assert len(jsonl(out)) == count
    # The user, the count for the summary, the conversations, their messages, the access log.
    assert len(queries) == 5


def test_export_reads_in_chunks(alice):
    for _ in range(5):
        conversation_with(alice)
    conversations = export.conversations_select(owner=alice)
    with CaptureQueriesContext(connection) as queries:
        assert len(list(export.conversations_stream(conversations, chunk_size=2))) == 5
    # One query for the conversations, one per chunk of two for their messages.
    assert len(queries) == 1 + 3


def test_export_logs_each_chunk_before_writing_it(alice, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_CHUNK", 2)
    conversations = [conversation_with(alice) for _ in range(5)]
    written: list[int] = []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            written.append(AccessLog.objects.count())
            return super().write(text)

    out = Out()
    export.conversations_export(
        export.conversations_select(), out, actor="ops", reason="Archiv für die Revision"
    )

    assert [line["id"] for line in jsonl(out.getvalue())] == [str(c.pk) for c in conversations]
    assert written == [2, 2, 4, 4, 5]  # each line after its chunk is on the record


def test_export_to_a_file_writes_it_whole(alice, tmp_path):
    conversation_with(alice)
    target = tmp_path / "export.jsonl"

    out, err = run("export_conversations", *REASON, "--output", str(target))

    assert out == ""
    assert len(jsonl(target.read_text(encoding="utf-8"))) == 1
    assert os.stat(target).st_mode & 0o077 == 0  # the owner's only: it holds conversations
    assert list(tmp_path.iterdir()) == [target]
    assert str(target) in err


def test_export_that_fails_midway_leaves_no_file_and_keeps_an_old_one(alice, tmp_path, monkeypatch):
    conversation_with(alice)
    target = tmp_path / "export.jsonl"
    target.write_text("yesterday's export\n")

    def broken(conversations, out, **kwargs):
        out.write('{"half": ')
        raise common.StaffError("the database went away")

    monkeypatch.setattr(export, "conversations_export", broken)
    with pytest.raises(CommandError, match="the database went away"):
        run("export_conversations", *REASON, "--output", str(target))

    assert target.read_text() == "yesterday's export\n"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("where", ["missing-folder/export.jsonl", "."])
def test_export_to_an_unwritable_path_is_refused_before_any_work(alice, tmp_path, where):
    with CaptureQueriesContext(connection) as queries, pytest.raises(CommandError, match="Cannot write"):
        run("export_conversations", *REASON, "--output", str(tmp_path / where))
    assert len(queries) <= 1  # the user, nothing more
    assert not AccessLog.objects.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_export_to_a_read_only_folder_is_refused(alice, tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CommandError, match="Cannot write"):
            run("export_conversations", *REASON, "--output", str(tmp_path / "export.jsonl"))
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody"], "No user named 'nobody'"),
        (["--since", "2025-02-01", "--until", "2025-01-01"], "is after --until"),
        (["--since", "yesterday"], "must be a date"),
        (["--until", "2025-02-30"], "must be a date"),
    ],
)
def test_export_refuses_bad_input(alice, tmp_path, args, message):
    target = tmp_path / "export.jsonl"
    with pytest.raises(CommandError, match=message):
        run("export_conversations", *REASON, *args, "--output", str(target))
    assert not target.exists()


def test_export_reports_progress_on_stderr(alice, monkeypatch):
    from assistant.management.commands import export_conversations

    monkeypatch.setattr(export_conversations, "PROGRESS_EVERY", 2)
    for _ in range(5):
        conversation_with(alice)

    _out, err = run("export_conversations", *REASON, verbosity=2)
    assert "  2/5 conversations" in err
    assert "  4/5 conversations" in err

    _out, err = run("export_conversations", *REASON, verbosity=1)
    assert "/5 conversations" not in err  # a short run at normal verbosity: just the summary
    assert "Exported 5 conversations" in err

    _out, err = run("export_conversations", *REASON, verbosity=0)
    assert err == ""


# --- purge_conversations -------------------------------------------------------------------


@pytest.fixture
def aged(alice):
    """Conversations last active 200, 100 and 10 days ago."""
    return {
        days: conversation_with(alice, title=f"{days} Tage", days_ago=days, answers=1 + (days == 100))
        for days in (200, 100, 10)
    }


def test_purge_deletes_conversations_inactive_beyond_the_period(aged):
    out, _err = run("purge_conversations", "--older-than", "90d", "--actor", "cron@host")

    assert list(Conversation.objects.values_list("title", flat=True)) == ["10 Tage"]
    assert not Message.objects.exclude(conversation=aged[10]).exists()
    assert "Deleted 2 conversations (6 messages)" in out
    record = DeletionRecord.objects.get()
    assert (record.kind, record.actor, record.conversations, record.messages) == (
        "retention",
        "cron@host",
        2,
        6,
    )
    assert (record.oldest, record.newest) == (aged[200].updated_at, aged[100].updated_at)
    assert record.parameters["older_than_days"] == 90
    assert f"deletion record #{record.pk}" in out


def test_purge_records_no_content(aged):
    run("purge_conversations", "--older-than", "90")
    stored = json.dumps(list(DeletionRecord.objects.values()), default=str)
    assert "Tage" not in stored
    assert "Frage" not in stored
    assert "Antwort" not in stored


def test_purge_names_the_user_running_it_by_default(aged):
    run("purge_conversations", "--older-than", "90")
    assert DeletionRecord.objects.get().actor == common.shell_actor()


def test_purge_dry_run_changes_nothing(aged):
    out, _err = run("purge_conversations", "--older-than", "90d", "--dry-run", verbosity=2)

    assert Conversation.objects.count() == 3
    assert Message.objects.count() == 8
    assert not DeletionRecord.objects.exists()
    assert "would delete 2 conversations (6 messages)" in out
    assert str(aged[200].pk) in out
    assert str(aged[10].pk) not in out
    assert "Tage" not in out  # ids, never titles


def test_purge_deletes_in_batches_under_one_record(alice):
    for _ in range(5):
        conversation_with(alice, days_ago=100)

    out, _err = run("purge_conversations", "--older-than", "90d", "--batch-size", "2", verbosity=2)

    assert not Conversation.objects.exists()
    assert out.count("deleted") >= 3  # a line per batch at -v 2
    record = DeletionRecord.objects.get()
    assert (record.conversations, record.messages) == (5, 10)


def test_purge_keeps_a_conversation_whose_answer_is_streaming(alice):
    streaming = conversation_with(alice, days_ago=100, status="streaming")
    run("purge_conversations", "--older-than", "90d")
    assert Conversation.objects.filter(pk=streaming.pk).exists()
    assert not DeletionRecord.objects.exists()


def test_purge_drops_deleted_conversations_from_the_replay_log(aged):
    positions = {age: replay_log.current_id(c.channel) for age, c in aged.items()}
    for conversation in aged.values():
        publish(conversation.channel, "delta", {"message": 1, "text": "Inhalt"})

    run("purge_conversations", "--older-than", "90d")

    with pytest.raises(PositionUnknown):
        replay_log.since(aged[200].channel, positions[200])
    assert len(replay_log.since(aged[10].channel, positions[10])) == 1


def test_purge_uses_the_retention_setting(aged, settings):
    settings.ASSISTANT_RETENTION_DAYS = 150
    run("purge_conversations")
    assert sorted(Conversation.objects.values_list("title", flat=True)) == ["10 Tage", "100 Tage"]
    assert DeletionRecord.objects.get().parameters["older_than_days"] == 150


def test_purge_with_nothing_to_delete_records_nothing(aged):
    out, _err = run("purge_conversations", "--older-than", "365")
    assert "Nothing to delete" in out
    assert not DeletionRecord.objects.exists()


@pytest.mark.parametrize("value", ["0", "0d", "-5", "-5d", "ninety", "90x", "1.5"])
def test_purge_refuses_a_bad_period_and_changes_nothing(aged, value):
    with pytest.raises(CommandError, match="--older-than must be"):
        run("purge_conversations", f"--older-than={value}")
    assert Conversation.objects.count() == 3
    assert not DeletionRecord.objects.exists()


@pytest.mark.parametrize("value", [0, -30])
def test_purge_refuses_a_bad_retention_setting(aged, settings, value):
    settings.ASSISTANT_RETENTION_DAYS = value
    with pytest.raises(CommandError, match="ASSISTANT_RETENTION_DAYS must be at least one day"):
        run("purge_conversations")
    assert Conversation.objects.count() == 3


def test_purge_without_any_period_explains(aged, settings):
    settings.ASSISTANT_RETENTION_DAYS = None
    with pytest.raises(CommandError, match=r"give --older-than .* or set ASSISTANT_RETENTION_DAYS"):
        run("purge_conversations")
    assert Conversation.objects.count() == 3


def test_purge_refuses_a_batch_size_below_one(aged):
    with pytest.raises(CommandError, match="--batch-size"):
        run("purge_conversations", "--older-than", "90", "--batch-size", "0")
    assert Conversation.objects.count() == 3


# --- usage_report --------------------------------------------------------------------------


@pytest.fixture
def usage(alice, bob):
    conversation_with(alice, model="gpt-4o-mini", answers=2, prompt_tokens=1000, completion_tokens=500)
    conversation_with(alice, model="other-model", prompt_tokens=100, completion_tokens=50)
    conversation_with(bob, model="gpt-4o-mini", days_ago=3, prompt_tokens=2000, completion_tokens=1000)
    conversation_with(bob, model="gpt-4o-mini", days_ago=60, prompt_tokens=9999, completion_tokens=9999)


def table_rows(out: str) -> list[list[str]]:
    """The rows of a printed table, split at runs of spaces (title, heading and rules left out)."""
    lines = out.splitlines()[3:]
    return [line.split() for line in lines if line and not line.startswith("-")]


def test_usage_report_sums_answers_and_tokens_per_user_and_model(usage):
    out, _err = run("usage_report")

    assert "answers" in out.splitlines()[1]
    assert table_rows(out) == [
        ["alice", "gpt-4o-mini", "2", "2000", "1000"],
        ["alice", "other-model", "1", "100", "50"],
        ["bob", "gpt-4o-mini", "1", "2000", "1000"],  # the one of 60 days ago is outside
        ["total", "4", "4100", "2050"],
    ]


def test_usage_report_by_day_as_csv(usage):
    today = timezone.localdate()
    out, _err = run("usage_report", "--by", "day", "--format", "csv")
    assert list(csv.reader(io.StringIO(out))) == [
        ["day", "answers", "prompt_tokens", "completion_tokens"],
        [str(today - timedelta(days=3)), "1", "2000", "1000"],
        [str(today), "3", "2100", "1050"],
    ]


def test_usage_report_accepts_repeated_and_comma_separated_groups(usage):
    out, _err = run("usage_report", "--by", "model", "--by", "user,model", "--format", "csv")
    assert out.splitlines()[0] == "model,user,answers,prompt_tokens,completion_tokens"


def test_usage_report_adds_cost_for_priced_models(usage, settings):
    settings.ASSISTANT_MODEL_COSTS = {"gpt-4o-mini": [0.15, 0.60]}

    out, err = run("usage_report", "--by", "user", "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(out)))
    # alice: 2000 * 0.15 / 1e6 + 1000 * 0.60 / 1e6 = 0.0009 (other-model has no price)
    assert [(row["user"], row["cost_usd"]) for row in rows] == [("alice", "0.000900"), ("bob", "0.000900")]
    assert "No price in ASSISTANT_MODEL_COSTS for: other-model" in err


def test_usage_report_for_a_given_period(usage):
    today = timezone.localdate()
    since, until = str(today - timedelta(days=90)), str(today - timedelta(days=30))
    out, _err = run("usage_report", "--since", since, "--until", until, "--by", "user")
    assert table_rows(out) == [["bob", "1", "9999", "9999"], ["total", "1", "9999", "9999"]]
    assert f"Usage {since} to {until}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2025-03-01", "--until", "2025-02-01"], "is after --until"),
        (["--since", "01.02.2025"], "must be a date"),
        (["--by", "user,team"], "Unknown --by 'team'"),
    ],
)
def test_usage_report_refuses_bad_input(usage, args, message):
    with pytest.raises(CommandError, match=message):
        run("usage_report", *args)


def test_usage_report_counts_answers_of_deleted_conversations(usage, alice):
    before = run("usage_report")[0]
    Conversation.objects.filter(owner=alice).delete()
    run("purge_conversations", "--older-than", "30")  # bob's of 60 days ago

    assert Conversation.objects.count() == 1
    assert run("usage_report")[0] == before


def test_usage_report_shows_deleted_accounts_as_one_group(usage, bob):
    bob.delete()

    out, _err = run("usage_report", "--by", "user", "--format", "csv")

    assert list(csv.reader(io.StringIO(out)))[1:] == [
        ["(deleted users)", "1", "2000", "1000"],
        ["alice", "3", "2100", "1050"],
    ]


def test_usage_report_of_an_empty_period_shows_zero_totals(db):
    out, _err = run("usage_report")
    assert table_rows(out) == [["total", "0", "0", "0"]]


def test_atomic_output_leaves_no_temporary_file_behind(tmp_path):
    with common.atomic_output(tmp_path / "a.txt") as out:
        out.write("ganz")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert Path(tmp_path / "a.txt").read_text() == "ganz"


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ASSISTANT_RETENTION_DAYS", "0", "ASSISTANT_RETENTION_DAYS must be at least 1"),
        ("ASSISTANT_RETENTION_DAYS", "90d", "ASSISTANT_RETENTION_DAYS must be a whole number"),
        ("ASSISTANT_MODEL_COSTS", "{gpt: 1}", "ASSISTANT_MODEL_COSTS must be JSON"),
        ("ASSISTANT_MODEL_COSTS", '{"gpt-4o-mini": [0.15]}', "ASSISTANT_MODEL_COSTS must map each model"),
        ("ASSISTANT_MODEL_COSTS", '{"gpt-4o-mini": [-1, 2]}', "ASSISTANT_MODEL_COSTS must map each model"),
    ],
)
def test_governance_settings_refuse_junk(name, value, message):
    env = {**os.environ, name: value, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_governance_settings_read_the_environment():
    env = {
        **os.environ,
        "ASSISTANT_RETENTION_DAYS": "90",
        "ASSISTANT_MODEL_COSTS": '{"gpt-4o-mini": [0.15, 0.6]}',
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.ASSISTANT_RETENTION_DAYS, settings.ASSISTANT_MODEL_COSTS)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "90 {'gpt-4o-mini': [0.15, 0.6]}"


def test_usage_report_names_who_reached_the_daily_quota(alice, bob, settings):
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 100
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 20
    UsageRecord.objects.create(user=alice, model="fake-model", prompt_tokens=70, completion_tokens=40)
    UsageRecord.objects.create(user=bob, model="fake-model", prompt_tokens=10, completion_tokens=10)
    notes = io.StringIO()

    call_command("usage_report", stdout=io.StringIO(), stderr=notes)

    text = notes.getvalue()
    assert "Limits per user: 20 answers a minute, 100 tokens a day." in text
    assert f"Daily quota reached: alice on {timezone.localdate()} (110 tokens)." in text
    assert "bob on" not in text
