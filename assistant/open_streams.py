"""The open event streams of this server process, and their end when their authorisation
ends or their user opens too many.

A stream ends when its user is deactivated or deleted, its session logged out, the
user's password changed and its session no longer authenticates them (Django's session
hash check), or the API token it was opened with is revoked or expires; in this process
or any other (Redis), or found by the account poll (a command in another process, no
Redis). A user's open streams are capped per process
(ASSISTANT_MAX_STREAMS_PER_USER): a new one past the cap ends the oldest
(`TOO_MANY_STREAMS`). assistant.stream_endpoint sends the last event that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from importlib import import_module

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model, user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.crypto import constant_time_compare

from assistant.events.publish import replay_log
from assistant.generation.running import background_task
from assistant.tokens.models import ApiToken

logger = logging.getLogger(__name__)

# Why a stream ends: its authorisation did (an `unauthorized` event with the reason) ...
LOGGED_OUT = "logged_out"
ACCOUNT_DISABLED = "account_disabled"
PASSWORD_CHANGED = "password_changed"  # noqa: S105 - a reason, not a password
TOKEN_REVOKED = "token_revoked"  # noqa: S105 - revoked or expired
# ... its user opened too many (a `stream-closed` event) ...
TOO_MANY_STREAMS = "too_many_streams"
# ... or its client left (nothing more is sent).
DISCONNECTED = "disconnected"
# How often a process checks that the users of its open streams are still active.
ACCOUNT_POLL_SECONDS = 1.0


@dataclass(eq=False, slots=True)
class OpenStream:
    # What revokes it: "user:<pk>" (first), and "session:<digest of the key>" or "token:<pk>".
    keys: tuple[str, ...]
    task: asyncio.Task
    user_id: object
    # To ask the session store whether the session still authenticates its user, after
    # a password change. Kept in this process only; revocations carry the digest.
    session_key: str | None
    credentials: bytes  # the user's, when the stream last checked its session (_credentials)
    # The API token it was opened with (None: a session). A password change does not end
    # it: the token is the credential, and revoking it is how it ends.
    token_id: int | None = None
    # Counts toward its user's ASSISTANT_MAX_STREAMS_PER_USER: an event stream does, a
    # gateway completion does not (a script's parallel completions would end each other).
    capped: bool = True
    reason: str | None = None  # why it ends: a revocation reason, TOO_MANY_STREAMS or DISCONNECTED

    @classmethod
    def of(
        cls,
        user_id: object,
        credentials: bytes,
        session_key: str | None,
        token_id: int | None = None,
        task: asyncio.Future | None = None,
        *,
        capped: bool = True,
    ) -> OpenStream:
        """The stream of the running task (or `task`: a gateway completion)."""
        keys = (_user_key(user_id),)
        if token_id is not None:
            keys += (_token_key(token_id),)
        elif session_key:
            keys += (_session_key(session_key),)
        return cls(keys, task or asyncio.current_task(), user_id, session_key, credentials, token_id, capped)

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.task.cancel()


# Open streams of this process by revocation key ("user:<pk>", "session:<digest>"), oldest
# first (a dict keeps the order). Touched only on the event loop; other threads go through
# call_soon_threadsafe.
_streams: dict[str, dict[OpenStream, None]] = {}
_loop: asyncio.AbstractEventLoop | None = None
_account_poll: asyncio.Task | None = None
# Set to make the account poll run now rather than at its next second.
_check_now: asyncio.Event | None = None
_CREDENTIALS_PREFIX = "credentials:"
_TOKEN_PREFIX = "token:"  # noqa: S105 - a key prefix, not a password


def _user_key(user_id: object) -> str:
    return f"user:{user_id}"


def _token_key(token_id: object) -> str:
    return f"{_TOKEN_PREFIX}{token_id}"


def _session_key(session_key: str) -> str:
    # A digest: revocations travel through Redis, session keys stay in the database.
    return f"session:{hashlib.sha256(session_key.encode()).hexdigest()}"


def credentials(password: str) -> bytes:
    """A digest of a user's password hash: it changes with the password (and with nothing
    else the stream needs), and the hash itself is not kept with every open stream."""
    return hashlib.sha256(password.encode()).digest()


def register(opened: OpenStream) -> None:
    global _loop, _account_poll, _check_now
    _loop = asyncio.get_running_loop()
    if opened.capped:
        _cap(opened.keys[0])
    for key in opened.keys:
        _streams.setdefault(key, {})[opened] = None
    # With Redis: revocations published by the other processes.
    replay_log.start_fanout(on_revoke=_end_local)
    if _account_poll is None or _account_poll.done() or _account_poll.get_loop() is not _loop:
        _check_now = asyncio.Event()
        _account_poll = background_task(_poll_accounts(_check_now))


def _cap(user_key: str) -> None:
    """Make room for one more stream of the user: end their oldest ones past the limit.

    The newest stream always works (the tab the user looks at); an old one ends with
    `stream-closed`, and its page offers to reconnect instead of doing it by itself.
    Per process: with several, a user can hold this many on each.
    """
    live = [opened for opened in _streams.get(user_key, ()) if opened.capped and opened.reason is None]
    for oldest in live[: max(0, len(live) + 1 - settings.ASSISTANT_MAX_STREAMS_PER_USER)]:
        oldest.end(TOO_MANY_STREAMS)


def unregister(opened: OpenStream) -> None:
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
    if key.startswith("user:"):
        reason = ACCOUNT_DISABLED
    elif key.startswith(_TOKEN_PREFIX):
        reason = TOKEN_REVOKED
    else:
        reason = LOGGED_OUT
    for opened in list(_streams.get(key, ())):
        opened.end(reason)


def streams_revoke(
    *, user_id: object = None, session_key: str | None = None, token_id: int | None = None
) -> None:
    """End the open event streams of a user, a session or an API token, in every server
    process.

    Callable from any thread. Here they end at once; other processes hear it through
    Redis when it is configured, and find deactivated or deleted users and revoked tokens
    by their poll otherwise.
    """
    if user_id is not None:
        _announce(_user_key(user_id))
    elif token_id is not None:
        _announce(_token_key(token_id))
    else:
        _announce(_session_key(session_key))


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
    """End the streams of users no longer active, of tokens revoked or expired, and of
    sessions a password change ended (the fallback that needs only the database): one
    query a second while streams are open (two with token streams), and one per stream
    whose user's password changed."""
    User = get_user_model()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACCOUNT_POLL_SECONDS):
                await check_now.wait()
        check_now.clear()
        await _check_tokens()
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
            now = credentials(passwords[user_id])
            changed = [
                opened
                for opened in _streams.get(_user_key(user_id), ())
                if opened.reason is None and opened.token_id is None and opened.credentials != now
            ]
            if changed:
                try:
                    await _check_sessions(changed)
                except Exception:
                    logger.exception("could not check the sessions of open event streams")


async def _check_tokens() -> None:
    """End the streams of tokens no longer usable (revoked, expired, their user gone)."""
    token_ids = {int(key.removeprefix(_TOKEN_PREFIX)) for key in _streams if key.startswith(_TOKEN_PREFIX)}
    if not token_ids:
        return
    try:
        usable = {
            pk async for pk in ApiToken.objects.usable().filter(pk__in=token_ids).values_list("pk", flat=True)
        }
    except Exception:
        logger.exception("could not check the API tokens of open event streams")
        return
    for token_id in token_ids - usable:
        _end_local(_token_key(token_id))


async def _check_sessions(streams: list[OpenStream]) -> None:
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
    return credentials(user.password), valid


# Thin receivers: the decisions are streams_revoke's and streams_check_sessions'. After the
# commit, so that a client that reconnects at once is refused.


@receiver(post_save, sender=get_user_model(), dispatch_uid="open_streams.user_saved")
def _user_saved(sender, instance, created, update_fields, **kwargs) -> None:
    user_id = instance.pk
    if not instance.is_active:
        transaction.on_commit(lambda: streams_revoke(user_id=user_id))
    elif not created and (update_fields is None or "password" in update_fields):
        # Perhaps a new password: sessions whose hash no longer matches end.
        transaction.on_commit(lambda: streams_check_sessions(user_id=user_id))


@receiver(post_delete, sender=get_user_model(), dispatch_uid="open_streams.user_deleted")
def _user_deleted(sender, instance, **kwargs) -> None:
    user_id = instance.pk
    transaction.on_commit(lambda: streams_revoke(user_id=user_id))


@receiver(user_logged_out, dispatch_uid="open_streams.logged_out")
def _logged_out(sender, request, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        transaction.on_commit(lambda: streams_revoke(session_key=session_key))
