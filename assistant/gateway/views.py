"""The gateway's views: `GET /v1/models`, `GET /v1/models/<id>` and
`POST /v1/chat/completions`, authenticated by a personal API token alone.

The token is checked by the lead's BearerTokenMiddleware (assistant/tokens): a valid one
sets `request.api_token` and `request.user`, an invalid, expired or revoked one (or one
over its requests per minute) is answered 401/429 there. A request without one is 401
here, whatever session cookie it carries, so the views need no CSRF check: no cookie
ever authenticates them.

A chat completion is checked here, in the request's thread (body, model allowlist,
the user's per-minute limit and daily quota), its usage row and exchange stored, then
handed over to run on the event loop (assistant/gateway/handoff.py).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from assistant.errors import ServiceError
from assistant.forms import json_body
from assistant.gateway.completion import Completion
from assistant.gateway.errors import (
    INVALID_REQUEST,
    GatewayError,
    missing_api_key,
    model_not_found,
    openai_error,
    service_error,
)
from assistant.gateway.handoff import SCOPE_KEY
from assistant.gateway.parsing import chat_request
from assistant.gateway.store import exchange_start, usage_start
from assistant.generation import leases
from assistant.limits import answers_allow


def _refusal(request: HttpRequest, method: str) -> HttpResponse | None:
    """405 for another method, 401 without an API token; None for a request to serve."""
    if request.method != method:
        response = openai_error(
            405,
            _("Method %(method)s is not allowed here.") % {"method": request.method},
            type=INVALID_REQUEST,
            code="method_not_allowed",
        )
        response["Allow"] = method
        return response
    if getattr(request, "api_token", None) is None:
        return missing_api_key()
    return None


def _model_json(model: str) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": "assistant"}


@csrf_exempt
def models(request: HttpRequest) -> HttpResponse:
    """The models the user may ask for: the allowlist, ASSISTANT_MODELS."""
    refusal = _refusal(request, "GET")
    if refusal is not None:
        return refusal
    return JsonResponse(
        {"object": "list", "data": [_model_json(model) for model in settings.ASSISTANT_MODELS]}
    )


@csrf_exempt
def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    refusal = _refusal(request, "GET")
    if refusal is not None:
        return refusal
    if model not in settings.ASSISTANT_MODELS:
        return model_not_found(model).response()
    return JsonResponse(_model_json(model))


@csrf_exempt
def chat_completions(request: HttpRequest) -> HttpResponse:
    """Check the completion, count it, and hand it over; the response is the completion's."""
    refusal = _refusal(request, "POST")
    if refusal is not None:
        return refusal
    handoff = getattr(request, "scope", {}).get(SCOPE_KEY)
    if handoff is None:
        raise ImproperlyConfigured("/v1/ must be served through assistant.gateway.handoff (config/asgi.py)")
    try:
        chat = chat_request(json_body(request))
        answers_allow(request.user.pk)
        if settings.ASSISTANT_GATEWAY_STORE:
            # This process's lease, renewed while it lives, tells the others that the
            # stored answer is still being generated (assistant/generation/leases.py).
            leases.supervise_from_thread()
        with transaction.atomic():
            usage_id = usage_start(user_id=request.user.pk, model=chat.model)
            answer = (
                exchange_start(user_id=request.user.pk, request=chat, usage_id=usage_id)
                if settings.ASSISTANT_GATEWAY_STORE
                else None
            )
    except GatewayError as error:
        return error.response()
    except ServiceError as error:
        return service_error(error)
    handoff.completion = Completion(
        user_id=request.user.pk,
        token_id=request.api_token.pk,
        request=chat,
        usage_id=usage_id,
        language=get_language(),
        answer=answer,
    )
    # Its headers (the chain's) go out with the completion; its body is dropped.
    return HttpResponse()


@csrf_exempt
def unknown_url(request: HttpRequest) -> JsonResponse:
    """404 for any other path under /v1/, in OpenAI's shape."""
    return openai_error(
        404,
        _("Invalid URL (%(method)s %(path)s).") % {"method": request.method, "path": request.path},
        type=INVALID_REQUEST,
        code=None,
    )
