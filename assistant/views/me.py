"""`GET /api/me/`: what a client needs to know before its first request, in one answer.

Who is signed in, the models and assistants they may use, the limits they meet and how
far they are into them, how the event stream behaves (keep-alive, how far back it
resumes), which answer errors are worth a retry, and the token the request came with.
Every figure is the one the server enforces, read where the enforcing code reads it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.translation import get_language

from assistant import selectors, services
from assistant.events.log import REPLAY_EVENTS_PER_CHANNEL, REPLAY_IDLE_SECONDS
from assistant.personas.access import assistants_visible
from assistant.providers.errors import RETRYABLE_TYPES
from assistant.views.api import api_methods, api_view, assistant_entry_json


def _limit(value: int) -> int | None:
    """A limit as the API gives it: null for none (the settings' 0)."""
    return value or None


def _token_json(token) -> dict[str, Any] | None:
    if token is None:
        return None
    return {
        "name": token.name,
        "prefix": token.prefix,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "requests_per_minute": _limit(settings.ASSISTANT_TOKEN_REQUESTS_PER_MINUTE),
    }


@api_methods("GET")
@api_view
def me(request: HttpRequest) -> JsonResponse:
    user = request.user
    usage = selectors.usage_get(user=user)
    return JsonResponse(
        {
            "user": {
                "id": user.pk,
                "username": user.get_username(),
                "display_name": user.get_full_name() or user.get_username(),
                "email": user.email,
                # The language answers and messages come in (Accept-Language, the language cookie).
                "language": get_language(),
                "staff": user.is_staff,
            },
            "models": {"available": settings.ASSISTANT_MODELS, "default": services.model_validate(None)},
            "assistants": [assistant_entry_json(a) for a in assistants_visible(user)],
            "limits": {
                "answers_per_minute": _limit(usage.rate_limit),
                "answers_last_minute": usage.answers_last_minute,
                "daily_token_quota": _limit(usage.daily_quota),
                "tokens_today": usage.tokens_today,
                "quota_left_today": usage.quota_left,
                "conversations_per_minute": _limit(settings.ASSISTANT_CONVERSATIONS_PER_MINUTE),
                "writes_per_minute": _limit(settings.ASSISTANT_WRITES_PER_MINUTE),
                "max_message_chars": settings.ASSISTANT_MAX_MESSAGE_CHARS,
                "upload_max_bytes": settings.ASSISTANT_UPLOAD_MAX_BYTES,
                "max_open_streams": settings.ASSISTANT_MAX_STREAMS_PER_USER,
            },
            "events": {
                "keepalive_seconds": settings.ASSISTANT_KEEPALIVE_SECONDS,
                # A position resumes while its conversation keeps it: the latest events, for
                # as long as the conversation has had an event within the idle time.
                "replay_events": REPLAY_EVENTS_PER_CHANNEL,
                "replay_idle_seconds": REPLAY_IDLE_SECONDS,
            },
            "retryable_error_types": sorted(RETRYABLE_TYPES),
            "token": _token_json(request.api_token),
            "gateway": {"store": settings.ASSISTANT_GATEWAY_STORE},
        }
    )
