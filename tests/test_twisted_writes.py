"""Daphne's writes go out at the end of the loop's turn, not through the selector
(config/fastpaths/twisted.py), and whatever the socket does not take stays queued in
order: a large page read by a slow client arrives byte for byte as a fast client gets
it. (A slow reader of an event stream: tests/test_stream_endpoint.py.)"""

from __future__ import annotations

import re
import socket
import time

import pytest
from django.conf import settings
from twisted.internet import tcp

from assistant.models import Conversation, Message
from config import asgi, fastpaths  # noqa: F401 - importing the app installs the writes
from config.fastpaths import twisted as twisted_writes
from tests.helpers.streams import dechunked

ANSWERS = 80  # a page of 6 MB: more than the largest send buffer Linux gives a socket (4 MB)
ANSWER = "Zeile mit Umlauten: äöü ß – “Anführung” 🙂\n\n" * 600  # about 30 KB each


def test_the_app_installs_the_writes_where_the_switch_allows():
    installed = fastpaths.switched_on("twisted")  # the pinned Twisted is the one it was written for
    assert fastpaths.state["twisted"] is installed
    assert (tcp.Connection.write is twisted_writes._write) is installed
    assert (tcp.Connection.writeSequence is twisted_writes._write_sequence) is installed


def without_tokens(page: bytes) -> bytes:
    """The page without its CSRF tokens, which are masked anew for every response, and
    without its stream position, which for a conversation with no recent events is the
    server's clock (assistant/events/log.py: ids are counted per conversation)."""
    page = re.sub(rb'(csrfmiddlewaretoken" value=")[^"]+', rb"\1", page)
    return re.sub(rb"(conversation-[0-9a-f-]{36}:)[0-9]+", rb"\1", page)


def raw_get(live, path: str, cookie: str, *, slow: bool) -> bytes:
    """The whole response to GET `path` on a connection of its own; read in small pieces
    with pauses when `slow`, so the server's sends fill the socket and queue the rest."""
    host = live.url.removeprefix("http://")
    name, port = host.rsplit(":", 1)
    with socket.socket() as raw:
        if slow:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((name, int(port)))
        raw.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Cookie: {settings.SESSION_COOKIE_NAME}={cookie}\r\n\r\n".encode()
        )
        raw.settimeout(30)
        received = b""
        while chunk := raw.recv(2048 if slow else 65536):
            received += chunk
            if slow and len(received) % 16 == 0:
                time.sleep(0.001)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return dechunked(body) if b"transfer-encoding: chunked" in head.lower() else body


@pytest.mark.live
def test_a_large_page_reaches_a_slow_reader_byte_for_byte(live, alice, alice_http):
    conversation = Conversation.objects.create(owner=alice, title="Groß", model="demo")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user" if n % 2 == 0 else "assistant", content=ANSWER)
        for n in range(2 * ANSWERS)
    )
    cookie = alice_http.cookies[settings.SESSION_COOKIE_NAME]
    path = f"/c/{conversation.pk}/"

    fast = raw_get(live, path, cookie, slow=False)
    slow = raw_get(live, path, cookie, slow=True)

    assert len(fast) > 4_194_304
    assert without_tokens(slow) == without_tokens(fast)
    assert fast.decode().count("Zeile mit Umlauten: äöü ß") == 2 * ANSWERS * 600
