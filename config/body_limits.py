"""Request bodies are refused by their size before they are read, and streamed ones as
soon as they pass it.

One limit per path (`body_limit`): DATA_UPLOAD_MAX_MEMORY_SIZE for every path but the
ones that take files, whose limit is a file of ASSISTANT_UPLOAD_MAX_BYTES with its
multipart framing, and the gateway's chat completions, whose body carries a whole
conversation (ASSISTANT_GATEWAY_MAX_BODY_BYTES). Two places apply it:

- under daphne, the Twisted layer (config/fastpaths/daphne.py): Twisted receives a
  whole body before daphne hands the request to the application, and daphne then puts
  all of it into the application's queue, so a 1 GB body cost 1 GB of memory there
  before any check of ours could run;
- in front of the application (`RequestBodyLimit`, the outermost ASGI wrapper), for any
  other ASGI server and as a second line: a declared length over the limit is refused
  before a byte is read, a streamed body as soon as the bytes received pass it.

Either way the answer is the API's JSON error, 413 `too_large` (under /v1/ in OpenAI's
shape), with Connection: close.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.http import JsonResponse
from django.utils.translation import gettext as _

from assistant.middleware import add_security_headers

# Any declared length with more digits is over every limit (and int64); fewer are parsed.
LENGTH_DIGITS_MAX = 18

# Uploads (config/urls.py, api_conversation_documents): the file and, around it, the
# multipart boundaries and part headers with a long file name.
UPLOAD_PATH = re.compile(
    r"/api/conversations/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/documents/"
    # A knowledge collection's "Add documents" in the admin (assistant/admin/collections.py):
    # several files, ASSISTANT_UPLOAD_MAX_BYTES together.
    r"|/admin/assistant/collection/[0-9]{1,19}/upload/"
)
MULTIPART_OVERHEAD_BYTES = 64 * 1024


# The gateway's chat completions (assistant/gateway/): a client sends the conversation
# so far with every request, an IDE plugin whole files with it.
GATEWAY_COMPLETIONS_PATH = "/v1/chat/completions"


def body_limit(path: str) -> int:
    """The largest request body, in bytes, that a request to `path` may send."""
    if UPLOAD_PATH.fullmatch(path):
        return settings.ASSISTANT_UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD_BYTES
    if path == GATEWAY_COMPLETIONS_PATH:
        return settings.ASSISTANT_GATEWAY_MAX_BODY_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def declared_length(value: bytes) -> int | None:
    """A Content-Length value as a number, capped past LENGTH_DIGITS_MAX digits (so over
    every limit); None when it is no plain decimal number (the server refuses those)."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= LENGTH_DIGITS_MAX else 10**LENGTH_DIGITS_MAX


def too_large_answer(path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 413 answer to a request for `path`: status, headers and body, as the API
    answers any refusal (under /v1/, as OpenAI's clients read it)."""
    message = _("The request is too large.")
    if path.startswith("/v1/"):
        error = {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    else:
        error = {"code": "too_large", "message": message}
    response = JsonResponse({"error": error}, status=413)
    add_security_headers(response)
    response["Connection"] = "close"
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    return response.status_code, headers, response.content


class RequestBodyLimit:
    """An ASGI wrapper: refuses a body over `body_limit` before the app reads it.

    A declared Content-Length over the limit is answered at once, without calling the app.
    A body streamed without one is counted as the app reads it: past the limit the client
    gets the 413 (unless the app answered already) and the app gets `http.disconnect`, as
    when a client leaves, and whatever it sends afterwards is dropped.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        for name, value in scope["headers"]:
            if name.lower() == b"content-length" and (declared_length(value) or 0) > limit:
                await _send_too_large(send, scope["path"])
                return
        received = 0
        refused = False
        started = False

        async def counted_receive() -> dict:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _send_too_large(send, scope["path"])
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 was the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)


async def _send_too_large(send, path: str) -> None:
    status, headers, body = too_large_answer(path)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
