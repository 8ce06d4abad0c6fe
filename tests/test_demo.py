"""The offline demo model: with no OpenAI settings the whole app works out of the box."""

from __future__ import annotations

import pytest

from assistant.models import Message
from tests.helpers.chat import create_conversation, send, stream_answer, text_of
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def demo_server(django_db_setup, django_db_blocker, fake_upstream):
    env = live_env(fake_upstream, ASSISTANT_DEMO_TOKENS_PER_SECOND="0")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ASSISTANT_MODELS"):
        env.pop(name)
    server = start_daphne(env, "daphne-demo")
    yield server
    stop_daphne(server)


def test_demo_model_streams_a_labelled_answer(demo_server, transactional_db, alice, upstream):
    with session_client(demo_server, alice) as client:
        conversation = create_conversation(client)
        assert conversation["model"] == "demo"
        sent = send(client, conversation, "Wie spät ist es in Köln?")
        events = stream_answer(client, conversation, sent)
    text = text_of(events)
    assert events[-1].event == "done"
    assert "offline demo model" in text
    assert "Wie spät ist es in Köln?" in text
    assert len([e for e in events if e.event == "delta"]) >= 1
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == text
    assert upstream.requests == []


def test_demo_model_answers_in_german_for_german_users(demo_server, transactional_db, alice):
    with session_client(demo_server, alice, headers={"Accept-Language": "de"}) as client:
        conversation = create_conversation(client)
        text = text_of(stream_answer(client, conversation, send(client, conversation, "Hallo")))
    assert "Offline-Demomodell" in text
