"""The event stream endpoint: a channels consumer, before Django's middleware chain.

`GET /api/conversations/<id>/events/` (the URL named `conversation_events`) is routed
here by channels' URLRouter (config/asgi.py, `route`); every other request goes on to
Django. The reason is cost: a Django request holds
its thread (config/fastpaths/django.py: one of at most ASSISTANT_REQUEST_THREADS) for as
long as it lasts, and an event stream lasts for hours, so each open stream would hold a
thread, and a few of them every thread. Here nothing runs in such a context: the
request's database work (session, user, conversation) is one call into the process's
shared thread, and an idle stream is a coroutine waiting for a wake-up, with no thread
and no database connection of its own.

What the middleware chain does for this URL is done here by calling Django's own
middleware hooks, not copies of them: SecurityMiddleware (HTTPS redirect, HSTS, nosniff,
referrer and opener policies), CommonMiddleware (allowed hosts, refused user agents),
LocaleMiddleware, SessionMiddleware, AuthenticationMiddleware, the proxy sign-on
(assistant.sso), XFrameOptionsMiddleware and our SECURITY_HEADERS
(assistant.middleware.add_security_headers). Errors are Django's responses, sent by
Django's ASGI handler.

A stream ends when the client leaves (`http.disconnect`, watched while sending) and when
assistant.open_streams ends it: its authorisation ended (an `unauthorized` event, and a
reconnect answers 401; docs/protocol.md) or its user opened too many (`stream-closed`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from typing import NamedTuple

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.locale import LocaleMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import URLPattern, get_resolver, path
from django.utils.cache import patch_vary_headers
from django.utils.log import log_response
from django_eventstream.utils import get_channelmanager

from assistant import errors, open_streams
from assistant.events import subscriber
from assistant.events.wire import channel_for, encode_data, position_from
from assistant.generation.leases import ensure_supervisor
from assistant.middleware import add_security_headers
from assistant.sso import ProxyHeaderLoginMiddleware
from assistant.tokens import middleware as tokens
from assistant.views import api
from config.send_backlog import bounded_send

logger = logging.getLogger(__name__)

URL_NAME = "conversation_events"
# The last event of a stream whose authorisation ended; the client must not reconnect.
UNAUTHORIZED = "unauthorized"
# The last event of a stream ended because its user opened too many; the client must
# not reconnect by itself (it would end another of its streams).
STREAM_CLOSED = "stream-closed"


def _hooks_only(request: HttpRequest) -> None:
    raise AssertionError("the event stream endpoint calls middleware hooks, never the chain")


# What this endpoint does for each middleware of settings.MIDDLEWARE, in its order. A
# middleware added to the settings but not here stops the server from starting: the
# streams would skip it silently otherwise.
MIDDLEWARE_HANDLED = {
    "django.middleware.security.SecurityMiddleware": "its request and response hooks",
    "assistant.middleware.SecurityHeadersMiddleware": "add_security_headers",
    "django.contrib.sessions.middleware.SessionMiddleware": "channels' SessionMiddleware (route)",
    "django.middleware.locale.LocaleMiddleware": "its request hook (the language)",
    "django.middleware.common.CommonMiddleware": "its request hook (hosts, user agents)",
    "assistant.tokens.middleware.CsrfViewMiddleware": "none needed: a GET that changes nothing",
    "django.contrib.auth.middleware.AuthenticationMiddleware": "channels' AuthMiddleware (route)",
    "assistant.tokens.middleware.BearerTokenMiddleware": "_authorize (its authenticate and refusal)",
    "assistant.sso.ProxyHeaderLoginMiddleware": "sign_on",
    "django.contrib.messages.middleware.MessageMiddleware": "none needed: a stream shows no messages",
    "django.middleware.clickjacking.XFrameOptionsMiddleware": "its response hook",
}


class StreamHooks:
    """What Django's middleware chain does for an event stream's request, but the session
    and the user (channels' AuthMiddlewareStack, config/asgi.py): one set per process,
    shared by every stream."""

    def __init__(self, django: ASGIHandler) -> None:
        unhandled = [name for name in settings.MIDDLEWARE if name not in MIDDLEWARE_HANDLED]
        if unhandled:
            raise ImproperlyConfigured(
                f"assistant/stream_endpoint.py does not handle {', '.join(unhandled)} for event "
                "streams: do there what the middleware does, then add it to MIDDLEWARE_HANDLED"
            )
        self.django = django
        self.security = SecurityMiddleware(_hooks_only)
        self.common = CommonMiddleware(_hooks_only)
        self.locale = LocaleMiddleware(_hooks_only)
        self.frame_options = XFrameOptionsMiddleware(_hooks_only)
        try:
            self.sso: ProxyHeaderLoginMiddleware | None = ProxyHeaderLoginMiddleware(_hooks_only)
        except MiddlewareNotUsed:
            self.sso = None

    def refusal(self, request: HttpRequest) -> HttpResponseBase | None:
        """Django's answer to a request it would not let through (HTTPS redirect, host not
        allowed, refused user agent); with the language of the request activated."""
        refusal = self.security.process_request(request) or self.common.process_request(request)
        if refusal is None:
            self.locale.process_request(request)
        return refusal

    def add_headers(self, request: HttpRequest, response: HttpResponseBase) -> None:
        # The answer depends on the session, as Django's SessionMiddleware would say;
        # channels' does not.
        patch_vary_headers(response, ("Cookie",))
        self.locale.process_response(request, response)
        add_security_headers(response)
        self.security.process_response(request, response)
        self.frame_options.process_response(request, response)


class EventStreamConsumer(AsyncHttpConsumer):
    """A conversation's event stream: a channels consumer, routed by config/asgi.py behind
    AuthMiddlewareStack, which hands it the session (`scope["session"]`, saved and its
    cookie set with the response's head) and the user (`scope["user"]`, with Django's
    session hash check)."""

    def __init__(self, hooks: StreamHooks) -> None:
        super().__init__()
        self.hooks = hooks
        self.receive = None

    async def __call__(self, scope, receive, send) -> None:
        # While `handle` runs the stream nothing else reads `receive`: the stream watches it
        # for the client's hang-up.
        self.receive = receive
        await super().__call__(scope, receive, send)

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] != "GET":
            # Django's: its CSRF check, then the view's 405.
            await self.hooks.django(self.scope, _replayed(body, self.receive), self.send)
            return
        opened = await self._answer(body)
        if opened is not None:
            # A client that stops reading: closed once its backlog passes the bound, it
            # resumes from the log (config/send_backlog.py).
            send = bounded_send(self.scope, self.send, settings.ASSISTANT_STREAM_BACKLOG_BYTES)
            await _stream(self.receive, send, *opened)

    async def _answer(self, body: bytes) -> _Opened | None:
        """Send the answer of a request refused, or return what its stream needs (the
        request itself is not kept: an open stream holds only that)."""
        django = self.hooks.django
        request, response = django.create_request(self.scope, io.BytesIO(body))
        if request is None:
            await django.send_response(response, self.send)
            return None
        request.session, request.user = self.scope["session"], self.scope["user"]
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        try:
            response, opened = await self._open(request, conversation_id)
        except Exception as exc:
            response, opened = response_for_exception(request, exc), None
        self.hooks.add_headers(request, response)
        if opened is None:
            if response.status_code >= 400:
                log_response(
                    "%s: %s", response.reason_phrase, request.path, response=response, request=request
                )
            await django.send_response(response, self.send)
            return None
        return _Opened(_start_message(response), *opened)

    async def _open(
        self, request: HttpRequest, conversation_id: uuid.UUID
    ) -> tuple[HttpResponseBase, tuple[open_streams.OpenStream, str, int] | None]:
        """The response head and, when the stream may open, what `_stream` needs."""
        refusal = self.hooks.refusal(request)
        if refusal is not None:
            return refusal, None
        # One call into the process's shared thread for the database work left (this
        # request runs in no ThreadSensitiveContext, so no thread of its own is made).
        response, channel, account = await sync_to_async(self._authorize)(request, conversation_id)
        if channel is None:
            return response, None
        await ensure_supervisor()
        token = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
        position = position_from(channel, token)
        if token and position is None:
            position = 0  # outside every log: answered with a reset
        elif position is None:
            # From now, fixed before the 200: an event published once the client has it is sent.
            position = await subscriber.position_now(channel)
        token_id = request.api_token.pk if request.api_token is not None else None
        opened = open_streams.OpenStream.of(*account, request.session.session_key, token_id)
        return response, (opened, channel, position)

    def _authorize(
        self, request: HttpRequest, conversation_id: uuid.UUID
    ) -> tuple[HttpResponseBase, str | None, tuple[object, bytes]]:
        """Sync, in the shared thread: a Bearer token or else the proxy's sign-on, then the
        conversation's channel if django-eventstream's channel manager lets the user read
        it (else 404); with the user's id and credentials (see open_streams.credentials).
        Sets `request.api_token` (None: a session)."""
        try:
            tokens.token_apply(request, tokens.authenticate(request))
        except errors.ServiceError as error:
            return tokens.refusal(request, error), None, (None, b"")
        response = self.hooks.sso.sign_on(request) if self.hooks.sso is not None else None
        channel = None
        user = request.user
        if response is None and not user.is_authenticated:
            response = api.not_authenticated()
        elif response is None:
            if not get_channelmanager().can_read_channel(user, channel_for(conversation_id)):
                response = api.api_error(errors.not_found())
            else:
                channel = channel_for(conversation_id)
                response = StreamingHttpResponse(
                    content_type="text/event-stream; charset=utf-8",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
        return response, channel, (user.pk, open_streams.credentials(getattr(user, "password", "")))


def _replayed(body: bytes, receive):
    """`receive` for an app that reads the request again: its body, then the rest."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()

    return replay


def route(django: ASGIHandler) -> URLPattern:
    """The event stream's route for channels' URLRouter: the URL config.urls names
    `conversation_events` (its view is only there for reverse()), served by the consumer
    behind channels' session and authentication middleware."""
    pattern = next(p for p in get_resolver().url_patterns if getattr(p, "name", None) == URL_NAME)
    consumer = EventStreamConsumer.as_asgi(hooks=StreamHooks(django))
    return path(str(pattern.pattern), AuthMiddlewareStack(consumer), name=URL_NAME)


def _start_message(response: HttpResponseBase) -> dict:
    headers = [(name.encode("ascii"), value.encode("latin-1")) for name, value in response.items()]
    headers += [
        (b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in response.cookies.values()
    ]
    return {"type": "http.response.start", "status": response.status_code, "headers": headers}


def _final_frame(reason: str) -> bytes:
    """The last event of a stream ended by the server: `stream-closed` for the cap,
    `unauthorized` when its authorisation ended."""
    if reason == open_streams.TOO_MANY_STREAMS:
        data = {"reason": reason, "limit": settings.ASSISTANT_MAX_STREAMS_PER_USER}
        return f"event: {STREAM_CLOSED}\ndata: {encode_data(data)}\n\n".encode()
    return f"event: {UNAUTHORIZED}\ndata: {encode_data({'reason': reason})}\n\n".encode()


class _Opened(NamedTuple):
    start: dict  # the http.response.start message
    stream: open_streams.OpenStream
    channel: str
    position: int


async def _stream(
    receive, send, start: dict, opened: open_streams.OpenStream, channel: str, position: int
) -> None:
    """Send the events of `channel` from `position` until the client leaves or the
    stream's authorisation ends (then an `unauthorized` event, and the end)."""
    open_streams.register(opened)
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, opened))
    body = subscriber.stream(channel, position)
    started = False
    try:
        await send(start)
        started = True
        async for text in body:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
    except asyncio.CancelledError:
        # Our own ending (see open_streams.OpenStream.end) is taken back; any other cancellation
        # (the server shutting down) goes on.
        if opened.reason is None or asyncio.current_task().uncancel():
            raise
    finally:
        watcher.cancel()
        await body.aclose()
        open_streams.unregister(opened)
    if opened.reason == open_streams.DISCONNECTED:
        return
    if not started:
        await send(start)
    await send({"type": "http.response.body", "body": _final_frame(opened.reason), "more_body": False})


async def _watch_disconnect(receive, opened: open_streams.OpenStream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    opened.end(open_streams.DISCONNECTED)
