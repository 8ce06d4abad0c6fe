"""What the gateway stores: with ASSISTANT_GATEWAY_STORE on (the default) each exchange as
an ordinary conversation marked "gateway", with the usage record; off, the usage record
alone. And usage_report telling the gateway's use apart."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import openai
import pytest

from assistant.models import Conversation, Message, Origin, UsageRecord
from tests.helpers.chat import fake, send, stream_answer, text_of
from tests.helpers.commands import run
from tests.helpers.live import LiveServer, live_env, session_client, start_daphne, stop_daphne, wait_until
from tests.helpers.tokens import leave_mid_stream, token_for
from tests.helpers.upstream import split_tokens

pytestmark = pytest.mark.live

ANSWER = "Der Zug nach Köln fährt um 9:12 Uhr."
MESSAGES = [
    {"role": "system", "content": "Du bist ein Fahrplanauskunftssystem."},
    {"role": "user", "content": "Wann fährt der Zug nach Bonn?"},
    {"role": "assistant", "content": "Um 8:47 Uhr."},
    {"role": "user", "content": "Und nach Köln?"},
]


def gateway(server: LiveServer, user) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token_for(user), max_retries=0, timeout=20)


def test_an_exchange_is_stored_as_a_gateway_conversation(live, alice, upstream):
    upstream.set(text=ANSWER)
    with gateway(live, alice) as sdk:
        chunks = list(sdk.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
    conversation = Conversation.objects.get()
    assert (conversation.owner, conversation.origin, conversation.model) == (
        alice,
        Origin.GATEWAY,
        "fake-model",
    )
    assert conversation.title == "Wann fährt der Zug nach Bonn?"
    # The system message is what the answer was written with: the conversation's instructions.
    assert conversation.personal_instructions == "Du bist ein Fahrplanauskunftssystem."
    messages = list(conversation.messages.order_by("pk"))
    assert [(m.role, m.content) for m in messages] == [
        ("user", "Wann fährt der Zug nach Bonn?"),
        ("assistant", "Um 8:47 Uhr."),
        ("user", "Und nach Köln?"),
        ("assistant", ANSWER),
    ]
    # One branch, as the client sent it.
    assert [m.parent_id for m in messages] == [None, *(m.pk for m in messages[:-1])]
    answer = messages[-1]
    assert (answer.status, answer.finish_reason, answer.model) == ("done", "stop", "fake-model")
    assert answer.completion_tokens == len(split_tokens(ANSWER))
    assert answer.prompt_tokens is not None
    assert answer.duration_ms is not None
    record = UsageRecord.objects.get()
    assert (record.origin, record.message_id) == (Origin.GATEWAY, answer.pk)
    assert (record.prompt_tokens, record.completion_tokens) == (
        answer.prompt_tokens,
        answer.completion_tokens,
    )


def test_a_stored_exchange_goes_on_in_the_chat_like_any_conversation(live, alice, upstream):
    """Listed for its owner, and a question sent on the page continues it with its
    instructions and history."""
    upstream.set(text=ANSWER)
    with gateway(live, alice) as sdk:
        sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
    conversation = Conversation.objects.get()
    with session_client(live, alice) as page:
        listed = page.get("/api/conversations/").json()["conversations"]
        assert [item["id"] for item in listed] == [str(conversation.pk)]
        detail = page.get(f"/api/conversations/{conversation.pk}/").json()
        sent = send(page, detail, "Und zurück?")
        events = stream_answer(page, detail, sent)
    assert text_of(events) == ANSWER
    assert upstream.requests[-1]["body"]["messages"] == [
        *MESSAGES,
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Und zurück?"},
    ]


def test_a_client_that_leaves_leaves_a_cancelled_answer_with_its_text(live, alice, upstream):
    with gateway(live, alice) as sdk:
        received = leave_mid_stream(sdk, 3)
    answer = wait_until(lambda: Message.objects.filter(role="assistant", status="cancelled").first())
    assert answer.conversation.origin == Origin.GATEWAY
    assert answer.content.startswith(received)
    assert wait_until(lambda: upstream.responses_in_progress == 0)


def test_a_server_killed_mid_completion_leaves_the_exchange_and_its_text(
    django_db_setup, transactional_db, fake_upstream, upstream, alice
):
    """The exchange is stored as the completion starts and its text as it comes: a
    SIGKILL loses at most the last moments, and the restarted server marks the answer
    interrupted, as it does the page's."""
    lease = {"ASSISTANT_LEASE_SECONDS": "600", "ASSISTANT_HEARTBEAT_SECONDS": "0.3"}
    first = start_daphne(live_env(fake_upstream, **lease), "daphne-gateway-killed")
    try:
        with gateway(first, alice) as sdk:
            stream = sdk.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": fake(never_end=True, tps=50)}],
                stream=True,
            )
            received = ""
            for chunk in stream:
                received += chunk.choices[0].delta.content or ""
                if len(split_tokens(received)) >= 60:  # over a second: partial writes happened
                    break
            answer = Message.objects.get(role="assistant")
            assert answer.status == "streaming"
            assert answer.conversation.origin == Origin.GATEWAY
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
            with contextlib.suppress(Exception):
                stream.close()
    finally:
        if first.process.poll() is None:
            stop_daphne(first)
    stored = Message.objects.get(pk=answer.pk)
    assert stored.status == "streaming"
    assert stored.content
    # What was stored and what the client read are one text, each cut at its own point.
    shorter, longer = sorted((received, stored.content), key=len)
    assert longer.startswith(shorter)
    assert [m.role for m in stored.conversation.messages.order_by("pk")] == ["user", "assistant"]
    assert UsageRecord.objects.get().message_id == stored.pk

    second = start_daphne(live_env(fake_upstream, **lease), "daphne-gateway-restarted")
    try:
        # Its pid is gone, so the new process takes the answer for interrupted at once.
        assert wait_until(lambda: Message.objects.get(pk=answer.pk).status == "interrupted", timeout=20)
    finally:
        stop_daphne(second)
    assert Message.objects.get(pk=answer.pk).content == stored.content


def test_with_store_off_only_the_usage_is_recorded(unstored, alice, upstream):
    upstream.set(text=ANSWER)
    with gateway(unstored, alice) as sdk:
        completion = sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
        stream = sdk.chat.completions.create(
            model="other-model",
            messages=[{"role": "user", "content": fake(never_end=True, tps=50)}],
            stream=True,
        )
        next(iter(stream))
        stream.close()
    assert completion.choices[0].message.content == ANSWER
    assert wait_until(
        lambda: UsageRecord.objects.filter(model="other-model", completion_tokens__gt=0).exists()
    )
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    done, left = UsageRecord.objects.order_by("pk")
    assert (done.origin, done.user, done.message_id) == (Origin.GATEWAY, alice, None)
    assert (done.prompt_tokens, done.completion_tokens) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    # The text generated before the client left counts, estimated.
    assert (left.origin, left.message_id) == (Origin.GATEWAY, None)


def test_usage_report_tells_the_gateway_apart(live, alice, upstream):
    with gateway(live, alice) as sdk:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hallo"}])
    UsageRecord.objects.create(user=alice, model="fake-model", prompt_tokens=5, completion_tokens=6)
    gateway_use = UsageRecord.objects.get(origin=Origin.GATEWAY)
    out, _err = run("usage_report", "--by", "origin", "--format", "csv")
    assert out.splitlines() == [
        "origin,answers,prompt_tokens,completion_tokens",
        f"gateway,1,{gateway_use.prompt_tokens},{gateway_use.completion_tokens}",
        "page,1,5,6",
    ]


@pytest.fixture(scope="module")
def unstored_server(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    server = start_daphne(live_env(fake_upstream, ASSISTANT_GATEWAY_STORE="0"), "daphne-gateway-unstored")
    yield server
    stop_daphne(server)


@pytest.fixture
def unstored(unstored_server, transactional_db, upstream) -> LiveServer:
    return unstored_server
