"""Per-user limits: checked before anything is stored or sent upstream."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.models import Conversation, Message, UsageRecord


@pytest.fixture
def conversation(alice) -> Conversation:
    return Conversation.objects.create(owner=alice, model="demo")


def answered(conversation: Conversation, *, tokens: int = 0, ago: timedelta = timedelta(0)) -> Message:
    """An ended answer `ago` and its usage record, as sending and generating leave them."""
    message = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="done",
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
    )
    moment = timezone.now() - ago
    Message.objects.filter(pk=message.pk).update(created_at=moment)
    UsageRecord.objects.create(
        user=conversation.owner,
        model=conversation.model,
        created_at=moment,
        message_id=message.pk,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
    )
    return message


def send(client: Client, conversation: Conversation):
    return client.post(
        reverse("api_messages", args=[conversation.pk]),
        data=json.dumps({"content": "Noch eine Frage"}),
        content_type="application/json",
    )


def test_rate_limit_refuses_with_retry_after_and_stores_nothing(alice_client, conversation, settings):
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 2
    answered(conversation)
    answered(conversation, ago=timedelta(seconds=30))

    response = send(alice_client, conversation)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert 1 <= error["retry_after"] <= 61
    assert response["Retry-After"] == str(error["retry_after"])
    assert "2" in error["message"]
    assert Message.objects.count() == 2


def test_a_refused_first_question_leaves_no_conversation(alice_client, conversation, settings):
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 1
    answered(conversation)

    response = alice_client.post(
        reverse("api_conversations"),
        data=json.dumps({"content": "Eine neue Frage"}),
        content_type="application/json",
    )

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert list(Conversation.objects.all()) == [conversation]
    assert Message.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the answer's task writes from another thread
def test_rate_limit_counts_only_the_last_minute_and_only_the_user(alice_client, conversation, bob, settings):
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 1
    answered(conversation, ago=timedelta(minutes=2))
    answered(Conversation.objects.create(owner=bob, model="demo"))
    assert send(alice_client, conversation).status_code == 202


def test_daily_quota_refuses_until_midnight(alice_client, conversation, settings):
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 100
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 0
    answered(conversation, tokens=110)

    response = send(alice_client, conversation)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert 0 < error["retry_after"] <= 24 * 3600 + 1
    assert Message.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the answer's task writes from another thread
def test_daily_quota_forgets_yesterday(alice_client, conversation, settings):
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 100
    answered(conversation, tokens=500, ago=timedelta(days=1, hours=1))
    assert send(alice_client, conversation).status_code == 202


def test_limits_also_hold_for_retry(alice, alice_client, conversation, settings):
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 100
    Message.objects.create(conversation=conversation, role="user", content="Frage")
    failed = Message.objects.create(
        conversation=conversation, role="assistant", status="error", prompt_tokens=80, completion_tokens=30
    )
    UsageRecord.objects.create(user=alice, message_id=failed.pk, prompt_tokens=80, completion_tokens=30)
    response = alice_client.post(
        reverse("api_message_retry", args=[failed.pk]), content_type="application/json"
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    failed.refresh_from_db()
    assert not failed.superseded
    assert Message.objects.count() == 2


def test_page_shows_todays_usage_against_the_quota(alice_client, conversation, settings):
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 1000
    answered(conversation, tokens=120)
    page = alice_client.get(reverse("chat")).content.decode()
    assert 'id="quota"' in page
    assert "120" in page
    assert "1000" in page or "1.000" in page or "1,000" in page


def test_page_shows_no_usage_without_a_quota(alice_client, settings):
    settings.ASSISTANT_DAILY_TOKEN_QUOTA = 0
    assert 'id="quota"' not in alice_client.get(reverse("chat")).content.decode()
