"""ANSWER TASK FAULTS: a step of an answer's task fails (the final write, the partial
writer, the publication of a delta or of the end), one at a time.

Each answer still ends: a terminal row, the final event that agrees with it whenever
publishing works, its task gone from the process, and the conversation takes the next
message (202) and a stop. Before, a failing final write or delta publication killed the
task with its row `streaming`: the conversation was locked until a restart.

In-process: the real task on this test's event loop, the real views through Django's
async test client, the real fake upstream over HTTP; a fault is the step's function
replaced by one that raises.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.db.models import QuerySet
from django.test import AsyncClient

from assistant.events.publish import replay_log
from assistant.events.wire import channel_for, position_from
from assistant.generation import answer as answer_module
from assistant.generation import leases, partials, running
from assistant.models import Message
from assistant.providers import configured
from tests.helpers.chat import fake
from tests.helpers.live import LIVE_MODELS
from tests.helpers.sse import SSEEvent, parse_sse

TEXT = "eins zwei drei vier fünf sechs"


class Fault(Exception):
    """What the replaced step raises."""


@pytest.fixture
def answering(settings, upstream, transactional_db):
    """Answers come from the fake upstream, generated on the test's event loop."""
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_BASE_URL = upstream.url
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_TIMEOUT = 2
    settings.ASSISTANT_DEMO_MODE = False
    settings.ASSISTANT_MODELS = LIVE_MODELS.split(",")
    settings.ASSISTANT_RATE_LIMIT_PER_MINUTE = 0
    settings.ASSISTANT_PERSIST_SECONDS = 0.1
    configured.get_provider.cache_clear()
    yield
    configured.get_provider.cache_clear()


def client_for(user) -> AsyncClient:
    client = AsyncClient()
    client.force_login(user)
    return client


async def conversation_new(client: AsyncClient) -> dict:
    response = await client.post("/api/conversations/", {"title": "Fehler"}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


async def ask(client: AsyncClient, conversation: dict, content: str) -> dict:
    response = await client.post(
        f"/api/conversations/{conversation['id']}/messages/",
        {"content": content},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    return response.json()


async def ended(answer_id: int, seconds: float = 15) -> Message:
    """The answer's row once it is no longer `streaming`, and its task gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await Message.objects.aget(pk=answer_id)
        if message.status != Message.Status.STREAMING and answer_id not in running.answers:
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"answer {answer_id} still streaming (task running: {answer_id in running.answers})")


def logged_events(conversation: dict, sent: dict) -> list[SSEEvent]:
    """The answer's events in the replay log, from the position its POST returned."""
    channel = channel_for(conversation["id"])
    position = position_from(channel, sent["assistant_message"]["last_event_id"])
    lines = [line for logged in replay_log.since(channel, position) for line in logged.frame.split("\n")]
    answer_id = sent["assistant_message"]["id"]
    return [event for event in parse_sse(lines) if event.json().get("message") == answer_id]


async def assert_usable(client: AsyncClient, conversation: dict) -> None:
    """The conversation takes the next message (202), and a stop ends its answer."""
    sent = await ask(client, conversation, fake(never_end=True, tps=20))
    answer_id = sent["assistant_message"]["id"]
    response = await client.post(f"/api/messages/{answer_id}/cancel/")
    assert response.status_code == 202
    assert (await ended(answer_id)).status == Message.Status.CANCELLED


def raising(*args, **kwargs):
    raise Fault("the step failed")


async def araising(*args, **kwargs):
    raise Fault("the step failed")


def final_write(*, fails: str = "before", fallback_fails: int = 0):
    """The database refuses the answer's final write (the one update that times the
    answer): before storing it, or `after` (a later part of the write failed), and the
    first `fallback_fails` writes that end it as an internal error with its text."""
    update, aupdate = QuerySet.update, QuerySet.aupdate
    fallbacks = []

    def refusing(self, **fields):
        if self.model is Message and "duration_ms" in fields:
            if fails == "after":
                update(self, **fields)
            raise Fault("the database refused the final write")
        return update(self, **fields)

    async def refusing_fallback(self, **fields):
        if self.model is Message and fields.get("error_type") == "internal" and "content" in fields:
            fallbacks.append(fields)
            if len(fallbacks) <= fallback_fails:
                raise Fault("the database refused the fallback write")
        return await aupdate(self, **fields)

    return [(QuerySet, "update", refusing), (QuerySet, "aupdate", refusing_fallback)]


@dataclass(frozen=True)
class Scenario:
    faults: Callable[[], list[tuple[object, str, Callable]]]  # (owner, name, replacement)
    status: str
    final: str | None  # the final event; None: publishing it fails
    error_type: str = ""
    content: str | None = TEXT  # None: what the partial writer stored, if anything


SCENARIOS = {
    # The final write fails: a minimal one stores the end as an internal error, with the text.
    "final_write": Scenario(final_write, "error", "error", "internal"),
    # A later part of the final write fails after the row was stored: the end as stored.
    "final_write_after_storing": Scenario(functools.partial(final_write, fails="after"), "done", "done"),
    # The final write and the minimal one with the text fail: the minimal one without it.
    "final_write_and_its_fallback": Scenario(
        functools.partial(final_write, fallback_fails=1), "error", "error", "internal", content=None
    ),
    # The partial writer fails every time: the final write stores everything.
    "partial_writer": Scenario(lambda: [(partials, "store_partials", raising)], "done", "done"),
    # Publishing deltas fails: the answer goes on, the final publication replays its text.
    "delta_publisher": Scenario(lambda: [(answer_module, "publish_batch", raising)], "done", "done"),
    # Publishing the end fails: the end is stored, the task ends all the same.
    "final_publisher": Scenario(lambda: [(answer_module, "apublish_or_defer", araising)], "done", None),
}


@pytest.mark.parametrize("kind", SCENARIOS.keys())
def test_a_failing_step_still_ends_the_answer_and_leaves_the_conversation_usable(answering, alice, kind):
    scenario = SCENARIOS[kind]
    client = client_for(alice)

    async def run() -> tuple[dict, dict, Message]:
        await leases.ensure_supervisor()
        try:
            conversation = await conversation_new(client)
            with pytest.MonkeyPatch.context() as patch:
                for owner, name, replacement in scenario.faults():
                    patch.setattr(owner, name, replacement)
                sent = await ask(client, conversation, fake(text=TEXT, tps=30))
                message = await ended(sent["assistant_message"]["id"])
            await assert_usable(client, conversation)
            return conversation, sent, message
        finally:
            await configured.provider_close()

    conversation, sent, message = asyncio.run(run())

    assert message.status == scenario.status
    assert message.error_type == scenario.error_type
    if scenario.content is not None:
        assert message.content == scenario.content
    else:
        assert TEXT.startswith(message.content)
    finals = [event for event in logged_events(conversation, sent) if event.event in {"done", "error"}]
    if scenario.final is None:
        assert finals == []
        return
    assert [event.event for event in finals] == [scenario.final]
    payload = finals[0].json()
    if scenario.final == "error":
        assert (payload["code"], payload["type"]) == (message.error_code, message.error_type)
    else:
        assert payload["finish_reason"] == message.finish_reason
    text = "".join(e.json()["text"] for e in logged_events(conversation, sent) if e.event == "delta")
    assert text == TEXT


async def partial_text(answer_id: int, seconds: float = 10) -> str:
    """The answer's text as the partial writer stored it while it streams."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await Message.objects.aget(pk=answer_id)
        assert message.status == Message.Status.STREAMING
        if message.content:
            return message.content
        await asyncio.sleep(0.05)
    raise AssertionError(f"no partial text of answer {answer_id} stored")


def test_a_partial_write_the_database_refuses_costs_only_its_own_answer(answering, alice, monkeypatch):
    """One answer's partial write fails every time; the other answers' are stored."""
    client = client_for(alice)
    refused: list[int] = []
    store = partials.store_partials

    def store_partials(rows):
        if any(row[0] in refused for row in rows):
            raise Fault("the database refused a row")
        store(rows)

    monkeypatch.setattr(partials, "store_partials", store_partials)

    async def run() -> list[Message]:
        await leases.ensure_supervisor()
        try:
            poisoned, healthy = await conversation_new(client), await conversation_new(client)
            sent = await ask(client, poisoned, fake(never_end=True, tps=20))
            refused.append(sent["assistant_message"]["id"])
            other = await ask(client, healthy, fake(never_end=True, tps=20))
            assert await partial_text(other["assistant_message"]["id"])
            answers = []
            for answer in (sent, other):
                answer_id = answer["assistant_message"]["id"]
                assert (await client.post(f"/api/messages/{answer_id}/cancel/")).status_code == 202
                answers.append(await ended(answer_id))
            for conversation in (poisoned, healthy):
                await assert_usable(client, conversation)
            return answers
        finally:
            await configured.provider_close()

    answers = asyncio.run(run())
    assert [answer.status for answer in answers] == [Message.Status.CANCELLED] * 2
    assert all(answer.content.startswith("tok0 tok1") for answer in answers)
