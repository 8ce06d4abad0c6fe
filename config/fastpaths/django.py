"""Django's ASGI handler: a request in one sync call, on a thread (and database
connection) that outlives the request.

In ASGI mode Django runs each classic middleware hook (MiddlewareMixin: every one in
settings.MIDDLEWARE but ours) through its own `sync_to_async`: about twenty trips
between the event loop and the request's thread for one API request. Each trip waits
its turn in the event loop, which under load is busy streaming answers; at 150 streams
a message POST took half a second that way. Here the request runs in the request's
thread in one trip: the request_started signal, the request object, the middleware chain
with a sync view, and, for a response whose content is complete (all but streaming
ones), its close with the request_finished signal; then the loop sends it (Django's own
handler took three trips, and two tasks to watch for a disconnect that cannot stop a
thread anyway: about 1 ms of CPU per request). An async view runs on the event loop as
before (`async_to_sync` from the chain), its own database calls back in that thread.

Django also gives each request a new thread (a ThreadSensitiveContext with a one-thread
executor of its own), so each request opened a new database connection and closed it,
and started and joined a thread: together about a third of the CPU of a small API
request. Here a request borrows one of a few long-lived threads, its lane, for its
duration (asgiref's ThreadSensitiveContext with an executor the caller owns). A lane's
connection stays open between requests (DATABASE_CONN_MAX_AGE), checked before each
request (CONN_HEALTH_CHECKS). At most ASSISTANT_REQUEST_THREADS requests run sync code at
once; more wait for a lane. Event streams never get here (assistant.stream_endpoint).

It uses no name with an underscore, but it follows the steps of Django's ASGIHandler
(`read_body`, `create_request`, `get_response`, `send_response`) and asgiref's
ThreadSensitiveContext as Django 5.2 and asgiref 3.13 have them: with other versions, or
the switch off (config/fastpaths), `handler()` is Django's own ASGIHandler.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponseBase
from django.urls import set_script_prefix

from config import fastpaths

WRITTEN_FOR = {"Django": ("5.2",), "asgiref": ("3.13",)}


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
        super().load_middleware(is_async=False)  # the sync chain, for _respond

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        lane = await self.lanes.borrow()
        try:
            # Every thread-sensitive call of the request (_respond, closing a streaming
            # response) runs on the lane's thread.
            async with ThreadSensitiveContext(executor=lane):
                await self.handle(scope, receive, send)
        finally:
            self.lanes.give_back(lane)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    def _respond(self, scope, body_file) -> HttpResponseBase:
        """The response, in the lane's thread; closed already unless it streams (its
        content is bytes by then, nothing of the request is needed to send it)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        response = error_response if request is None else self.get_response(request)
        response._handler_class = self.__class__
        if not response.streaming:
            response.close()
        return response


def handler() -> ASGIHandler:
    """Django's ASGI app for this process: one trip per request where allowed."""
    return OneTripASGIHandler() if fastpaths.allowed("django", WRITTEN_FOR) else ASGIHandler()
