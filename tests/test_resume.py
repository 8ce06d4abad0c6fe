"""Streaming that loses nothing: resuming after cuts, reloads, many tabs and bad positions.

Real daphne, real HTTP, the fake upstream. Every test compares what a client assembled
from the wire with what the database holds.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from assistant import generation
from assistant.models import Message, ServerProcess
from tests.conftest import live_env, session_client, start_daphne, stop_daphne
from tests.sse import SSEEvent, parse_sse
from tests.test_streaming import create_conversation, fake, send, text_of, wait_for_final

pytestmark = pytest.mark.live

SEED = 20240611
# Words that break naive byte, JSON, line or HTML handling: umlauts, emoji (ZWJ sequences
# and flags are several code points), other scripts, typographic and HTML-special
# characters, a literal backslash-n, and U+2028 (a line break to some splitters, text here).
WORDS = [
    "Grüße",
    "aus",
    "Köln!",
    "Straße,",
    "Maß",
    "Öl",
    "Äpfel",
    "über",
    "naïve",
    "façade",
    "👩‍💻",
    "🇩🇪",
    "😀",
    "“zitiert”",
    "—",
    "你好",
    "שלום",
    "a<b>c",
    "&amp;",
    "'x'",
    '"y"',
    "\\n",
    "Zeile\u2028zwei",
]
ANSWER_EVENTS = {"start", "delta", "done", "error"}
FINAL_EVENTS = {"done", "error"}
COMMENT = ":"  # the event name `frames` gives a comment-only frame such as `: keep-alive`
STREAM_TIMEOUT = httpx.Timeout(10, read=10)


def seeded(seed: int) -> random.Random:
    """Reproducible randomness for test data and cut plans."""
    return random.Random(seed)  # noqa: S311 - test data, not a secret


def words(rng: random.Random, count: int) -> str:
    """`count` tokens for the fake upstream (each word with its leading space or newline)."""
    return "".join(
        ("" if n == 0 else "\n" if rng.random() < 0.05 else " ") + rng.choice(WORDS) for n in range(count)
    )


def number_of(event_id: str) -> int:
    return int(event_id.rsplit(":", 1)[1])


def parse_frame(text: str) -> SSEEvent:
    lines = text.split("\n")
    if all(line.startswith(":") for line in lines):
        return SSEEvent(COMMENT, text, None)
    (event,) = parse_sse([*lines, ""])
    return event


@dataclass
class Frames:
    """The complete SSE frames of a response as they arrive, each with its arrival time.

    With `byte_budget`, reading stops after that many body bytes, as if the connection
    broke there: often mid-frame, even mid-character. Only frames that arrived complete
    (up to their blank line) count, as in a browser's EventSource.
    """

    response: httpx.Response
    byte_budget: int | None = None
    partial: bytes = b""  # the start of a frame that never completed
    arrivals: list[tuple[float, SSEEvent]] = field(default_factory=list)

    def __iter__(self) -> Iterator[SSEEvent]:
        budget = self.byte_budget
        chunks = self.response.iter_raw()
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except httpx.ReadTimeout:
                raise AssertionError(f"the stream went silent; it sent {self.arrivals}") from None
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
            *complete, self.partial = (self.partial + chunk).split(b"\n\n")
            now = time.monotonic()
            for raw in complete:
                event = parse_frame(raw.decode("utf-8"))
                self.arrivals.append((now, event))
                yield event
            if budget == 0:
                return


def open_events(
    client: httpx.Client,
    conversation: dict,
    position: str,
    *,
    via: str = "header",
    headers: dict | None = None,
    timeout: httpx.Timeout = STREAM_TIMEOUT,
):
    """Connect to the conversation's events from `position`, as header or query parameter."""
    headers = dict(headers or {})
    params = {}
    if via == "header":
        # Latin-1, as the header travels: httpx would refuse non-ASCII text.
        headers["Last-Event-ID"] = position.encode("latin-1")
    else:
        params["lastEventId"] = position
    return client.stream("GET", conversation["events_url"], headers=headers, params=params, timeout=timeout)


def follow(client: httpx.Client, conversation: dict, position: str, answer_id: int) -> list[SSEEvent]:
    """The events of one answer from `position` to its done or error; no reset allowed."""
    seen: list[SSEEvent] = []
    with open_events(client, conversation, position) as response:
        assert response.status_code == 200
        for event in Frames(response):
            assert event.event != "stream-reset", f"{position} could not be resumed"
            if event.event in ANSWER_EVENTS and event.json()["message"] == answer_id:
                seen.append(event)
                if event.event in FINAL_EVENTS:
                    return seen
    raise AssertionError(f"the stream ended before answer {answer_id} did")


def rebuilt(shown: str, events: list[SSEEvent]) -> str:
    """What a client that showed `shown` displays after these events of the same answer."""
    text = shown
    for event in events:
        if event.event == "start":
            text = ""  # a replayed start: the answer begins here, rebuild it
        elif event.event == "delta":
            text += event.json()["text"]
    return text


# --- 1. random cuts, many concurrent streams ----------------------------------------------


@dataclass
class CutStats:
    connections: int = 0
    via_query: int = 0
    mid_frame_cuts: int = 0


def follow_with_cuts(
    client: httpx.Client, conversation: dict, sent: dict, rng: random.Random
) -> tuple[list[SSEEvent], CutStats]:
    """Read the answer, cutting the connection at random points and resuming each time."""
    answer_id = sent["assistant_message"]["id"]
    position = sent["assistant_message"]["last_event_id"]
    seen: list[SSEEvent] = []
    stats = CutStats()
    while not seen or seen[-1].event not in FINAL_EVENTS:
        stats.connections += 1
        assert stats.connections <= 300, "the answer never finished"
        via = "query" if rng.random() < 0.3 else "header"
        stats.via_query += via == "query"
        # Half the connections break after some bytes, half after some complete events.
        byte_budget = rng.randint(30, 700) if rng.random() < 0.5 else None
        event_budget = None if byte_budget else rng.randint(1, 6)
        with open_events(client, conversation, position, via=via) as response:
            assert response.status_code == 200
            frames = Frames(response, byte_budget)
            for event in frames:
                assert event.event != "stream-reset", f"{position} could not be resumed"
                if event.id is not None:
                    position = event.id
                if event.event in ANSWER_EVENTS:
                    assert event.json()["message"] == answer_id
                    seen.append(event)
                    if event.event in FINAL_EVENTS:
                        break
                    if event_budget is not None:
                        event_budget -= 1
                        if event_budget == 0:
                            break
            stats.mid_frame_cuts += bool(frames.partial)
        # Leaving the block closes the unread response: the connection drops here.
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0.02, 0.2))  # miss a few events, to be caught up
    return seen, stats


def test_resume_after_random_cuts_loses_and_repeats_nothing_on_many_streams(live, alice, upstream):
    rng = seeded(SEED)
    count = 12
    plans = [(seeded(rng.randrange(2**32)), words(rng, 150 + rng.randrange(40))) for _ in range(count)]

    def one(client: httpx.Client, plan_rng: random.Random, expected: str):
        conversation = create_conversation(client)
        sent = send(client, conversation, fake(text=expected, tps=100))
        seen, stats = follow_with_cuts(client, conversation, sent, plan_rng)
        return sent["assistant_message"]["id"], expected, seen, stats

    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        clients = [stack.enter_context(session_client(live, alice)) for _ in range(count)]
        futures = [pool.submit(one, client, *plan) for client, plan in zip(clients, plans, strict=True)]
        results = [future.result(timeout=60) for future in futures]

    for answer_id, expected, seen, stats in results:
        ids = [number_of(event.id) for event in seen]
        assert len(ids) == len(set(ids)), "an event arrived twice"
        assert ids == sorted(ids), "events arrived out of order"
        assert seen[0].event == "start"
        assert [event.event for event in seen[1:-1]] == ["delta"] * (len(seen) - 2)
        assert seen[-1].event == "done"
        assert stats.connections >= 3, "the answer was not cut several times"
        assert text_of(seen) == expected
        assert Message.objects.get(pk=answer_id).content == expected
    # The random plans did cut mid-frame and did resume through the query parameter.
    assert sum(stats.mid_frame_cuts for *_, stats in results) > 0
    assert sum(stats.via_query for *_, stats in results) > 0


# --- 2 and 3. reload mid-answer -------------------------------------------------------------


@dataclass
class Reload:
    shown: str  # the answer's text as the reloaded client shows it
    status: str
    position: str  # where the reloaded client connects from
    events: list[SSEEvent]


Snapshot = Callable[[httpx.Client, dict, int], tuple[str, str, str]]


def snapshot_from_api(client: httpx.Client, conversation: dict, answer_id: int) -> tuple[str, str, str]:
    response = client.get(conversation["detail_url"])
    assert response.status_code == 200
    data = response.json()
    (answer,) = [m for m in data["messages"] if m["id"] == answer_id]
    return answer["content"], answer["status"], data["last_event_id"]


PAGE_DATA = re.compile(r'<script id="page-data" type="application/json">(.*?)</script>', re.DOTALL)


def snapshot_from_page(client: httpx.Client, conversation: dict, answer_id: int) -> tuple[str, str, str]:
    response = client.get(conversation["url"])
    assert response.status_code == 200
    page = response.text
    page_data = json.loads(PAGE_DATA.search(page).group(1))
    item = re.search(rf'<li [^>]*data-message-id="{answer_id}"[^>]*data-status="(\w+)"', page)
    assert item is not None, page
    status = item.group(1)
    # The page continues a streaming answer from its raw text (the HTML shows it rendered);
    # an ended one is shown from the stored text.
    shown = page_data["streaming"].get(str(answer_id))
    if shown is None:
        shown = Message.objects.get(pk=answer_id).content
    return shown, status, page_data["last_event_id"]


def reload_and_follow(client: httpx.Client, conversation: dict, answer_id: int, snapshot: Snapshot) -> Reload:
    shown, status, position = snapshot(client, conversation, answer_id)
    return Reload(shown, status, position, follow(client, conversation, position, answer_id))


def reloads_during_answer(
    live, alice, client: httpx.Client, snapshot: Snapshot, expected: str, tps: float, moments: list[float]
) -> tuple[int, list[SSEEvent], list[Reload]]:
    """Stream an answer; at each moment (seconds after the send) a new tab reloads and follows."""
    conversation = create_conversation(client)
    with ExitStack() as stack, ThreadPoolExecutor(len(moments)) as pool:
        tabs = [stack.enter_context(session_client(live, alice)) for _ in moments]
        sent_at = time.monotonic()
        sent = send(client, conversation, fake(text=expected, tps=tps))
        answer_id = sent["assistant_message"]["id"]
        futures = []
        seen: list[SSEEvent] = []
        with open_events(client, conversation, sent["assistant_message"]["last_event_id"]) as response:
            for event in Frames(response):
                if event.event not in ANSWER_EVENTS:
                    continue
                seen.append(event)
                if event.event in FINAL_EVENTS:
                    break
                deltas = sum(e.event == "delta" for e in seen)
                if (
                    event.event == "delta"
                    and deltas >= 2
                    and len(futures) < len(moments)
                    and time.monotonic() - sent_at >= moments[len(futures)]
                ):
                    futures.append(
                        pool.submit(reload_and_follow, tabs[len(futures)], conversation, answer_id, snapshot)
                    )
        reloads = [future.result(timeout=30) for future in futures]
    assert len(reloads) == len(moments), "the answer ended before every reload"
    return answer_id, seen, reloads


def assert_reloads_continue_exactly(reloads: list[Reload], final: str) -> None:
    early, *later = reloads
    # Before the first persist (ASSISTANT_PERSIST_SECONDS): nothing stored yet, and the
    # position is before the answer's start, which is replayed and rebuilds it.
    assert (early.shown, early.status) == ("", "streaming")
    assert early.events[0].event == "start"
    for reload in later:
        # Later: the stored partial text, continued from its own position.
        assert reload.status == "streaming"
        assert reload.shown
        assert final.startswith(reload.shown)
        assert "start" not in [event.event for event in reload.events]
    for reload in reloads:
        assert reload.events[-1].event == "done"
        assert number_of(reload.events[0].id) > number_of(reload.position)
        # Exactly: no text twice (overlap), none missing (gap).
        assert rebuilt(reload.shown, reload.events) == final


def test_reload_from_the_api_mid_answer_continues_without_gap_or_overlap(live, alice, alice_http, upstream):
    expected = words(seeded(SEED + 2), 80)

    answer_id, seen, reloads = reloads_during_answer(
        live, alice, alice_http, snapshot_from_api, expected, tps=40, moments=[0.0, 0.9, 1.5]
    )

    assert text_of(seen) == expected
    assert_reloads_continue_exactly(reloads, expected)
    assert Message.objects.get(pk=answer_id).content == expected


def test_reload_of_the_page_mid_answer_continues_without_gap_or_overlap(live, alice, alice_http, upstream):
    expected = words(seeded(SEED + 3), 64)

    answer_id, seen, reloads = reloads_during_answer(
        live, alice, alice_http, snapshot_from_page, expected, tps=40, moments=[0.0, 0.9]
    )

    assert text_of(seen) == expected
    assert_reloads_continue_exactly(reloads, expected)
    assert Message.objects.get(pk=answer_id).content == expected


def test_reload_as_an_answer_finishes_shows_no_text_twice(live, alice, alice_http, upstream):
    """Reloads racing the end of answers: stored text plus replay must not repeat a delta.

    Many short answers one after another while tabs reload all the time; every reload is
    checked against the events its position replays. The race needs a reload to read its
    position just before an answer's last delta and the rows just after its final write,
    so it takes many finishes to hit; a correct server passes every time.
    """
    conversation = create_conversation(alice_http)
    stop = threading.Event()
    followed: dict[int, list[SSEEvent]] = {}

    def reload_repeatedly(client: httpx.Client) -> list[tuple[dict[int, str], str]]:
        reloads = []
        while not stop.is_set():
            response = client.get(conversation["detail_url"])
            assert response.status_code == 200
            data = response.json()
            shown = {m["id"]: m["content"] for m in data["messages"] if m["role"] == "assistant"}
            reloads.append((shown, data["last_event_id"]))
        return reloads

    started = time.monotonic()
    with ExitStack() as stack, ThreadPoolExecutor(4) as pool:
        tabs = [stack.enter_context(session_client(live, alice)) for _ in range(4)]
        futures = [pool.submit(reload_repeatedly, tab) for tab in tabs]
        try:
            while time.monotonic() - started < 2.0:
                sent = send(alice_http, conversation, fake(tokens=6, tps=100))
                answer = sent["assistant_message"]
                followed[answer["id"]] = follow(
                    alice_http, conversation, answer["last_event_id"], answer["id"]
                )
        finally:
            stop.set()
        reloads = [reload for future in futures for reload in future.result(timeout=10)]

    final = dict(Message.objects.filter(pk__in=followed).values_list("pk", "content"))
    repeated = {}
    for shown, position in reloads:
        for answer_id, text in shown.items():
            replayed = [e for e in followed[answer_id] if number_of(e.id) > number_of(position)]
            if rebuilt(text, replayed) != final[answer_id]:
                repeated[answer_id] = (text, position, [(e.event, e.id, e.data) for e in replayed])
    assert repeated == {}, f"{len(repeated)} of {len(followed)} answers showed text twice after a reload"
    for answer_id, events in followed.items():
        assert text_of(events) == final[answer_id]


# --- 4. many tabs ----------------------------------------------------------------------------


def test_two_tabs_subscribed_before_the_send_get_the_same_answer(live, alice, alice_http, upstream):
    conversation = create_conversation(alice_http)
    expected = words(seeded(SEED + 4), 40)
    subscribed = [threading.Event(), threading.Event()]

    def tab(client: httpx.Client, ready: threading.Event) -> list[SSEEvent]:
        position = client.get(conversation["detail_url"]).json()["last_event_id"]
        seen: list[SSEEvent] = []
        with open_events(client, conversation, position) as response:
            assert response.status_code == 200
            for event in Frames(response):
                assert event.event != "stream-reset"
                if event.event == "stream-open":
                    ready.set()
                if event.event in ANSWER_EVENTS:
                    seen.append(event)
                    if event.event in FINAL_EVENTS:
                        return seen
        raise AssertionError("the stream ended before the answer did")

    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        tabs = [stack.enter_context(session_client(live, alice)) for _ in subscribed]
        futures = [pool.submit(tab, client, ready) for client, ready in zip(tabs, subscribed, strict=True)]
        assert all(ready.wait(5) for ready in subscribed)
        sent = send(alice_http, conversation, fake(text=expected, tps=100))
        first, second = (future.result(timeout=20) for future in futures)

    assert [(e.event, e.id, e.data) for e in first] == [(e.event, e.id, e.data) for e in second]
    assert first[0].event == "start"
    assert first[0].json()["message"] == sent["assistant_message"]["id"]
    assert first[-1].event == "done"
    assert text_of(first) == text_of(second) == expected
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == expected


# --- 5. finished streams do not loop ----------------------------------------------------------


@pytest.fixture
def keepalive_server(transactional_db, fake_upstream):
    """A daphne of its own that sends a keep-alive after 1 s of silence.

    Function-scoped on purpose: two servers over one database sweep each other's
    answers once the test database flush removed their leases, so this one lives only
    while its own test runs.
    """
    server = start_daphne(live_env(fake_upstream, ASSISTANT_KEEPALIVE_SECONDS="1"), "daphne-keepalive")
    yield server
    stop_daphne(server)


def test_finished_answer_is_not_replayed_and_the_idle_stream_keeps_alive(keepalive_server, alice, upstream):
    with session_client(keepalive_server, alice) as client:
        # Named, so no automatic title: its `title` event would follow the answer's `done`.
        conversation = create_conversation(client, title="Wiederholung")
        sent = send(client, conversation, fake(text=words(seeded(SEED + 5), 20)))
        answer_id = sent["assistant_message"]["id"]
        answer = follow(client, conversation, sent["assistant_message"]["last_event_id"], answer_id)
        assert answer[-1].event == "done"
        # Reconnect as a browser does (Last-Event-ID of the done event) and as a reloaded
        # page does (the conversation's last_event_id as query parameter), both at once.
        reconnects = {
            "done-event-header": (answer[-1].id, "header"),
            "detail-query": (client.get(conversation["detail_url"]).json()["last_event_id"], "query"),
        }
        idle_timeout = httpx.Timeout(5, read=3)
        arrivals = {}
        with ExitStack() as stack:
            connected = time.monotonic()
            responses = {
                name: stack.enter_context(
                    open_events(client, conversation, position, via=via, timeout=idle_timeout)
                )
                for name, (position, via) in reconnects.items()
            }
            for name, response in responses.items():
                assert response.status_code == 200
                frames = Frames(response)
                for event in frames:
                    if event.event == "keep-alive":
                        break
                    assert event.event == "stream-open", f"{name}: replayed after done: {event}"
                arrivals[name] = [(at - connected, event) for at, event in frames.arrivals]

    for name, frames_seen in arrivals.items():
        # Nothing between the opening and the first keep-alive a second later: the
        # finished answer was not sent again (a replay goes out at once, in the first write).
        assert [event.event for _, event in frames_seen] == ["stream-open", "keep-alive"], name
        keep_alive_after, _ = frames_seen[1]
        assert keep_alive_after < 2, name
    assert Message.objects.get(pk=answer_id).content == text_of(answer)


# --- 6. headers and no buffering -------------------------------------------------------------


def test_event_stream_is_uncached_uncompressed_and_unbuffered(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=7, tps=5))
    answer_id = sent["assistant_message"]["id"]

    connected = time.monotonic()
    with open_events(
        alice_http,
        conversation,
        sent["assistant_message"]["last_event_id"],
        headers={"Accept-Encoding": "gzip, deflate"},
    ) as response:
        frames = Frames(response)
        seen = []
        for event in frames:
            if event.event in ANSWER_EVENTS:
                seen.append(event)
                if event.event in FINAL_EVENTS:
                    break

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert "content-length" not in response.headers
    arrived = {event.event: at - connected for at, event in reversed(frames.arrivals)}  # first of each
    # 7 tokens at 5 per second: 1.2 s from the first to the last. A buffer anywhere
    # (compression, a proxy-style buffer, a blocking write) would deliver them together.
    assert arrived["delta"] < 0.8
    assert arrived["done"] - arrived["delta"] > 0.9
    assert sum(event.event == "delta" for _, event in frames.arrivals) >= 4
    assert text_of(seen) == Message.objects.get(pk=answer_id).content
    assert text_of(seen) == "tok0" + "".join(f" tok{i}" for i in range(1, 7))


# --- 7. bad positions -------------------------------------------------------------------------


BAD_POSITIONS = [
    pytest.param("header", "garbage", id="garbage"),
    pytest.param("header", "conversation-x:abc", id="malformed-header"),
    pytest.param("header", "conversation-{own}:", id="no-number"),
    pytest.param("header", "conversation-{own}:²", id="superscript-digit-header"),
    pytest.param("query", "conversation-{own}:²", id="superscript-digit-query"),
    pytest.param("header", "{other}", id="other-conversation-header"),
    pytest.param("query", "{other}", id="other-conversation-query"),
    pytest.param("header", "conversation-{own}:1", id="older-than-anything"),
    pytest.param("header", "conversation-{own}:99999999999999999999", id="never-handed-out"),
]


@pytest.mark.parametrize(("via", "token"), BAD_POSITIONS)
def test_bad_position_gets_a_reset_and_never_foreign_text(live, alice, alice_http, upstream, via, token):
    # Another conversation of the same user, with a real position and an answer streaming.
    other = create_conversation(alice_http)
    other_sent = send(alice_http, other, fake(text="Fremder Text, nie hier."))
    other_answer = other_sent["assistant_message"]
    other_events = follow(alice_http, other, other_answer["last_event_id"], other_answer["id"])
    busy = send(alice_http, other, fake(text="fremd " * 200, tps=200))
    own = create_conversation(alice_http)
    channel = f"conversation-{own['id']}"
    position = token.format(own=own["id"], other=other_events[-1].id)
    expected = words(seeded(SEED + 7), 30)

    seen: list[SSEEvent] = []
    try:
        with (
            session_client(live, alice) as listener,
            open_events(listener, own, position, via=via, timeout=httpx.Timeout(10, read=5)) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = iter(Frames(response))
            for event in frames:
                seen.append(event)
                if event.event == "stream-reset":
                    break
            # After the reset, the same connection carries this conversation's next answer.
            sent = send(alice_http, own, fake(text=expected, tps=400))
            for event in frames:
                seen.append(event)
                if event.event in FINAL_EVENTS:
                    break
    finally:
        alice_http.post(f"/api/messages/{busy['assistant_message']['id']}/cancel/")
        wait_for_final(busy["assistant_message"]["id"])

    assert [event.event for event in seen[:2]] == ["stream-open", "stream-reset"]
    reset = seen[1]
    assert reset.json() == {"channels": [channel]}
    assert reset.id.startswith(channel + ":")
    answer = [event for event in seen if event.event in ANSWER_EVENTS]
    assert [event.event for event in seen[2:]] == [event.event for event in answer]
    assert answer[0].event == "start"
    assert answer[-1].event == "done"
    assert {event.json()["message"] for event in answer} == {sent["assistant_message"]["id"]}
    assert all(event.id.startswith(channel + ":") for event in seen[1:])
    wire = "".join(f"{event.id}{event.data}" for event in seen)
    assert other["id"] not in wire
    assert "fremd" not in wire.lower()
    assert text_of(answer) == expected
    assert Message.objects.get(pk=sent["assistant_message"]["id"]).content == expected


# --- an answer another process takes over ---------------------------------------------------


def test_answer_marked_interrupted_by_another_process_still_ends_its_stream(live, alice_http, upstream):
    """Another process that finds this one's lease expired marks its answer interrupted.

    That is what `generation.heartbeat_and_recover` does in every process (here: a
    process stalled past ASSISTANT_LEASE_SECONDS, or a lease row gone). The clients
    streaming from the generating process must still see the answer end, and what they
    assembled must be what is stored.
    """
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=20, tps=40))
    answer_id = sent["assistant_message"]["id"]

    seen: list[SSEEvent] = []
    position = sent["assistant_message"]["last_event_id"]
    with open_events(alice_http, conversation, position, timeout=httpx.Timeout(10, read=1.5)) as response:
        for event in Frames(response):
            if event.event in ANSWER_EVENTS:
                seen.append(event)
            if event.event == "delta" and len(seen) == 2:
                owner = Message.objects.get(pk=answer_id).generated_by
                # Its last heartbeat an hour ago (the row may be gone after a flush).
                ServerProcess.objects.update_or_create(
                    pk=owner, defaults={"heartbeat_at": timezone.now() - timedelta(hours=1)}
                )
                marked = generation.heartbeat_and_recover(process_id="another-process")
                assert (answer_id, conversation["id"]) in marked
            if event.event in FINAL_EVENTS:
                break

    message = Message.objects.get(pk=answer_id)
    assert message.status != "streaming"
    assert seen[-1].event == ("done" if message.status == "done" else "error")
    assert text_of(seen) == message.content
