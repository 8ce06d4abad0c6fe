"""store_final: an ended answer's row, whatever became of it while it streamed."""

from __future__ import annotations

import pytest

from assistant.generation.ending import ENDED, GONE, INTERRUPTED, final_fields, store_final
from assistant.models import Conversation, Message, UsageRecord
from assistant.providers.values import Finish

pytestmark = pytest.mark.django_db

USAGE = {"prompt_tokens": 12, "completion_tokens": 7}


def _answer(alice, status: str) -> Message:
    conversation = Conversation.objects.create(owner=alice, title="Fahrplan")
    answer = Message.objects.create(
        conversation=conversation, role="assistant", status=status, content="Der Zug", event_id=5
    )
    UsageRecord.objects.create(user=alice, model="fake-model", message_id=answer.pk, answers=1)
    return answer


def _fields() -> dict:
    fields = final_fields(
        "done",
        content="Der Zug fährt um **9:12**.",
        finish=Finish("stop", 12, 7),
        error=None,
        time_to_first_token_ms=40,
        duration_ms=900,
    )
    return {**fields, "event_id": 9}


def test_a_streaming_answer_gets_its_end_and_its_tokens(alice):
    answer = _answer(alice, "streaming")
    assert store_final(answer.pk, _fields(), USAGE) == ENDED
    answer.refresh_from_db()
    assert (answer.status, answer.finish_reason, answer.completion_tokens) == ("done", "stop", 7)
    assert (answer.content, answer.event_id) == ("Der Zug fährt um **9:12**.", 9)
    assert "<strong>9:12</strong>" in answer.html
    assert UsageRecord.objects.get().completion_tokens == 7


def test_an_answer_marked_interrupted_meanwhile_keeps_its_whole_text_under_that_verdict(alice):
    answer = _answer(alice, "interrupted")
    assert store_final(answer.pk, _fields(), USAGE) == INTERRUPTED
    answer.refresh_from_db()
    assert (answer.status, answer.finish_reason) == ("interrupted", "")
    assert (answer.content, answer.event_id) == ("Der Zug fährt um **9:12**.", 9)
    assert UsageRecord.objects.get().completion_tokens == 7


def test_a_deleted_answer_stores_nothing_but_its_tokens(alice):
    answer = _answer(alice, "streaming")
    answer.conversation.delete()
    assert store_final(answer.pk, _fields(), USAGE) == GONE
    assert not Message.objects.exists()
    assert UsageRecord.objects.get().completion_tokens == 7


def test_a_cancelled_end_says_so_whatever_the_upstream_said():
    fields = final_fields(
        "cancelled", content="Der", finish=None, error=None, time_to_first_token_ms=None, duration_ms=3
    )
    assert fields["finish_reason"] == "cancelled"
    assert "prompt_tokens" not in fields
