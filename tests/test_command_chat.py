"""chat: a staff terminal client through the same services and events as the browser.

The command runs its own event loop, whose database calls use another connection than
the test's: these tests commit (transactional_db).
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from assistant.models import Conversation, Message, ServerProcess
from assistant.processes import PROCESS_ID
from assistant.providers.configured import get_provider
from tests.helpers.chat import fake
from tests.helpers.commands import run
from tests.helpers.live import ROOT, live_env


@pytest.fixture
def demo(settings, transactional_db):
    settings.ASSISTANT_DEMO_MODE = True
    settings.ASSISTANT_MODELS = ["demo"]
    settings.ASSISTANT_DEMO_TOKENS_PER_SECOND = 0
    get_provider.cache_clear()
    yield settings
    get_provider.cache_clear()


@pytest.fixture
def configured(settings, upstream, transactional_db):
    settings.ASSISTANT_DEMO_MODE = False
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_TIMEOUT = 2
    settings.ASSISTANT_MODELS = ["fake-model", "other-model"]
    # The cached provider's connections belong to the event loop that made them.
    get_provider.cache_clear()
    yield settings
    get_provider.cache_clear()


def test_chat_prints_the_answer_and_stores_the_exchange(demo, alice):
    out, err = run("chat", "--user", "alice", "Wie spät ist es in Köln?")

    conversation = Conversation.objects.get(owner=alice)
    question, answer = conversation.messages.order_by("pk")
    assert question.content == "Wie spät ist es in Köln?"
    assert (answer.status, answer.finish_reason) == ("done", "stop")
    assert out == answer.content + "\n"
    assert "Wie spät ist es in Köln?" in out  # the demo model's reply quotes it
    assert f"conversation {conversation.pk}" in err
    assert f"[stop, {answer.prompt_tokens} prompt + {answer.completion_tokens} completion tokens" in err
    # The command gave up its lease (the live server's, if one runs, heartbeats meanwhile).
    assert not ServerProcess.objects.filter(pk=PROCESS_ID).exists()


class Writes(io.StringIO):
    """stdout that remembers each write: deltas are printed as they arrive, not at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_chat_streams_through_the_event_log_in_deltas(configured, alice, upstream):
    out = Writes()
    call_command(
        "chat", "--user", "alice", fake(text="Eins zwei drei vier", tps=40), stdout=out, stderr=io.StringIO()
    )
    assert out.getvalue() == "Eins zwei drei vier\n"
    assert len([text for text in out.writes if text.strip()]) >= 2
    assert Message.objects.get(role="assistant").content == "Eins zwei drei vier"


def test_chat_stops_the_answer_on_ctrl_c(transactional_db, alice, fake_upstream, upstream):
    command = [sys.executable, "manage.py", "chat", "--user", "alice", fake(tps=50, tokens=1000)]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=live_env(fake_upstream),
        # As in a terminal: a suite run as a background job (`cmd &` in a script) has
        # Ctrl+C ignored, and the command would inherit that and never see it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout.read(4) == "tok0"  # the answer is streaming
        process.send_signal(signal.SIGINT)
        # A bound, not a measure: an answer Ctrl+C did not stop ends by itself (exit 0).
        _out, err = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "Stopped: the answer so far is stored as cancelled." in err
    answer = Message.objects.get(role="assistant")
    assert (answer.status, answer.finish_reason) == ("cancelled", "cancelled")
    assert answer.content.startswith("tok0")  # the text so far is kept
    # The command's own lease is gone (ids are host:pid:random; a live daphne of other
    # tests may heartbeat its row back after the flush at any time).
    assert not ServerProcess.objects.filter(pk__contains=f":{process.pid}:").exists()


def test_chat_reads_the_question_from_stdin_and_continues_a_conversation(demo, alice):
    conversation = Conversation.objects.create(owner=alice, title="Laufend", model="demo")
    Message.objects.create(conversation=conversation, role="user", content="Erste Frage")
    Message.objects.create(
        conversation=conversation, role="assistant", content="Erste Antwort", status="done"
    )

    out, _err = run(
        "chat", "--user", "alice", "--conversation", str(conversation.pk), stdin=io.StringIO("Zweite")
    )

    assert "You wrote: “Zweite”" in out
    assert Conversation.objects.count() == 1
    assert [m.content for m in conversation.messages.filter(role="user")] == ["Erste Frage", "Zweite"]


def test_chat_exits_non_zero_when_the_answer_fails(configured, alice, upstream):
    upstream.set(status=500)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"upstream_unavailable \(500\)"):
        call_command("chat", "--user", "alice", "Hallo", stdout=out, stderr=io.StringIO())
    answer = Message.objects.get(role="assistant")
    assert (answer.status, answer.error_type) == ("error", "upstream_unavailable")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody", "Hallo"], "No user named 'nobody'"),
        (["--user", "alice", "--model", "gpt-99", "Hallo"], "Unknown model: gpt-99"),
        (["--user", "alice", "   "], "empty"),
        (["--user", "alice", "--conversation", "not-a-uuid", "Hallo"], "has no conversation"),
    ],
)
def test_chat_refuses_bad_input_and_stores_nothing(demo, alice, args, message):
    with pytest.raises(CommandError, match=message):
        run("chat", *args)
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_chat_refuses_another_users_conversation(demo, alice, bob):
    conversation = Conversation.objects.create(owner=bob, title="Bobs", model="demo")
    with pytest.raises(CommandError, match="alice has no conversation"):
        run("chat", "--user", "alice", "--conversation", str(conversation.pk), "Hallo")
    assert not Message.objects.exists()


def test_chat_refuses_a_deactivated_user(demo, alice):
    alice.is_active = False
    alice.save()
    with pytest.raises(CommandError, match="deactivated"):
        run("chat", "--user", "alice", "Hallo")
    assert not Conversation.objects.exists()


def test_chat_refused_by_the_rate_limit_leaves_no_empty_conversation(demo, alice):
    demo.ASSISTANT_RATE_LIMIT_PER_MINUTE = 1
    run("chat", "--user", "alice", "Die erste Frage")  # counted in the usage record
    earlier = Conversation.objects.get()

    with pytest.raises(CommandError, match="You sent 1 messages in the last minute"):
        run("chat", "--user", "alice", "Noch eine Frage")

    assert list(Conversation.objects.all()) == [earlier]
