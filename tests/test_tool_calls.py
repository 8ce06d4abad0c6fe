"""Tool calls through the OpenAI provider over real sockets: streamed fragments put together,
and the calls Assistant cannot take as errors after the text before them."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from assistant.providers.errors import RETRYABLE_TYPES, ProviderError
from assistant.providers.openai_compatible import OpenAIProvider
from assistant.providers.values import Finish, ToolCall
from tests.helpers.upstream import chunk, tool_call_fragments

TOOL = {
    "type": "function",
    "function": {
        "name": "complete_phase",
        "description": "End the phase.",
        "parameters": {
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "points": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["summary"],
        },
    },
}
OTHER_TOOL = {"type": "function", "function": {"name": "look_up", "parameters": {"type": "object"}}}


@pytest.fixture
def tool_upstream(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    return upstream


def stream(**kwargs: Any) -> tuple[list, ProviderError | None]:
    """What `OpenAIProvider.stream` yielded with `kwargs`, and the error it ended with."""
    items: list = []
    kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])

    async def run() -> ProviderError | None:
        provider = OpenAIProvider()
        try:
            async for item in provider.stream(model="fake-model", **kwargs):
                items.append(item)
        except ProviderError as error:
            return error
        finally:
            await provider.client.close()
        return None

    return items, asyncio.run(run())


def text_of(items: list) -> str:
    return "".join(item for item in items if isinstance(item, str))


def kinds(items: list) -> list[str]:
    """The kinds of what was yielded, each run of text as one: ["text", "call", "finish"]."""
    names = [{str: "text", ToolCall: "call", Finish: "finish"}[type(item)] for item in items]
    return [name for i, name in enumerate(names) if i == 0 or name != "text" or names[i - 1] != "text"]


def tool_chunks(*fragment_lists: list[dict], text: str = "") -> list[dict]:
    """Scripted data lines: `text`, then one chunk per list of fragments, then the end."""
    lines = [chunk(choices=[{"index": 0, "delta": {"content": text}}])] if text else []
    lines += [
        chunk(choices=[{"index": 0, "delta": {"tool_calls": fragments}, "finish_reason": None}])
        for fragments in fragment_lists
    ]
    return [*lines, chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])]


def test_calls_come_whole_after_the_text_and_before_the_finish(tool_upstream):
    summary = 'Die Lage: ein Team von „fünf“ Leuten, {viel} zu tun und "Zitate".'
    tool_upstream.set(
        text="Danke, das halte ich fest.",
        tool_calls=[
            {
                "id": "call_1",
                "name": "complete_phase",
                "arguments": {"summary": summary, "points": ["a", "b"]},
            },
            {"id": "call_2", "name": "look_up", "arguments": {"q": "x" * 50}},
        ],
    )
    items, error = stream(tools=[TOOL, OTHER_TOOL])
    assert error is None
    assert text_of(items) == "Danke, das halte ich fest."
    assert kinds(items) == ["text", "call", "call", "finish"]
    assert items[-3:-1] == [
        ToolCall("call_1", "complete_phase", {"summary": summary, "points": ["a", "b"]}),
        ToolCall("call_2", "look_up", {"q": "x" * 50}),
    ]
    assert items[-1].finish_reason == "tool_calls"
    # The arguments did come split: the first fragment has none, the rest 7 characters each.
    fragments = tool_call_fragments([{"name": "complete_phase", "arguments": {"summary": summary}}])
    assert fragments[0]["function"] == {"name": "complete_phase", "arguments": ""}
    assert len(fragments) > 5


def test_fragments_of_interleaved_calls_are_put_together_by_index(tool_upstream):
    first = tool_call_fragments(
        [{"id": "call_a", "name": "complete_phase", "arguments": {"summary": "Erster Aufruf"}}]
    )
    second = tool_call_fragments(
        [{"id": "call_b", "name": "look_up", "arguments": '{"q": "zweiter Aufruf"}'}]
    )
    for fragment in second:
        fragment["index"] = 1
    # Index 1 starts first; then a fragment of each in turn, two in one chunk.
    rest = itertools.zip_longest(first[1:], second[2:])
    merged = [fragment for pair in rest for fragment in pair if fragment is not None]
    order = [[second[0]], [first[0], second[1]]] + [merged[i : i + 2] for i in range(0, len(merged), 2)]
    tool_upstream.set(chunks=tool_chunks(*order, text="Moment."))
    items, error = stream(tools=[TOOL, OTHER_TOOL])
    assert error is None
    assert items[:-1] == [
        "Moment.",
        ToolCall("call_a", "complete_phase", {"summary": "Erster Aufruf"}),
        ToolCall("call_b", "look_up", {"q": "zweiter Aufruf"}),
    ]
    assert items[-1].finish_reason == "tool_calls"


def test_a_server_that_leaves_out_the_index_still_gets_its_calls_apart(tool_upstream):
    tool_upstream.set(
        chunks=tool_chunks(
            [{"id": "c1", "type": "function", "function": {"name": "complete_phase", "arguments": '{"summ'}}],
            [{"function": {"arguments": 'ary": '}}],
            [{"id": "c1", "function": {"arguments": '"eins"}'}}],  # its id again
            [{"id": "c2", "type": "function", "function": {"name": "look_up", "arguments": ""}}],
            [{"function": {"name": "look_up", "arguments": "{}"}}],  # a name repeated
        )
    )
    items, error = stream(tools=[TOOL, OTHER_TOOL])
    assert error is None
    assert items[:-1] == [
        ToolCall("c1", "complete_phase", {"summary": "eins"}),
        ToolCall("c2", "look_up", {}),
    ]


def test_a_call_without_arguments_or_id_has_empty_arguments_and_an_id_of_its_own(tool_upstream):
    tool_upstream.set(chunks=tool_chunks([{"index": 0, "function": {"name": "look_up"}}]))
    items, error = stream(tools=[OTHER_TOOL])
    assert error is None
    assert items[0] == ToolCall("call_0", "look_up", {})


def test_arguments_are_stored_as_text_is(tool_upstream):
    """NUL, which PostgreSQL's jsonb refuses, and a lone surrogate become U+FFFD, keys too."""
    tool_upstream.set(
        chunks=tool_chunks(
            [{"index": 0, "id": "c", "function": {"name": "complete_phase", "arguments": ""}}],
            [{"index": 0, "function": {"arguments": '{"summary": "a\\u0000b", "p\\ud800": ["\\ud800"]}'}}],
        )
    )
    items, error = stream(tools=[TOOL])
    assert error is None
    assert items[0].arguments == {"summary": "a\ufffdb", "p\ufffd": ["\ufffd"]}


def test_a_call_of_a_tool_not_offered_is_a_tool_error_after_the_text(tool_upstream):
    tool_upstream.set(text="Ich schaue nach.", tool_calls=[{"name": "delete_everything", "arguments": {}}])
    for tools in ([TOOL], None):
        items, error = stream(tools=tools)
        assert text_of(items) == "Ich schaue nach."
        assert kinds(items) == ["text"]  # no call, no finish
        assert (error.code, error.type, error.retryable) == (502, "tool_error", True)


@pytest.mark.parametrize(
    "arguments", ['{"summary": "cut', "[1, 2]", '"summary"', "42", "null", "{} {}", "[" * 5000]
)
def test_arguments_that_are_not_a_json_object_are_a_tool_error_after_the_text(tool_upstream, arguments):
    tool_upstream.set(text="Fertig so weit.", tool_calls=[{"name": "complete_phase", "arguments": arguments}])
    items, error = stream(tools=[TOOL])
    assert text_of(items) == "Fertig so weit."
    assert kinds(items) == ["text"]
    assert (error.code, error.type) == (502, "tool_error")
    assert "tool" in error.detail


def test_a_call_without_a_name_is_a_tool_error(tool_upstream):
    tool_upstream.set(
        chunks=tool_chunks([{"index": 0, "id": "c", "function": {"arguments": "{}"}}], text="Text")
    )
    items, error = stream(tools=[TOOL])
    assert (items, error.type) == (["Text"], "tool_error")


@pytest.mark.parametrize(
    "fragments",
    [
        "complete_phase",
        {"index": 0},
        [5],
        [{"index": "0", "function": {"name": "complete_phase"}}],
        [{"index": -1, "function": {"name": "complete_phase"}}],
        [{"index": True, "function": {"name": "complete_phase"}}],
        [{"index": 0, "function": "complete_phase"}],
        [{"index": 0, "id": 7, "function": {"name": "complete_phase"}}],
        [{"index": 0, "function": {"name": ["complete_phase"]}}],
        [{"index": 0, "function": {"name": "complete_phase", "arguments": {"summary": "x"}}}],
    ],
)
def test_fragments_not_shaped_as_the_protocol_are_a_broken_answer_after_the_text(tool_upstream, fragments):
    tool_upstream.set(
        chunks=[
            chunk(choices=[{"index": 0, "delta": {"content": "Hallo"}}]),
            chunk(choices=[{"index": 0, "delta": {"tool_calls": fragments}}]),
        ]
    )
    items, error = stream(tools=[TOOL])
    assert items == ["Hallo"]
    assert (error.code, error.type) == (502, "upstream_error")


def test_null_tool_calls_in_a_delta_are_none(tool_upstream):
    tool_upstream.set(
        chunks=[chunk(choices=[{"index": 0, "delta": {"content": "Hallo", "tool_calls": None}}])]
    )
    items, error = stream(tools=[TOOL])
    assert error is None
    assert items == ["Hallo", Finish("stop")]


def test_tools_temperature_and_max_tokens_go_upstream_when_given(tool_upstream):
    tool_upstream.set(text="ok")
    stream(tools=[TOOL], temperature=0.0, max_tokens=300)
    body = tool_upstream.requests[-1]["body"]
    assert body["tools"] == [TOOL]
    assert body["tool_choice"] == "auto"
    assert body["temperature"] == 0.0  # zero is a temperature, not "not given"
    assert body["max_tokens"] == 300
    stream(temperature=1.5)
    body = tool_upstream.requests[-1]["body"]
    assert body["temperature"] == 1.5
    assert not {"tools", "tool_choice", "max_tokens"} & set(body)


def test_without_tools_temperature_or_max_tokens_the_body_is_as_ever(tool_upstream):
    messages = [{"role": "system", "content": "Sei nett."}, {"role": "user", "content": "hi"}]
    for kwargs in ({}, {"tools": None, "temperature": None, "max_tokens": None}, {"tools": []}):
        stream(messages=messages, **kwargs)
        assert tool_upstream.requests[-1]["body"] == {
            "model": "fake-model",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }


def test_a_tool_error_offers_a_retry():
    # A model's slip with a tool: a new answer to the same question rarely repeats it.
    assert "tool_error" in RETRYABLE_TYPES
