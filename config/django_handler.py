"""Django's ASGI handler: its middleware chain in one sync call per request, on a thread
(and database connection) that outlives the request.

In ASGI mode Django runs each classic middleware hook (MiddlewareMixin: every one in
settings.MIDDLEWARE but ours) through its own `sync_to_async`: about twenty trips
between the event loop and the request's thread for one API request. Each trip waits
its turn in the event loop, which under load is busy streaming answers; at 150 streams
a message POST took half a second that way. Here the chain, and a sync view with it,
runs in the request's thread in one trip; an async view runs on the event loop as
before (`async_to_sync` from the chain), its own database calls back in that thread.

Django also gives each request a new thread (a ThreadSensitiveContext with a one-thread
executor of its own), so each request opened a new database connection and closed it,
and started and joined a thread: together about a third of the CPU of a small API
request. Here a request borrows one of a few long-lived threads, its lane, for its
duration (asgiref's ThreadSensitiveContext with an executor the caller owns). A lane's
connection stays open between requests (DATABASE_CONN_MAX_AGE), checked before each
request (CONN_HEALTH_CHECKS). At most ASSISTANT_REQUEST_THREADS requests run sync code at
once; more wait for a lane. Event streams never get here (assistant.stream_endpoint).
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler


class _Lanes:
    """Long-lived one-thread executors, lent to one request at a time, made as needed up
    to `limit`; a request finding none free waits for the next one returned."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.made = 0
        self.free: list[ThreadPoolExecutor] = []
        self.waiting: deque[asyncio.Future[ThreadPoolExecutor]] = deque()

    async def borrow(self) -> ThreadPoolExecutor:
        if self.free:
            return self.free.pop()
        if self.made < self.limit:
            self.made += 1
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"request-lane-{self.made}")
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back(waiter.result())  # handed over as the request was cancelled
            raise

    def give_back(self, lane: ThreadPoolExecutor) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self.free.append(lane)


class OneTripASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.lanes = _Lanes(settings.ASSISTANT_REQUEST_THREADS)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        lane = await self.lanes.borrow()
        try:
            # Every thread-sensitive call of the request (signals, the chain, closing the
            # response) runs on the lane's thread.
            async with ThreadSensitiveContext(executor=lane):
                await self.handle(scope, receive, send)
        finally:
            self.lanes.give_back(lane)
