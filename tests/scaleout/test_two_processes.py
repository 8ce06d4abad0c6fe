"""Two daphne processes over one PostgreSQL and one Redis, as behind a load balancer.

A POST may land on one process and the EventSource on the other; a stop, a reload or a
reconnect may land anywhere. Every test compares what clients assembled from the wire
with what the database holds.
"""

from __future__ import annotations

import itertools
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest
from django.conf import settings
from django_eventstream import send_event

from assistant.events.wire import channel_for
from assistant.models import Conversation, Message
from tests.helpers.chat import (
    create_conversation,
    fake,
    read_until_text,
    send,
    stop_mid_answer,
    text_of,
    wait_for_final,
)
from tests.helpers.live import LiveServer, session_client
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
    snapshot_from_page,
    words,
)
from tests.helpers.sse import SSEEvent
from tests.scaleout.tcp_proxy import TcpProxy

pytestmark = pytest.mark.live


def generated_by(server: LiveServer, answer_id: int) -> bool:
    """Whether `server`'s process generated the answer (its lease name holds the pid)."""
    return Message.objects.get(pk=answer_id).generated_by.split(":")[1] == str(server.process.pid)


def assert_exactly_once_in_order(seen: list[SSEEvent], expected: str, answer_id: int) -> None:
    ids = [number_of(event.id) for event in seen]
    assert len(ids) == len(set(ids)), "an event arrived twice"
    assert ids == sorted(ids), "events arrived out of order"
    assert seen[0].event == "start"
    assert [event.event for event in seen[1:-1]] == ["delta"] * (len(seen) - 2)
    assert seen[-1].event == "done"
    assert text_of(seen) == expected
    assert Message.objects.get(pk=answer_id).content == expected


def test_posted_on_one_process_streamed_on_the_other_every_token_once(pair, alice):
    count = 8
    rng = seeded(SEED + 100)
    plans = [words(rng, 60 + rng.randrange(60)) for _ in range(count)]

    def one(index: int, expected: str):
        with session_client(pair.a, alice) as on_a, session_client(pair.b, alice) as on_b:
            poster, reader = (on_a, on_b) if index % 2 == 0 else (on_b, on_a)
            conversation = create_conversation(poster)
            sent = send(poster, conversation, fake(text=expected, tps=120))
            answer = sent["assistant_message"]
            return answer["id"], follow(reader, conversation, answer["last_event_id"], answer["id"])

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count), plans))

    for index, ((answer_id, seen), expected) in enumerate(zip(results, plans, strict=True)):
        assert generated_by(pair.a if index % 2 == 0 else pair.b, answer_id)
        assert_exactly_once_in_order(seen, expected, answer_id)


class EitherProcess:
    """An httpx client stand-in: each event stream goes to A or B, at random."""

    def __init__(self, clients: list[httpx.Client], rng: random.Random) -> None:
        self.clients = clients
        self.rng = rng
        self.used: list[int] = []

    def stream(self, *args, **kwargs):
        index = self.rng.randrange(len(self.clients))
        self.used.append(index)
        return self.clients[index].stream(*args, **kwargs)


def test_resume_on_the_other_process_after_random_cuts(pair, alice):
    rng = seeded(SEED + 101)
    count = 6
    plans = [(seeded(rng.randrange(2**32)), words(rng, 120 + rng.randrange(40))) for _ in range(count)]

    def one(plan_rng: random.Random, expected: str):
        with session_client(pair.a, alice) as on_a, session_client(pair.b, alice) as on_b:
            conversation = create_conversation(on_a)
            sent = send(plan_rng.choice([on_a, on_b]), conversation, fake(text=expected, tps=100))
            either = EitherProcess([on_a, on_b], plan_rng)
            seen, stats = follow_with_cuts(either, conversation, sent, plan_rng)
            return sent["assistant_message"]["id"], seen, stats, either.used

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda plan: one(*plan), plans))

    for (answer_id, seen, stats, used), (_, expected) in zip(results, plans, strict=True):
        assert stats.connections >= 3
        assert_exactly_once_in_order(seen, expected, answer_id)
        # Reconnects went to both processes, switching between them.
        assert set(used) == {0, 1}
        assert any(a != b for a, b in itertools.pairwise(used))


def test_reload_on_the_other_process_continues_exactly(pair, alice, clients):
    """The page (rendered by B) resumes an answer generated on A: positions are global."""
    on_a, _ = clients
    expected = words(seeded(SEED + 102), 64)

    answer_id, seen, reloads = reloads_during_answer(
        pair.b, alice, on_a, snapshot_from_page, expected, tps=40, moments=[0.0, 0.9]
    )

    assert generated_by(pair.a, answer_id)
    assert text_of(seen) == expected
    assert_reloads_continue_exactly(reloads, expected)
    assert Message.objects.get(pk=answer_id).content == expected


def test_stop_sent_to_the_other_process_stops_the_answer_through_redis(pair, clients):
    """The database poll runs every 30 s here: a stop that ends the answer within 10 s
    (ample for one that takes a fraction of a second) came through Redis."""
    on_a, on_b = clients
    for generating, other in ((on_a, on_b), (on_b, on_a)):
        conversation = create_conversation(generating)
        sent = send(generating, conversation, fake(never_end=True, tps=50))
        # Followed and stopped on the process that does not generate it.
        stop_mid_answer(other, other, conversation, sent, deadline=10)


def test_sends_to_one_conversation_on_both_processes_at_once_one_wins(pair, clients):
    """The row lock holds across processes (PostgreSQL SELECT ... FOR UPDATE)."""
    on_a, on_b = clients
    for _ in range(8):
        conversation = create_conversation(on_a)
        barrier = threading.Barrier(2)

        def post(client: httpx.Client, conversation=conversation, barrier=barrier) -> httpx.Response:
            barrier.wait()
            # Long enough that the loser cannot arrive after the winner's answer ended.
            return client.post(
                f"/api/conversations/{conversation['id']}/messages/",
                json={"content": fake(tokens=100, tps=20)},
            )

        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(post, [on_a, on_b]))
        assert sorted(r.status_code for r in responses) == [202, 409]
        (won,) = [r.json() for r in responses if r.status_code == 202]
        (lost,) = [r.json() for r in responses if r.status_code == 409]
        assert lost["error"]["code"] == "answer_in_progress"
        assert Message.objects.filter(conversation_id=conversation["id"]).count() == 2
        on_a.post(f"/api/messages/{won['assistant_message']['id']}/cancel/")
        assert wait_for_final(won["assistant_message"]["id"]).status == "cancelled"


def test_killed_process_leaves_its_answer_interrupted_and_every_client_informed(pair, extra_process, alice):
    doomed = extra_process("doomed")
    with session_client(doomed, alice) as on_doomed, session_client(pair.b, alice) as on_b:
        conversation = create_conversation(on_doomed)
        sent = send(on_doomed, conversation, fake(never_end=True, tps=60))
        answer = sent["assistant_message"]
        with ThreadPoolExecutor(1) as pool:
            # A client of B follows the answer from the start...
            on_b_events = pool.submit(follow, on_b, conversation, answer["last_event_id"], answer["id"])
            # ...and one of the doomed process until it dies.
            seen, last_id = read_until_text(on_doomed, conversation, sent, 120)
            time.sleep(0.7)  # at least one partial write
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait()
            # The doomed process's client reconnects, to B, from its last event: resumed.
            reconnected = follow(on_b, conversation, last_id, answer["id"])
            followed_on_b = on_b_events.result(timeout=20)

    # Swept after the lease (2 s here) by a surviving process, which told both clients.
    for events in (reconnected, followed_on_b):
        assert events[-1].event == "error"
        error = events[-1].json()
        assert (error["type"], error["code"], error["retryable"]) == ("interrupted", 503, True)
    message = Message.objects.get(pk=answer["id"])
    assert message.status == "interrupted"
    assert message.content
    # What was stored and what the clients saw are one text, each cut at its own point.
    live_text = text_of(followed_on_b)
    assert live_text.startswith(seen)
    shorter, longer = sorted((live_text, message.content), key=len)
    assert longer.startswith(shorter)
    assert text_of(reconnected) == live_text[len(seen) :]


def redis_connections(redis_client, *names: str) -> list[dict]:
    db = int(settings.REDIS_URL.rsplit("/", 1)[1])
    return [c for c in redis_client.client_list() if c["name"] in names and int(c["db"]) == db]


def test_the_cache_keeps_one_connection_pool_across_requests(pair, clients, redis_client):
    """Django's cache object is per request under ASGI, and each one connected to Redis
    anew (config/cache.py): 20 writes that count a limit open no connection now."""
    on_a, _ = clients
    create_conversation(on_a)  # the pool's first connection
    before = redis_client.info("stats")["total_connections_received"]
    for _ in range(20):
        create_conversation(on_a)
    opened = redis_client.info("stats")["total_connections_received"] - before
    assert opened <= 2, f"{opened} Redis connections for 20 requests"
    prefix = settings.ASSISTANT_REDIS_PREFIX
    assert redis_connections(redis_client, f"{prefix}-cache")


def follow_recording(
    client: httpx.Client, conversation: dict, position: str, answer_id: int, deadline: float = 30
):
    """`follow`, and every frame from the answer's first delta on as (arrival time, event
    name); fails after `deadline` seconds."""
    give_up = time.monotonic() + deadline
    with open_events(client, conversation, position) as response:
        frames = Frames(response)
        seen = []
        for event in frames:
            assert time.monotonic() < give_up, f"answer {answer_id} did not end within {deadline} s"
            assert event.event != "stream-reset"
            if event.event in ANSWER_EVENTS and event.json()["message"] == answer_id:
                seen.append(event)
                if event.event in FINAL_EVENTS:
                    arrivals = [(at, e.event) for at, e in frames.arrivals]
                    first_delta = [name for _, name in arrivals].index("delta")
                    return seen, arrivals[first_delta:]
    raise AssertionError("the stream ended before the answer did")


def test_redis_connections_killed_mid_answer_lose_and_repeat_nothing(pair, clients, redis_client):
    """Every pub/sub and command connection of both processes is cut mid-answer."""
    on_a, on_b = clients
    expected = words(seeded(SEED + 103), 150)
    conversation = create_conversation(on_a)
    sent = send(on_a, conversation, fake(text=expected, tps=60))
    answer = sent["assistant_message"]
    prefix = settings.ASSISTANT_REDIS_PREFIX
    names = (f"{prefix}-fanout", f"{prefix}-events")
    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(follow_recording, on_b, conversation, answer["last_event_id"], answer["id"])
        time.sleep(1.0)
        killed = redis_connections(redis_client, *names)
        assert {c["name"] for c in killed} == set(names)
        assert sum(c["name"] == f"{prefix}-fanout" for c in killed) >= 2  # one per process
        for connection in killed:
            redis_client.client_kill_filter(_id=connection["id"])
        seen, arrivals = following.result(timeout=30)

    assert_exactly_once_in_order(seen, expected, answer["id"])
    # Delivery went on without waiting for a keep-alive (one comes after 5 s of quiet).
    assert "keep-alive" not in [name for _, name in arrivals]
    for server in (pair.a, pair.b):
        log = server.log_text()
        assert "event wake-ups from Redis lost" in log
        assert "event wake-ups from Redis are back" in log
    # Both processes listen again.
    deadline = time.monotonic() + 5
    while len(redis_connections(redis_client, f"{prefix}-fanout")) < 2:
        assert time.monotonic() < deadline, "a process did not reconnect its pub/sub connection"
        time.sleep(0.05)


@pytest.fixture
def behind_proxy(extra_process) -> Iterator[tuple[LiveServer, TcpProxy]]:
    """A third process whose Redis is behind a proxy the test can take down."""
    with TcpProxy("127.0.0.1", 6379) as proxy:
        url = re.sub(r":6379/", f":{proxy.port}/", settings.REDIS_URL)
        yield extra_process("behind-proxy", REDIS_URL=url), proxy


def test_redis_unreachable_for_a_while_then_back(pair, behind_proxy, alice, upstream):
    """Redis is gone for 2 s for one process, mid-answer, in both roles.

    Streaming there: the stream stays open and catches up when Redis is back. Generating
    there: the text goes on into the database, and when Redis is back the answer is
    replayed whole (a `start`, then its text so far), which clients rebuild from.
    Sending there while Redis is gone: 503, nothing stored.
    """
    behind, proxy = behind_proxy
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        on_a = stack.enter_context(session_client(pair.a, alice))
        on_behind = stack.enter_context(session_client(behind, alice))
        streamed_behind = create_conversation(on_a)
        generated_behind = create_conversation(on_behind)
        quiet = create_conversation(on_behind)
        expected_1 = words(seeded(SEED + 104), 140)
        expected_2 = words(seeded(SEED + 105), 140)
        sent_1 = send(on_a, streamed_behind, fake(text=expected_1, tps=50))
        sent_2 = send(on_behind, generated_behind, fake(text=expected_2, tps=50))
        answer_1, answer_2 = sent_1["assistant_message"], sent_2["assistant_message"]
        following_1 = pool.submit(
            follow_recording, on_behind, streamed_behind, answer_1["last_event_id"], answer_1["id"]
        )
        following_2 = pool.submit(follow, on_a, generated_behind, answer_2["last_event_id"], answer_2["id"])
        time.sleep(0.8)
        proxy.down()
        down_at = time.monotonic()
        refused = on_behind.post(f"/api/conversations/{quiet['id']}/messages/", json={"content": "Hallo?"})
        page_state = on_behind.get(generated_behind["detail_url"])
        time.sleep(max(0.0, down_at + 2.0 - time.monotonic()))
        proxy.up()
        up_at = time.monotonic()
        seen_1, arrivals_1 = following_1.result(timeout=30)
        seen_2 = following_2.result(timeout=30)

    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
    assert not Message.objects.filter(conversation_id=quiet["id"]).exists()
    # The page still renders; its position resets the stream once Redis is back.
    assert page_state.status_code == 200
    assert page_state.json()["last_event_id"].endswith(":0")

    # Streaming behind the outage: everything once, in order, soon after Redis is back.
    assert generated_by(pair.a, answer_1["id"])
    assert_exactly_once_in_order(seen_1, expected_1, answer_1["id"])
    assert [at for at, name in arrivals_1 if name == "delta" and down_at + 0.5 < at < up_at] == []
    # Caught up once Redis was back, not at the re-read of a keep-alive (after 5 s of quiet).
    assert "keep-alive" not in [name for _, name in arrivals_1]

    # Generating behind the outage: replayed whole, then continued.
    assert generated_by(behind, answer_2["id"])
    assert [e.event for e in seen_2].count("start") == 2
    replay = [i for i, e in enumerate(seen_2) if e.event == "start"][1]
    assert text_of(seen_2[replay:]) == expected_2
    assert rebuilt("", seen_2) == expected_2
    assert seen_2[-1].event == "done"
    assert Message.objects.get(pk=answer_2["id"]).content == expected_2
    assert "Redis" in behind.log_text()


def follow_like_a_page(
    client: httpx.Client, conversation: dict, position: str, answer_id: int, deadline: float = 30
) -> tuple[str, int, str]:
    """What chat.js does: apply events; on `stream-reset`, re-render from the API and reconnect.

    Returns the answer's text as shown at its end, how many resets it took, and how the
    page learnt the end: the final event's name, or "reloaded" when a re-render showed
    the answer ended already.
    """
    give_up = time.monotonic() + deadline
    shown, resets = "", 0
    while True:
        with open_events(client, conversation, position) as response:
            for event in Frames(response):
                assert time.monotonic() < give_up, f"answer {answer_id} did not end within {deadline} s"
                if event.id is not None:
                    position = event.id
                if event.event == "stream-reset":
                    resets += 1
                    state = client.get(conversation["detail_url"]).json()
                    (message,) = [m for m in state["messages"] if m["id"] == answer_id]
                    shown, position = message["content"], state["last_event_id"]
                    if message["status"] != "streaming":
                        return shown, resets, "reloaded"
                    break
                if event.event not in ANSWER_EVENTS or event.json()["message"] != answer_id:
                    continue
                if event.event == "start":
                    shown = ""
                elif event.event == "delta":
                    shown += event.json()["text"]
                else:
                    return shown, resets, event.event


def test_redis_losing_its_data_mid_answer_resets_clients_and_replays_the_answer(pair, clients, redis_client):
    """Redis here keeps nothing on disk: a restart empties it. FLUSHDB does the same to
    the suite's database without touching anyone else's."""
    on_a, on_b = clients
    expected = words(seeded(SEED + 106), 150)
    conversation = create_conversation(on_a)
    sent = send(on_a, conversation, fake(text=expected, tps=50))
    answer = sent["assistant_message"]
    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(follow_like_a_page, on_b, conversation, answer["last_event_id"], answer["id"])
        time.sleep(1.2)
        redis_client.flushdb()
        shown, resets, end = following.result(timeout=40)

    # The flush came mid-answer: the page was reset, and saw the end live.
    assert (resets >= 1, end) == (True, "done")
    assert shown == expected
    assert Message.objects.get(pk=answer["id"]).content == expected
    assert "the event log lost part of answer" in pair.a.log_text()


def answer_from_the_start(response: httpx.Response, answer_id: int, deadline: float = 20) -> list[SSEEvent]:
    """The answer's events on a stream, until its end; no reset allowed."""
    seen = []
    give_up = time.monotonic() + deadline  # a stream that missed it gets keep-alives only
    for event in Frames(response):
        assert time.monotonic() < give_up, f"the answer did not arrive; its events: {seen}"
        assert event.event != "stream-reset"
        if event.event in ANSWER_EVENTS and event.json()["message"] == answer_id:
            seen.append(event)
            if event.event in FINAL_EVENTS:
                return seen
    raise AssertionError(f"the stream ended before answer {answer_id} did")


def test_a_stream_without_a_position_gets_every_event_after_its_200(pair, behind_proxy, alice):
    """A live-feed client connects with no position, and asks once it has the 200. The
    stream's position was fixed before the 200, so the answer arrives whole, `start`
    first, also from a process whose Redis answers 0.3 s late (behind the proxy)."""
    behind, proxy = behind_proxy
    expected = words(seeded(SEED + 107), 40)
    with session_client(behind, alice) as on_behind, session_client(pair.a, alice) as on_a:
        conversation = create_conversation(on_a)
        proxy.slow(0.3)
        with on_behind.stream("GET", conversation["events_url"], timeout=httpx.Timeout(30)) as response:
            assert response.status_code == 200
            sent = send(on_a, conversation, fake(text=expected, tps=100))
            seen = answer_from_the_start(response, sent["assistant_message"]["id"])
    assert_exactly_once_in_order(seen, expected, sent["assistant_message"]["id"])


def test_redis_answering_late_replays_no_answer(pair, behind_proxy, alice):
    """Redis answers a process generating 40 answers 6 s late (as when its event loop is
    too busy to read the replies): slow, never gone, nothing lost. No answer repeats its
    `start` and its text, which the protocol keeps for Redis lost or unreachable."""
    behind, proxy = behind_proxy
    count = 40
    rng = seeded(SEED + 108)
    plans = [words(rng, 150) for _ in range(count)]
    # Stored directly: more conversations than a user may start in a minute.
    owned = Conversation.objects.bulk_create(
        Conversation(owner=alice, model=settings.ASSISTANT_MODELS[0]) for _ in range(count)
    )
    conversations = [{"id": str(c.pk), "events_url": f"/api/conversations/{c.pk}/events/"} for c in owned]
    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        on_behind = stack.enter_context(session_client(behind, alice))
        # Followed on A and B: a user's streams per process are capped at 20.
        readers = [stack.enter_context(session_client(server, alice)) for server in (pair.a, pair.b)]
        sent = [
            send(on_behind, conversation, fake(text=expected, tps=20))
            for conversation, expected in zip(conversations, plans, strict=True)
        ]
        following = [
            pool.submit(
                follow,
                readers[i % 2],
                c,
                s["assistant_message"]["last_event_id"],
                s["assistant_message"]["id"],
            )
            for i, (c, s) in enumerate(zip(conversations, sent, strict=True))
        ]
        time.sleep(1.0)
        proxy.stall()
        time.sleep(6.0)
        proxy.resume()
        results = [f.result(timeout=60) for f in following]
    for seen, expected, s in zip(results, plans, sent, strict=True):
        assert [e.event for e in seen].count("start") == 1, "the answer was replayed"
        assert_exactly_once_in_order(seen, expected, s["assistant_message"]["id"])
    assert "replayed" not in behind.log_text()


def test_send_event_from_any_django_code_reaches_an_open_stream(pair, clients):
    """django-eventstream's ordinary API, called in another process (this test's, as a
    management command's would be), reaches the page's stream on B over HTTP."""
    _, on_b = clients
    conversation = create_conversation(on_b)
    with on_b.stream("GET", conversation["events_url"], timeout=httpx.Timeout(30)) as response:
        assert response.status_code == 200
        payload = {"conversation": conversation["id"], "title": "Grüße"}
        send_event(channel_for(conversation["id"]), "title", payload)
        title = next(event for event in Frames(response) if event.event == "title")
    assert title.json() == payload
    assert '"title":"Grüße"' in title.data  # UTF-8 as is, as every event of the stream
    assert title.id.startswith(f"{channel_for(conversation['id'])}:")
