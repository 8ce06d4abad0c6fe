"""A small Server-Sent Events reader for tests: parses the wire format byte for byte."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from assistant.providers.sse import split_lines


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Events from decoded lines (without line endings), as a browser's EventSource sees them."""
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                yield SSEEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


class RecordingResponse:
    """A streaming httpx response that adds every byte it hands on to `raw`."""

    def __init__(self, response, raw: bytearray) -> None:
        self.response = response
        self.raw = raw

    def iter_bytes(self) -> Iterator[bytes]:
        for chunk in self.response.iter_bytes():
            self.raw += chunk
            yield chunk


def sse_lines(response) -> Iterator[str]:
    """Lines of a streaming httpx response split as EventSource does (not as iter_lines())."""
    pending = b""
    for chunk in response.iter_bytes():
        lines, pending = split_lines(pending + chunk)
        for line in lines:
            yield line.decode("utf-8")


def answer_events(response, message_id: int, deadline: float = 30) -> Iterator[SSEEvent]:
    """The events of one answer from a streaming httpx response, up to its done or error.

    Fails after `deadline` seconds: keep-alives would otherwise keep a stream that never
    ends reading forever.
    """
    give_up = time.monotonic() + deadline
    for sse in parse_sse(sse_lines(response)):
        if time.monotonic() > give_up:
            raise AssertionError(f"answer {message_id} did not end within {deadline} s")
        if sse.event in {"delta", "done", "error", "phase", "start"} and sse.json()["message"] == message_id:
            yield sse
            if sse.event in {"done", "error"}:
                return
