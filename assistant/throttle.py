"""Limits on cheap requests that cost others: password guessing, login floods, write floods.

Counters live in Django's cache: `count` events per `seconds` for each subject (a user,
an account name, an address), the window opening with the subject's first event. With
REDIS_URL the cache is Redis, so every server process counts into the same keys; without
it there is one process and its memory. The cache failing lets the request through, with
a warning: an outage of Redis must not also lock everybody out.

Logins (assistant.forms.LoginThrottleMixin, for the login page and the admin's):

- before any password is hashed, failed logins are counted per account (the user name as
  typed, case folded) and per client address; over either limit the login is refused,
  the correct password included, saying how long to wait;
- at most ASSISTANT_LOGIN_CONCURRENCY password checks run at once per process; more are
  refused at once, so a flood of logins cannot take every request thread
  (config/fastpaths/django.py) for password hashing;
- every failed password check (Django's `user_login_failed` signal, any login form) is
  counted and logged as a warning with the user name and the client address.

The client address is the request's direct peer, except from a peer listed in
ASSISTANT_TRUSTED_PROXIES (`unix`: daphne on a Unix socket, the documented nginx), whose
X-Forwarded-For names the client: the last entry, the one the proxy itself wrote.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from assistant import sso

logger = logging.getLogger(__name__)

# Longer user names are cut in log lines (and a key never holds them: it is a digest).
LOGGED_USERNAME_CHARS = 64


@dataclass(frozen=True)
class Limit:
    """`count` events per `seconds` for one subject (0: no limit). A subject's window opens
    with its first event and lasts `seconds`; then it counts from zero again."""

    name: str
    count: int
    seconds: int

    def _keys(self, subject: str) -> tuple[str, str]:
        """The cache keys of the subject's count and of its window's start (a digest: user
        names are free text, and cache keys are not)."""
        digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        key = f"throttle:{self.name}:{digest}"
        return key, key + ":since"

    def _wait(self, since: float | None, now: float) -> int:
        return max(1, math.ceil((now if since is None else since) + self.seconds - now))

    def wait(self, subject: str, *, now: float | None = None) -> int | None:
        """Seconds until `subject` may try again if it used up its window, else None."""
        if not self.count:
            return None
        now = time.time() if now is None else now
        key, since_key = self._keys(subject)
        try:
            found = cache.get_many([key, since_key])
        except Exception:
            logger.warning("throttle: the cache cannot be read; %s is not limited now", self.name)
            return None
        return self._wait(found.get(since_key), now) if found.get(key, 0) >= self.count else None

    def hit(self, subject: str, *, now: float | None = None) -> int | None:
        """Count one event of `subject`; the seconds to wait if that went over the limit, else None."""
        if not self.count:
            return None
        now = time.time() if now is None else now
        key, since_key = self._keys(subject)
        try:
            # The count keeps the expiry it was added with: incr changes only the value.
            cache.add(since_key, now, timeout=self.seconds)
            if cache.add(key, 1, timeout=self.seconds):
                used = 1
            else:
                try:
                    used = cache.incr(key)
                except ValueError:  # expired since add(): a new window
                    cache.set(key, 1, timeout=self.seconds)
                    used = 1
            if used <= self.count:
                return None
            return self._wait(cache.get(since_key), now)
        except Exception:
            logger.warning("throttle: the cache cannot be written; %s is not limited now", self.name)
            return None


def wait_text(seconds: int) -> str:
    """How long to wait, for people: seconds under two minutes, minutes above."""
    if seconds < 120:
        return ngettext("%(count)d second", "%(count)d seconds", seconds) % {"count": seconds}
    minutes = math.ceil(seconds / 60)
    return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}


# --- the limits, from settings (read at each use: tests and settings may change them) -----


def login_account_limit() -> Limit:
    return Limit(
        "login-account",
        settings.ASSISTANT_LOGIN_FAILURES_PER_ACCOUNT,
        settings.ASSISTANT_LOGIN_WINDOW_SECONDS,
    )


def login_address_limit() -> Limit:
    return Limit(
        "login-address",
        settings.ASSISTANT_LOGIN_FAILURES_PER_ADDRESS,
        settings.ASSISTANT_LOGIN_WINDOW_SECONDS,
    )


def conversations_limit() -> Limit:
    return Limit("conversations", settings.ASSISTANT_CONVERSATIONS_PER_MINUTE, 60)


def writes_limit() -> Limit:
    return Limit("writes", settings.ASSISTANT_WRITES_PER_MINUTE, 60)


# --- the client's address -----------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """The client's IP as the documented proxy setup gives it (see the module's docstring).

    X-Forwarded-For from any other peer is ignored: anyone can send it. A trusted proxy
    that sent none or junk leaves its own address (`unix` on a socket).
    """
    peer = request.META.get("REMOTE_ADDR") or sso.UNIX_SOCKET
    if sso.from_proxy(request, *sso.trusted_networks(settings.ASSISTANT_TRUSTED_PROXIES)):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1]
        ip = sso.ip_of(forwarded)
        if ip is not None:
            return str(ip)
    ip = sso.ip_of(peer)
    return peer if ip is None else str(ip)


# --- logins -------------------------------------------------------------------------------


class LoginRefused(Exception):
    """A login refused before its password was checked: `status` and `retry_after` for the
    answer, `message` for the person."""

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


_password_checks = threading.BoundedSemaphore(1)
_password_checks_size = 1
_password_checks_lock = threading.Lock()


def _checks_semaphore() -> threading.BoundedSemaphore:
    """The process's password-check slots, sized by ASSISTANT_LOGIN_CONCURRENCY (re-made if it changes)."""
    global _password_checks, _password_checks_size
    size = settings.ASSISTANT_LOGIN_CONCURRENCY
    with _password_checks_lock:
        if size != _password_checks_size:
            _password_checks, _password_checks_size = threading.BoundedSemaphore(size), size
        return _password_checks


def _account(username: str) -> str:
    return username.strip().casefold()


def _logged(username: str) -> str:
    return username[:LOGGED_USERNAME_CHARS]


@contextmanager
def login_guard(request: HttpRequest, username: str) -> Iterator[None]:
    """Around a password check: raises LoginRefused instead of entering it when the account
    or the address used up its failures, or when every password-check slot is taken."""
    address = client_address(request)
    waits = [
        wait
        for wait in (
            login_account_limit().wait(_account(username)),
            login_address_limit().wait(address),
        )
        if wait is not None
    ]
    if waits:
        wait = max(waits)
        logger.warning(
            "login refused for %r from %s: too many failed logins, %d s to wait",
            _logged(username),
            address,
            wait,
        )
        raise LoginRefused(
            429,
            _("Too many failed logins. Try again in %(wait)s.") % {"wait": wait_text(wait)},
            wait,
        )
    slots = _checks_semaphore()
    if not slots.acquire(blocking=False):
        logger.info("login refused for %r from %s: all password checks busy", _logged(username), address)
        # 429, not 503: a flood is the clients' doing, and django.request logs 5xx as errors.
        raise LoginRefused(429, _("Too many logins at this moment. Try again in a few seconds."), 2)
    try:
        yield
    finally:
        slots.release()


def login_failure_record(*, request: HttpRequest, username: str) -> None:
    """Count a failed password check against the account and the address, and log it."""
    address = client_address(request)
    login_account_limit().hit(_account(username))
    login_address_limit().hit(address)
    logger.warning("login failed for %r from %s", _logged(username), address)


@receiver(user_login_failed, dispatch_uid="assistant.throttle.login_failed")
def _login_failed(sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
    if request is None:  # a password check outside any request (a shell, a command)
        return
    username = credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or ""
    login_failure_record(request=request, username=str(username))
