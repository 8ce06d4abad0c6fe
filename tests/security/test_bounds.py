"""INPUT: numbers too long for what reads them, in every URL slot, query parameter and
header that holds one, against a live daphne over real HTTP.

A number is read from a URL (`<int:...>` slots, the admin's object ids), a query
parameter (`lastEventId`, the list's `before`, the admin's `?message=`) or a header
(`Last-Event-ID`, `Content-Length`). Python reads any number of digits, up to 4,300,
and the database none over 64 bits: either way a parse that is not bounded turns a
request into a 500 with a traceback. Every such parse answers as the protocol says
instead: 404 for a URL that names nothing, 400 `invalid`, `stream-reset` on the event
stream.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.helpers.live import session_client
from tests.helpers.routes import LOGOUT, db_fingerprint, every_route, route_values
from tests.helpers.sse import parse_sse

pytestmark = pytest.mark.live

# Past a 64-bit integer, past any database's, past Python's 4,300-digit conversion limit.
OVER_LONG = ("9" * 20, "1" + "0" * 40, "9" * 5000)


@pytest.fixture
def root_http(live) -> Iterator[httpx.Client]:
    """A superuser: the admin's views parse their ids only for staff with permissions."""
    root = get_user_model().objects.create_superuser("root", password="root-password-1")
    with session_client(live, root) as client:
        yield client


def integer_slots(values: dict[str, object]) -> list[str]:
    """The parameters a route fills with an integer (a message, a user, a content type)."""
    return [name for name, value in values.items() if isinstance(value, int)]


def test_over_long_numbers_in_every_url_slot_are_never_a_500(live, victim, alice_http, root_http, upstream):
    """Every route with an integer in its URL, each slot in turn holding an over-long
    number, GET and POST, as the owner and as a superuser: a 404 (or the admin's
    "no such object" redirect), never a 500."""
    before = db_fingerprint()
    failures, cases = [], 0
    for route in every_route():
        if route.name in LOGOUT:
            continue
        values = route_values(route, conversation=victim.done, message=victim.answer)
        slots = [name for name in integer_slots(values) if name in route.parameters]
        for slot in slots:
            for number in OVER_LONG:
                path = route.path({**values, slot: number})
                for method in ("GET", "POST"):
                    client = root_http if route.is_admin else alice_http
                    cases += 1
                    response = client.request(method, path, json={} if method == "POST" else None)
                    if response.status_code >= 500:
                        failures.append(f"{method} {route.route} {slot}={number:.25}: {response.status_code}")
                    elif not route.is_admin and response.status_code != 404:
                        failures.append(f"{method} {path:.80}: {response.status_code}, not 404")
    assert failures == [], failures
    # The message API (4 routes) and the admin's objects: messages, access log, users,
    # groups, "view on site".
    assert cases >= 4 * len(OVER_LONG) * 2 + 10
    assert db_fingerprint() == before
    assert upstream.requests == []


def test_over_long_numbers_in_query_parameters_are_never_a_500(live, victim, alice_http, root_http):
    """The conversation list's `before` cursor, the admin transcript's `?message=`
    anchor and the access log's `?page=`, each with over-long and negative numbers."""
    transcript = f"/admin/assistant/conversation/{victim.done.pk}/change/"
    failures, cases = [], 0
    for number in (*OVER_LONG, "-" + "9" * 40, "1e999", "NaN"):
        for client, path, params in (
            (alice_http, "/api/conversations/", {"before": f"{number}.{victim.done.pk.hex}"}),
            (alice_http, "/api/conversations/", {"before": number}),
            (alice_http, "/access-log/", {"page": number}),
            (root_http, transcript, {"message": number}),
            (root_http, "/admin/assistant/message/", {"p": number}),
        ):
            cases += 1
            response = client.get(path, params=params)
            if response.status_code >= 500:
                failures.append(f"{path} {params!r:.60}: {response.status_code}")
    assert failures == [], failures
    assert cases == 6 * 5


def stream_opening(client: httpx.Client, url: str, **kwargs) -> list[str]:
    """The names of a stream's first events: up to its first keep-alive or reset."""
    names = []
    with client.stream("GET", url, timeout=httpx.Timeout(10, read=10), **kwargs) as response:
        assert response.status_code == 200, response.read()
        received = ""
        for chunk in response.iter_text():
            received += chunk
            names = [event.event for event in parse_sse(received.split("\n"))]
            if {"stream-reset", "keep-alive"} & set(names):
                break
    return names


# Positions no stream can resume: over-long, negative, fractional, exponents, signs,
# other digits, hexadecimal, nothing.
POSITIONS = (
    "9" * 19,
    "9" * 20,
    "1" + "0" * 40,
    "9" * 4301,
    "9" * 12_000,
    "-1",
    "-" + "9" * 5000,
    "1.5",
    "1e999",
    "+5",
    "٣",
    "0x10",
    " 7",
    "",
)


@pytest.mark.parametrize("where", ["Last-Event-ID", "lastEventId"])
def test_positions_out_of_any_range_answer_stream_reset(live, alice_http, where):
    """Each position in the header and in the query parameter: a 200 stream that opens
    and resets (the protocol's answer to a position it cannot resume), never a 500."""
    conversation = alice_http.post("/api/conversations/", json={}).json()
    channel = f"conversation-{conversation['id']}"
    failures = []
    for number in POSITIONS:
        token = f"{channel}:{number}"
        if where == "Last-Event-ID":
            kwargs = {"headers": {"Last-Event-ID": token.encode()}}
        else:
            kwargs = {"params": {"lastEventId": token}}
        names = stream_opening(alice_http, conversation["events_url"], **kwargs)
        if names[:2] != ["stream-open", "stream-reset"]:
            failures.append(f"{number:.25}: {names}")
    assert failures == [], failures


def raw_request(live, head: bytes) -> bytes:
    """Send a request head (and nothing more), and read the answer until the server closes."""
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(head)
        raw.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("length", ["9" * 20, "9" * 5000, "-1", "1.5", "0x10", "1e9"])
def test_over_long_or_malformed_content_lengths_are_refused_not_crashed(live, alice_http, length):
    """A Content-Length that is no number, or one too long for any body: a 4xx answer
    (413 for the numbers, 400 for the rest), and the server goes on serving."""
    host = live.url.removeprefix("http://")
    head = f"POST /api/conversations/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n"
    logged = len(live.log_text())
    answer = raw_request(live, head.encode())
    status = answer.split(b"\r\n", 1)[0]
    assert status.startswith((b"HTTP/1.1 413 ", b"HTTP/1.1 400 ")), answer[:200]
    if length.isdigit():
        assert status.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert alice_http.get("/api/conversations/").status_code == 200
    assert "Traceback" not in live.log_text()[logged:]
