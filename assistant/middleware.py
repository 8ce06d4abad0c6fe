"""Security headers on every response: a strict Content-Security-Policy and friends.

Only headers are set, so streamed responses (the event stream) pass through untouched;
the middleware runs sync or async, whichever the chain around it is, so async views
stay on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

GetResponse = Callable[[HttpRequest], HttpResponseBase] | Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class SyncAndAsyncMiddleware:
    """A middleware that runs in whichever mode the chain is, without an adapter thread.

    Subclasses implement `__call__` for the sync chain and `__acall__` for the async one;
    `__call__` hands over to `__acall__` when `self.async_mode` is set.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(self.get_response)
        if self.async_mode:
            # Django checks this to call the middleware as a coroutine.
            markcoroutinefunction(self)


def add_security_headers(response: HttpResponseBase) -> None:
    """settings.SECURITY_HEADERS on `response`, except those it sets itself.

    The one source of these headers: SecurityHeadersMiddleware adds them to Django's
    responses, assistant.stream_endpoint to the event streams it serves before the chain.
    """
    for name, value in settings.SECURITY_HEADERS.items():
        response.setdefault(name, value)


class SecurityHeadersMiddleware(SyncAndAsyncMiddleware):
    """Adds settings.SECURITY_HEADERS to each response that does not set them itself."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        add_security_headers(response)  # type: ignore[arg-type]
        return response  # type: ignore[return-value]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        add_security_headers(response)
        return response
