"""UPSTREAM VALUES: a hostile or broken upstream says how an answer ended in values no
column holds (usage figures that are negative, beyond 64 bits, infinite, strings, objects;
a finish_reason of 10,000 characters, a number, an object, NUL, a lone surrogate) or
sends chunks not shaped as the protocol says.

The answer used to be written with those values as they came: the write failed, the
answer's task died without a final event, and its conversation stayed locked (409 on every
send, a stop that changed nothing) until a restart. Every answer here, on the live daphne
with the fake upstream scripting its chunks, ends with exactly one final event that agrees
with its stored row, the row holds only what its columns allow, and the conversation
takes the next message and a stop.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from assistant.models import Message
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.sse import SSEEvent, parse_sse, sse_lines
from tests.helpers.upstream import chunk

pytestmark = pytest.mark.live

# What the columns hold (assistant/providers/values.py): spelled out here, so that this file also runs
# against code from before they were named.
TOKENS_MAX = 10**9
OTHER_FINISH_REASON = "other"
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls", "function_call"}


def question(**behaviour) -> str:
    """A question scripting the fake upstream, its JSON escaped to ASCII: a lone surrogate
    or NUL travels as its escape, so the question itself is valid text."""
    return "Frage FAKE" + json.dumps(behaviour)


TEXT = chunk(choices=[{"index": 0, "delta": {"content": "Hallo Welt"}, "finish_reason": None}])


def ending(reason: object = "stop", usage: object = None) -> list:
    """The answer's text, then a finish chunk with `reason` and a usage chunk with `usage`
    (a str is sent as the raw JSON text of the usage figures)."""
    finish = chunk(choices=[{"index": 0, "delta": {}, "finish_reason": reason}])
    if isinstance(usage, str):
        return [TEXT, finish, '{"choices":[],"usage":' + usage + "}"]
    return [TEXT, finish, chunk(choices=[], usage=usage or {"prompt_tokens": 3, "completion_tokens": 2})]


def figures(value: object) -> dict:
    return {"prompt_tokens": value, "completion_tokens": value, "total_tokens": value}


# name -> (chunks, the final event, its finish_reason or error type, stored tokens)
CASES = {
    "usage_negative": (ending(usage=figures(-1)), "done", "stop", None),
    "usage_2_31": (ending(usage=figures(2**31)), "done", "stop", None),
    "usage_2_64": (ending(usage=figures(2**64)), "done", "stop", None),
    "usage_2_70": (ending(usage=figures(2**70)), "done", "stop", None),
    "usage_1e309": (ending(usage='{"prompt_tokens":1e309,"completion_tokens":-1e309}'), "done", "stop", None),
    "usage_nan": (ending(usage='{"prompt_tokens":NaN,"completion_tokens":Infinity}'), "done", "stop", None),
    "usage_float": (ending(usage=figures(1.5)), "done", "stop", None),
    "usage_string": (ending(usage=figures("12")), "done", "stop", None),
    "usage_true": (ending(usage=figures(True)), "done", "stop", None),
    "usage_null": (ending(usage=figures(None)), "done", "stop", None),
    "usage_object": (ending(usage=figures({"n": 1})), "done", "stop", None),
    "usage_array": (ending(usage=figures([1])), "done", "stop", None),
    "usage_not_an_object": (ending(usage="[1, 2]"), "done", "stop", None),
    # The column's maximum in both: their sum, as the usage limits add them, is not.
    "usage_column_max": (ending(usage=figures(2**31 - 1)), "done", "stop", None),
    "usage_a_billion": (ending(usage=figures(10**9)), "done", "stop", 10**9),
    "finish_10000_chars": (ending("x" * 10_000), "done", OTHER_FINISH_REASON, 3),
    "finish_number": (ending(12), "done", OTHER_FINISH_REASON, 3),
    "finish_object": (ending({"reason": "stop"}), "done", OTHER_FINISH_REASON, 3),
    "finish_array": (ending(["stop"]), "done", OTHER_FINISH_REASON, 3),
    "finish_nul": (ending("stop\x00"), "done", OTHER_FINISH_REASON, 3),
    "finish_lone_surrogate": (ending("\ud800"), "done", OTHER_FINISH_REASON, 3),
    "finish_cancelled": (ending("cancelled"), "done", OTHER_FINISH_REASON, 3),
    "finish_length": (ending("length"), "done", "length", 3),
    "content_number": (
        [TEXT, chunk(choices=[{"index": 0, "delta": {"content": 5}}])],
        "error",
        "upstream_error",
        None,
    ),
    "content_object": (
        [TEXT, chunk(choices=[{"index": 0, "delta": {"content": {"text": "x"}}}])],
        "error",
        "upstream_error",
        None,
    ),
    "chunk_not_an_object": ([TEXT, [1, 2]], "error", "upstream_error", None),
}


def answer_end(client: httpx.Client, conversation: dict, sent: dict, seconds: float = 20) -> list[SSEEvent]:
    """The answer's events from the position its POST returned, up to its final event; fails
    after `seconds` (keep-alives are lines too, so the deadline is checked while nothing
    happens)."""
    answer = sent["assistant_message"]
    seen: list[SSEEvent] = []
    give_up = time.monotonic() + seconds

    def lines(response):
        for line in sse_lines(response):
            if time.monotonic() > give_up:
                raise AssertionError(f"no final event within {seconds} s: {[e.event for e in seen]}")
            yield line

    with client.stream(
        "GET", conversation["events_url"], headers={"Last-Event-ID": answer["last_event_id"]}, timeout=30
    ) as response:
        for event in parse_sse(lines(response)):
            if event.event in {"start", "delta", "done", "error"} and event.json()["message"] == answer["id"]:
                seen.append(event)
                if event.event in {"done", "error"}:
                    return seen
    raise AssertionError("the stream ended")


def assert_usable(client: httpx.Client, conversation: dict) -> None:
    """The next message is accepted (202), and stopping its answer stops it."""
    sent = send(client, conversation, fake(never_end=True, tps=20))
    answer_id = sent["assistant_message"]["id"]
    assert client.post(f"/api/messages/{answer_id}/cancel/").status_code == 202
    assert wait_for_final(answer_id).status == Message.Status.CANCELLED


@pytest.mark.parametrize("case", CASES.keys())
def test_hostile_upstream_values_end_the_answer_as_stored_and_leave_the_conversation_usable(
    alice_http, upstream, case
):
    chunks, final, reason_or_type, tokens = CASES[case]
    conversation = create_conversation(alice_http, title="Feindselig")  # named: no title request
    sent = send(alice_http, conversation, question(chunks=chunks))
    answer_id = sent["assistant_message"]["id"]

    message = wait_for_final(answer_id)
    events = answer_end(alice_http, conversation, sent)

    kinds = [event.event for event in events]
    assert kinds[0] == "start"
    assert kinds.count("done") + kinds.count("error") == 1, kinds
    end = events[-1]
    assert end.event == final, (end.event, end.data[:200])
    if final == "done":
        assert message.status == Message.Status.DONE
        assert end.json()["finish_reason"] == message.finish_reason == reason_or_type
        assert end.json()["usage"] == {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
        }
        assert message.prompt_tokens == tokens
        assert message.content == "Hallo Welt"
    else:
        assert message.status == Message.Status.ERROR
        assert (end.json()["code"], end.json()["type"]) == (message.error_code, message.error_type)
        assert message.error_type == reason_or_type
        assert message.content == "Hallo Welt"  # the text before the broken chunk
    assert message.finish_reason in {"", "cancelled", OTHER_FINISH_REASON, *FINISH_REASONS}
    for figure in (message.prompt_tokens, message.completion_tokens):
        assert figure is None or 0 <= figure <= TOKENS_MAX
    assert_usable(alice_http, conversation)
