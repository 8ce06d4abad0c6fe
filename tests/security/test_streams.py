"""Attacks on the event stream itself: a stream kept on a stolen session after the password
changed, streams opened without end, and event ids that count everybody's traffic.

Each runs against the live daphne server over HTTP (no Redis: the server finds a password
changed in this test process by its account poll, as it finds `manage.py changepassword`).
"""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from tests.helpers.chat import create_conversation, fake, send, wait_for_final
from tests.helpers.live import session_client
from tests.helpers.servers import PASSWORD, with_password
from tests.helpers.sse import parse_sse, sse_lines

NEW_PASSWORD = "a-new-password-7319"


def until_closed(events, deadline: float = 15) -> list:
    """Every further event until the server closes the stream; fails after `deadline`
    seconds (keep-alives every 3 s make sure the check runs)."""
    seen = []
    give_up = time.monotonic() + deadline
    for event in events:
        seen.append(event)
        if time.monotonic() > give_up:
            raise AssertionError(f"the stream was still open after {deadline} s: {[e.event for e in seen]}")
    return seen


def next_event(events, name: str):
    for event in events:
        if event.event == name:
            return event
    raise AssertionError(f"the stream closed before a {name} event")


def meaningful(events) -> list[tuple[str, object]]:
    return [(e.event, e.json()) for e in events if e.event not in {"stream-open", "keep-alive"}]


@pytest.mark.parametrize("where", ["a command in another process", "the admin, by the user"])
def test_password_change_ends_the_stolen_sessions_stream(live, upstream, where):
    """A thief holds a copy of the victim's session and listens to a conversation. The
    victim changes the password: the thief's stream ends with `unauthorized`
    (`password_changed`), the thief's next request and reconnect answer 401. Changed in
    the admin (Django's update_session_auth_hash), the victim's own session keeps working:
    its stream ends too and resumes from its last event id."""
    User = get_user_model()
    victim = with_password(User.objects.create_superuser("vera"))
    with session_client(live, victim) as owner, session_client(live, victim) as thief:
        conversation = create_conversation(owner)
        url = conversation["events_url"]
        with thief.stream("GET", url) as stolen, owner.stream("GET", url) as own:
            assert stolen.status_code == own.status_code == 200
            stolen_events, own_events = parse_sse(sse_lines(stolen)), parse_sse(sse_lines(own))
            assert next(stolen_events).event == next(own_events).event == "stream-open"
            if where == "a command in another process":
                victim.set_password(NEW_PASSWORD)
                victim.save()
            else:
                changed = owner.post(
                    "/admin/password_change/",
                    data={
                        "old_password": PASSWORD,
                        "new_password1": NEW_PASSWORD,
                        "new_password2": NEW_PASSWORD,
                    },
                )
                assert changed.status_code == 302, changed.text
                assert changed.headers["location"].endswith("/admin/password_change/done/")
            stolen_seen = until_closed(stolen_events)
            own_seen = until_closed(own_events)

        assert meaningful(stolen_seen) == [("unauthorized", {"reason": "password_changed"})]
        assert thief.get(conversation["detail_url"]).status_code == 401
        assert thief.get(url).status_code == 401
        # The session that changed it streams on from where it was (the same reason ended
        # its stream: the key of its session changed with the password).
        assert meaningful(own_seen) == [("unauthorized", {"reason": "password_changed"})]
        if where == "the admin, by the user":
            state = owner.get(conversation["detail_url"])
            assert state.status_code == 200
            with owner.stream("GET", url, params={"lastEventId": state.json()["last_event_id"]}) as again:
                assert again.status_code == 200
                assert next(parse_sse(sse_lines(again))).event == "stream-open"
        else:
            assert owner.get(conversation["detail_url"]).status_code == 401


def test_a_users_streams_past_the_cap_end_the_oldest_with_a_clear_event(
    live, alice, alice_http, bob_http, upstream
):
    """One user opening stream after stream: the newest always works, the oldest ends with
    `stream-closed` (`too_many_streams`, the limit); the others and other users' streams
    go on."""
    limit = settings.ASSISTANT_MAX_STREAMS_PER_USER
    conversation = create_conversation(alice_http)
    bobs = create_conversation(bob_http)
    with contextlib.ExitStack() as stack:

        def open_stream(client: httpx.Client, url: str):
            response = stack.enter_context(client.stream("GET", url))
            assert response.status_code == 200
            events = parse_sse(sse_lines(response))
            assert next(events).event == "stream-open"
            return response, events

        bob_stream = open_stream(bob_http, bobs["events_url"])
        oldest = open_stream(alice_http, conversation["events_url"])
        others = [open_stream(alice_http, conversation["events_url"]) for _ in range(limit - 1)]
        newest = open_stream(alice_http, conversation["events_url"])  # one past the cap

        closed = until_closed(oldest[1])
        assert meaningful(closed) == [("stream-closed", {"reason": "too_many_streams", "limit": limit})]
        # Every other stream is open: each hears the next answer.
        sent = send(alice_http, conversation, fake(text="Alle hören zu", tps=50))
        for _, events in [*others, newest]:
            assert next_event(events, "start").json()["message"] == sent["assistant_message"]["id"]
        theirs = send(bob_http, bobs, fake(text="Bob auch"))
        assert next_event(bob_stream[1], "start").json()["message"] == theirs["assistant_message"]["id"]
        wait_for_final(sent["assistant_message"]["id"])
        wait_for_final(theirs["assistant_message"]["id"])


def answer_ids(client: httpx.Client, conversation: dict, sent: dict) -> list[int]:
    """The event ids of one answer, from the position its POST returned to its end."""
    ids = []
    params = {"lastEventId": sent["assistant_message"]["last_event_id"]}
    with client.stream("GET", conversation["events_url"], params=params) as response:
        for event in parse_sse(sse_lines(response)):
            if event.id:
                ids.append(int(event.id.rpartition(":")[2]))
            if event.event in {"done", "error"}:
                return ids
    raise AssertionError("the answer did not end")


def test_event_ids_reveal_nothing_about_other_users_traffic(live, alice_http, bob_http, upstream):
    """Alice's ids do not move while bob's conversation publishes 100 events: her
    position stays where it was, and her next event is the one after her last."""
    hers = create_conversation(alice_http, title="Named: no title event after the answer")
    first = send(alice_http, hers, fake(text="Eins zwei drei"))
    her_ids = answer_ids(alice_http, hers, first)
    assert her_ids == list(range(her_ids[0], her_ids[0] + len(her_ids)))  # +1 per event
    position = alice_http.get(hers["detail_url"]).json()["last_event_id"]
    assert position == f"conversation-{hers['id']}:{her_ids[-1]}"

    bobs = create_conversation(bob_http)
    published = 0
    while published < 100:
        sent = send(bob_http, bobs, fake(tokens=40, tps=400))
        published += len(answer_ids(bob_http, bobs, sent))

    assert alice_http.get(hers["detail_url"]).json()["last_event_id"] == position
    second = send(alice_http, hers, fake(text="vier fünf"))
    assert second["assistant_message"]["last_event_id"] == position
    assert answer_ids(alice_http, hers, second)[0] == her_ids[-1] + 1
