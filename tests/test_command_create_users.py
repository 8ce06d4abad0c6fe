"""create_users: accounts from a CSV, all or nothing; deactivating ends a person's streams."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import Conversation, Message
from assistant.review import REVIEWERS_GROUP
from tests.helpers.commands import run

User = get_user_model()

HEADER = "username,email,first_name,last_name,active,staff,reviewer\n"


@pytest.fixture
def reviewers(db) -> Group:
    return Group.objects.get_or_create(name=REVIEWERS_GROUP)[0]


def accounts(tmp_path, text: str) -> str:
    path = tmp_path / "accounts.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def state() -> list[tuple]:
    return list(
        User.objects.order_by("username").values_list(
            "username", "email", "first_name", "is_active", "is_staff", "groups__name"
        )
    )


def test_create_users_creates_accounts_without_a_usable_password(tmp_path, reviewers):
    path = accounts(
        tmp_path,
        HEADER + "dana,dana@example.com,Dana,Groß,yes,no,no\nerik,erik@example.com,Erik,Berg,yes,yes,yes\n",
    )

    out, _err = run("create_users", path)

    dana, erik = User.objects.order_by("username")
    assert (dana.email, dana.first_name, dana.last_name, dana.is_active, dana.is_staff) == (
        "dana@example.com",
        "Dana",
        "Groß",
        True,
        False,
    )
    assert not dana.has_usable_password()
    assert erik.is_staff
    assert list(erik.groups.values_list("name", flat=True)) == [REVIEWERS_GROUP]
    assert "create dana" in out
    assert "Created 2, updated 0 (0 deactivated), 0 unchanged." in out


def test_create_users_updates_existing_accounts_and_leaves_the_rest(tmp_path, alice, bob, reviewers):
    bob.groups.add(reviewers)
    path = accounts(tmp_path, "username,email,reviewer\nalice,alice@example.com,\nbob,,no\n")

    out, _err = run("create_users", path)

    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert alice.check_password("alice-password-1")  # an existing password stays
    assert not bob.groups.exists()
    assert "update alice (email)" in out
    assert "update bob (reviewer=no)" in out


def test_create_users_reports_unchanged_accounts_at_verbosity_2(tmp_path, alice):
    path = accounts(tmp_path, "username,active\nalice,yes\n")
    out, _err = run("create_users", path)
    assert "unchanged alice" not in out
    out, _err = run("create_users", path, verbosity=2)
    assert "unchanged alice" in out


def test_create_users_dry_run_changes_nothing(tmp_path, alice):
    before = state()
    path = accounts(tmp_path, HEADER + "alice,,,,no,,\nnew,,,,,,\n")

    out, _err = run("create_users", path, "--dry-run")

    assert state() == before
    assert "Dry run: would create new" in out
    assert "Dry run: would update alice (is_active=no)" in out
    assert "1 to create, 1 to update (1 to deactivate)" in out


def test_create_users_deactivation_ends_streams_and_refuses_new_ones(tmp_path, alice):
    conversation = Conversation.objects.create(owner=alice, title="Offen", model="demo")
    answer = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", generated_by="gone:1:x"
    )
    # Its process is gone (no heartbeat): cancel_anywhere stops it here and now.
    Message.objects.filter(pk=answer.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    client = Client()
    client.force_login(alice)
    api_url = reverse("api_conversation", args=[conversation.pk])

    out, _err = run("create_users", accounts(tmp_path, "username,active\nalice,no\n"))

    alice.refresh_from_db()
    answer.refresh_from_db()
    assert not alice.is_active
    assert (answer.status, answer.finish_reason) == ("cancelled", "cancelled")
    assert "stopped 1 streaming answers" in out
    assert client.get(api_url).status_code == 401  # the session no longer counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("email,active\nx@example.com,yes\n", "needs a header line with a 'username' column"),
        ("username,activ\nalice,yes\n", "Unknown column"),
        ("username,active\nalice,maybe\n", "line 2: active must be yes or no, got 'maybe'"),
        ("username,email\nalice,not-an-address\n", "line 2: 'not-an-address' is not an email address"),
        ("username,active\nalice,yes\nalice,no\n", "line 3: 'alice' already on line 2"),
        ("username,active\n,yes\n", "line 2: no username"),
        ("username,active\nal ice!,yes\n", "is not a valid username"),
        ("username,active\nalice,yes,extra\n", "more cells than columns"),
        ("username,staff,reviewer\nalice,no,yes\n", "a reviewer must be staff"),
        ("", "needs a header line"),
    ],
)
def test_create_users_refuses_a_bad_file_and_changes_nothing(tmp_path, alice, text, message):
    if text:  # and a good line, which is not applied either
        text += "newcomer" + "," * text.split("\n")[0].count(",") + "\n"
    before = state()
    with pytest.raises(CommandError, match=message):
        run("create_users", accounts(tmp_path, text))
    assert state() == before


def test_create_users_refuses_a_missing_file(tmp_path, db):
    with pytest.raises(CommandError, match="Cannot read"):
        run("create_users", str(tmp_path / "nope.csv"))


def test_create_users_reads_stdin(db):
    run("create_users", "-", stdin=io.StringIO("username,email\nfrank,frank@example.com\n"))
    assert User.objects.get(username="frank").email == "frank@example.com"


def test_create_users_without_a_reviewers_group_ignores_the_column(tmp_path, db):
    Group.objects.filter(name=REVIEWERS_GROUP).delete()
    _out, err = run("create_users", accounts(tmp_path, "username,reviewer\ngina,yes\n"))
    gina = User.objects.get(username="gina")
    assert not gina.groups.exists()
    assert "no 'Reviewers' group" in err


def test_create_users_reads_a_file_saved_by_a_spreadsheet(tmp_path, db):
    path = tmp_path / "accounts.csv"
    path.write_bytes("\ufeffusername,first_name\r\nhans,Hänsel\r\n".encode())
    run("create_users", str(path))
    assert User.objects.get(username="hans").first_name == "Hänsel"
