"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Clients written for OpenAI (its SDKs among them) read the status, `type` and `code`
(and Retry-After on 429), so every refusal under /v1/ goes through `openai_error`.
"""

from __future__ import annotations

from django.http import JsonResponse


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
