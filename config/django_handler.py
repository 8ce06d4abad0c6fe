"""Django's ASGI handler, with its middleware chain run as one sync call per request.

In ASGI mode Django runs each classic middleware hook (MiddlewareMixin: every one in
settings.MIDDLEWARE but ours) through its own `sync_to_async`: about twenty trips
between the event loop and the request's thread for one API request. Each trip waits
its turn in the event loop, which under load is busy streaming answers; at 150 streams
a message POST took half a second that way. Here the chain, and a sync view with it,
runs in the request's thread in one trip; an async view runs on the event loop as
before (`async_to_sync` from the chain), its own database calls back in that thread.
Event streams never get here (assistant.stream_endpoint).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class OneTripASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)
