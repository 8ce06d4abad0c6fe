"""ACCESS: who may reach what, attacked over real HTTP on a live daphne.

Every route of config/urls.py (the admin's included) is found by walking the URL
resolver: anonymous clients, another employee and a reviewer try each one with every
method on alice's conversations and messages. Nothing answers with her data, another
user's objects answer exactly like missing ones, and nothing stored changes.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from assistant.models import Conversation, Message
from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import CSRF_TOKEN
from tests.helpers.routes import (
    LOGOUT,
    METHODS,
    PUBLIC,
    Hit,
    Route,
    db_fingerprint,
    every_route,
    hit,
    leaked,
    route_values,
)
from tests.helpers.sse import parse_sse

pytestmark = pytest.mark.live


def test_every_route_refuses_anonymous_clients(live, victim, upstream):
    """Anonymous: a redirect to a login page, 401, 403, 404 or 405, never data or a stream.

    The client has a CSRF cookie and token (any page hands one out), so unsafe requests
    reach the views' own checks instead of stopping at the CSRF middleware.
    """
    before = db_fingerprint()
    failures, cases = [], 0
    with httpx.Client(
        base_url=live.url, cookies={"csrftoken": CSRF_TOKEN}, headers={"X-CSRFToken": CSRF_TOKEN}, timeout=10
    ) as anonymous:
        for route in every_route():
            path = route.path(route_values(route, conversation=victim.done, message=victim.answer))
            for method in METHODS:
                cases += 1
                response = hit(anonymous, method, path)
                problem = refusal_problem(route, response)
                if problem:
                    failures.append(f"{method} {path}: {problem}")
    assert failures == [], failures
    assert cases > 300
    assert db_fingerprint() == before
    assert upstream.requests == []


def refusal_problem(route: Route, response: Hit) -> str | None:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return f"an event stream ({response.status})"
    if leaked(response.body):
        return f"leaks {leaked(response.body)}"
    if route.name in PUBLIC:
        return None
    if response.status in (301, 302):
        location = response.headers["location"]
        if not location.startswith(("/accounts/login/", "/admin/login/")):
            return f"redirects to {location}"
        return None
    if response.status not in (401, 403, 404, 405):
        return f"answers {response.status}"
    return None


@pytest.fixture(params=["bob", "rita"])
def intruder(request, bob_http) -> httpx.Client:
    """Another employee, or a reviewer (staff, Reviewers group) outside the admin."""
    return bob_http if request.param == "bob" else request.getfixturevalue("rita_http")


def test_another_users_objects_answer_exactly_like_missing_ones(live, victim, intruder, upstream):
    """Pages, detail, messages, events, cancel, retry, edit, feedback, rename, archive and
    delete of each of alice's conversations and messages, with every method."""
    before = db_fingerprint()
    missing_conversation = Conversation(pk=uuid.uuid4(), owner_id=0)
    missing_message = Message(pk=2**62)
    failures, cases = [], 0
    for route in every_route():
        if route.is_admin or not route.owned_object:
            continue
        for conversation, message in victim.targets():
            path = route.path(route_values(route, conversation=conversation, message=message))
            absent = route.path(
                route_values(route, conversation=missing_conversation, message=missing_message)
            )
            for method in METHODS:
                cases += 1
                attack, control = hit(intruder, method, path), hit(intruder, method, absent)
                if attack.status not in (404, 405) or attack.status != control.status:
                    failures.append(f"{method} {path}: {attack.status}, a missing one {control.status}")
                elif attack.headers.get("content-type") == "application/json" and attack.body != control.body:
                    failures.append(f"{method} {path}: {attack.body!r} != {control.body!r}")
                elif leaked(attack.body):
                    failures.append(f"{method} {path}: leaks {leaked(attack.body)}")
    assert failures == [], failures
    assert cases >= 8 * 4 * len(METHODS)  # 8 routes name a conversation or message today
    assert db_fingerprint() == before
    assert upstream.requests == []


def test_admin_refuses_employees(live, victim, bob_http, upstream):
    """Bob is no staff: every admin page, action and export sends him to the admin's login."""
    before = db_fingerprint()
    failures, cases = [], 0
    for route in every_route():
        if not route.is_admin or route.name in PUBLIC | LOGOUT:
            continue
        path = route.path(route_values(route, conversation=victim.done, message=victim.answer))
        for method in ("GET", "POST"):
            cases += 1
            data = {"action": "export_jsonl", "_selected_action": [str(victim.done.pk)], "purpose": "other"}
            response = bob_http.request(method, path, data=data if method == "POST" else None)
            if response.status_code != 302 or not response.headers["location"].startswith("/admin/login/"):
                failures.append(f"{method} {path}: {response.status_code}")
            elif leaked(response.content):
                failures.append(f"{method} {path}: leaks {leaked(response.content)}")
    assert failures == [], failures
    assert cases > 60
    assert db_fingerprint() == before  # no access log entry, nothing exported or changed


def read_until_keepalive(response: httpx.Response) -> str:
    """What a stream sends until its first keep-alive (it is idle then; 3 s in tests)."""
    received = ""
    for chunk in response.iter_text():
        received += chunk
        if "event: keep-alive" in received:
            return received
    return received


@pytest.mark.parametrize(
    "where",
    ["Last-Event-ID", "lastEventId", "both with a channel parameter", "channel at position 0"],
)
def test_events_naming_another_users_channel_deliver_nothing_of_it(
    live, bob_http, alice_http, upstream, where
):
    """Bob on his own stream names alice's channel (with the position her answer starts
    from) in every place a position or channel could be read: he gets his own stream,
    reset, and none of her events, not even those published while he listens."""
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(text="Noch geheimer 2906 " * 10, tps=10))
    own = create_conversation(bob_http)
    token = sent["assistant_message"]["last_event_id"]
    channel = f"conversation-{conversation['id']}"
    headers, params = {}, {}
    if where in ("Last-Event-ID", "both with a channel parameter"):
        headers["Last-Event-ID"] = token
    if where in ("lastEventId", "both with a channel parameter"):
        params["lastEventId"] = token
    if where.startswith("both"):
        params.update(channel=channel, channels=channel)
    if where == "channel at position 0":
        headers["Last-Event-ID"] = f"{channel}:0"
        params["channel"] = channel
    with bob_http.stream(
        "GET", own["events_url"], headers=headers, params=params, timeout=httpx.Timeout(10, read=10)
    ) as response:
        assert response.status_code == 200
        received = read_until_keepalive(response)
    # His own stream's control events, nothing else: no start, delta, done or title.
    names = [event.event for event in parse_sse(received.splitlines())]
    assert names[0] == "stream-open"
    assert set(names) <= {"stream-open", "stream-reset", "keep-alive"}, received
    assert conversation["id"] not in received
    assert "geheimer" not in received
    # Meanwhile alice's answer went on, on her channel.
    assert "geheimer" in wait_for_final(sent["assistant_message"]["id"]).content


@pytest.mark.parametrize("ending", ["deactivated", "logged out elsewhere"])
def test_ended_accounts_open_stream_ends_and_cannot_resume(live, alice, alice_http, upstream, ending):
    """An account deactivated (by an administrator, here through the ORM) or a session
    logged out in another tab: the stream open mid-answer ends within seconds, and
    reconnecting from its last event id is refused before any event is sent."""
    conversation = create_conversation(alice_http)
    sent = send(alice_http, conversation, fake(text="Eins zwei drei vier fünf", tps=5))
    with alice_http.stream(
        "GET",
        conversation["events_url"],
        headers={"Last-Event-ID": sent["assistant_message"]["last_event_id"]},
        timeout=httpx.Timeout(10, read=30),
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_text()
        received = next(chunks)
        if ending == "deactivated":
            alice.is_active = False
            alice.save(update_fields=["is_active"])
        else:
            # Another tab: the same cookies, its own connection.
            tab = httpx.Client(base_url=live.url, cookies=alice_http.cookies, headers=alice_http.headers)
            with tab:
                assert tab.post("/accounts/logout/").status_code == 302
        # Wait for the server to close the stream (keep-alives every 3 s let the check run).
        give_up = time.monotonic() + 10
        for chunk in chunks:
            received += chunk
            assert time.monotonic() < give_up, "the stream outlived the session"
    last_id = [line for line in received.splitlines() if line.startswith("id: ")][-1][4:]
    resumed = alice_http.get(conversation["events_url"], headers={"Last-Event-ID": last_id})
    assert resumed.status_code in (401, 403)
    assert not resumed.headers["content-type"].startswith("text/event-stream")
    assert alice_http.get(conversation["detail_url"]).status_code == 401
    assert alice_http.post(conversation["messages_url"], json={"content": "noch da?"}).status_code == 401
    wait_for_final(sent["assistant_message"]["id"])
