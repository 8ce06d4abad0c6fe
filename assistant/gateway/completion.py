"""One chat completion of the gateway, after the view accepted it: the provider's answer
sent to the client, on the event loop, with no request thread held.

Streamed (`"stream": true`), the answer goes out as OpenAI sends it: `chat.completion.chunk`
objects in SSE `data:` lines, the first with the role, one per piece of text the
provider yields, one with the finish reason, with `stream_options.include_usage` one
with the usage and no choices, then `data: [DONE]`. Not streamed, one `chat.completion`
object with its usage. The response's headers wait for the provider's first text, so a
failure before it is a plain HTTP error (502, 503, 504: assistant/gateway/errors.py);
one after it is an SSE `data: {"error": {...}}` that ends the stream, as OpenAI does.

A client that disconnects (`http.disconnect`) cancels the completion: the provider's
`async with` closes the upstream response, so the model service stops too, and the
text so far is counted and stored as `cancelled`. A streamed response whose client
stops reading is cut like an event stream (config/send_backlog.py), with the same end.
With the exchange stored (assistant/gateway/store.py), the text is stored as it comes
with the page's answers (assistant/generation/partials.py), and the end before the
client reads it, so a client that has read the end finds it stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import translation

from assistant import open_streams
from assistant.gateway.errors import unauthorized_body, upstream_body, upstream_status
from assistant.gateway.parsing import ChatRequest
from assistant.gateway.store import Outcome, completion_end
from assistant.generation import partials
from assistant.generation.ending import interrupted_error
from assistant.models import Message
from assistant.providers.configured import get_provider
from assistant.providers.errors import ProviderError, provider_error
from assistant.providers.values import Finish
from assistant.usage import usage_counted
from config.send_backlog import bounded_send

logger = logging.getLogger(__name__)

Status = Message.Status
Headers = list[tuple[bytes, bytes]]

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_TYPE = (b"content-type", b"application/json")
DONE_FRAME = b"data: [DONE]\n\n"


def _frame(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _usage(counted: dict[str, int]) -> dict[str, int]:
    prompt, completion = counted["prompt_tokens"], counted["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _disconnected(receive) -> None:
    """Returns when the client has left; the request's body was read before."""
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Completion:
    """A completion the view accepted: the request, its user and usage row, and its
    stored answer (ASSISTANT_GATEWAY_STORE on when it was accepted)."""

    user_id: int
    token_id: int  # the API token it came with: revoking it ends the completion
    request: ChatRequest
    usage_id: int
    language: str
    # The stored answer, `streaming` (store.exchange_start); None: the exchange is not stored.
    answer: Message | None
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    # Set when the client disconnected: the completion ends `cancelled`, and nothing is sent.
    left: bool = False
    # Its entry among the process's open streams (assistant.open_streams): its `reason` is
    # set when its token was revoked or its user deactivated, which ends it `cancelled`.
    watch: open_streams.OpenStream | None = None

    async def respond(self, scope: dict, headers: Headers, receive, send) -> None:
        """Generate, store and send the completion; `headers` are those Django's
        middleware chain gave the view's response (security headers and the like)."""
        headers = [
            (name, value)
            for name, value in headers
            if name.lower() not in (b"content-type", b"content-length")
        ]
        if self.request.stream:
            reply: _Reply = _Stream(
                self, headers, bounded_send(scope, send, settings.ASSISTANT_STREAM_BACKLOG_BYTES)
            )
        else:
            reply = _Reply(self, headers, send)
        work = asyncio.ensure_future(self._run(reply))
        self.watch = open_streams.OpenStream.of(
            self.user_id, b"", None, self.token_id, task=work, capped=False
        )
        open_streams.register(self.watch)
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait([work, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                # The client left, or the server is stopping: the completion ends now.
                self.left = gone.done()
                work.cancel()
                await asyncio.wait([work])
            gone.cancel()
            open_streams.unregister(self.watch)

    async def _run(self, reply: _Reply) -> None:
        with translation.override(self.language):
            stored = None if self.answer is None else partials.StoredText(self.answer)
            try:
                outcome = await self._generate(reply, stored)
            finally:
                if stored is not None:
                    # A partial write still on its way changes nothing after the end's.
                    stored.finishing = True
                    partials.writer.discard(stored)
            counted = usage_counted(
                outcome.finish, prompt_chars=self.request.prompt_chars, completion_chars=len(outcome.text)
            )
            try:
                await sync_to_async(completion_end)(
                    usage_id=self.usage_id,
                    answer_id=None if self.answer is None else self.answer.pk,
                    outcome=outcome,
                    usage=counted,
                )
            except Exception:
                logger.exception("storing the end of gateway completion %s failed", self.id)
            if self.left:
                return
            if self.watch.reason is not None:
                await reply.refused(unauthorized_body())
            else:
                await reply.end(outcome, _usage(counted))

    async def _generate(self, reply: _Reply, stored: partials.StoredText | None) -> Outcome:
        """The provider's answer, each text handed to `reply` (and to the partial writer
        with `stored`) as it comes; how it ended."""
        parts: list[str] = [] if stored is None else stored.parts
        started = time.monotonic()
        first: float | None = None
        finish: Finish | None = None
        status, error = Status.DONE, None
        try:
            async with asyncio.timeout(settings.ASSISTANT_MAX_ANSWER_SECONDS):
                stream = get_provider().stream(
                    model=self.request.model, messages=self.request.messages, **self.request.options
                )
                try:
                    # Text, then one Finish: no tools are offered, so the model calls none.
                    async for item in stream:
                        if isinstance(item, Finish):
                            finish = item
                            continue
                        first = first or time.monotonic()
                        parts.append(item)
                        if stored is not None:
                            partials.writer.add(stored)
                        await reply.text(item)
                finally:
                    await stream.aclose()  # closes the upstream response, also when cancelled
            if finish is None:
                raise provider_error("upstream_error", 502)
        except asyncio.CancelledError:
            stopped = self.left or self.watch.reason is not None
            status, error = (Status.CANCELLED, None) if stopped else (Status.INTERRUPTED, interrupted_error())
        except TimeoutError:
            status, error = Status.ERROR, provider_error("timeout", 504)
        except ProviderError as exc:
            status, error = Status.ERROR, exc
        except Exception:
            # The provider raises ProviderError alone: anything else is the gateway's own fault.
            logger.exception("gateway completion %s failed", self.id)
            status, error = Status.ERROR, provider_error("internal", 500)
        return Outcome(
            status=status,
            text="".join(parts),
            finish=finish if status == Status.DONE else None,
            error=error,
            first_token_ms=None if first is None else int((first - started) * 1000),
            duration_ms=int((time.monotonic() - started) * 1000),
        )


class _Reply:
    """A completion answered in one piece: a `chat.completion`, or an error."""

    def __init__(self, completion: Completion, headers: Headers, send) -> None:
        self.completion = completion
        self.headers = headers
        self.send = send

    async def text(self, text: str) -> None:
        """A piece of the answer's text as it comes: sent with the rest at the end."""

    async def end(self, outcome: Outcome, usage: dict[str, int]) -> None:
        if outcome.error is not None:
            await self.whole(upstream_status(outcome.error), upstream_body(outcome.error), outcome.error)
            return
        completion = self.completion
        await self.whole(
            200,
            {
                "id": completion.id,
                "object": "chat.completion",
                "created": completion.created,
                "model": completion.request.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": outcome.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": outcome.finish.finish_reason,
                    }
                ],
                "usage": usage,
            },
        )

    async def refused(self, body: dict) -> None:
        """The token's authorisation ended while the completion ran: 401."""
        await self.whole(401, body)

    async def whole(self, status: int, body: dict, error: ProviderError | None = None) -> None:
        """A whole JSON response; Retry-After when the model service said how long to wait."""
        content = orjson.dumps(body)
        headers = [*self.headers, JSON_TYPE, (b"content-length", str(len(content)).encode())]
        if error is not None and error.retry_after is not None:
            headers.append((b"retry-after", str(error.retry_after).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": content})


class _Stream(_Reply):
    """A streamed completion: its headers with the first text, then a chunk per text."""

    started = False

    def _object(self, **fields) -> bytes:
        """A `chat.completion.chunk` with `fields` (choices, usage) as an SSE frame."""
        completion = self.completion
        chunk = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.request.model,
            **fields,
        }
        return _frame(chunk)

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if self.completion.request.include_usage:
            return self._object(choices=choices, usage=None)  # on every chunk but the last, as OpenAI does
        return self._object(choices=choices)

    async def _body(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def _start(self) -> None:
        self.started = True
        await self.send(
            {"type": "http.response.start", "status": 200, "headers": [*self.headers, *SSE_HEADERS]}
        )
        await self._body(self._chunk({"role": "assistant", "content": ""}))

    async def text(self, text: str) -> None:
        if not self.started:
            await self._start()
        await self._body(self._chunk({"content": text}))

    async def refused(self, body: dict) -> None:
        """The 401 before the first text; after it, the error as the stream's last frame."""
        if self.started:
            await self._body(_frame(body), more=False)
        else:
            await super().refused(body)

    async def end(self, outcome: Outcome, usage: dict[str, int]) -> None:
        error = outcome.error
        if error is not None and not self.started:
            await self.whole(upstream_status(error), upstream_body(error), error)
            return
        if not self.started:
            await self._start()  # an empty answer
        if error is not None:
            await self._body(_frame(upstream_body(error)), more=False)
            return
        frames = [self._chunk({}, outcome.finish.finish_reason)]
        if self.completion.request.include_usage:
            frames.append(self._object(choices=[], usage=usage))
        await self._body(b"".join([*frames, DONE_FRAME]), more=False)
