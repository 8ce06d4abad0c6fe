"""USAGE: deleting what you asked does not give back what it cost.

Against a live daphne with a per-minute rate limit and a daily token quota, a user asks,
lets the answer finish and deletes the conversation, again and again: the limits still
count every answer, `usage_report` still shows them, and erasing the user's data (GDPR
Art. 17) leaves the usage only as anonymous counts per day and model.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import time

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from assistant.models import Conversation, Message, UsageRecord
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import LiveServer, live_env, session_client, start_daphne, stop_daphne, wait_until

pytestmark = pytest.mark.live

RATE = 3  # answers a minute
QUOTA = 400  # tokens a day: three short answers fit, one long one uses it up


@pytest.fixture(scope="module")
def limited(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    """A daphne of its own with the answer limits on (the session's has them off)."""
    env = live_env(
        fake_upstream, ASSISTANT_RATE_LIMIT_PER_MINUTE=str(RATE), ASSISTANT_DAILY_TOKEN_QUOTA=str(QUOTA)
    )
    server = start_daphne(env, "daphne-security-usage")
    yield server
    stop_daphne(server)


@pytest.fixture
def alice_limited(limited, transactional_db, alice, upstream) -> Iterator[httpx.Client]:
    with session_client(limited, alice) as client:
        yield client


def ask_and_delete(client: httpx.Client, question: str) -> Message:
    """One round of the attack: a new conversation, its answer to the end, then delete it."""
    conversation = create_conversation(client, model="fake-model")
    sent = send(client, conversation, question)
    answer = wait_for_final(sent["assistant_message"]["id"])
    assert answer.status == Message.Status.DONE
    response = client.delete(f"/api/conversations/{conversation['id']}/")
    assert response.status_code == 204, response.text
    return answer


def answer_requests(upstream) -> list[dict]:
    """The upstream requests for answers (streamed), not for automatic titles."""
    return [request for request in upstream.requests if request["body"].get("stream")]


def refused(client: httpx.Client) -> dict:
    """The error of asking once more, in a new conversation and as its first question."""
    conversation = create_conversation(client, model="fake-model")
    later = client.post(
        f"/api/conversations/{conversation['id']}/messages/", json={"content": fake(text="noch eine")}
    )
    first = client.post("/api/conversations/", json={"content": fake(text="und noch eine")})
    assert (later.status_code, first.status_code) == (429, 429), (later.text, first.text)
    assert later.headers["Retry-After"] == str(later.json()["error"]["retry_after"])
    assert later.json()["error"]["code"] == first.json()["error"]["code"]
    return later.json()["error"]


def test_deleting_conversations_does_not_reset_the_rate_limit(alice_limited, alice, upstream):
    answers = [ask_and_delete(alice_limited, fake(text=f"Antwort {n}")) for n in range(RATE)]

    error = refused(alice_limited)

    assert error["code"] == "rate_limited"
    assert 1 <= error["retry_after"] <= 61
    assert not Message.objects.filter(conversation__owner=alice).exists()
    assert len(answer_requests(upstream)) == RATE  # the refused questions never went upstream
    assert sorted(UsageRecord.objects.filter(user=alice).values_list("message_id", flat=True)) == [
        answer.pk for answer in answers
    ]


def test_deleting_conversations_does_not_reset_the_daily_quota(alice_limited, alice, upstream):
    answer = ask_and_delete(alice_limited, fake(tokens=QUOTA + 50))
    assert answer.completion_tokens == QUOTA + 50

    error = refused(alice_limited)

    assert error["code"] == "quota_exceeded"
    assert len(answer_requests(upstream)) == 1
    assert Conversation.objects.filter(owner=alice, messages__isnull=False).count() == 0


def test_stopping_answers_does_not_escape_the_daily_quota(alice_limited, alice, upstream):
    # 2,000 characters, well over the quota, then silence: the upstream never reports the
    # usage of an answer that is stopped before its end.
    text = "Wort " * 400
    conversation = create_conversation(alice_limited, model="fake-model")
    answer_id = send(alice_limited, conversation, fake(text=text, stall_after=400))["assistant_message"]["id"]
    assert wait_until(lambda: len(Message.objects.get(pk=answer_id).content) >= len(text) - 5, timeout=30)

    assert alice_limited.post(f"/api/messages/{answer_id}/cancel/").status_code == 202

    answer = wait_for_final(answer_id)
    assert (answer.status, answer.completion_tokens) == (Message.Status.CANCELLED, None)
    record = UsageRecord.objects.get(message_id=answer_id)
    assert record.completion_tokens >= len(text) // 4  # estimated from the text it streamed
    assert record.prompt_tokens > 0
    assert refused(alice_limited)["code"] == "quota_exceeded"


def report(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_report", "--format", "csv", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_usage_report_counts_answers_of_deleted_conversations(alice_limited, alice):
    answers = [ask_and_delete(alice_limited, fake(text=f"Antwort {n}")) for n in range(2)]
    prompt = sum(answer.prompt_tokens for answer in answers)
    completion = sum(answer.completion_tokens for answer in answers)

    lines = report("--by", "user,model").splitlines()

    assert lines[1:] == [f"alice,fake-model,2,{prompt},{completion}"]


def test_gdpr_deletion_leaves_usage_only_as_anonymous_counts(alice_limited, alice):
    deleted = ask_and_delete(alice_limited, fake(text="gelöscht"))
    conversation = create_conversation(alice_limited, model="fake-model")
    kept = wait_for_final(send(alice_limited, conversation, fake(text="behalten"))["assistant_message"]["id"])
    before = report("--by", "model,day")

    call_command(
        "user_data", "delete", "alice", "--yes", "--keep-account", stdout=io.StringIO(), stderr=io.StringIO()
    )

    rows = list(
        UsageRecord.objects.values("user", "message_id", "answers", "prompt_tokens", "completion_tokens")
    )
    prompt, completion = (
        deleted.prompt_tokens + kept.prompt_tokens,
        deleted.completion_tokens + kept.completion_tokens,
    )
    tokens = f"{prompt},{completion}"
    assert rows == [
        {
            "user": None,
            "message_id": None,
            "answers": 2,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        }
    ]
    # The day's start in the site's time zone: the row tells the day, not the moment.
    assert timezone.localtime(UsageRecord.objects.get().created_at).time() == time.min
    assert report("--by", "model,day") == before
    # The account stays (--keep-account), its usage is no longer its own.
    assert report("--by", "user").splitlines()[1:] == [f"(deleted users),2,{tokens}"]
