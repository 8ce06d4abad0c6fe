"""Tests for the fake OpenAI upstream, exercised through the real ``openai`` SDK and raw httpx.

These also pin down which exceptions openai's SDK raises for each upstream failure mode, which
the app's error handling relies on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from tests.helpers.upstream import (
    BEHAVIOUR_DEFAULTS,
    BEHAVIOUR_HELP,
    FakeUpstream,
    fake_embedding,
    split_tokens,
)

MODEL = "gpt-4o-mini"
UNICODE_TEXT = "Grüße aus Köln 👩‍💻 — 你好 שלום"
NASTY_TEXT = 'x\n\ndata: evil\n\nid: 5\r\n "quoted" \\back\\slash\x00nul\u2028sep\tend  '


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


def make_client(fake: FakeUpstream, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("api_key", "k")
    return openai.AsyncOpenAI(base_url=fake.url, **kwargs)


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def fake_msg(**behaviour: Any) -> list[dict[str, str]]:
    return user("hello FAKE" + json.dumps(behaviour))


async def collect(
    fake: FakeUpstream,
    messages: list[dict[str, str]],
    client_kwargs: dict[str, Any] | None = None,
    **create_kwargs: Any,
) -> list[Any]:
    """Stream one completion; return the chunks (raises whatever the SDK raises)."""
    async with make_client(fake, **(client_kwargs or {})) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, **create_kwargs
        )
        return [chunk async for chunk in stream]


async def collect_until_error(
    fake: FakeUpstream, messages: list[dict[str, str]], **client_kwargs: Any
) -> tuple[list[str], BaseException | None]:
    contents: list[str] = []
    async with make_client(fake, **client_kwargs) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        try:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    contents.append(chunk.choices[0].delta.content)
        except Exception as exc:
            return contents, exc
    return contents, None


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def iter_lines(
    fake: FakeUpstream, messages: list[dict[str, str]], **client_kwargs: Any
) -> tuple[list[str], BaseException | None]:
    lines: list[str] = []
    async with (
        make_client(fake, **client_kwargs) as client,
        client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=messages, stream=True
        ) as response,
    ):
        try:
            async for line in response.iter_lines():
                lines.append(line)
        except Exception as exc:
            return lines, exc
    return lines, None


# --------------------------------------------------------------------------- happy path


def test_split_tokens_roundtrip_exact() -> None:
    for text in (UNICODE_TEXT, NASTY_TEXT, "", "  lead", "trail \n"):
        assert "".join(split_tokens(text)) == text
    assert split_tokens("a  b\nc") == ["a", "  b", "\nc"]


def test_stream_sdk_reassembles_unicode_text(fake: FakeUpstream) -> None:
    fake.set(text=UNICODE_TEXT)
    chunks = asyncio.run(collect(fake, user("hi")))
    assert text_of(chunks) == UNICODE_TEXT
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == MODEL and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert fake.requests[-1]["path"] == "/v1/chat/completions"
    assert fake.requests[-1]["body"]["messages"] == user("hi")
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer k"


def test_stream_sdk_reassembles_sse_injection_text(fake: FakeUpstream) -> None:
    chunks = asyncio.run(collect(fake, fake_msg(text=NASTY_TEXT)))
    assert text_of(chunks) == NASTY_TEXT


def test_stream_ascii_json_escapes_but_reassembles(fake: FakeUpstream) -> None:
    fake.set(text=UNICODE_TEXT, ascii_json=True)
    with httpx.Client() as http:
        raw = http.post(
            f"{fake.url}/chat/completions",
            json={"model": MODEL, "messages": user("x"), "stream": True},
        ).content
    assert raw.isascii()
    assert b"\\u00fc" in raw
    assert text_of(asyncio.run(collect(fake, user("x")))) == UNICODE_TEXT


def test_stream_raw_httpx_sse_framing(fake: FakeUpstream) -> None:
    fake.set(text="a b")
    body = {"model": MODEL, "messages": user("x"), "stream": True}
    with (
        httpx.Client() as http,
        http.stream("POST", f"{fake.url}/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        raw = r.read().decode("utf-8")
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert [p["choices"][0]["delta"] for p in payloads] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "a"},
        {"content": " b"},
        {},
    ]
    assert [p["choices"][0]["finish_reason"] for p in payloads] == [None, None, None, "stop"]


def test_stream_default_tokens_numbered(fake: FakeUpstream) -> None:
    chunks = asyncio.run(collect(fake, fake_msg(tokens=4)))
    assert text_of(chunks) == "tok0 tok1 tok2 tok3"


def test_usage_chunk_present_with_include_usage(fake: FakeUpstream) -> None:
    chunks = asyncio.run(collect(fake, fake_msg(tokens=5), stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens >= 1
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5
    assert all(c.usage is None for c in chunks[:-1])


def test_usage_chunk_absent_without_include_usage(fake: FakeUpstream) -> None:
    chunks = asyncio.run(collect(fake, fake_msg(tokens=2)))
    assert all(c.choices and c.usage is None for c in chunks)
    chunks = asyncio.run(
        collect(fake, fake_msg(tokens=2, usage=False), stream_options={"include_usage": True})
    )
    assert all(c.choices and c.usage is None for c in chunks)


def test_finish_reason_length_sent(fake: FakeUpstream) -> None:
    chunks = asyncio.run(collect(fake, fake_msg(tokens=3, finish_reason="length")))
    assert chunks[-1].choices[0].finish_reason == "length"


def test_non_stream_completion_full_text_and_usage(fake: FakeUpstream) -> None:
    async def run() -> Any:
        async with make_client(fake) as client:
            return await client.chat.completions.create(
                model=MODEL, messages=fake_msg(text=UNICODE_TEXT, finish_reason="length")
            )

    completion = asyncio.run(run())
    assert completion.choices[0].message.content == UNICODE_TEXT
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(split_tokens(UNICODE_TEXT))


def test_fake_override_uses_last_user_message_only(fake: FakeUpstream) -> None:
    fake.set(text="default reply")
    messages = [
        {"role": "user", "content": 'FAKE{"text": "old"}'},
        {"role": "assistant", "content": "old"},
        {"role": "user", "content": "plain"},
    ]
    assert text_of(asyncio.run(collect(fake, messages))) == "default reply"
    messages.append({"role": "system", "content": 'FAKE{"text": "system"}'})
    messages.insert(3, {"role": "user", "content": 'now FAKE{"text": "new"} trailing'})
    assert text_of(asyncio.run(collect(fake, messages))) == "new"
    fake.reset()
    assert text_of(asyncio.run(collect(fake, user("x")))) == " ".join(f"tok{i}" for i in range(20))


def test_fake_override_unknown_key_returns_400(fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError):
        asyncio.run(collect(fake, fake_msg(txet="typo")))
    with pytest.raises(ValueError, match="txet"):
        fake.set(txet="typo")


def test_keep_alive_reuses_one_connection(fake: FakeUpstream) -> None:
    async def run() -> int:
        async with make_client(fake) as client:
            for _ in range(5):
                stream = await client.chat.completions.create(
                    model=MODEL, messages=fake_msg(tokens=3), stream=True
                )
                assert len([c async for c in stream]) == 5
            return fake.active_connections

    assert asyncio.run(run()) == 1
    assert len(fake.requests) == 5


def test_concurrent_streams_many_paced(fake: FakeUpstream) -> None:
    """200 paced answers (0.27 s each) are answered side by side, not one after another."""
    fake.set(tps=30, tokens=8)

    async def run() -> tuple[list[str], int]:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, fake.responses_in_progress)
                await asyncio.sleep(0.005)

        async with make_client(fake) as client:

            async def one() -> str:
                stream = await client.chat.completions.create(model=MODEL, messages=user("x"), stream=True)
                return text_of([c async for c in stream])

            watching = asyncio.create_task(watch())
            results = await asyncio.gather(*(one() for _ in range(200)))
            watching.cancel()
            return results, most

    results, most_at_once = asyncio.run(run())
    assert set(results) == {" ".join(f"tok{i}" for i in range(8))}
    assert most_at_once >= 20


# --------------------------------------------------------------------------- tool calls

TOOL_CALLS = [
    {"id": "call_1", "name": "complete_phase", "arguments": {"summary": "Grüße aus Köln", "points": ["a"]}},
    {"name": "look_up", "arguments": '{"q": "raw text, sent as it is"}'},
]


def raw_payloads(fake: FakeUpstream, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The data lines of one streamed answer, read over plain HTTP, before [DONE]."""
    body = {"model": MODEL, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client() as http:
        raw = http.post(f"{fake.url}/chat/completions", json=body).text
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    return [json.loads(event.removeprefix("data: ")) for event in events[:-2]]


def test_tool_calls_stream_as_openai_streams_them(fake: FakeUpstream) -> None:
    fake.set(text="Gut so.", tool_calls=TOOL_CALLS)
    payloads = raw_payloads(fake, user("x"))
    deltas = [p["choices"][0]["delta"] for p in payloads if p["choices"]]
    assert deltas[:3] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Gut"},
        {"content": " so."},
    ]
    fragments = [delta["tool_calls"] for delta in deltas[3:-1]]
    assert all(len(fragment) == 1 for fragment in fragments)  # one fragment a chunk
    fragments = [fragment[0] for fragment in fragments]
    calls = []
    for fragment in fragments:
        if "id" in fragment:  # a call's first fragment: its name, no arguments yet
            assert fragment["type"] == "function"
            assert fragment["function"]["arguments"] == ""
            assert fragment["index"] == len(calls)
            calls.append({"id": fragment["id"], "name": fragment["function"]["name"], "arguments": ""})
        else:
            assert set(fragment) == {"index", "function"}
            assert set(fragment["function"]) == {"arguments"}
            assert 1 <= len(fragment["function"]["arguments"]) <= 7
            assert fragment["index"] == len(calls) - 1
            calls[-1]["arguments"] += fragment["function"]["arguments"]
    # An object's arguments as compact JSON, as OpenAI writes them; a string as it is.
    arguments = '{"summary":"Grüße aus Köln","points":["a"]}'
    assert calls[0] == {"id": "call_1", "name": "complete_phase", "arguments": arguments}
    assert sum(fragment["index"] == 0 for fragment in fragments) == 1 + -(-len(arguments) // 7)
    assert calls[1]["id"].startswith("call_")
    assert (calls[1]["name"], calls[1]["arguments"]) == ("look_up", TOOL_CALLS[1]["arguments"])
    assert deltas[-1] == {}
    assert [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]][-1] == "tool_calls"
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["completion_tokens"] == 2 + len(fragments)


def test_tool_calls_reach_the_sdk_and_a_finish_reason_asked_for_stays(fake: FakeUpstream) -> None:
    fake.set(text="", tool_calls=TOOL_CALLS[:1], finish_reason="length")
    chunks = asyncio.run(collect(fake, user("x")))
    assert text_of(chunks) == ""
    arguments = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or ()
    )
    assert json.loads(arguments) == TOOL_CALLS[0]["arguments"]
    assert chunks[1].choices[0].delta.tool_calls[0].function.name == "complete_phase"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_tool_calls_in_a_non_streamed_answer_come_whole(fake: FakeUpstream) -> None:
    async def run() -> Any:
        async with make_client(fake) as client:
            return await client.chat.completions.create(model=MODEL, messages=fake_msg(tool_calls=TOOL_CALLS))

    choice = asyncio.run(run()).choices[0]
    assert choice.finish_reason == "tool_calls"
    first, second = choice.message.tool_calls
    assert (first.id, first.function.name, first.type) == ("call_1", "complete_phase", "function")
    assert json.loads(first.function.arguments) == TOOL_CALLS[0]["arguments"]
    assert second.function.arguments == TOOL_CALLS[1]["arguments"]


def test_tool_calls_by_fake_override_and_a_broken_one_is_refused(fake: FakeUpstream) -> None:
    payloads = raw_payloads(fake, fake_msg(text="", tool_calls=[{"name": "look_up"}]))
    fragments = [p["choices"][0]["delta"].get("tool_calls") for p in payloads if p["choices"]]
    assert [f[0]["function"] for f in fragments if f] == [
        {"name": "look_up", "arguments": ""},
        {"arguments": "{}"},
    ]
    for broken in (
        {"name": "x"},
        [{"arguments": {}}],
        [{"name": "x", "arguments": 5}],
        [{"name": "x", "id": 1}],
    ):
        with pytest.raises(openai.BadRequestError):
            asyncio.run(collect(fake, fake_msg(tool_calls=broken)))
    with pytest.raises(ValueError, match="tool_calls"):
        fake.set(tool_calls="complete_phase")


def test_requests_record_tools_temperature_and_max_tokens(fake: FakeUpstream) -> None:
    tool = {"type": "function", "function": {"name": "look_up", "parameters": {"type": "object"}}}
    asyncio.run(collect(fake, user("x"), tools=[tool], tool_choice="auto", temperature=0.2, max_tokens=50))
    body = fake.requests[-1]["body"]
    assert (body["tools"], body["tool_choice"], body["temperature"], body["max_tokens"]) == (
        [tool],
        "auto",
        0.2,
        50,
    )


# --------------------------------------------------------------------------- errors


def test_status_429_raises_rate_limit_error_with_retry_after(fake: FakeUpstream) -> None:
    fake.set(status=429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        asyncio.run(collect(fake, user("x")))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, openai.BadRequestError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (409, openai.ConflictError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_status_error_maps_to_sdk_exception(
    fake: FakeUpstream, status: int, exc_type: type[Exception]
) -> None:
    with pytest.raises(exc_type):
        asyncio.run(collect(fake, fake_msg(status=status)))


def test_status_times_one_succeeds_on_retry(fake: FakeUpstream) -> None:
    messages = fake_msg(status=503, status_times=1, retry_after=0.01, tokens=2, tag="retry")
    chunks = asyncio.run(collect(fake, messages, client_kwargs={"max_retries": 1}))
    assert text_of(chunks) == "tok0 tok1"
    assert len(fake.requests) == 2
    # the counter is per (status, tag): a new tag fails once again
    with pytest.raises(openai.InternalServerError):
        asyncio.run(collect(fake, fake_msg(status=503, status_times=1, tag="other")))


def test_api_key_mismatch_returns_401() -> None:
    with FakeUpstream(api_key="secret") as fake:
        with pytest.raises(openai.AuthenticationError) as info:
            asyncio.run(collect(fake, user("x")))
        assert info.value.code == "invalid_api_key"
        assert info.value.body == {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        chunks = asyncio.run(collect(fake, user("x"), client_kwargs={"api_key": "secret"}))
        assert text_of(chunks).startswith("tok0")


def test_models_list_and_unknown_model_404(fake: FakeUpstream) -> None:
    async def list_ids() -> list[str]:
        async with make_client(fake) as client:
            return [m.id async for m in client.models.list()]

    assert asyncio.run(list_ids()) == ["gpt-4o-mini", "fake-model"]
    fake.set(models=["only-this"])
    assert asyncio.run(list_ids()) == ["only-this"]
    with pytest.raises(openai.NotFoundError) as info:
        asyncio.run(collect(fake, user("x")))
    assert info.value.code == "model_not_found"
    assert "`gpt-4o-mini` does not exist" in info.value.message


def test_unknown_path_returns_404_json(fake: FakeUpstream) -> None:
    response = httpx.post(f"{fake.url}/images/generations", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_reset_after_raises_connection_error(fake: FakeUpstream) -> None:
    contents, exc = asyncio.run(collect_until_error(fake, fake_msg(tokens=10, reset_after=3)))
    assert contents == ["tok0", " tok1", " tok2"]
    assert type(exc) is openai.APIConnectionError
    assert isinstance(exc.__cause__, httpx2.RemoteProtocolError)


def test_malformed_after_raises_json_decode_error(fake: FakeUpstream) -> None:
    contents, exc = asyncio.run(collect_until_error(fake, fake_msg(tokens=10, malformed_after=2)))
    assert contents == ["tok0", " tok1"]
    assert type(exc) is json.JSONDecodeError  # not wrapped in an openai exception


def test_error_after_raises_api_error(fake: FakeUpstream) -> None:
    contents, exc = asyncio.run(collect_until_error(fake, fake_msg(tokens=10, error_after=2)))
    assert contents == ["tok0", " tok1"]
    assert type(exc) is openai.APIError  # the base class, not an APIStatusError
    assert "server had an error" in str(exc)


def test_stall_after_read_timeout_raises_timeout(fake: FakeUpstream) -> None:
    """The stall holds the response open (the client's read timer ends it: its ReadTimeout),
    for at least that timeout."""
    started = time.monotonic()
    contents, exc = asyncio.run(collect_until_error(fake, fake_msg(tokens=10, stall_after=2), timeout=0.5))
    assert contents == ["tok0", " tok1"]
    assert type(exc) is openai.APITimeoutError
    assert isinstance(exc.__cause__, httpx2.ReadTimeout)
    assert time.monotonic() - started > 0.45


def test_header_delay_read_timeout_raises_on_create(fake: FakeUpstream) -> None:
    fake.set(header_delay=1.0)
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(collect(fake, user("x"), client_kwargs={"timeout": 0.2}))


def test_with_streaming_response_iter_lines_yields_sse_lines(fake: FakeUpstream) -> None:
    lines, exc = asyncio.run(iter_lines(fake, fake_msg(tokens=2)))
    assert exc is None
    # one "data: ..." line per event, each followed by a blank line ""
    assert len(lines) == 10
    assert lines[1::2] == [""] * 5
    assert all(line.startswith("data: {") for line in lines[0:8:2])
    assert lines[-2:] == ["data: [DONE]", ""]
    assert json.loads(lines[2].removeprefix("data: "))["choices"][0]["delta"] == {"content": "tok0"}


def test_with_streaming_response_failures_surface_raw_httpx2_errors(fake: FakeUpstream) -> None:
    lines, exc = asyncio.run(iter_lines(fake, fake_msg(tokens=5, reset_after=2)))
    assert isinstance(exc, httpx2.RemoteProtocolError)
    assert len(lines) == 6

    lines, exc = asyncio.run(iter_lines(fake, fake_msg(tokens=5, malformed_after=2)))
    assert exc is None
    assert lines[-2:] == ['data: {"id": "broken", "choices": [', ""]

    lines, exc = asyncio.run(iter_lines(fake, fake_msg(tokens=5, error_after=2)))
    assert exc is None
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["type"] == "server_error"

    lines, exc = asyncio.run(iter_lines(fake, fake_msg(tokens=5, stall_after=2), timeout=0.3))
    assert isinstance(exc, httpx2.ReadTimeout)
    assert len(lines) == 6

    with pytest.raises(openai.InternalServerError):
        asyncio.run(iter_lines(fake, fake_msg(status=500)))


# --------------------------------------------------------------------------- timing, resources


def test_tps_pacing_is_respected(fake: FakeUpstream) -> None:
    fake.set(tps=50, tokens=10)
    started = time.monotonic()
    asyncio.run(collect(fake, user("x")))
    assert time.monotonic() - started >= 0.15


def test_ttft_delays_first_chunk(fake: FakeUpstream) -> None:
    fake.set(ttft=0.2, tokens=1)
    started = time.monotonic()
    asyncio.run(collect(fake, user("x")))
    assert time.monotonic() - started >= 0.18


def test_role_gap_delays_the_first_token_after_the_role_chunk(fake: FakeUpstream) -> None:
    fake.set(role_gap=0.2, tokens=1)
    body = {"model": MODEL, "messages": user("x"), "stream": True}
    arrivals = []
    with httpx.Client() as http, http.stream("POST", f"{fake.url}/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                arrivals.append((time.monotonic(), json.loads(line[6:])["choices"][0]["delta"]))
    (role_at, role), (token_at, token) = arrivals[:2]
    assert (role, token) == ({"role": "assistant", "content": "", "refusal": None}, {"content": "tok0"})
    assert token_at - role_at >= 0.18


def test_token_log_records_indices(fake: FakeUpstream) -> None:
    fake.token_log = []
    asyncio.run(collect(fake, fake_msg(tokens=4, tag="a", tps=200)))
    asyncio.run(collect(fake, fake_msg(tokens=2, tag={"n": 1})))
    log = fake.token_log
    assert [(tag, i) for tag, i, _ in log] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ({"n": 1}, 0),
        ({"n": 1}, 1),
    ]
    times = [t for _, _, t in log]
    assert times == sorted(times)
    assert times[3] - times[0] >= 0.01


def test_stamp_puts_index_and_write_time_in_each_token(fake: FakeUpstream) -> None:
    before = time.monotonic_ns()
    chunks = asyncio.run(collect(fake, fake_msg(tokens=3, tps=100, stamp=True)))
    after = time.monotonic_ns()
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert [token.split(":")[0] for token in contents] == ["w0", " w1", " w2"]
    stamps = [int(token.split(":")[1]) for token in contents]
    assert before < stamps[0] < stamps[1] < stamps[2] < after
    assert stamps[2] - stamps[0] >= 15_000_000  # paced at 100 tokens/s


def test_active_connections_return_to_zero_after_clients_close(fake: FakeUpstream) -> None:
    async def run() -> int:
        async with make_client(fake) as client:
            streams = [
                await client.chat.completions.create(
                    model=MODEL, messages=fake_msg(never_end=True, tps=100), stream=True
                )
                for _ in range(3)
            ]
            for stream in streams:
                await stream.__anext__()
            open_now = fake.active_connections
            for stream in streams:
                await stream.close()  # client disconnects mid-stream
            return open_now

    assert asyncio.run(run()) == 3
    asyncio.run(collect_until_error(fake, fake_msg(tokens=5, reset_after=1)))
    asyncio.run(collect_until_error(fake, fake_msg(stall_after=1), timeout=0.2))
    deadline = time.monotonic() + 2
    while fake.active_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.active_connections == 0


def settled(condition, seconds: float) -> None:
    """Wait until `condition()` holds, for at most `seconds` (the caller asserts it)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_responses_in_progress_count_open_answers_not_idle_connections(fake: FakeUpstream) -> None:
    async def run() -> tuple[int, int, int, int]:
        async with make_client(fake) as client:
            stalled = await client.chat.completions.create(
                model=MODEL, messages=fake_msg(tokens=5, stall_after=1), stream=True
            )
            await stalled.__anext__()
            during = fake.responses_in_progress, fake.active_connections
            await stalled.close()  # the client leaves the stalled answer
            await client.chat.completions.create(model=MODEL, messages=fake_msg(tokens=2))
            # The server's loop (another thread) notices the stalled answer's client gone
            # on a turn of its own: give it a moment, not forever.
            await asyncio.to_thread(settled, lambda: not fake.responses_in_progress, 2)
            return (*during, fake.responses_in_progress, fake.active_connections)

    during, open_during, after, open_after = asyncio.run(run())
    assert (during, open_during) == (1, 1)
    # The finished request's connection stays open for keep-alive, answering nothing.
    assert (after, open_after) == (0, 1)


def test_stop_returns_quickly_with_never_end_stream(fake: FakeUpstream, caplog) -> None:
    """stop() ends an endless and a stalled response instead of waiting for them (it would
    give up after 5 s, saying so)."""

    async def run() -> BaseException | None:
        async with make_client(fake) as client:
            endless = await client.chat.completions.create(
                model=MODEL, messages=fake_msg(never_end=True, tps=100), stream=True
            )
            stalled = await client.chat.completions.create(
                model=MODEL, messages=fake_msg(stall_after=1), stream=True
            )
            for _ in range(3):
                await endless.__anext__()
            await stalled.__anext__()
            await asyncio.to_thread(fake.stop)
            try:
                async for _ in endless:
                    pass
            except openai.APIConnectionError as exc:
                return exc
            return None

    exc = asyncio.run(run())
    assert "shutdown timed out" not in caplog.text
    assert isinstance(exc, openai.APIConnectionError)
    assert fake.active_connections == 0


def test_cli_prints_url_and_serves() -> None:
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "tests.helpers.upstream", "--port", "0", "--tokens", "3"]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/v1")
            body = {"model": MODEL, "messages": user("x"), "stream": True}
            raw = httpx.post(f"{url}/chat/completions", json=body).text
            assert '"content":" tok2"' in raw
            assert raw.endswith("data: [DONE]\n\n")
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0


def test_cli_help_lists_every_switch_with_its_help() -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.upstream", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    switches = ["--host", "--port", "--api-key", "--set"]
    switches += ["--" + key.replace("_", "-") for key in BEHAVIOUR_DEFAULTS]
    for switch in switches:
        assert f"  {switch}" in result.stdout, switch
    words = " ".join(result.stdout.split())  # argparse wraps the help texts
    for help_text in BEHAVIOUR_HELP.values():
        assert " ".join(help_text.split()) in words, help_text
    assert set(BEHAVIOUR_HELP) == set(BEHAVIOUR_DEFAULTS)


def test_cli_tool_calls_switch_streams_tool_calls() -> None:
    root = Path(__file__).resolve().parent.parent
    calls = json.dumps([{"id": "call_9", "name": "complete_phase", "arguments": {"summary": "CLI"}}])
    command = [
        sys.executable,
        "-m",
        "tests.helpers.upstream",
        "--port",
        "0",
        "--text",
        "",
        "--tool-calls",
        calls,
    ]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            body = {"model": MODEL, "messages": user("x"), "stream": True}
            raw = httpx.post(f"{url}/chat/completions", json=body).text
            assert (
                '"id":"call_9","type":"function","function":{"name":"complete_phase","arguments":""}' in raw
            )
            assert '"content":"tok' not in raw
            assert '"finish_reason":"tool_calls"' in raw
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0


def test_cli_switches_change_the_behaviour() -> None:
    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable, "-m", "tests.helpers.upstream", "--port", "0",
        "--text", "Hallo Welt", "--finish-reason", "length", "--status", "429",
        "--retry-after", "7", "--status-times", "1", "--api-key", "k",
    ]  # fmt: skip
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            body = {"model": MODEL, "messages": user("x"), "stream": True}
            headers = {"Authorization": "Bearer k"}
            assert httpx.post(f"{url}/chat/completions", json=body).status_code == 401
            refused = httpx.post(f"{url}/chat/completions", json=body, headers=headers)
            assert (refused.status_code, refused.headers["retry-after"]) == (429, "7")
            raw = httpx.post(f"{url}/chat/completions", json=body, headers=headers).text
            assert '"content":" Welt"' in raw
            assert '"finish_reason":"length"' in raw
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0


# --- /v1/embeddings ----------------------------------------------------------------------------


def embeddings_post(fake: FakeUpstream, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{fake.url}/embeddings", json=body, timeout=5, **kwargs)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_answer_in_openais_shape(fake: FakeUpstream) -> None:
    response = embeddings_post(fake, {"model": "fake-embed", "input": ["Grüße aus Köln", "Hallo"]})

    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "list"
    assert answer["model"] == "fake-embed"
    assert [(item["object"], item["index"]) for item in answer["data"]] == [
        ("embedding", 0),
        ("embedding", 1),
    ]
    assert answer["data"][0]["embedding"] == fake_embedding("Grüße aus Köln")
    assert len(answer["data"][1]["embedding"]) == 256
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0
    assert fake.requests[-1]["path"] == "/v1/embeddings"
    assert fake.requests[-1]["body"]["input"] == ["Grüße aus Köln", "Hallo"]


def test_embeddings_take_one_string_dimensions_and_base64(fake: FakeUpstream) -> None:
    body = {"model": "m", "input": "Urlaub", "dimensions": 8, "encoding_format": "base64"}

    (item,) = embeddings_post(fake, body).json()["data"]

    decoded = struct.unpack("<8f", base64.b64decode(item["embedding"]))
    assert decoded == pytest.approx(fake_embedding("Urlaub", 8), abs=1e-6)


def test_embeddings_through_the_sdk_decode_to_the_same_vectors(fake: FakeUpstream) -> None:
    with openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0) as client:
        response = client.embeddings.create(model="fake-embed", input=["Kündigungsfrist", "Passwort"])

    assert [item.embedding for item in response.data] == [
        pytest.approx(fake_embedding("Kündigungsfrist"), abs=1e-6),
        pytest.approx(fake_embedding("Passwort"), abs=1e-6),
    ]
    assert fake.requests[-1]["body"]["encoding_format"] == "base64"  # the SDK's default


def test_fake_embedding_is_a_deterministic_unit_vector() -> None:
    vector = fake_embedding("Die Übersicht der Verträge")

    assert vector == fake_embedding("die ubersicht der VERTRAGE")  # case and umlauts folded
    assert dot(vector, vector) == pytest.approx(1.0)
    assert dot(fake_embedding(""), fake_embedding("")) == pytest.approx(1.0)
    assert len(fake_embedding("x", 1024)) == 1024


@pytest.mark.parametrize(
    ("question", "related", "unrelated"),
    [
        (
            "Wie viele Ferientage habe ich?",
            "Der Urlaubsanspruch beträgt 30 Tage.",
            "Die Kantine öffnet um zwölf.",
        ),
        (
            "Kündigungsfrist",
            "Eine Kündigung mit einer Frist von drei Monaten.",
            "Reisekosten werden erstattet.",
        ),
        ("password reset", "Das Kennwort ändern Sie im Portal.", "Der Urlaubsanspruch beträgt 30 Tage."),
        ("Verträge", "Der Vertrag liegt vor.", "Die Kantine öffnet um zwölf."),
    ],
)
def test_fake_embedding_rewards_related_text(question: str, related: str, unrelated: str) -> None:
    asked = fake_embedding(question)

    assert dot(asked, fake_embedding(related)) > 0.2 > dot(asked, fake_embedding(unrelated))


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"model": "m"},
        {"model": "m", "input": []},
        {"model": "m", "input": ""},
        {"model": "m", "input": ["a", ""]},
        {"model": "m", "input": [1, 2]},
        {"model": "m", "input": "a", "dimensions": 0},
        {"model": "m", "input": "a", "dimensions": "8"},
        {"model": "m", "input": "a", "encoding_format": "int8"},
    ],
)
def test_embeddings_refuse_bad_requests(fake: FakeUpstream, body: Any) -> None:
    response = embeddings_post(fake, body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_embeddings_check_the_key_and_the_model() -> None:
    with FakeUpstream(api_key="k", models=["fake-embed"]) as fake:
        assert embeddings_post(fake, {"model": "fake-embed", "input": "x"}).status_code == 401
        headers = {"Authorization": "Bearer k"}
        assert embeddings_post(fake, {"model": "other", "input": "x"}, headers=headers).status_code == 404
        assert (
            embeddings_post(fake, {"model": "fake-embed", "input": "x"}, headers=headers).status_code == 200
        )


def test_embeddings_follow_the_behaviour(fake: FakeUpstream) -> None:
    fake.set(status=503, retry_after=2, status_times=1)
    refused = embeddings_post(fake, {"model": "m", "input": "x"})
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "2")
    assert embeddings_post(fake, {"model": "m", "input": "x"}).status_code == 200

    fake.set(embedding_dimensions=3)
    assert len(embeddings_post(fake, {"model": "m", "input": "x"}).json()["data"][0]["embedding"]) == 3

    fake.set(embeddings={"data": "scripted"})
    assert embeddings_post(fake, {"model": "m", "input": "x"}).json() == {"data": "scripted"}

    fake.reset()
    overridden = embeddings_post(fake, {"model": "m", "input": ["x", 'y FAKE{"status": 500}']})
    assert overridden.status_code == 500


def test_embeddings_wait_ttft_before_answering(fake: FakeUpstream) -> None:
    fake.set(ttft=0.3)

    started = time.monotonic()
    assert embeddings_post(fake, {"model": "m", "input": "x"}).status_code == 200

    assert time.monotonic() - started >= 0.3
