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
its authorisation does: its user is deactivated or deleted, its session logged out, or
the user's password changed and its session no longer authenticates them (Django's
session hash check), in this process or any other (Redis), or found by the account poll
(a command in another process, no Redis). It then sends an `unauthorized` event and
closes, and a reconnect answers 401 (docs/protocol.md). A user's open streams are
capped per process (ASSISTANT_MAX_STREAMS_PER_USER): a new one past the cap ends the
oldest with a `stream-closed` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from importlib import import_module
from typing import NamedTuple

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model, user_logged_out
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import response_for_exception
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase, HttpResponseNotAllowed, StreamingHttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.locale import LocaleMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import URLPattern, get_resolver, path
from django.utils.cache import patch_vary_headers
from django.utils.crypto import constant_time_compare
from django.utils.log import log_response

from assistant import errors, generation, selectors
from assistant.events import subscriber
from assistant.events.publish import replay_log
from assistant.events.wire import encode_data, position_from
from assistant.middleware import add_security_headers
from assistant.models import Conversation
from assistant.sso import ProxyHeaderLoginMiddleware
from assistant.views import api
from config.send_backlog import bounded_send

logger = logging.getLogger(__name__)

URL_NAME = "conversation_events"
# The last event of a stream whose authorisation ended; the client must not reconnect.
UNAUTHORIZED = "unauthorized"
LOGGED_OUT = "logged_out"
ACCOUNT_DISABLED = "account_disabled"
PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a reason, not a password
# The last event of a stream ended because its user opened too many; the client must
# not reconnect by itself (it would end another of its streams).
STREAM_CLOSED = "stream-closed"
TOO_MANY_STREAMS = "too_many_streams"
# How often a process checks that the users of its open streams are still active.
ACCOUNT_POLL_SECONDS = 1.0


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
    "django.middleware.csrf.CsrfViewMiddleware": "none needed: a GET that changes nothing",
    "django.contrib.auth.middleware.AuthenticationMiddleware": "channels' AuthMiddleware (route)",
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
    ) -> tuple[HttpResponseBase, tuple[_OpenStream, str, int | None] | None]:
        """The response head and, when the stream may open, what `_stream` needs."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"]), None
        refusal = self.hooks.refusal(request)
        if refusal is not None:
            return refusal, None
        # One call into the process's shared thread for the database work left (this
        # request runs in no ThreadSensitiveContext, so no thread of its own is made).
        response, conversation, account = await sync_to_async(self._authorize)(request, conversation_id)
        if conversation is None:
            return response, None
        await generation.ensure_supervisor()
        channel = conversation.channel
        token = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
        position = position_from(channel, token)
        if token and position is None:
            position = 0  # outside every log: answered with a reset
        return response, (_OpenStream.of(*account, request.session.session_key), channel, position)

    def _authorize(
        self, request: HttpRequest, conversation_id: uuid.UUID
    ) -> tuple[HttpResponseBase, Conversation | None, tuple[object, bytes]]:
        """Sync, in the shared thread: the proxy's sign-on, then the conversation; with
        the user's id and credentials (see _credentials)."""
        response = self.hooks.sso.sign_on(request) if self.hooks.sso is not None else None
        conversation = None
        user = request.user
        if response is None and not user.is_authenticated:
            response = api.not_authenticated()
        elif response is None:
            try:
                conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
            except errors.ServiceError as error:
                response = api.api_error(error)
            else:
                response = StreamingHttpResponse(
                    content_type="text/event-stream; charset=utf-8",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
        return response, conversation, (user.pk, _credentials(getattr(user, "password", "")))


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
    if reason == TOO_MANY_STREAMS:
        data = {"reason": reason, "limit": settings.ASSISTANT_MAX_STREAMS_PER_USER}
        return f"event: {STREAM_CLOSED}\ndata: {encode_data(data)}\n\n".encode()
    return f"event: {UNAUTHORIZED}\ndata: {encode_data({'reason': reason})}\n\n".encode()


class _Opened(NamedTuple):
    start: dict  # the http.response.start message
    stream: _OpenStream
    channel: str
    position: int | None


async def _stream(
    receive, send, start: dict, opened: _OpenStream, channel: str, position: int | None
) -> None:
    """Send the events of `channel` from `position` until the client leaves or the
    stream's authorisation ends (then an `unauthorized` event, and the end)."""
    _register(opened)
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, opened))
    body = subscriber.stream(channel, position)
    started = False
    try:
        await send(start)
        started = True
        async for text in body:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
    except asyncio.CancelledError:
        # Our own ending (see _OpenStream.end) is taken back; any other cancellation
        # (the server shutting down) goes on.
        if opened.reason is None or asyncio.current_task().uncancel():
            raise
    finally:
        watcher.cancel()
        await body.aclose()
        _unregister(opened)
    if opened.reason == _DISCONNECTED:
        return
    if not started:
        await send(start)
    await send({"type": "http.response.body", "body": _final_frame(opened.reason), "more_body": False})


async def _watch_disconnect(receive, opened: _OpenStream) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    opened.end(_DISCONNECTED)


# --- open streams and their revocation ---------------------------------------------------------

_DISCONNECTED = "disconnected"


@dataclass(eq=False, slots=True)
class _OpenStream:
    keys: tuple[str, ...]  # what revokes it: "user:<pk>" (first) and "session:<digest of the key>"
    task: asyncio.Task
    user_id: object
    # To ask the session store whether the session still authenticates its user, after
    # a password change. Kept in this process only; revocations carry the digest.
    session_key: str | None
    credentials: bytes  # the user's, when the stream last checked its session (_credentials)
    reason: str | None = None  # why it ends: a revocation reason, TOO_MANY_STREAMS or _DISCONNECTED

    @classmethod
    def of(cls, user_id: object, credentials: bytes, session_key: str | None) -> _OpenStream:
        keys = (_user_key(user_id), _session_key(session_key)) if session_key else (_user_key(user_id),)
        return cls(keys, asyncio.current_task(), user_id, session_key, credentials)

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.task.cancel()


# Open streams of this process by revocation key ("user:<pk>", "session:<digest>"), oldest
# first (a dict keeps the order). Touched only on the event loop; other threads go through
# call_soon_threadsafe.
_streams: dict[str, dict[_OpenStream, None]] = {}
_loop: asyncio.AbstractEventLoop | None = None
_account_poll: asyncio.Task | None = None
# Set to make the account poll run now rather than at its next second.
_check_now: asyncio.Event | None = None
_CREDENTIALS_PREFIX = "credentials:"


def _user_key(user_id: object) -> str:
    return f"user:{user_id}"


def _session_key(session_key: str) -> str:
    # A digest: revocations travel through Redis, session keys stay in the database.
    return f"session:{hashlib.sha256(session_key.encode()).hexdigest()}"


def _credentials(password: str) -> bytes:
    """A digest of a user's password hash: it changes with the password (and with nothing
    else the stream needs), and the hash itself is not kept with every open stream."""
    return hashlib.sha256(password.encode()).digest()


def _register(opened: _OpenStream) -> None:
    global _loop, _account_poll, _check_now
    _loop = asyncio.get_running_loop()
    _cap(opened.keys[0])
    for key in opened.keys:
        _streams.setdefault(key, {})[opened] = None
    # With Redis: revocations published by the other processes.
    replay_log.start_fanout(on_revoke=_end_local)
    if _account_poll is None or _account_poll.done() or _account_poll.get_loop() is not _loop:
        _check_now = asyncio.Event()
        _account_poll = generation.background_task(_poll_accounts(_check_now))


def _cap(user_key: str) -> None:
    """Make room for one more stream of the user: end their oldest ones past the limit.

    The newest stream always works (the tab the user looks at); an old one ends with
    `stream-closed`, and its page offers to reconnect instead of doing it by itself.
    Per process: with several, a user can hold this many on each.
    """
    live = [opened for opened in _streams.get(user_key, ()) if opened.reason is None]
    for oldest in live[: max(0, len(live) + 1 - settings.ASSISTANT_MAX_STREAMS_PER_USER)]:
        oldest.end(TOO_MANY_STREAMS)


def _unregister(opened: _OpenStream) -> None:
    for key in opened.keys:
        streams = _streams.get(key)
        if streams is not None:
            streams.pop(opened, None)
            if not streams:
                del _streams[key]


def _end_local(key: str) -> None:
    """End this process's open streams under `key`; on the event loop. A changed password
    (`credentials:<pk>`) makes the account poll check the user's sessions now."""
    if key.startswith(_CREDENTIALS_PREFIX):
        if _check_now is not None:
            _check_now.set()
        return
    reason = ACCOUNT_DISABLED if key.startswith("user:") else LOGGED_OUT
    for opened in list(_streams.get(key, ())):
        opened.end(reason)


def streams_revoke(*, user_id: object = None, session_key: str | None = None) -> None:
    """End the open event streams of a user or of a session, in every server process.

    Callable from any thread. Here they end at once; other processes hear it through
    Redis when it is configured, and find deactivated or deleted users by their poll
    otherwise.
    """
    key = _user_key(user_id) if user_id is not None else _session_key(session_key)
    _announce(key)


def streams_check_sessions(*, user_id: object) -> None:
    """After a password change: end the user's open streams whose session no longer
    authenticates them, in every server process (the poll finds it within a second
    where this is not called, e.g. a password changed by a command in another process).

    Callable from any thread.
    """
    _announce(f"{_CREDENTIALS_PREFIX}{user_id}")


def _announce(key: str) -> None:
    loop = _loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(_end_local, key)
    replay_log.request_revoke(key)


async def _poll_accounts(check_now: asyncio.Event) -> None:
    """End the streams of users no longer active, and of sessions a password change ended
    (the fallback that needs only the database): one query a second while streams are
    open, and one per stream whose user's password changed."""
    User = get_user_model()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACCOUNT_POLL_SECONDS):
                await check_now.wait()
        check_now.clear()
        user_ids = {key.removeprefix("user:") for key in _streams if key.startswith("user:")}
        if not user_ids:
            continue
        rows = User._default_manager.filter(pk__in=user_ids, is_active=True).values_list("pk", "password")
        try:
            passwords = {str(pk): password async for pk, password in rows}
        except Exception:
            logger.exception("could not check the accounts of open event streams")
            continue
        for user_id in user_ids:
            if user_id not in passwords:
                _end_local(_user_key(user_id))
                continue
            credentials = _credentials(passwords[user_id])
            changed = [
                opened
                for opened in _streams.get(_user_key(user_id), ())
                if opened.reason is None and opened.credentials != credentials
            ]
            if changed:
                try:
                    await _check_sessions(changed)
                except Exception:
                    logger.exception("could not check the sessions of open event streams")


async def _check_sessions(streams: list[_OpenStream]) -> None:
    """End the streams whose session no longer authenticates its user; the others note
    the user's new credentials."""
    keys = [opened.session_key for opened in streams]
    credentials, valid = await sync_to_async(_sessions_valid)(streams[0].user_id, keys)
    for opened, still in zip(streams, valid, strict=True):
        if still:
            opened.credentials = credentials
        else:
            opened.end(PASSWORD_CHANGED)


def _sessions_valid(user_id: object, session_keys: list[str | None]) -> tuple[bytes, list[bool]]:
    """The user's credentials, and for each session whether Django would still accept it
    for the user: the session hash check of `django.contrib.auth.get_user` (current and
    fallback secret keys), without its side effects (flushing or cycling the session).

    A session whose key was cycled (`update_session_auth_hash`, the session that changed
    the password) is gone under its old key: its stream ends too, and its page, still
    signed in, reconnects (static/assistant/chat.js).
    """
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    if user is None:
        return b"", [False] * len(session_keys)
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    store = import_module(settings.SESSION_ENGINE).SessionStore
    valid = []
    for key in session_keys:
        session = store(key) if key else None
        session_hash = session.get(HASH_SESSION_KEY) if session is not None else None
        valid.append(
            session is not None
            and str(session.get(SESSION_KEY)) == str(user.pk)
            and bool(session_hash)
            and any(constant_time_compare(session_hash, known) for known in hashes)
        )
    return _credentials(user.password), valid


# Thin receivers: the decisions are streams_revoke's and streams_check_sessions'. After the
# commit, so that a client that reconnects at once is refused.


@receiver(post_save, sender=get_user_model(), dispatch_uid="stream_endpoint.user_saved")
def _user_saved(sender, instance, created, update_fields, **kwargs) -> None:
    user_id = instance.pk
    if not instance.is_active:
        transaction.on_commit(lambda: streams_revoke(user_id=user_id))
    elif not created and (update_fields is None or "password" in update_fields):
        # Perhaps a new password: sessions whose hash no longer matches end.
        transaction.on_commit(lambda: streams_check_sessions(user_id=user_id))


@receiver(post_delete, sender=get_user_model(), dispatch_uid="stream_endpoint.user_deleted")
def _user_deleted(sender, instance, **kwargs) -> None:
    user_id = instance.pk
    transaction.on_commit(lambda: streams_revoke(user_id=user_id))


@receiver(user_logged_out, dispatch_uid="stream_endpoint.logged_out")
def _logged_out(sender, request, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        transaction.on_commit(lambda: streams_revoke(session_key=session_key))
