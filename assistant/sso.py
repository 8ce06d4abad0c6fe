"""Single sign-on from a trusted reverse proxy (oauth2-proxy and the like).

The proxy authenticates the user and names them in a header (ASSISTANT_SSO_HEADER, e.g.
`X-Forwarded-User`); this middleware logs that user into a normal Django session. Off
unless the header is configured. Anyone can send any header, so it is believed only when
the request's direct peer, the address daphne sees, is one of
ASSISTANT_SSO_TRUSTED_PROXIES; from every other peer the header is ignored and password
logins work as before.

From a trusted proxy:
- the header names the logged-in user: nothing to do;
- it names someone else (or nobody is logged in): that user is logged in, a new session
  replacing the old one; unknown users are created when ASSISTANT_SSO_CREATE_USERS is on,
  refused with 403 otherwise; inactive users are refused with 403;
- no header: a session that single sign-on started is logged out (the proxy vouches for
  nobody now); a password session stays.

Django ignores headers spelt with underscores (`X-Forwarded_User`), so a client cannot
slip a second spelling past a proxy that only overwrites the first; a header sent twice
arrives joined with a comma, which no valid user name contains, and is refused.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import alogin, alogout, get_user_model, login, logout
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import MiddlewareNotUsed, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponseBase, HttpResponseForbidden
from django.utils.translation import gettext as _

from assistant.generation.running import background_task
from assistant.middleware import GetResponse, SyncAndAsyncMiddleware

logger = logging.getLogger(__name__)

SESSION_KEY = "_assistant_sso_user"
# Sessions live in the database; any active user may hold one.
SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"
UNIX_SOCKET = "unix"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Assertion:
    """What a trusted proxy says about a request: a user name ("" for nobody), an email."""

    username: str
    email: str = ""


def trusted_networks(entries: list[str]) -> tuple[list[Network], bool]:
    """The networks in a list of trusted proxies, and whether `unix` is among them."""
    networks = [ipaddress.ip_network(entry, strict=False) for entry in entries if entry != UNIX_SOCKET]
    return networks, UNIX_SOCKET in entries


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in `text` (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def from_proxy(request: HttpRequest, networks: list[Network], trust_unix_socket: bool) -> bool:
    """Whether the request's direct peer is one of the trusted proxies."""
    address = request.META.get("REMOTE_ADDR")
    if not address:
        # ASGI over a Unix socket: no peer address, only processes allowed to open it.
        return trust_unix_socket and getattr(request, "scope", None) is not None
    ip = ip_of(address)
    return ip is not None and any(ip in network for network in networks)


class ProxyHeaderLoginMiddleware(SyncAndAsyncMiddleware):
    """Logs in the user a trusted proxy names in ASSISTANT_SSO_HEADER; sync or async."""

    def __init__(self, get_response: GetResponse) -> None:
        if not settings.ASSISTANT_SSO_HEADER:
            raise MiddlewareNotUsed
        super().__init__(get_response)
        self.header = settings.ASSISTANT_SSO_HEADER
        self.email_header = settings.ASSISTANT_SSO_EMAIL_HEADER
        self.networks, self.trust_unix_socket = trusted_networks(settings.ASSISTANT_SSO_TRUSTED_PROXIES)
        self.create_users = settings.ASSISTANT_SSO_CREATE_USERS

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        refusal = self.sign_on(request)
        return refusal if refusal is not None else self.get_response(request)  # type: ignore[return-value]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        assertion = self.assertion(request)
        if assertion is not None:
            # Outside the request's context, so that the database work does not pin a thread
            # to a request that lasts (an event stream); see generation/running.py.
            refusal = await background_task(self._aapply(request, assertion))
            if refusal is not None:
                return refusal
        return await self.get_response(request)  # type: ignore[misc]

    def sign_on(self, request: HttpRequest) -> HttpResponseBase | None:
        """Act on the proxy's word (sync): a refusal, or None to go on with the request.

        Also called by assistant.stream_endpoint, which serves event streams before the
        middleware chain.
        """
        assertion = self.assertion(request)
        return None if assertion is None else self._apply(request, assertion)

    # --- what the proxy says ------------------------------------------------------------

    def from_trusted_proxy(self, request: HttpRequest) -> bool:
        return from_proxy(request, self.networks, self.trust_unix_socket)

    def assertion(self, request: HttpRequest) -> Assertion | None:
        """The proxy's word on this request; None when the peer is not a trusted proxy, or
        when a Bearer token authenticates the request (assistant.tokens.middleware: the
        proxy lets such requests through without its sign-on, docs/deployment.md)."""
        if getattr(request, "api_token", None) is not None or not self.from_trusted_proxy(request):
            return None
        email = request.headers.get(self.email_header, "") if self.email_header else ""
        return Assertion(username=request.headers.get(self.header, "").strip(), email=email.strip())

    # --- acting on it -------------------------------------------------------------------

    def _apply(self, request: HttpRequest, assertion: Assertion) -> HttpResponseBase | None:
        if not assertion.username:
            if request.session.get(SESSION_KEY) is not None:
                logout(request)
                _user_known(request, request.user)
            return None
        user = request.user
        if user.is_authenticated and user.get_username() == assertion.username:
            if request.session.get(SESSION_KEY) != assertion.username:
                request.session[SESSION_KEY] = assertion.username
            return None
        target, refusal = self._user_for(assertion)
        if refusal is not None:
            if user.is_authenticated or request.session.get(SESSION_KEY) is not None:
                logout(request)
                _user_known(request, request.user)
            return refusal
        login(request, target, backend=SESSION_BACKEND)
        request.session[SESSION_KEY] = assertion.username
        _user_known(request, target)
        return None

    async def _aapply(self, request: HttpRequest, assertion: Assertion) -> HttpResponseBase | None:
        if not assertion.username:
            if await request.session.aget(SESSION_KEY) is not None:
                await alogout(request)
                _user_known(request, request.user)
            return None
        user = await request.auser()
        if user.is_authenticated and user.get_username() == assertion.username:
            if await request.session.aget(SESSION_KEY) != assertion.username:
                await request.session.aset(SESSION_KEY, assertion.username)
            request.user = user  # sync views need not read it again
            return None
        target, refusal = await self._auser_for(assertion)
        if refusal is not None:
            if user.is_authenticated or await request.session.aget(SESSION_KEY) is not None:
                await alogout(request)
                _user_known(request, request.user)
            return refusal
        await alogin(request, target, backend=SESSION_BACKEND)
        await request.session.aset(SESSION_KEY, assertion.username)
        _user_known(request, target)
        return None

    def _user_for(self, assertion: Assertion) -> tuple[AbstractBaseUser | None, HttpResponseBase | None]:
        refusal = _invalid(assertion)
        if refusal is not None:
            return None, refusal
        User = get_user_model()
        user = User._default_manager.filter(**{User.USERNAME_FIELD: assertion.username}).first()
        if user is None and self.create_users:
            try:
                user = User._default_manager.create_user(assertion.username, email=_email(assertion))
                logger.info("single sign-on created user %s", assertion.username)
            except IntegrityError:  # created by a concurrent first request
                user = User._default_manager.filter(**{User.USERNAME_FIELD: assertion.username}).first()
        elif user is not None and _email(assertion) and user.email != _email(assertion):
            user.email = _email(assertion)
            user.save(update_fields=["email"])
        return user, _refusal_for(assertion, user)

    async def _auser_for(
        self, assertion: Assertion
    ) -> tuple[AbstractBaseUser | None, HttpResponseBase | None]:
        refusal = _invalid(assertion)
        if refusal is not None:
            return None, refusal
        User = get_user_model()
        user = await User._default_manager.filter(**{User.USERNAME_FIELD: assertion.username}).afirst()
        if user is None and self.create_users:
            try:
                user = await User._default_manager.acreate_user(assertion.username, email=_email(assertion))
                logger.info("single sign-on created user %s", assertion.username)
            except IntegrityError:  # created by a concurrent first request
                user = await User._default_manager.filter(
                    **{User.USERNAME_FIELD: assertion.username}
                ).afirst()
        elif user is not None and _email(assertion) and user.email != _email(assertion):
            user.email = _email(assertion)
            await user.asave(update_fields=["email"])
        return user, _refusal_for(assertion, user)


def _user_known(request: HttpRequest, user) -> None:
    # login() and logout() set request.user, but request.auser() keeps what it read before.
    async def known_user():
        return user

    request.auser = known_user


def _email(assertion: Assertion) -> str:
    try:
        validate_email(assertion.email)
    except ValidationError:
        return ""
    return assertion.email


def _invalid(assertion: Assertion) -> HttpResponseBase | None:
    User = get_user_model()
    max_length = User._meta.get_field(User.USERNAME_FIELD).max_length or 150
    try:
        if len(assertion.username) > max_length:
            raise ValidationError("")
        validator = getattr(User, "username_validator", None)
        if validator is not None:
            validator(assertion.username)
    except ValidationError:
        logger.warning("single sign-on refused an unusable user name from the proxy")
        return HttpResponseForbidden(
            _("The sign-on proxy sent a user name the assistant cannot use."),
            content_type="text/plain; charset=utf-8",
        )
    return None


def _refusal_for(assertion: Assertion, user: AbstractBaseUser | None) -> HttpResponseBase | None:
    if user is None:
        logger.warning("single sign-on refused unknown user %s", assertion.username)
        return HttpResponseForbidden(
            _("You have no account for the assistant yet. Ask an administrator to add you."),
            content_type="text/plain; charset=utf-8",
        )
    if not user.is_active:
        logger.warning("single sign-on refused inactive user %s", assertion.username)
        return HttpResponseForbidden(
            _("Your account for the assistant is deactivated."),
            content_type="text/plain; charset=utf-8",
        )
    return None
