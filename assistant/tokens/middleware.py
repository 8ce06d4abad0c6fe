"""Bearer authentication for the JSON API, the event stream and the gateway, and the
CSRF check that applies only where a cookie authenticates.

A request under /api/ or /v1/ that carries `Authorization: Bearer <token>` is the token's
user, whatever cookie it also carries; an unusable token is refused here (401, or 429
over its limits), in the API's error shape or, under /v1/, in OpenAI's. A browser sends
such a header cross-site only after a CORS preflight, which this site never grants, so
these requests need no CSRF token; every cookie request keeps Django's check.
"""

from __future__ import annotations

from collections.abc import Awaitable

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.middleware import csrf

from assistant import errors, throttle
from assistant.gateway.errors import service_error
from assistant.middleware import SyncAndAsyncMiddleware
from assistant.tokens.models import ApiToken
from assistant.tokens.service import bearer_of, token_authenticate
from assistant.views.api import api_error

# Where a token is accepted; elsewhere (pages, the admin) the header is ignored.
TOKEN_PATHS = ("/api/", "/v1/")
GATEWAY_PATH = "/v1/"


def authenticate(request: HttpRequest) -> ApiToken | None:
    """The request's token when it carries a usable one (None: no Bearer header, or a
    path that takes none); raises ServiceError for a token that is not usable."""
    secret = bearer_of(request) if request.path_info.startswith(TOKEN_PATHS) else None
    if secret is None:
        return None
    return token_authenticate(secret=secret, address=throttle.client_address(request))


def refusal(request: HttpRequest, error: errors.ServiceError) -> JsonResponse:
    """A refused token's answer, in the shape the path's clients read."""
    response = service_error(error) if request.path_info.startswith(GATEWAY_PATH) else api_error(error)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


class BearerTokenMiddleware(SyncAndAsyncMiddleware):
    """Sets `request.api_token` (None without a Bearer header) and, with a usable token,
    `request.user` to its user; refuses an unusable one. After AuthenticationMiddleware."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        try:
            token_apply(request, authenticate(request))
        except errors.ServiceError as error:
            return refusal(request, error)
        return self.get_response(request)  # type: ignore[return-value]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            token_apply(request, await sync_to_async(authenticate)(request))
        except errors.ServiceError as error:
            return refusal(request, error)
        return await self.get_response(request)  # type: ignore[misc]


def token_apply(request: HttpRequest, token: ApiToken | None) -> None:
    """`request.api_token`, and with a token its user as the request's (also for
    assistant.stream_endpoint, which serves event streams before the chain)."""
    request.api_token = token
    if token is not None:
        user = token.user
        request.user = user

        async def auser():
            return user

        request.auser = auser


class CsrfViewMiddleware(csrf.CsrfViewMiddleware):
    """Django's CSRF protection, except for a request BearerTokenMiddleware authenticated
    by its token: no cookie is involved, so there is no forgery to guard against."""

    def process_view(self, request, callback, callback_args, callback_kwargs):
        if getattr(request, "api_token", None) is not None:
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)
