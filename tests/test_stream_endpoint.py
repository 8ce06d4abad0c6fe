"""The event stream endpoint (assistant/stream_endpoint.py), served before Django's middleware.

Live tests go through a real daphne over HTTP; the in-process ones call the ASGI app
itself, where its listeners and its ending can be seen.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django_eventstream.views import get_listener_manager

from assistant import open_streams, stream_endpoint
from assistant.models import Conversation, Message
from tests.helpers.chat import create_conversation, fake, send, text_of
from tests.helpers.http import asgi_get_scope, assert_security_headers
from tests.helpers.live import descriptors_of, memory_of, session_client, session_cookie, threads_of
from tests.helpers.sse import parse_sse, sse_lines
from tests.helpers.streams import (
    dechunked,
    events_url,
    open_raw_stream,
    open_then,
    streams_of_several_users,
    until_closed,
)

User = get_user_model()


# --- what the endpoint answers ------------------------------------------------------------------


@pytest.mark.live
def test_stream_has_the_stream_and_security_headers(live, alice, alice_http):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with alice_http.stream("GET", events_url(conversation)) as response:
        first = next(parse_sse(sse_lines(response)))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "Cookie" in response.headers["vary"]
    assert response.headers["referrer-policy"] == "same-origin"
    assert_security_headers(response.headers)
    assert first.event == "stream-open"


@pytest.mark.live
@pytest.mark.parametrize("cookie", [None, "not-a-session"])
def test_anonymous_stream_is_401_json_never_a_stream(live, alice, cookie):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    cookies = {settings.SESSION_COOKIE_NAME: cookie} if cookie else {}

    response = httpx.get(live.url + events_url(conversation), cookies=cookies, timeout=10)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_authenticated"
    assert_security_headers(response.headers)


@pytest.mark.live
def test_anonymous_message_is_in_the_requested_language(live, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    response = httpx.get(live.url + events_url(conversation), headers={"Accept-Language": "de"}, timeout=10)

    assert response.status_code == 401
    assert response.headers["content-language"] == "de"
    assert response.json()["error"]["message"] == "Bitte zuerst anmelden."


@pytest.mark.live
def test_stream_of_another_users_or_no_conversation_is_404_json(live, alice, bob_http):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    for url in (events_url(conversation), "/api/conversations/00000000-0000-0000-0000-000000000000/events/"):
        response = bob_http.get(url)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"
        assert str(conversation.pk) not in response.text


@pytest.mark.live
def test_stream_for_a_host_not_allowed_is_400(live, alice, alice_http):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    response = alice_http.get(events_url(conversation), headers={"Host": "evil.example"})

    assert response.status_code == 400
    assert "text/event-stream" not in response.headers["content-type"]


@pytest.mark.live
@pytest.mark.parametrize("method", ["HEAD", "POST", "DELETE"])
def test_other_methods_than_get_are_405(live, alice, alice_http, method):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    response = alice_http.request(method, events_url(conversation))

    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


@pytest.mark.live
def test_stream_through_the_endpoint_delivers_an_answer(live, alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=5))
    answer = sent["assistant_message"]
    with alice_http.stream(
        "GET", conversation["events_url"], params={"lastEventId": answer["last_event_id"]}
    ) as response:
        seen = []
        for event in until_closed(response):
            seen.append(event)
            if event.event == "done":
                break

    assert text_of(seen) == "tok0 tok1 tok2 tok3 tok4"


# --- the end of a stream whose authorisation ends -------------------------------------------------


@pytest.mark.live
def test_logout_ends_the_sessions_open_stream_and_a_reconnect_is_refused(live, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with session_client(live, alice) as client:

        def log_out() -> None:
            assert client.post("/accounts/logout/").status_code == 302

        seen = open_then(client, events_url(conversation), log_out)
        reconnect = client.get(events_url(conversation))

    assert [(e.event, e.json()) for e in seen if e.event != "keep-alive"] == [
        ("unauthorized", {"reason": "logged_out"})
    ]
    assert reconnect.status_code == 401


@pytest.mark.live
def test_logout_leaves_the_users_other_sessions_streaming(live, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with (
        session_client(live, alice) as phone,
        session_client(live, alice) as laptop,
        laptop.stream("GET", events_url(conversation)) as other,
    ):
        seen = open_then(phone, events_url(conversation), lambda: phone.post("/accounts/logout/"))
        events = parse_sse(sse_lines(other))
        assert next(events).event == "stream-open"
        assert next(events).event == "keep-alive"  # still open, 3 s later

    assert [e.event for e in seen if e.event != "keep-alive"] == ["unauthorized"]


@pytest.mark.live
@pytest.mark.parametrize("change", ["deactivate", "delete"])
def test_account_deactivated_or_deleted_elsewhere_ends_its_streams(live, alice, change):
    """The change happens in this test process, not the server's: without Redis the
    server finds it by its account poll."""
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    def act() -> None:
        if change == "deactivate":
            alice.is_active = False
            alice.save()
        else:
            alice.delete()

    with session_client(live, alice) as client:
        seen = open_then(client, events_url(conversation), act)
        reconnect = client.get(events_url(conversation))

    assert [(e.event, e.json()) for e in seen if e.event != "keep-alive"] == [
        ("unauthorized", {"reason": "account_disabled"})
    ]
    assert reconnect.status_code == 401


# --- what an open stream costs ----------------------------------------------------------------


# Issue 7's target: a thousand idle streams on one process, no thread each, < 100 MB in all.
STREAMS = 1000
STREAMS_MEMORY_MAX = 100 * 1024 * 1024


@pytest.mark.live
def test_idle_streams_hold_no_thread_and_little_memory_and_close_cleanly(live, alice):
    first_stream, *others = streams_of_several_users(STREAMS + 1)

    async def scenario() -> dict[str, tuple[int, int]]:
        # The first stream starts what a process runs once (the shared database thread,
        # the lease heartbeat, the account poll).
        first = await open_raw_stream(live, *first_stream)
        before = {"threads": threads_of(live), "memory": memory_of(live), "fds": descriptors_of(live)}
        streams = await asyncio.gather(*(open_raw_stream(live, path, cookie) for path, cookie in others))
        after = {"threads": threads_of(live), "memory": memory_of(live), "fds": descriptors_of(live)}
        for _, writer in [first, *streams]:
            writer.close()
        return {name: (before[name], after[name]) for name in before}

    figures = asyncio.run(scenario())

    threads, memory, fds = figures["threads"], figures["memory"], figures["fds"]
    assert threads[1] - threads[0] <= 2, f"threads: {threads[0]} before, {threads[1]} with {STREAMS} streams"
    assert memory[1] - memory[0] < STREAMS_MEMORY_MAX, (
        f"{(memory[1] - memory[0]) >> 20} MB for {STREAMS} streams"
    )
    # Every connection closes on the server too: no stream is left running.
    deadline = time.monotonic() + 10
    while descriptors_of(live) > fds[1] - STREAMS and time.monotonic() < deadline:
        time.sleep(0.1)
    assert descriptors_of(live) <= fds[1] - STREAMS


@pytest.mark.live
def test_a_client_that_reads_slowly_still_gets_every_event_once(live, alice, alice_http, upstream):
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(tokens=400, tps=400))
    answer = sent["assistant_message"]
    host = live.url.removeprefix("http://")
    name, port = host.rsplit(":", 1)
    with socket.socket() as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills at once
        raw.connect((name, int(port)))
        raw.sendall(
            f"GET {conversation['events_url']}?lastEventId={answer['last_event_id']} HTTP/1.1\r\n"
            f"Host: {host}\r\nCookie: {settings.SESSION_COOKIE_NAME}="
            f"{alice_http.cookies[settings.SESSION_COOKIE_NAME]}\r\n\r\n".encode()
        )
        # Read nothing while the whole answer is sent: it waits in the server's buffers.
        deadline = time.monotonic() + 30
        while Message.objects.get(pk=answer["id"]).is_streaming:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        raw.settimeout(10)
        received = b""
        while b"event: done" not in received:
            chunk = raw.recv(65536)
            assert chunk
            received += chunk

    body = dechunked(received.split(b"\r\n\r\n", 1)[1]).decode()
    seen = [event for event in parse_sse(body.split("\n")) if event.event == "delta"]
    assert text_of(seen) == " ".join(f"tok{i}" for i in range(400))


# --- in process: the ASGI app itself ------------------------------------------------------------


class Connection:
    """One client of the ASGI app: what it sent, and a way to hang up."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        self.messages: list[dict] = []
        self.opened = asyncio.Event()

    async def send(self, message: dict) -> None:
        self.messages.append(message)
        if b"stream-open" in message.get("body", b""):
            self.opened.set()

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def open_in_process(conversation: Conversation, cookie: str) -> tuple[Connection, asyncio.Task]:
    endpoint = URLRouter([stream_endpoint.route(ASGIHandler())])
    connection = Connection()
    headers = [(b"host", b"testserver"), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())]
    scope = asgi_get_scope(events_url(conversation), headers, ("127.0.0.1", 5000))
    task = asyncio.create_task(endpoint(scope, connection.inbox.get, connection.send))
    await asyncio.wait_for(connection.opened.wait(), 10)
    return connection, task


def test_disconnect_ends_the_stream_and_removes_its_listener(transactional_db, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    manager = get_listener_manager()
    cookie = session_cookie(alice)

    async def scenario() -> tuple[bool, bool, list[dict]]:
        connection, task = await open_in_process(conversation, cookie)
        listening = conversation.channel in manager.listeners_by_channel
        connection.inbox.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(task, 5)
        return listening, conversation.channel in manager.listeners_by_channel, connection.messages

    listening, still_listening, messages = asyncio.run(scenario())

    assert listening
    assert not still_listening
    assert messages[0]["status"] == 200
    assert all(m.get("more_body") for m in messages[1:])  # nothing sent after the hang-up


def test_deactivation_in_the_same_process_ends_the_stream_at_once(transactional_db, alice, monkeypatch):
    # No poll: only the signal can end it.
    monkeypatch.setattr(open_streams, "ACCOUNT_POLL_SECONDS", 3600)
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    def deactivate() -> None:
        alice.is_active = False
        alice.save()

    cookie = session_cookie(alice)

    async def scenario() -> Connection:
        connection, task = await open_in_process(conversation, cookie)
        await sync_to_async(deactivate)()
        await asyncio.wait_for(task, 5)
        return connection

    connection = asyncio.run(scenario())

    assert connection.body().endswith(b'event: unauthorized\ndata: {"reason":"account_disabled"}\n\n')
    assert connection.messages[-1]["more_body"] is False
    assert conversation.channel not in get_listener_manager().listeners_by_channel


def test_every_middleware_of_the_settings_is_handled_for_event_streams(settings):
    assert list(stream_endpoint.MIDDLEWARE_HANDLED) == list(settings.MIDDLEWARE)
    stream_endpoint.StreamHooks(ASGIHandler())  # starts with the settings as they are

    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]

    with pytest.raises(ImproperlyConfigured, match="GZipMiddleware"):
        stream_endpoint.StreamHooks(ASGIHandler())
