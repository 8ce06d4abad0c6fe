"""Resuming an answer's stream: reproducible hostile text, SSE frames as they arrive (cut
short at will), following from a position, and reloads mid-answer that must continue
without gap or overlap."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx

from assistant.models import Message
from tests.helpers.chat import create_conversation, fake, send
from tests.helpers.live import session_client
from tests.helpers.sse import SSEEvent, parse_sse

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
