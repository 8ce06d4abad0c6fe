"""The replay log: exact resume positions, and a reset for every position it cannot honour."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django_eventstream import send_event
from django_eventstream.storage import EventDoesNotExist

from assistant.events import publish, subscriber
from assistant.events.eventstream import ConversationChannels, ReplayLogStorage
from assistant.events.log import LoggedEvent, PositionUnknown, Pushed
from assistant.events.memory_log import ReplayLog
from assistant.events.redis_fanout import parse_wake, wake_message
from assistant.events.wire import KEEP_ALIVE, STREAM_OPEN, channel_for, encode_data, position_from
from assistant.models import Conversation


def data_of(event: LoggedEvent) -> str:
    return event.frame.split("data: ", 1)[1].strip()


@pytest.fixture
def log() -> ReplayLog:
    return ReplayLog()


def test_since_returns_exactly_the_events_after_a_position(log):
    start = log.current_id("conversation-a")
    ids = [log.append("conversation-a", "delta", str(n)) for n in range(5)]
    assert [data_of(e) for e in log.since("conversation-a", start, 100)] == ["0", "1", "2", "3", "4"]
    assert [data_of(e) for e in log.since("conversation-a", ids[2], 100)] == ["3", "4"]
    assert log.since("conversation-a", ids[-1], 100) == []


def test_since_ignores_other_channels(log):
    start = log.current_id("conversation-a")
    theirs = log.append("conversation-b", "delta", "theirs")
    log.append("conversation-a", "delta", "mine")
    assert [data_of(e) for e in log.since("conversation-a", start, 100)] == ["mine"]
    assert log.since("conversation-b", theirs, 100) == []


def test_since_honours_the_limit(log):
    start = log.current_id("conversation-a")
    for n in range(10):
        log.append("conversation-a", "delta", str(n))
    assert [data_of(e) for e in log.since("conversation-a", start, 3)] == ["0", "1", "2"]


def test_since_resets_a_position_from_before_this_process(log):
    """Ids of an earlier process are older than this log's first id: a restart resets."""
    log.append("conversation-a", "delta", "x")
    with pytest.raises(PositionUnknown):
        log.since("conversation-a", log._base - 5, 100)


def test_since_resets_a_position_never_handed_out(log):
    log.append("conversation-a", "delta", "x")
    with pytest.raises(PositionUnknown):
        log.since("conversation-a", log.current_id("conversation-a") + 1, 100)


def test_since_resets_once_events_were_dropped():
    log = ReplayLog(events_per_channel=3)
    start = log.current_id("conversation-a")
    ids = [log.append("conversation-a", "delta", str(n)) for n in range(5)]
    with pytest.raises(PositionUnknown):
        log.since("conversation-a", start, 100)
    assert [data_of(e) for e in log.since("conversation-a", ids[1], 100)] == ["2", "3", "4"]


def test_forgotten_channels_reset_old_positions():
    log = ReplayLog(idle_seconds=0)
    before = log.current_id("conversation-a")
    log.append("conversation-a", "delta", "old")
    log._next_sweep = 0
    log.append("conversation-b", "delta", "sweeps a")
    with pytest.raises(PositionUnknown):
        log.since("conversation-a", before, 100)


def test_forget_drops_a_channel_and_resets_its_positions(log):
    """A deleted conversation's events leave the log; other channels keep theirs."""
    before = log.current_id("conversation-a")
    log.append("conversation-a", "delta", "deleted text")
    kept = log.append("conversation-b", "delta", "kept")
    log.forget("conversation-a")
    with pytest.raises(PositionUnknown):
        log.since("conversation-a", before, 100)
    assert [data_of(e) for e in log.since("conversation-b", kept - 1, 100)] == ["kept"]
    log.forget("conversation-never-seen")  # nothing to forget: no error


def test_encode_data_keeps_utf8_as_is():
    assert encode_data({"text": "Grüße 👩‍💻"}) == '{"text":"Grüße 👩‍💻"}'


@pytest.mark.parametrize(
    "payload",
    [
        {"text": 'line\nbreak\r\x00\x1f \u2028\u2029\u0085 "quoted" \\ </script>', "message": 7},
        {"message": 1, "usage": {"prompt_tokens": None, "completion_tokens": 12}, "done": True},
        {"text": "lone \ud800 surrogate"},  # orjson refuses it
        {"id": 2**70},  # beyond 64 bits: orjson refuses it
    ],
)
def test_encode_data_is_compact_json_on_one_line(payload):
    encoded = encode_data(payload)
    assert encoded == json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    assert "\n" not in encoded
    assert "\r" not in encoded


def test_frames_are_sse_events_with_resumable_ids(log):
    event_id = log.append("conversation-a", "delta", '{"text":"x"}')
    (event,) = log.since("conversation-a", event_id - 1)
    assert event.frame == f'event: delta\nid: conversation-a:{event_id}\ndata: {{"text":"x"}}\n\n'


@pytest.mark.parametrize("token", ["conversation-b:5", "conversation-a:", "conversation-a:x", "5", "", None])
def test_position_from_rejects_foreign_or_malformed_tokens(token):
    assert position_from("conversation-a", token) is None


def test_position_from_reads_own_tokens():
    assert position_from("conversation-a", "conversation-a:1234") == 1234


def pushed(previous: int, first: int, last: int) -> Pushed:
    return Pushed(previous, first, last, f"<{first}-{last}>")


def test_frames_pushed_with_wake_ups_are_sent_only_when_they_continue_the_position():
    """With Redis, wake-ups carry their frames; a gap or a plain wake-up means: read the log."""
    chain = [pushed(10, 11, 11), pushed(11, 12, 13), pushed(13, 14, 14)]
    assert subscriber._continue(chain, False, 10) == ("<11-11><12-13><14-14>", 14)
    # Frames up to the position were sent already (by a read that saw them too).
    assert subscriber._continue(chain, False, 13) == ("<14-14>", 14)
    assert subscriber._continue(chain, False, 14) == ("", 14)
    # An idle stream's position moved past the channel's newest event: still continuous.
    assert subscriber._continue([pushed(10, 20, 20)], False, 15) == ("<20-20>", 20)
    assert subscriber._continue([pushed(12, 13, 13)], False, 10) is None  # 11 and 12 missing
    assert subscriber._continue([pushed(10, 11, 12)], False, 11) is None  # half a batch
    assert subscriber._continue([*chain[:1], None], False, 10) is None  # a plain wake-up
    assert subscriber._continue([11], False, 10) is None  # not frames: read the log
    assert subscriber._continue(chain, True, 10) is None  # some wake-ups were dropped
    assert subscriber._continue(None, False, 10) == ("", 10)


def test_a_wake_up_carries_the_frames_of_several_channels_and_names_its_origin():
    woken = [
        ("conversation-a", Pushed(10, 11, 12, "event: delta\nid: x\ndata: ü\n\nevent: done\ndata: 2\n\n")),
        ("conversation-b", Pushed(4, 7, 7, "event: title\ndata: \u2028 \n\n")),
    ]
    origin, parsed = parse_wake(wake_message(b"process-1", woken))
    assert origin == b"process-1"
    assert list(parsed) == woken


def test_an_in_process_stream_that_keeps_up_gets_its_frames_with_the_wake_ups(monkeypatch, settings):
    """Publishing on the stream's own loop wakes it directly, frames included: after the
    first read on connecting, no read of the log and no trip through the loop's self-pipe."""
    import asyncio

    log = ReplayLog()
    monkeypatch.setattr(publish, "replay_log", log)
    reads = []
    monkeypatch.setattr(
        log, "read", lambda *args, **kw: reads.append(args) or ReplayLog.read(log, *args, **kw)
    )

    async def scenario():
        loop = asyncio.get_running_loop()
        threadsafe = []
        original = loop.call_soon_threadsafe
        monkeypatch.setattr(
            loop, "call_soon_threadsafe", lambda *a, **kw: threadsafe.append(a) or original(*a, **kw)
        )
        body = subscriber.stream("conversation-a", log.current_id("conversation-a"))
        assert await anext(body) == STREAM_OPEN
        received = []
        for n in range(5):
            reading = asyncio.ensure_future(anext(body))
            await asyncio.sleep(0)
            publish.publish("conversation-a", "delta", {"n": n})
            received.append(await asyncio.wait_for(reading, 10))
        await body.aclose()
        return received, threadsafe

    received, threadsafe = asyncio.run(scenario())
    assert [frame.split("data: ")[1].strip() for frame in received] == [f'{{"n":{n}}}' for n in range(5)]
    assert len(reads) == 1  # on connecting
    assert threadsafe == []


def test_a_stream_arms_one_keep_alive_timer_per_quiet_interval_not_one_per_event(monkeypatch, settings):
    """Twenty events in a row arm no timer of their own; the keep-alive still comes once
    the stream has been quiet for the interval, counted from its last event."""
    import asyncio

    settings.ASSISTANT_KEEPALIVE_SECONDS = 0.3
    log = ReplayLog()
    monkeypatch.setattr(publish, "replay_log", log)

    async def scenario():
        loop = asyncio.get_running_loop()
        timers, fired = [], []  # when each timer was due: as it was armed, as it ran
        original = loop.call_at

        def call_at(when, callback, *args, **kwargs):
            timers.append(when)
            return original(when, lambda *args: fired.append(when) or callback(*args), *args, **kwargs)

        monkeypatch.setattr(loop, "call_at", call_at)
        body = subscriber.stream("conversation-a", log.current_id("conversation-a"))
        assert await anext(body) == STREAM_OPEN
        for n in range(20):
            reading = asyncio.ensure_future(anext(body))
            await asyncio.sleep(0)  # the stream waits
            # 0.4 s of events in all, longer than the interval; blocking, so the test arms no timer
            time.sleep(0.02)  # noqa: ASYNC251
            publish.publish("conversation-a", "delta", {"n": n})
            assert '"n":' in await reading
        last_event = loop.time()
        timers_while_busy = len(timers)
        assert await asyncio.wait_for(anext(body), 10) == KEEP_ALIVE
        # When the keep-alive was due: the loop time its timer was set for, not when it ran.
        due = fired[-1]
        await body.aclose()
        return timers_while_busy, due - last_event

    timers_while_busy, due_after_last_event = asyncio.run(scenario())
    assert timers_while_busy <= 2  # the first one, set again when it fired before the deadline
    # The interval counted from the last event (from the first, it was due 0.1 s before it).
    assert 0 <= due_after_last_event <= 0.3


def test_a_channels_ids_count_only_its_own_events(log):
    """Ids say nothing about other conversations' traffic: 100 events elsewhere move nothing."""
    first = log.append("conversation-a", "delta", "mine")
    for n in range(100):
        log.append(f"conversation-{n % 3}", "delta", str(n))
    assert log.current_id("conversation-a") == first
    assert log.window("conversation-a")[1] == first
    assert log.append("conversation-a", "delta", "mine again") == first + 1


def test_a_position_taken_before_a_channels_first_event_resumes_it(log):
    """A channel without events has the clock as its position; its first id is above it."""
    start = log.current_id("conversation-a")
    log.append("conversation-b", "delta", "theirs")
    first = log.append("conversation-a", "delta", "mine")
    assert first > start
    assert [data_of(e) for e in log.since("conversation-a", start)] == ["mine"]


def test_a_read_channel_keeps_its_position_when_its_events_are_forgotten(log):
    """Idle channels lose their events; one a stream still reads keeps its newest position."""
    start = log.current_id("conversation-a")
    last = log.append("conversation-a", "delta", "old")
    log.idle_seconds = 0
    log._channels["conversation-a"].read = time.monotonic() + 60  # a stream reads it
    log._next_sweep = 0
    log.append("conversation-b", "delta", "sweeps a")
    with pytest.raises(PositionUnknown):
        log.since("conversation-a", start)
    assert log.read("conversation-a", last) == ([], last)
    assert log.append("conversation-a", "delta", "new") == last + 1


# --- django-eventstream's API: send_event into the replay log, reads by the owner only


@pytest.fixture
def library_log(monkeypatch) -> ReplayLog:
    log = ReplayLog()
    monkeypatch.setattr(publish, "replay_log", log)
    return log


def test_send_event_goes_into_the_replay_log_as_our_events_do(library_log):
    channel = channel_for(uuid.uuid4())
    start = library_log.current_id(channel)
    send_event(channel, "title", {"conversation": "c", "title": "Grüße\n"})
    (event,) = library_log.since(channel, start)
    assert (
        event.frame
        == f'event: title\nid: {channel}:{event.id}\ndata: {{"conversation":"c","title":"Grüße\\n"}}\n\n'
    )
    storage = ReplayLogStorage()
    (read,) = storage.get_events(channel, start)
    assert (read.type, read.data, read.id) == ("title", {"conversation": "c", "title": "Grüße\n"}, event.id)
    assert storage.get_current_id(channel) == event.id
    with pytest.raises(EventDoesNotExist) as unknown:
        storage.get_events(channel, 5)
    assert unknown.value.current_id == event.id


@pytest.mark.parametrize(
    ("channel", "event_type", "data", "message"),
    [
        ("news", "title", {}, "not a conversation's channel"),
        (channel_for(uuid.UUID(int=1)).upper(), "title", {}, "not a conversation's channel"),
        (channel_for(uuid.UUID(int=1)), "title\nid: 9", {}, "not an event type"),
        (channel_for(uuid.UUID(int=1)), "title", "not json", "must be JSON"),
    ],
)
def test_send_event_refuses_what_the_wire_cannot_carry(library_log, channel, event_type, data, message):
    with pytest.raises(ValueError, match=message):
        send_event(channel, event_type, data, json_encode=False)


@pytest.mark.django_db
def test_only_the_owner_may_read_a_conversations_channel(django_user_model):
    owner = django_user_model.objects.create_user("owner")
    other = django_user_model.objects.create_user("other")
    conversation = Conversation.objects.create(owner=owner, model="m")
    channels = ConversationChannels()
    assert channels.can_read_channel(owner, conversation.channel)
    assert not channels.can_read_channel(other, conversation.channel)
    assert not channels.can_read_channel(None, conversation.channel)
    assert not channels.can_read_channel(owner, channel_for(uuid.uuid4()))
    assert not channels.can_read_channel(owner, "conversation-not-a-uuid")
