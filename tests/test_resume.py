"""Streaming that loses nothing: resuming after cuts, reloads, many tabs and bad positions.

Real daphne, real HTTP, the fake upstream. Every test compares what a client assembled
from the wire with what the database holds.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from assistant.generation import leases
from assistant.models import Message, ServerProcess
from tests.helpers.chat import create_conversation, fake, send, text_of, wait_for_final
from tests.helpers.live import live_env, session_client, start_daphne, stop_daphne
from tests.helpers.resume import (
    ANSWER_EVENTS,
    FINAL_EVENTS,
    SEED,
    Frames,
    assert_reloads_continue_exactly,
    follow,
    follow_with_cuts,
    number_of,
    open_events,
    rebuilt,
    reloads_during_answer,
    seeded,
    snapshot_from_api,
    snapshot_from_page,
    words,
)
from tests.helpers.sse import SSEEvent

pytestmark = pytest.mark.live


# --- 1. random cuts, many concurrent streams ----------------------------------------------


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
        # A keep-alive must come before a read waits 3 s in vain.
        idle_timeout = httpx.Timeout(5, read=3)
        arrivals = {}
        with ExitStack() as stack:
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
                arrivals[name] = [event.event for _, event in frames.arrivals]

    for name, frames_seen in arrivals.items():
        # Nothing between the opening and the first keep-alive a second later: the
        # finished answer was not sent again (a replay goes out at once, in the first write).
        assert frames_seen == ["stream-open", "keep-alive"], name
    assert Message.objects.get(pk=answer_id).content == text_of(answer)


# --- 6. headers and no buffering -------------------------------------------------------------


def test_event_stream_is_uncached_uncompressed_and_unbuffered(alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=7, tps=5))
    answer_id = sent["assistant_message"]["id"]

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
    arrived = {event.event: at for at, event in reversed(frames.arrivals)}  # first of each
    # 7 tokens at 5 per second: 1.2 s from the first to the last. A buffer anywhere
    # (compression, a proxy-style buffer, a blocking write) would deliver them together,
    # in fewer reads of the socket.
    assert arrived["done"] - arrived["delta"] > 0.9
    assert len({at for at, event in frames.arrivals if event.event == "delta"}) >= 4
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

    That is what `leases.heartbeat_and_recover` does in every process (here: a
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
                marked = leases.heartbeat_and_recover(process_id="another-process")
                assert (answer_id, conversation["id"]) in marked
            if event.event in FINAL_EVENTS:
                break

    message = Message.objects.get(pk=answer_id)
    assert message.status != "streaming"
    assert seen[-1].event == ("done" if message.status == "done" else "error")
    assert text_of(seen) == message.content
