"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Clients written for OpenAI (its SDKs among them) read the status, `type` and `code`
(and Retry-After on 429 and 503), so every refusal under /v1/ goes through `openai_error`;
the lead's BearerTokenMiddleware renders its 401 and 429 with it too.

The statuses (docs/clients.md, "The OpenAI-compatible gateway"): 400 a request the
gateway does not take (`param` names the field), 401 no usable API key, 404 a model not
on the allowlist, 429 the user's own limits, and for a failure of the model service
behind the gateway 502, 503 or 504 with the `code` the event stream uses as the error's
`type` (docs/protocol.md, "Error types").
"""

from __future__ import annotations

from django.http import JsonResponse
from django.utils.translation import gettext as _

from assistant.errors import ServiceError
from assistant.providers.errors import ProviderError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> dict:
    """The `{"error": {...}}` object, also sent as an SSE event when a stream fails."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def openai_error(
    status: int,
    message: str,
    *,
    type: str,
    code: str | None,
    param: str | None = None,
    retry_after: int | None = None,
) -> JsonResponse:
    """A JSON error response in OpenAI's shape; Retry-After set when `retry_after` is given."""
    response = JsonResponse(error_body(message, type=type, code=code, param=param), status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


class GatewayError(Exception):
    """A request the gateway refuses before anything goes upstream."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        code: str | None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def response(self) -> JsonResponse:
        return openai_error(self.status, self.message, type=self.type, code=self.code, param=self.param)


def invalid(message: str, *, param: str | None, code: str = "invalid_value") -> GatewayError:
    """400 for a body the gateway does not take; `param` names the field, as OpenAI does."""
    return GatewayError(400, message, code=code, param=param)


def model_not_found(model: str) -> GatewayError:
    """404 for a model not on the allowlist, as OpenAI answers an unknown one."""
    return GatewayError(
        404,
        _("The model '%(model)s' does not exist or you do not have access to it.") % {"model": model},
        code="model_not_found",
        param="model",
    )


def missing_api_key() -> JsonResponse:
    """401 for a request without `Authorization: Bearer`: a session cookie does not count."""
    return openai_error(
        401,
        _(
            "You didn't provide an API key. Send your personal API token as "
            "'Authorization: Bearer <token>' (create one on the settings page)."
        ),
        type=INVALID_REQUEST,
        code="invalid_api_key",
    )


def unauthorized_body() -> dict:
    """A completion ended because its token was revoked or expired, or its user deactivated."""
    return error_body(
        _("The API token was revoked or has expired, so the answer stopped. Use a new token."),
        type=INVALID_REQUEST,
        code="invalid_api_key",
    )


def service_error(error: ServiceError) -> JsonResponse:
    """A refusal of the services (the token, limits, the body's parsing) in OpenAI's
    shape: the token and the limits as OpenAI words its own (`invalid_api_key`,
    `rate_limit_exceeded`, `insufficient_quota`)."""
    if error.code == "invalid_token":
        type_, code = INVALID_REQUEST, "invalid_api_key"
    elif error.code == "rate_limited":
        type_, code = "requests", "rate_limit_exceeded"
    elif error.code == "quota_exceeded":
        type_, code = "insufficient_quota", "insufficient_quota"
    else:
        type_, code = (INVALID_REQUEST if error.status < 500 else SERVER_ERROR), error.code
    return openai_error(error.status, error.message, type=type_, code=code, retry_after=error.retry_after)


# The model service's failures by the event stream's error type (providers/errors.py):
# the status the gateway answers. The rest (connection_lost, upstream_error, tool_error,
# auth_failed and model_not_found, which are the gateway's configuration) are 502.
_UPSTREAM_STATUS = {
    "bad_request": 400,  # the model service refused the request: the messages, most likely
    "timeout": 504,
    "rate_limited": 503,  # the model service's limit, not the user's: not a 429
    "upstream_unavailable": 503,
    "conflict": 503,
    "interrupted": 503,
    "internal": 500,
}


def upstream_status(error: ProviderError) -> int:
    return _UPSTREAM_STATUS.get(error.type, 502)


def upstream_body(error: ProviderError) -> dict:
    """A failure of the model service as an error object: `code` is its error type."""
    type_ = INVALID_REQUEST if upstream_status(error) < 500 else SERVER_ERROR
    return error_body(error.detail, type=type_, code=error.type)
