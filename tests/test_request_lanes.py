"""Requests run on a few long-lived threads, each keeping its database connection
(config/fastpaths/django.py): no thread and no connection is opened per request, and at
most ASSISTANT_REQUEST_THREADS requests run at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.core import signals

from config.fastpaths.django import OneTripASGIHandler, _Lanes
from tests.helpers.counting_asgi import COUNTERS_PATH
from tests.helpers.http import asgi_get_scope
from tests.helpers.live import LiveServer, live_env, session_client, start_daphne, stop_daphne, threads_of

LANES = 3


def test_lanes_are_made_up_to_the_limit_then_reused():
    async def scenario():
        lanes = _Lanes(2)
        first, second = await lanes.borrow(), await lanes.borrow()
        assert first is not second
        assert lanes.made == 2
        lanes.give_back(first)
        assert await lanes.borrow() is first
        assert lanes.made == 2
        for lane in (first, second):
            lane.shutdown()

    asyncio.run(scenario())


def test_a_request_finding_no_free_lane_waits_for_the_next_one_given_back():
    async def scenario():
        lanes = _Lanes(1)
        lane = await lanes.borrow()
        waiting = asyncio.create_task(lanes.borrow())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        lanes.give_back(lane)
        assert await asyncio.wait_for(waiting, 10) is lane
        assert lanes.free == []
        assert lanes.made == 1
        lane.shutdown()

    asyncio.run(scenario())


class CountingLane(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="counted-lane")
        self.trips = 0

    def submit(self, *args, **kwargs):
        self.trips += 1
        return super().submit(*args, **kwargs)


def test_a_request_is_one_trip_to_its_lane_signals_included(transactional_db):
    """The request's signals, its middleware chain and its close run in one call on the
    lane's thread; the loop only reads the body and sends the response."""
    handler = OneTripASGIHandler()
    lane = CountingLane()
    handler.lanes.free.append(lane)
    signalled = []

    def record(signal_name):
        def receiver(**kwargs):
            signalled.append((signal_name, threading.current_thread().name))

        return receiver

    started, finished = record("started"), record("finished")
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    scope = asgi_get_scope("/accounts/login/", [(b"host", b"testserver")], ("127.0.0.1", 5000))
    messages = []

    bodies = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    try:
        asyncio.run(handler(scope, receive, send))
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
        lane.shutdown()
    assert messages[0]["type"] == "http.response.start"
    assert messages[0]["status"] in (200, 302)
    assert lane.trips == 1
    assert [name for name, _ in signalled] == ["started", "finished"]
    assert all(thread.startswith("counted-lane") for _, thread in signalled)


def test_a_waiter_that_is_cancelled_loses_no_lane():
    async def scenario():
        lanes = _Lanes(1)
        lane = await lanes.borrow()
        gone = asyncio.create_task(lanes.borrow())
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        lanes.give_back(lane)
        assert lanes.free == [lane]
        # Handed over in the same turn as the cancellation: the waiter gives it back.
        again = await lanes.borrow()
        racing = asyncio.create_task(lanes.borrow())
        await asyncio.sleep(0.01)
        lanes.give_back(again)
        racing.cancel()
        await asyncio.gather(racing, return_exceptions=True)
        assert lanes.free == [lane]
        lane.shutdown()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def counting_server(django_db_setup, fake_upstream) -> Iterator[LiveServer]:
    env = live_env(fake_upstream, ASSISTANT_REQUEST_THREADS=str(LANES))
    server = start_daphne(env, "daphne-request-lanes", application="tests.helpers.counting_asgi:application")
    try:
        yield server
    finally:
        stop_daphne(server)


def counters(server: LiveServer) -> dict:
    return httpx.get(server.url + COUNTERS_PATH).json()


def test_requests_reuse_their_threads_and_database_connections(counting_server, transactional_db, alice):
    with session_client(counting_server, alice) as client:
        assert client.get("/api/conversations/").status_code == 200  # warm
        before, threads_before = counters(counting_server), threads_of(counting_server)

        for _ in range(30):
            assert client.get("/api/conversations/").status_code == 200
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda _: client.get("/api/conversations/").status_code, range(40)))

        after, threads_after = counters(counting_server), threads_of(counting_server)
    assert statuses == [200] * 40
    # 70 requests: at most one new connection and one new thread per lane, not one per request.
    assert after["db_connects"] - before["db_connects"] <= LANES
    assert threads_after - threads_before <= LANES
    assert after["db_connections"] <= LANES + 1  # the lanes and the process's shared thread
