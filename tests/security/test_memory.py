"""RESOURCES: what a client can make the server hold in memory, against a live daphne.

A request body is refused by its size before it is read, on every path: a declared
1 GB body gets its 413 after the headers and a few KB, a chunked one as soon as it
passes the limit, and the server's resident memory does not grow with them. A client
that stops reading its event stream is cut off once its backlog passes
ASSISTANT_STREAM_BACKLOG_BYTES, and resumes from the log with its Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from assistant.models import Message
from tests.helpers.chat import create_conversation, send, text_of, wait_for_final
from tests.helpers.live import LiveServer
from tests.helpers.routes import db_fingerprint
from tests.helpers.sse import parse_sse
from tests.helpers.streams import dechunked

LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
GIGABYTE = 1_000_000_000
# What the server may hold on to for a refused body: far below the bodies sent.
MEMORY_SLACK = 8 * 1024 * 1024


def status_bytes(live: LiveServer, field: str) -> int:
    with open(f"/proc/{live.process.pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def peak_reset(live: LiveServer) -> int:
    """Start counting the server's peak resident memory anew; its resident memory now."""
    with open(f"/proc/{live.process.pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    return status_bytes(live, "VmRSS")


def peak_growth(live: LiveServer, before: int) -> int:
    """How far the server's resident memory rose above `before` at its peak since peak_reset."""
    return status_bytes(live, "VmHWM") - before


def connect(live: LiveServer, **options) -> socket.socket:
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    raw = socket.socket()
    if "rcvbuf" in options:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options["rcvbuf"])
    raw.settimeout(30)
    raw.connect((host, int(port)))
    return raw


def request_head(live: LiveServer, method: str, path: str, cookie: str | None, **headers: str) -> bytes:
    host = live.url.removeprefix("http://")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    if cookie:
        lines.append(f"Cookie: {settings.SESSION_COOKIE_NAME}={cookie}; csrftoken={'t' * 32}")
        lines.append(f"X-CSRFToken: {'t' * 32}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_to_end(raw: socket.socket) -> bytes:
    """Everything until the server closes the connection (or resets it)."""
    received = b""
    while True:
        try:
            chunk = raw.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return received  # reset, or still open after the socket's timeout
        if not chunk:
            return received
        received += chunk


def too_large(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 413 "):
        return False
    return json.loads(body)["error"]["code"] == "too_large"


# (method, path, logged in): anonymous and logged-in POSTs, and a GET of the event stream.
TARGETS = {
    "anonymous create": ("POST", "/api/conversations/", False),
    "anonymous login": ("POST", "/accounts/login/", False),
    "create": ("POST", "/api/conversations/", True),
    "send": ("POST", "messages_url", True),
    "event stream GET": ("GET", "events_url", True),
    "anonymous event stream GET": ("GET", "events_url", False),
}


@pytest.fixture
def conversation(alice_http) -> dict:
    return create_conversation(alice_http)


@pytest.mark.live
@pytest.mark.parametrize("target", TARGETS)
def test_a_declared_gigabyte_is_refused_after_its_headers(live, alice_http, conversation, upstream, target):
    """Content-Length: 1 GB, then 4 KB of it: the 413 comes, the connection closes, nothing
    of it is stored and the server's memory does not grow."""
    method, path, logged_in = TARGETS[target]
    path = conversation.get(path, path)
    cookie = alice_http.cookies[settings.SESSION_COOKIE_NAME] if logged_in else None
    rows = db_fingerprint()
    before = peak_reset(live)
    with connect(live) as raw:
        raw.sendall(request_head(live, method, path, cookie, Content_Length=str(GIGABYTE)))
        raw.sendall(b'{"content": "' + b"x" * 4096)
        answer = read_to_end(raw)
    assert too_large(answer), answer[:300]
    assert peak_growth(live, before) < MEMORY_SLACK
    assert db_fingerprint() == rows
    assert upstream.requests == []


def chunked_body(total: int) -> Iterator[bytes]:
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"%x\r\n" % 13 + b'{"content": "' + b"\r\n"
    for _ in range(total // len(piece)):
        yield chunk


@pytest.mark.live
@pytest.mark.parametrize("target", ["anonymous create", "send", "event stream GET"])
def test_a_chunked_body_of_200_mb_is_refused_as_it_passes_the_limit(
    live, alice_http, conversation, upstream, target
):
    """Up to 200 MB chunked, sent while the answer is read: the 413 comes, and the
    server's peak resident memory grows by less than a few MB (it held the whole body)."""
    method, path, logged_in = TARGETS[target]
    path = conversation.get(path, path)
    cookie = alice_http.cookies[settings.SESSION_COOKIE_NAME] if logged_in else None
    rows = db_fingerprint()
    before = peak_reset(live)
    sent = 0
    with connect(live) as raw:
        raw.sendall(request_head(live, method, path, cookie, Transfer_Encoding="chunked"))

        def send_body() -> None:
            nonlocal sent
            try:
                for chunk in chunked_body(200 * 1024 * 1024):
                    raw.sendall(chunk)
                    sent += len(chunk)
                raw.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server closed the connection after its answer

        sender = threading.Thread(target=send_body)
        sender.start()
        answer = read_to_end(raw)
        raw.shutdown(socket.SHUT_RDWR)
        sender.join(60)
    grown = peak_growth(live, before)
    assert grown < MEMORY_SLACK, f"{grown >> 20} MB after {sent >> 20} MB sent"
    assert too_large(answer), answer[:300]
    assert db_fingerprint() == rows
    assert upstream.requests == []


def test_another_asgi_server_gets_the_same_refusals_in_front_of_the_app():
    """Without daphne's hooks (another ASGI server): a declared length over the limit is
    answered without the app or a read; a streamed body stops being read past it."""
    from config.asgi import application

    def scope(headers: list[tuple[bytes, bytes]]) -> dict:
        return {
            "type": "http",
            "method": "POST",
            "path": "/api/conversations/",
            "raw_path": b"/api/conversations/",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }

    async def run(headers, chunks: int) -> tuple[list[dict], int]:
        sent, reads = [], 0

        async def receive() -> dict:
            nonlocal reads
            reads += 1
            if reads > chunks:
                raise AssertionError("read past the limit")
            return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

        async def record(message: dict) -> None:
            sent.append(message)

        await application(scope(headers), receive, record)
        return sent, reads

    declared, reads = asyncio.run(run([(b"content-length", str(GIGABYTE).encode())], 0))
    assert declared[0]["status"] == 413
    assert reads == 0
    assert json.loads(declared[1]["body"])["error"]["code"] == "too_large"
    streamed, reads = asyncio.run(run([], LIMIT // 65536 + 1))
    assert streamed[0]["status"] == 413
    assert reads == LIMIT // 65536 + 1


# --- a slow reader's backlog ----------------------------------------------------------------

# 6 MB of answer in 8 KB tokens: more than a socket's kernel buffers hold (4 MB here).
LONG_ANSWER = " ".join(f"{i:06d}" + "x" * 8000 for i in range(750))
STALLED = 4


def stalled_stream(live: LiveServer, path: str, cookie: str, position: str) -> socket.socket:
    """A stream opened with a small receive window, never read."""
    raw = connect(live, rcvbuf=4096)
    raw.sendall(request_head(live, "GET", path, cookie, Last_Event_ID=position, Accept="text/event-stream"))
    return raw


@pytest.mark.live
def test_a_client_that_stops_reading_is_cut_off_and_resumes_from_the_log(live, alice_http, upstream):
    """Four streams stop reading while a 6 MB answer streams: the server closes each
    once its backlog passes the bound (they never get `done`), and a reconnect with the
    last event id each one got receives the rest: the text equals the stored answer."""
    upstream.set(text=LONG_ANSWER)
    conversation = create_conversation(alice_http)
    cookie = alice_http.cookies[settings.SESSION_COOKIE_NAME]
    sent = send(alice_http, conversation, "Bitte lang.")
    answer = sent["assistant_message"]
    streams = [
        stalled_stream(live, conversation["events_url"], cookie, answer["last_event_id"])
        for _ in range(STALLED)
    ]
    stored = wait_for_final(answer["id"], timeout=120)
    assert stored.status == Message.Status.DONE, (stored.error_type, len(stored.content))
    assert stored.content == LONG_ANSWER
    time.sleep(1)  # the streams' last writes
    for raw in streams:
        raw.settimeout(10)
        received = b""
        closed = False
        while b"event: done" not in received:
            try:
                chunk = raw.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            received += chunk
        raw.close()
        assert closed, f"still open after {len(received)} bytes"
        assert b"event: done" not in received
        body = dechunked(received.split(b"\r\n\r\n", 1)[1]).decode("utf-8", "replace")
        events = list(parse_sse(body.split("\n")))
        ids = [event.id for event in events if event.id]
        with alice_http.stream(
            "GET",
            conversation["events_url"],
            headers={"Last-Event-ID": ids[-1] if ids else answer["last_event_id"]},
            timeout=httpx.Timeout(30, read=30),
        ) as response:
            rest = []
            for event in parse_sse(response.iter_lines()):
                rest.append(event)
                if event.event in ("done", "error", "stream-reset"):
                    break
        assert rest[-1].event == "done"
        assert text_of(events) + text_of(rest) == stored.content
