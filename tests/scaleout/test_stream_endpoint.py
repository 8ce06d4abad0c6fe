"""Event streams across processes: revocations travel through Redis, and open streams
hold no PostgreSQL connection each."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from assistant.models import Conversation
from assistant.tokens.service import token_create
from tests.helpers.chat import fake
from tests.helpers.live import session_client
from tests.helpers.servers import PASSWORD, with_password
from tests.helpers.streams import (
    events_url,
    open_raw_stream,
    open_then,
    streams_of_several_users,
    until_closed,
)
from tests.helpers.tokens import bearer

pytestmark = pytest.mark.live


def test_logout_on_one_process_ends_the_sessions_stream_on_the_other(pair, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with session_client(pair.a, alice) as on_a, session_client(pair.b, alice) as on_b:
        # One session on both (as behind a load balancer). Sessions are not polled: only
        # Redis can carry this one.
        on_b.cookies.set(settings.SESSION_COOKIE_NAME, on_a.cookies[settings.SESSION_COOKIE_NAME])
        seen = open_then(on_a, events_url(conversation), lambda: on_b.post("/accounts/logout/"))
        reconnect = on_a.get(events_url(conversation))

    assert [(e.event, e.json()) for e in seen if e.event != "keep-alive"] == [
        ("unauthorized", {"reason": "logged_out"})
    ]
    assert reconnect.status_code == 401


def test_a_token_revoked_on_one_process_ends_its_stream_on_the_other(pair, alice):
    """Revoked on A's tokens page; the app listens on B with the token alone."""
    token, secret = token_create(user=alice, name="Handy", days=30)
    conversation = Conversation.objects.create(owner=alice, model="fake-model")
    with (
        session_client(pair.a, alice) as page,
        httpx.Client(base_url=pair.b.url, headers=bearer(secret), timeout=30) as app,
    ):
        seen = open_then(
            app, events_url(conversation), lambda: page.post(f"/settings/tokens/{token.pk}/revoke/")
        )
        reconnect = app.get(events_url(conversation))

    assert [(e.event, e.json()) for e in seen if e.event != "keep-alive"] == [
        ("unauthorized", {"reason": "token_revoked"})
    ]
    assert reconnect.status_code == 401


def test_the_gateway_on_one_process_stores_what_the_other_lists(pair, alice):
    """A completion through /v1/ on A, stored in PostgreSQL; B lists it as an API conversation."""
    secret = token_create(user=alice, name="Skript", days=30)[1]
    with openai.OpenAI(base_url=f"{pair.a.url}/v1", api_key=secret, max_retries=0, timeout=20) as sdk:
        stream = sdk.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": fake(text="Grüße aus Köln")}],
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    listed = httpx.get(pair.b.url + "/api/conversations/", headers=bearer(secret), timeout=10).json()

    assert text == "Grüße aus Köln"
    assert [c["origin"] for c in listed["conversations"]] == ["gateway"]


def test_deactivation_ends_the_users_streams_on_every_process(pair, alice):
    conversation = Conversation.objects.create(owner=alice, model="fake-model")

    def deactivate() -> None:
        alice.is_active = False
        alice.save()

    with (
        session_client(pair.a, alice) as on_a,
        session_client(pair.b, alice) as on_b,
        on_b.stream("GET", events_url(conversation)) as on_b_stream,
    ):
        seen_on_a = open_then(on_a, events_url(conversation), deactivate)
        seen_on_b = [event.event for event in until_closed(on_b_stream)]

    assert [e.event for e in seen_on_a if e.event != "keep-alive"] == ["unauthorized"]
    assert [event for event in seen_on_b if event not in ("stream-open", "keep-alive")] == ["unauthorized"]


def test_password_changed_on_one_process_ends_the_stolen_sessions_stream_on_the_other(pair, db):
    """The victim changes the password in the admin on A; the thief listens on B."""
    victim = with_password(get_user_model().objects.create_superuser("vera"))
    conversation = Conversation.objects.create(owner=victim, model="fake-model")
    new = "a-new-password-7319"

    def change_password() -> None:
        form = {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
        assert owner.post("/admin/password_change/", data=form).status_code == 302

    with session_client(pair.a, victim) as owner, session_client(pair.b, victim) as thief:
        seen = open_then(thief, events_url(conversation), change_password)
        reconnect = thief.get(events_url(conversation))
        assert owner.get(f"/api/conversations/{conversation.pk}/").status_code == 200

    assert [(e.event, e.json()) for e in seen if e.event != "keep-alive"] == [
        ("unauthorized", {"reason": "password_changed"})
    ]
    assert reconnect.status_code == 401


def postgres_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_open_streams_hold_no_database_connection_each(pair, alice):
    owned = streams_of_several_users(101)

    async def open_streams(count: int) -> list:
        opening = [owned.pop() for _ in range(count)]
        return await asyncio.gather(*(open_raw_stream(pair.a, path, cookie) for path, cookie in opening))

    async def close(streams: list) -> None:
        for _, writer in streams:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in streams))

    # Counted from this thread's connection between the steps of one event loop.
    loop = asyncio.new_event_loop()
    try:
        # The first stream opens what a process keeps (its shared thread's connection).
        streams = loop.run_until_complete(open_streams(1))
        before = postgres_connections()
        streams += loop.run_until_complete(open_streams(100))
        during = postgres_connections()
        loop.run_until_complete(close(streams))
    finally:
        loop.close()

    assert during - before <= 1, f"{before} connections before, {during} with 100 more streams"
