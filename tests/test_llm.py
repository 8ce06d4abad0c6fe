"""The OpenAI provider over real sockets: failures before any byte of an answer."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator

import aiohttp
import httpx2
import pytest
from aiohttp.client_proto import ResponseHandler

from assistant.providers import openai_compatible
from assistant.providers.errors import ProviderError
from assistant.providers.openai_compatible import OpenAIProvider
from assistant.providers.sse import Completion, sse_line_batches
from assistant.providers.values import Finish
from config import fastpaths
from config.fastpaths import aiohttp as fast_aiohttp
from tests.helpers.upstream import chunk


def collect(provider: OpenAIProvider, messages: list[dict[str, str]] | None = None) -> list:
    messages = messages or [{"role": "user", "content": "hi"}]

    async def run() -> list:
        try:
            return [item async for item in provider.stream(model="fake-model", messages=messages)]
        finally:
            await provider.client.close()  # its connections belong to this event loop

    return asyncio.run(run())


def text_of(items: list) -> str:
    """The answer's text among what `provider.stream` yielded."""
    return "".join(item for item in items if isinstance(item, str))


def fake_text(tokens: int) -> str:
    """What the fake upstream answers in `tokens` tokens."""
    return " ".join(f"tok{i}" for i in range(tokens))


# For the tests of what the fast path does itself: with the versions it was written for,
# they fail when a private name it uses changes; with others it stays off, and they skip.
fast_path_only = pytest.mark.parametrize("fast_paths", ["on"], indirect=True)


@pytest.fixture
def fast_path_installed(fast_paths) -> None:
    if not fast_aiohttp.installed():
        pytest.skip("the fast path aiohttp is off: other versions than it was written for")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: a new connection's SYN goes unanswered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for sock in [*fillers, server]:
        sock.close()


def test_refused_connection_is_upstream_unavailable(provider_settings, closed_port):
    provider_settings.OPENAI_BASE_URL = f"http://127.0.0.1:{closed_port}/v1"
    with pytest.raises(ProviderError) as raised:
        collect(OpenAIProvider())
    assert (raised.value.code, raised.value.type, raised.value.retryable) == (
        503,
        "upstream_unavailable",
        True,
    )
    assert "127.0.0.1" not in raised.value.detail


def test_connect_timeout_is_a_timeout(provider_settings, unanswered_port):
    """The connect timer (OPENAI_CONNECT_TIMEOUT) is the one that runs out."""
    provider_settings.OPENAI_BASE_URL = f"http://127.0.0.1:{unanswered_port}/v1"
    with pytest.raises(ProviderError) as raised:
        collect(OpenAIProvider())
    assert (raised.value.code, raised.value.type, raised.value.retryable) == (504, "timeout", True)
    raised_while = []  # what the ProviderError was raised while handling, innermost last
    context = raised.value.__context__
    while context is not None:
        raised_while.append(context)
        context = context.__context__
    assert any(isinstance(exc, aiohttp.ConnectionTimeoutError) for exc in raised_while), raised_while


def test_stream_yields_deltas_then_one_finish(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(text="Hallo Welt", finish_reason="length")
    items = collect(OpenAIProvider())
    assert text_of(items) == "Hallo Welt"
    assert isinstance(items[-1], Finish)
    assert items[-1].finish_reason == "length"
    assert items[-1].completion_tokens == 2
    assert sum(isinstance(item, Finish) for item in items) == 1


def test_stream_sends_the_whole_history_as_given(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Nachricht {i}: Grüße, „Zitat“ \u2028 ✓"}
        for i in range(301)
    ]

    async def run() -> list:
        provider = OpenAIProvider()
        try:
            return [item async for item in provider.stream(model="fake-model", messages=history)]
        finally:
            await provider.client.close()

    asyncio.run(run())
    request = upstream.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer test-key-abc123"
    assert request["headers"]["content-type"] == "application/json"
    assert request["body"] == {
        "model": "fake-model",
        "messages": history,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_a_retried_request_sends_the_same_body_again(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    provider_settings.OPENAI_MAX_RETRIES = 1
    upstream.set(status=503, status_times=1, retry_after=0.01, text="Zweiter Versuch")
    history = [{"role": "user", "content": "Noch einmal, bitte: „ü“"}]
    items = collect(OpenAIProvider(), messages=history)
    assert text_of(items) == "Zweiter Versuch"
    first, second = upstream.requests
    assert first["body"] == second["body"]
    assert second["body"]["messages"] == history


def timed_items(pace: float) -> tuple[list, list[float], BaseException | None]:
    """Items of an answer read at `pace`, up to an error: (items, when each came, the
    error or None). Within 5 s: a timeout that never runs out fails the test instead of
    hanging it."""

    async def run() -> tuple[list, list[float], BaseException | None]:
        provider = OpenAIProvider()
        items, times = [], []
        try:
            async with asyncio.timeout(5):
                async for item in provider.stream(
                    model="fake-model", messages=[{"role": "user", "content": "hi"}], pace=lambda: pace
                ):
                    items.append(item)
                    times.append(time.monotonic())
        except ProviderError as error:
            times.append(time.monotonic())
            return items, times, error
        finally:
            await provider.client.close()
        return items, times, None

    return asyncio.run(run())


def paced_reads(pace: float) -> tuple[list, list[float]]:
    """Items of an answer that completes, read at `pace`, with when each came."""
    items, times, error = timed_items(pace)
    if error is not None:
        raise error
    return items, times


def test_paced_stream_reads_at_most_once_per_pace_and_loses_nothing(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(tokens=60, tps=200)
    unpaced, _ = paced_reads(0)
    text = fake_text(60)
    assert text_of(unpaced) == text
    assert len(unpaced) > 30  # about a read per token
    # Each token stamped with when the upstream wrote it (tests/helpers/upstream.py).
    upstream.set(tokens=60, tps=200, stamp=True)
    paced, times = paced_reads(0.1)
    assert [token.split(":")[0] for token in text_of(paced).split()] == [f"w{i}" for i in range(60)]
    for items in (unpaced, paced):
        assert isinstance(items[-1], Finish)
        assert items[-1].completion_tokens == 60
    # 0.3 s of tokens: the first read, then one per 0.1 s (the Finish comes with the last).
    assert all(later - earlier >= 0.09 for earlier, later in itertools.pairwise(times[:-1]))
    # Each read brings all that came while it waited, not what happened to be buffered
    # (one token, every other read, through aiohttp's readany): a token written before
    # the read before came with this read at the latest. Counted by the upstream's own
    # stamps, so a slow machine (fewer tokens per pace) changes nothing.
    reads = [
        [int(token.split(":")[1]) / 1e9 for token in item.split()] for item in paced if isinstance(item, str)
    ]
    for number, (written, previous) in enumerate(zip(reads[1:], times, strict=False), start=1):
        later = [stamp for batch in reads[number + 1 :] for stamp in batch]
        assert all(stamp >= previous for stamp in later), (number, [len(batch) for batch in reads])
        assert written


def test_a_plain_body_is_read_from_aiohttp_and_a_gzipped_one_through_httpx2(
    provider_settings, upstream, monkeypatch
):
    """Plain (the usual): on the fast path, from aiohttp's reader, not through httpx2's
    iterators. Gzipped (a proxy in front of the model may compress): httpx2 decodes it, the
    text is the same. Off the fast path, both go through httpx2's public `aiter_bytes`."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    text = fake_text(60)
    through_httpx2 = []
    aiter_bytes = httpx2.Response.aiter_bytes
    monkeypatch.setattr(
        httpx2.Response,
        "aiter_bytes",
        lambda response, *args: through_httpx2.append(response) or aiter_bytes(response, *args),
    )
    for gzip in (False, True):
        upstream.set(tokens=60, tps=200, gzip=gzip)
        items, _ = paced_reads(0.05)
        assert text_of(items) == text
        assert items[-1].completion_tokens == 60
    assert len(through_httpx2) == (1 if fast_aiohttp.installed() else 2)


@fast_path_only
def test_paced_stream_holds_the_connection_across_reads_that_find_text(
    provider_settings, fast_path_installed, upstream, monkeypatch
):
    """An upstream faster than the pace: the event loop stops reading the connection
    once, at the first wait, and takes it back once, when the body is complete (the
    connection goes back to the pool reading), not at every read. Each wait receives
    what came itself (private attributes of aiohttp and asyncio)."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(tokens=60, tps=200)
    changes = []  # (when, "stop" or "read")
    remove_reader = asyncio.selector_events.BaseSelectorEventLoop._remove_reader
    add_reader = asyncio.selector_events.BaseSelectorEventLoop._add_reader
    monkeypatch.setattr(
        asyncio.selector_events.BaseSelectorEventLoop,
        "_remove_reader",
        lambda loop, fd: changes.append((time.monotonic(), "stop")) or remove_reader(loop, fd),
    )
    monkeypatch.setattr(
        asyncio.selector_events.BaseSelectorEventLoop,
        "_add_reader",
        lambda loop, fd, *args: changes.append((time.monotonic(), "read")) or add_reader(loop, fd, *args),
    )
    items, times = paced_reads(0.05)
    assert text_of(items) == fake_text(60)
    assert len(items) >= 5  # paced: about 0.3 s of tokens, a read per 0.05 s
    # Up to the Finish: held once, at the first wait (maybe before the first text, if the
    # first read brought no complete line), and let go once, when the body is complete.
    streaming = [change for when, change in changes if when <= times[-1]]
    assert streaming.count("stop") == 1, streaming
    assert streaming[streaming.index("stop") :] == ["stop", "read"], streaming


@fast_path_only
def test_a_held_connection_goes_back_to_the_pool_reading(
    provider_settings, fast_path_installed, upstream, monkeypatch
):
    """Held to the end of a paced answer, the connection is let go when the body is
    complete: the next answer goes over the same connection and completes."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(tokens=30, tps=200)
    protocols = []  # of the connection each answer streams over
    find = fast_aiohttp.aiohttp_response
    monkeypatch.setattr(
        fast_aiohttp,
        "aiohttp_response",
        lambda response: protocols.append(find(response).connection.protocol) or find(response),
    )

    async def run() -> list[str]:
        provider = OpenAIProvider()
        texts = []
        try:
            for _ in range(2):
                items = provider.stream(model="fake-model", messages=[], pace=lambda: 0.05)
                texts.append(text_of([item async for item in items]))
            return texts
        finally:
            await provider.client.close()

    assert asyncio.run(run()) == [fake_text(30)] * 2
    assert protocols[0] is not None
    assert protocols[1] is protocols[0]  # the same connection, from the pool


def test_paced_stream_lets_the_connection_go_when_a_wait_brought_nothing(provider_settings, upstream):
    """An upstream slower than the pace: after a wait that found nothing, the next read
    waits for the upstream with the event loop reading the connection, and the answer
    completes."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(tokens=6, tps=10)
    items, times = paced_reads(0.02)
    assert text_of(items) == "tok0 tok1 tok2 tok3 tok4 tok5"
    assert len(items) >= 4  # reads of a token or two, then the Finish
    assert times[-1] - times[0] >= 0.45


def test_a_body_that_stalls_times_out_a_read_timeout_after_its_last_text(
    provider_settings, upstream, monkeypatch
):
    """OPENAI_TIMEOUT is the longest silence of the upstream: the answer's text so far
    came, then the timeout error, neither early nor much later (within a pace or so).

    The last text is read up to a pace after it arrived: off the fast path, aiohttp's
    timer counts from its arrival, so the error may follow the text a pace sooner; the
    fast path counts from the read, so it may run that much late. "Later" is measured in
    event-loop time, when the timer that ended the answer was due, which a busy machine
    does not move; "early" by the clock, which a busy machine only makes later."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    provider_settings.OPENAI_TIMEOUT = 0.5
    upstream.set(tokens=20, tps=50, stall_after=5)
    fired = []  # (when the timer was due, when it ran), for every timer of the loop
    call_at = asyncio.BaseEventLoop.call_at

    def recording_call_at(loop, when, callback, *args, **kwargs):
        def run(*args):
            fired.append((when, time.monotonic()))
            callback(*args)

        return call_at(loop, when, run, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_at", recording_call_at)
    items, times, error = timed_items(0.05)
    assert text_of(items) == "tok0 tok1 tok2 tok3 tok4"
    assert (error.code, error.type, error.retryable) == (504, "timeout", True)
    assert times[-1] - times[-2] >= 0.5 - 0.05
    timed_out_at = [due for due, ran in fired if ran <= times[-1]][-1]
    assert timed_out_at - times[-2] <= 0.5 + 0.05


def test_a_body_longer_than_its_read_timeout_does_not_time_out(provider_settings, upstream, monkeypatch):
    """Only silence counts: an answer of 1.2 s with a token every 0.1 s completes under a
    read timeout of 0.3 s. On the fast path, aiohttp's own timer, set again on every piece
    of data it receives, is off while the body streams (one timer of ours instead); off
    it, aiohttp's keeps the timeout."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    provider_settings.OPENAI_TIMEOUT = 0.3
    upstream.set(tokens=12, tps=10)
    armed = []  # aiohttp's read timeout, each time it set its timer again
    reschedule = ResponseHandler._reschedule_timeout
    monkeypatch.setattr(
        ResponseHandler,
        "_reschedule_timeout",
        lambda protocol: armed.append(protocol.read_timeout) or reschedule(protocol),
    )
    items, _, error = timed_items(0.05)
    assert error is None
    assert text_of(items) == fake_text(12)
    assert len(armed) >= 12  # data came in pieces
    if fast_aiohttp.installed():
        assert sum(1 for timeout in armed if timeout) <= 2  # the headers, maybe the first chunk
    else:
        assert all(armed)


def test_a_finished_body_leaves_no_timeout_on_its_connection(provider_settings, upstream):
    """The connection of a finished answer goes back to the pool; the next answer over
    it streams longer than the read timeout after the first one's end, and completes."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    provider_settings.OPENAI_TIMEOUT = 0.3

    async def run() -> list[str]:
        provider = OpenAIProvider()
        texts = []
        try:
            for tokens, tps in ((5, 200), (10, 10)):
                upstream.set(tokens=tokens, tps=tps)
                items = provider.stream(model="fake-model", messages=[], pace=lambda: 0.05)
                texts.append(text_of([item async for item in items]))
            return texts
        finally:
            await provider.client.close()

    assert asyncio.run(run()) == [fake_text(5), fake_text(10)]


@pytest.mark.parametrize("fast_paths", ["off", frozenset({"twisted", "django"})], indirect=True)
def test_switched_off_the_fast_path_touches_no_private_name(provider_settings, upstream, monkeypatch, caplog):
    """ASSISTANT_FAST_PATHS off, or a list without `aiohttp`: one log line says so, and
    answers are read on public ground alone, with the same text."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(tokens=30, tps=200)

    def private(*args):
        raise AssertionError("a private name was used")

    monkeypatch.setattr(fast_aiohttp, "aiohttp_response", private)
    monkeypatch.setattr(ResponseHandler, "_pause_reading_for_buffer", private)
    items, _ = paced_reads(0.05)
    assert text_of(items) == fake_text(30)
    assert items[-1].completion_tokens == 30
    assert fastpaths.state["aiohttp"] is False
    assert "fast path aiohttp is off (ASSISTANT_FAST_PATHS)" in caplog.text


@fast_path_only
def test_other_versions_than_it_was_written_for_leave_the_fast_path_off(
    provider_settings, upstream, monkeypatch, caplog
):
    """An aiohttp upgraded past the series the fast path was written for (here: the
    fast path says it was written for another one) turns it off, with one log line, and
    answers stream as before."""
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(tokens=30, tps=200)
    monkeypatch.setitem(fast_aiohttp.WRITTEN_FOR, "aiohttp", ("3.13",))
    items, _ = paced_reads(0.05)
    assert text_of(items) == fake_text(30)
    assert fastpaths.state["aiohttp"] is False
    assert "fast path aiohttp is off: aiohttp" in caplog.text
    assert "it was written for 3.13.x" in caplog.text


def test_the_fast_path_is_written_for_the_installed_versions():
    """The fast path's own tests run (they skip when it is off): a new version of aiohttp,
    httpx2 or the openai SDK turns it off quietly in production, and fails here until its
    private names are checked against that version (config/fastpaths/aiohttp.py)."""
    for library, series in fast_aiohttp.WRITTEN_FOR.items():
        assert fastpaths.written_for(library, series), library


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"a\nb\n"], [b"a", b"b"]),
        ([b"a\r\nb\rc\n"], [b"a", b"b", b"c"]),
        ([b"da", b"ta: x\n", b"\n"], [b"data: x", b""]),
        (["x\u2028y\u0085z\n".encode()], ["x\u2028y\u0085z".encode()]),
        ([b"no newline at the end"], [b"no newline at the end"]),
        ([b"a\r", b"\nb\n"], [b"a", b"b"]),
        ([b"a\r"], [b"a"]),
    ],
)
def test_sse_lines_split_on_cr_and_lf_only(chunks, lines):
    async def run() -> list[bytes]:
        async def source():
            for piece in chunks:
                yield piece

        return [line async for lines in sse_line_batches(source()) for line in lines]

    assert asyncio.run(run()) == lines


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ('"Gr\\u00fc\\u00dfe, \\ud83d\\ude00"', "Grüße, 😀"),
        ('"Grüße"', "Grüße"),
        # orjson refuses a lone surrogate's escape; json takes it, model_text replaces it.
        ('"a\\ud800b"', "a\ufffdb"),
    ],
)
def test_chunks_are_parsed_as_json_parses_them(content, text):
    completion = Completion()
    line = f'data: {{"choices":[{{"delta":{{"content":{content}}},"finish_reason":null}}]}}'.encode()
    assert completion.text([line]) == text
    assert completion.error is None


def test_a_chunk_that_is_not_json_is_an_error_after_the_text_before_it():
    completion = Completion()
    lines = [b'data: {"choices":[{"delta":{"content":"ok"}}]}', b"data: {not json"]
    assert completion.text(lines) == "ok"
    assert completion.error is not None


# --- values from the upstream, checked where they are read ----------------------------------


@pytest.mark.parametrize(
    ("figure", "count"),
    [
        (0, 0),
        (12, 12),
        (12.0, 12),
        (10**9, 10**9),
        (-1, None),
        (10**9 + 1, None),
        (2**31 - 1, None),
        (2**31, None),
        (2**70, None),
        (1e309, None),
        (float("nan"), None),
        (1.5, None),
        ("12", None),
        (True, None),
        (None, None),
        ({"tokens": 1}, None),
        ([1], None),
    ],
)
def test_usage_figures_are_counts_the_columns_hold_or_none(figure, count):
    finish = Finish("stop", figure, figure)
    assert (finish.prompt_tokens, finish.completion_tokens) == (count, count)
    assert count is None or type(finish.prompt_tokens) is int


@pytest.mark.parametrize(
    ("said", "reason"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        (None, "stop"),
        ("", "stop"),
        ("cancelled", "other"),  # only a stop decides that
        ("x" * 10_000, "other"),
        ("stop\x00", "other"),
        ("\ud800", "other"),
        (12, "other"),
        ({"reason": "stop"}, "other"),
        (["stop"], "other"),
    ],
)
def test_finish_reasons_are_known_short_names(said, reason):
    assert Finish(said).finish_reason == reason


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("86400", 3600.0),
        ("1e309", None),
        ("inf", None),
        ("nan", None),
        ("-1", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("", None),
    ],
)
def test_retry_after_is_seconds_up_to_an_hour_or_none(header, seconds):
    assert openai_compatible._retry_after({"retry-after": header}) == seconds


def items_until_error(provider: OpenAIProvider) -> tuple[list, ProviderError | None]:
    """What `provider.stream` yielded, and the error it ended with (None: it finished)."""
    items: list = []

    async def run() -> ProviderError | None:
        try:
            async for item in provider.stream(
                model="fake-model", messages=[{"role": "user", "content": "hi"}]
            ):
                items.append(item)
        except ProviderError as error:
            return error
        finally:
            await provider.client.close()
        return None

    return items, asyncio.run(run())


def test_a_hostile_finish_and_usage_reach_the_app_as_the_columns_hold_them(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(
        chunks=[
            chunk(choices=[{"index": 0, "delta": {"content": "Hallo"}, "finish_reason": None}]),
            chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "x" * 10_000}]),
            # 1e309 is a number JSON allows and no float holds: Python's json reads inf.
            '{"choices":[],"usage":{"prompt_tokens":1e309,"completion_tokens":-1}}',
        ]
    )
    items, error = items_until_error(OpenAIProvider())
    assert error is None
    assert items == ["Hallo", Finish("other", None, None)]


@pytest.mark.parametrize(
    "broken",
    [
        [1, 2],
        "text",
        5,
        chunk(choices={"0": {"delta": {"content": "x"}}}),
        chunk(choices=["x"]),
        chunk(choices=[{"index": 0, "delta": "x"}]),
        chunk(choices=[{"index": 0, "delta": {"content": 5}}]),
        chunk(choices=[{"index": 0, "delta": {"content": {"text": "x"}}}]),
    ],
)
def test_chunks_not_shaped_as_the_protocol_are_a_broken_answer_after_the_text_before_them(
    provider_settings, upstream, broken
):
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(chunks=[chunk(choices=[{"index": 0, "delta": {"content": "Hallo"}}]), broken])
    items, error = items_until_error(OpenAIProvider())
    assert items == ["Hallo"]
    assert (error.code, error.type) == (502, "upstream_error")


def test_a_status_http_does_not_define_is_a_broken_answer(provider_settings, upstream):
    provider_settings.OPENAI_BASE_URL = upstream.url
    upstream.set(status=999)
    items, error = items_until_error(OpenAIProvider())
    assert (items, error.code, error.type) == ([], 502, "upstream_error")


@pytest.mark.parametrize("content", [5, True, {"text": "Titel"}, ["Titel"]])
def test_a_non_streamed_reply_whose_text_is_not_a_string_is_a_broken_answer(
    provider_settings, upstream, content
):
    provider_settings.OPENAI_BASE_URL = upstream.url
    message = {"role": "assistant", "content": content}
    upstream.set(
        completion={
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    )
    provider = OpenAIProvider()

    async def run() -> str:
        try:
            return await provider.complete(
                model="fake-model", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
        finally:
            await provider.client.close()

    with pytest.raises(ProviderError) as raised:
        asyncio.run(run())
    assert (raised.value.code, raised.value.type) == (502, "upstream_error")
