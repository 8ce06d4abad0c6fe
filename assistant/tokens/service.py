"""Creating, checking and revoking personal API tokens.

A token is `ast_` and 43 URL-safe characters (256 random bits). Only its SHA-256 digest
is stored, with its first characters as a prefix that tells tokens apart; a lost token is
revoked and replaced, never shown again.

A Bearer request is authenticated by one indexed lookup (`token_authenticate`), counted
against the token's requests per minute; an unknown, expired or revoked token counts as a
failed login of the client's address (assistant/throttle.py), so guessing tokens meets
the same wall as guessing passwords.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _

from assistant import open_streams, throttle
from assistant.errors import ServiceError
from assistant.tokens.models import ApiToken

logger = logging.getLogger(__name__)

SCHEME = "ast_"
PREFIX_CHARS = 12  # "ast_" and 8 characters of the secret
# last_used_at is written at most this often per token: not one write per request.
LAST_USED_EVERY = timedelta(minutes=1)
NAME_MAX_CHARS = ApiToken._meta.get_field("name").max_length


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_of(request: HttpRequest) -> str | None:
    """The secret of `Authorization: Bearer <secret>`, or None without such a header."""
    scheme, _space, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip()


def token_create(*, user, name: str, days: int | None) -> tuple[ApiToken, str]:
    """A new token of `user` and its secret, which is shown this once.

    `days` until it expires (None: never, where ASSISTANT_TOKEN_MAX_DAYS allows it).
    Refused with 400 for an empty or long name, a lifetime outside the allowed range,
    or a user holding ASSISTANT_TOKENS_PER_USER tokens already.
    """
    name = name.strip()
    if not name or len(name) > NAME_MAX_CHARS:
        raise ServiceError(
            400,
            "invalid_name",
            _("Give the token a name of 1 to %(count)d characters.") % {"count": NAME_MAX_CHARS},
        )
    longest = settings.ASSISTANT_TOKEN_MAX_DAYS
    if (days is None and longest) or (days is not None and not 1 <= days <= (longest or days)):
        raise ServiceError(
            400,
            "invalid_expiry",
            _("A token must expire within 1 to %(days)d days.") % {"days": longest},
        )
    with transaction.atomic():
        # Counted under the user's row lock, so that two requests at once cannot pass the cap.
        get_user_model()._default_manager.select_for_update().filter(pk=user.pk).first()
        if (
            ApiToken.objects.filter(user=user, revoked_at__isnull=True).count()
            >= settings.ASSISTANT_TOKENS_PER_USER
        ):
            raise ServiceError(
                400,
                "too_many_tokens",
                _("You have %(count)d tokens. Revoke one you no longer use first.")
                % {"count": settings.ASSISTANT_TOKENS_PER_USER},
            )
        secret = SCHEME + secrets.token_urlsafe(32)
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=secret[:PREFIX_CHARS],
            digest=digest_of(secret),
            expires_at=None if days is None else timezone.now() + timedelta(days=days),
        )
    logger.info("API token %s (%s) created for user %s", token.pk, token.prefix, user.pk)
    return token, secret


def token_revoke(*, token: ApiToken, by: str) -> bool:
    """Revoke `token` (False if it already was) and end its open event streams, in every
    server process, within a second (assistant.open_streams)."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=by[:150]
    )
    if not revoked:
        return False
    token.refresh_from_db(fields=["revoked_at", "revoked_by"])
    logger.info("API token %s (%s) revoked by %s", token.pk, token.prefix, by)
    token_id = token.pk
    transaction.on_commit(lambda: open_streams.streams_revoke(token_id=token_id))
    return True


def invalid_token() -> ServiceError:
    # One answer for unknown, expired and revoked: the answer tells a guesser nothing.
    return ServiceError(
        401, "invalid_token", _("The API token is not valid: it may have expired or been revoked.")
    )


def token_authenticate(*, secret: str, address: str) -> ApiToken:
    """The usable token whose secret this is, its user loaded; else 401 `invalid_token`.

    429 `rate_limited` when the address used up its failed logins, or the token its
    requests per minute.
    """
    failures = throttle.login_address_limit()
    wait = failures.wait(address)
    if wait is not None:
        raise _too_many(wait)
    token = (
        ApiToken.objects.usable().select_related("user").filter(digest=digest_of(secret)).first()
        if secret.startswith(SCHEME)
        else None
    )
    if token is None:
        failures.hit(address)
        logger.warning("invalid API token from %s", address)
        raise invalid_token()
    wait = requests_limit().hit(str(token.pk))
    if wait is not None:
        raise _too_many(wait)
    _mark_used(token)
    return token


def _too_many(wait: int) -> ServiceError:
    return ServiceError(
        429,
        "rate_limited",
        _("Too many requests. Try again in %(wait)s.") % {"wait": throttle.wait_text(wait)},
        retry_after=wait,
    )


def requests_limit() -> throttle.Limit:
    return throttle.Limit("token-requests", settings.ASSISTANT_TOKEN_REQUESTS_PER_MINUTE, 60)


def _mark_used(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
