"""The data lines of a streamed chat completion: split, parsed and checked as they come."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from assistant.providers.errors import ProviderError, provider_error
from assistant.providers.values import Finish, finish_reason_of, model_text, token_count


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of an SSE body at CR, LF or CRLF, and the rest still to come.

    Only those: str.splitlines (which the SDK's iter_lines() uses) also breaks at U+2028,
    U+2029 and U+0085, characters a model may well write raw in UTF-8 JSON.
    """
    held = b""
    if buffer.endswith(b"\r"):
        # Maybe the first half of a CRLF split across reads.
        buffer, held = buffer[:-1], b"\r"
    *lines, rest = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return lines, rest + held


async def sse_line_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The lines of an SSE body arriving in chunks: those each chunk completes, together."""
    pending = b""
    async for chunk in chunks:
        lines, pending = split_lines(pending + chunk)
        if lines:
            yield lines
    if pending.rstrip(b"\r"):
        yield [pending.rstrip(b"\r")]


def _chunk(data: bytes) -> dict:
    """One data line's JSON: orjson, a quarter of json's CPU per token (0.7 against 2.8 µs
    for a chunk of one token), and json for what orjson refuses and json takes (a lone
    surrogate's escape: model_text replaces it)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode())  # str: json skips guessing the encoding


def _broken() -> ProviderError:
    return provider_error("upstream_error", 502)


@dataclass
class Completion:
    """What the data lines of a streamed chat completion said so far.

    Every value is checked where it is read: a chunk that is not shaped as the protocol
    says (not an object, choices that are not a list of objects, text that is not a
    string) is a broken answer, and what the upstream says about the answer's end (its
    finish_reason, its usage figures) is kept only as `Finish` stores it.
    """

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done: bool = False
    # A broken line (invalid JSON, an in-stream error): the text before it still counts.
    error: Exception | None = None

    def text(self, lines: list[bytes]) -> str:
        """The text of these lines up to the end or a broken line; notes what they said."""
        texts = []
        try:
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self.done = True
                    break
                self._read(_chunk(data), texts)
        except Exception as exc:
            self.error = exc
        return model_text("".join(texts))

    def _read(self, chunk: object, texts: list[str]) -> None:
        if not isinstance(chunk, dict) or "error" in chunk:
            raise _broken()
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self.prompt_tokens = token_count(usage.get("prompt_tokens"))
            self.completion_tokens = token_count(usage.get("completion_tokens"))
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise _broken()
        for choice in choices:
            if not isinstance(choice, dict):
                raise _broken()
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _broken()
            text = delta.get("content")
            if text is not None and not isinstance(text, str):
                raise _broken()
            if text:
                texts.append(text)
            if choice.get("finish_reason"):
                self.finish_reason = finish_reason_of(choice["finish_reason"])

    def finish(self) -> Finish:
        return Finish(self.finish_reason, self.prompt_tokens, self.completion_tokens)
