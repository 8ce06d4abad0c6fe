"""The Redis replay log on its own: per-channel ids, resumable positions, loss, and the fan-out.

Two `RedisReplayLog` objects over one Redis stand for two server processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from django.conf import settings

from assistant.events import publish, subscriber
from assistant.events.log import LoggedEvent, PositionUnknown
from assistant.events.redis_log import RedisReplayLog
from assistant.events.wire import KEEP_ALIVE, STREAM_OPEN, encode_data


def data_of(event: LoggedEvent) -> str:
    return event.frame.split("data: ", 1)[1].strip()


@pytest.fixture
def prefix(redis_client):
    """Keys of their own, apart from the daphne processes' (which share the database)."""
    name = f"unit-{uuid.uuid4().hex[:8]}"
    yield name
    for key in redis_client.scan_iter(f"{name}:*"):
        redis_client.delete(key)


@pytest.fixture
def process_a(prefix):
    log = RedisReplayLog(settings.REDIS_URL, prefix)
    yield log
    log.close()


@pytest.fixture
def process_b(prefix):
    log = RedisReplayLog(settings.REDIS_URL, prefix)
    yield log
    log.close()


def test_positions_from_one_process_resume_in_the_other(process_a, process_b):
    start = process_a.current_id("conversation-a")
    ids = []
    for n in range(6):
        writer = process_a if n % 2 else process_b
        ids.append(writer.append("conversation-a", "delta", str(n)))
    assert ids == sorted(ids)
    assert len(set(ids)) == 6
    assert [data_of(e) for e in process_b.since("conversation-a", start)] == [str(n) for n in range(6)]
    assert [data_of(e) for e in process_a.since("conversation-a", ids[2])] == ["3", "4", "5"]
    assert [e.id for e in process_a.since("conversation-a", start)] == ids
    assert process_b.since("conversation-a", ids[-1]) == []
    assert process_b.can_resume("conversation-a", start)


def test_a_read_with_nothing_new_moves_the_position_up(process_a, process_b):
    """A channel without events: its position is the clock, which a read moves up to."""
    start = process_a.current_id("conversation-a")
    process_b.append("conversation-other", "delta", "x")
    found, position = process_a.read("conversation-a", start)
    assert found == []
    assert start < position <= process_a.current_id("conversation-a")
    first = process_b.append("conversation-a", "delta", "y")
    assert first > position
    assert [data_of(e) for e in process_a.since("conversation-a", position)] == ["y"]


def test_a_channels_ids_count_only_its_own_events(process_a, process_b):
    """Ids say nothing about other conversations' traffic: 100 events elsewhere move nothing."""
    first = process_a.append("conversation-a", "delta", "mine")
    for n in range(100):
        process_b.append(f"conversation-{n % 3}", "delta", str(n))
    assert process_a.current_id("conversation-a") == first
    assert process_b.window("conversation-a")[1] == first
    assert process_b.append("conversation-a", "delta", "mine again") == first + 1


def test_unknown_positions_reset(process_a):
    process_a.append("conversation-a", "delta", "x")
    for position in (0, 1, process_a.current_id("conversation-a") + 1, 99999999999999999999):
        with pytest.raises(PositionUnknown):
            process_a.since("conversation-a", position)


def test_trimmed_events_reset_older_positions(process_a, monkeypatch):
    monkeypatch.setattr(process_a.steps, "events_per_channel", 3)
    start = process_a.current_id("conversation-a")
    ids = [process_a.append("conversation-a", "delta", str(n)) for n in range(5)]
    with pytest.raises(PositionUnknown):
        process_a.since("conversation-a", start)
    assert [data_of(e) for e in process_a.since("conversation-a", ids[1])] == ["2", "3", "4"]
    assert process_a.window("conversation-a") == (ids[1], ids[-1])


def test_forget_drops_a_channel_everywhere(process_a, process_b):
    before = process_a.current_id("conversation-a")
    process_a.append("conversation-a", "delta", "deleted text")
    kept = process_a.append("conversation-b", "delta", "kept")
    process_b.forget("conversation-a")
    with pytest.raises(PositionUnknown):
        process_a.since("conversation-a", before)
    assert [data_of(e) for e in process_a.since("conversation-b", kept - 1)] == ["kept"]


def test_idle_channels_expire_and_only_recent_positions_survive(process_a, redis_client, prefix, monkeypatch):
    monkeypatch.setattr(process_a.steps, "idle_seconds", 1)
    old = process_a.current_id("conversation-a")
    process_a.append("conversation-a", "delta", "x")
    time.sleep(1.2)
    # What the stream's TTL does after the idle time (plus a minute of slack for clocks).
    redis_client.delete(f"{prefix}:events:stream:conversation-a")
    with pytest.raises(PositionUnknown):
        process_a.since("conversation-a", old)
    # A channel without state: its current position is the clock, which can be resumed.
    assert process_a.since("conversation-a", process_a.current_id("conversation-a")) == []


def test_a_read_stream_keeps_its_channel_from_expiring(process_a, redis_client, prefix):
    """A stream reads at least once per keep-alive interval: an open page's position never
    ages out of the log, however long the conversation stays quiet."""
    key = f"{prefix}:events:stream:conversation-a"
    last = process_a.append("conversation-a", "delta", "x")
    redis_client.pexpire(key, 1000)  # as if the channel had been idle for almost its TTL
    assert process_a.read("conversation-a", last) == ([], last)
    assert redis_client.pttl(key) > (process_a.steps.idle_seconds + 59) * 1000
    assert process_a.append("conversation-a", "delta", "y") == last + 1


def test_a_lost_log_resets_older_positions_and_ids_keep_rising(process_a, process_b, redis_client, prefix):
    """Redis restarted empty (it keeps nothing on disk here)."""
    start = process_a.current_id("conversation-a")
    last = process_a.append("conversation-a", "delta", "x")
    for key in redis_client.scan_iter(f"{prefix}:*"):
        redis_client.delete(key)
    with pytest.raises(PositionUnknown):
        process_b.since("conversation-a", start)
    published = process_b.append_batch("conversation-a", [("delta", "y")])
    assert published.ids[0] > last
    # An answer whose previous event is older than the floor knows it lost events.
    assert published.floor > last


def test_a_retried_batch_is_stored_once(process_a, process_b):
    """A command retried after its reply was lost finds its batch stored at its ids."""
    start = process_a.current_id("conversation-a")
    process_a.append("conversation-a", "delta", "before")
    known = dict(process_a.steps._ends)  # where the channel ends, as the lost reply left it
    first = process_a.append_batch("conversation-a", [("delta", "a"), ("done", "b")])
    process_a.steps._ends = known
    again = process_a.append_batch("conversation-a", [("delta", "a"), ("done", "b")])
    assert again.ids == first.ids
    assert [data_of(e) for e in process_b.since("conversation-a", start)] == ["before", "a", "b"]


def test_writers_that_overtake_each_other_keep_ids_contiguous_and_batches_whole(process_a, process_b):
    """Each process appends where it last saw the channel end; Redis refuses the stale
    one, which reads the end and appends after it, never inside another's batch."""
    start = process_a.current_id("conversation-a")
    process_a.append("conversation-a", "delta", "a0")
    process_b.append("conversation-a", "delta", "b0")  # process_b knew nothing: reads the end
    process_a.append_batch("conversation-a", [("delta", "a1"), ("delta", "a2")])  # stale: retries
    process_b.append_batch("conversation-a", [("delta", "b1"), ("delta", "b2")])  # stale: retries
    found = process_a.since("conversation-a", start)
    assert [data_of(e) for e in found] == ["a0", "b0", "a1", "a2", "b1", "b2"]
    assert [e.id for e in found] == list(range(found[0].id, found[0].id + 6))
    # From inside a batch: the rest of it, then what follows.
    assert [data_of(e) for e in process_b.since("conversation-a", found[2].id)] == ["a2", "b1", "b2"]


def test_frames_are_encoded_once_with_utf8_as_is(process_a):
    start = process_a.current_id("conversation-a")
    event_id = RedisReplayLog.append(
        process_a, "conversation-a", "delta", encode_data({"text": "Grüße 👩‍💻\u2028"})
    )
    (event,) = process_a.since("conversation-a", start)
    assert (
        event.frame == f'event: delta\nid: conversation-a:{event_id}\ndata: {{"text":"Grüße 👩‍💻\u2028"}}\n\n'
    )


def fanout_connections(redis_client, prefix: str) -> list[int]:
    return [c["id"] for c in redis_client.client_list(_type="pubsub") if c["name"] == f"{prefix}-fanout"]


def test_streams_are_woken_across_processes_and_after_the_pubsub_connection_drops(
    process_a, process_b, redis_client, prefix, monkeypatch
):
    """Keep-alives are 15 s here: every delivery within a second came from a wake-up."""
    monkeypatch.setattr(publish, "replay_log", process_a)
    cancels: list[int] = []

    async def main() -> list[tuple[str, float]]:
        received_cancel = asyncio.Event()

        def on_cancel(message_id: int) -> None:
            cancels.append(message_id)
            received_cancel.set()

        process_a.start_fanout(on_cancel=on_cancel)
        position = process_a.current_id("conversation-a")
        body = subscriber.stream("conversation-a", position)
        assert await anext(body) == STREAM_OPEN
        received: list[tuple[str, float]] = []

        async def next_frame() -> str:
            frame = await asyncio.wait_for(anext(body), 10)
            received.append((frame, time.monotonic()))
            return frame

        async def connected(expected: bool) -> None:
            async with asyncio.timeout(5):
                while process_a.fanout.connected != expected or (  # noqa: ASYNC110 - a flag, polled
                    expected and not fanout_connections(redis_client, prefix)
                ):
                    await asyncio.sleep(0.01)

        await connected(True)
        # Another process publishes, from a thread: the stream here wakes.
        await asyncio.to_thread(process_b.append, "conversation-a", "delta", '"one"')
        assert '"one"' in await next_frame()

        # The pub/sub connection dies; an event published before it is back loses its
        # wake-up, and the reconnect wakes every stream to read again.
        reading = asyncio.ensure_future(next_frame())
        for client_id in fanout_connections(redis_client, prefix):
            redis_client.client_kill_filter(_id=client_id)
        await connected(False)
        await asyncio.to_thread(process_b.append, "conversation-a", "delta", '"two"')
        assert '"two"' in await reading
        await connected(True)

        await asyncio.to_thread(process_b.append, "conversation-a", "delta", '"three"')
        assert '"three"' in await next_frame()

        # Stop requests reach every process at once.
        await asyncio.to_thread(process_b.request_cancel, 4242)
        await asyncio.wait_for(received_cancel.wait(), 10)
        await body.aclose()
        await process_a.aclose()
        return received

    received = asyncio.run(main())
    assert [frame.count("event: delta") for frame, _ in received] == [1, 1, 1]
    assert cancels == [4242]


def test_streams_keep_their_connection_while_redis_is_unreachable(prefix, monkeypatch, redis_client):
    """A log whose Redis does not answer: the stream waits and sends keep-alives, never fails."""
    from tests.scaleout.tcp_proxy import TcpProxy

    monkeypatch.setattr(settings, "ASSISTANT_KEEPALIVE_SECONDS", 1)
    with TcpProxy("127.0.0.1", 6379) as proxy:
        url = settings.REDIS_URL.replace(":6379", f":{proxy.port}")
        behind = RedisReplayLog(url, prefix)
        writer = RedisReplayLog(settings.REDIS_URL, prefix)
        monkeypatch.setattr(publish, "replay_log", behind)
        position = writer.current_id("conversation-a")

        async def main() -> list[str]:
            body = subscriber.stream("conversation-a", position)
            frames = [await anext(body)]
            proxy.down()
            writer.append("conversation-a", "delta", '"while down"')
            frames.append(await asyncio.wait_for(anext(body), 10))
            threading.Timer(0.5, proxy.up).start()
            frames.append(await asyncio.wait_for(anext(body), 10))
            await body.aclose()
            await behind.aclose()
            return frames

        try:
            frames = asyncio.run(main())
        finally:
            behind.close()
            writer.close()
    assert frames[0] == STREAM_OPEN
    assert frames[1] == KEEP_ALIVE
    assert '"while down"' in frames[2]
