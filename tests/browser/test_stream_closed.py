"""A page whose stream the server closed because its user opened too many (the per-user cap)."""

from __future__ import annotations

import contextlib
import time

import pytest
from django.conf import settings

from assistant.models import Conversation
from tests.helpers.chat import fake, send
from tests.helpers.live import session_client

pytestmark = pytest.mark.browser


def test_page_whose_stream_the_cap_closed_shows_a_notice_and_reconnects_on_request(
    alice_page, live, alice, upstream
):
    page = alice_page
    conversation = Conversation.objects.create(owner=alice, model="fake-model", title="Viele Tabs")
    url = f"/api/conversations/{conversation.pk}/events/"
    streams: list[str] = []
    page.on("request", lambda request: "/events/" in request.url and streams.append(request.url))
    with page.expect_response(lambda response: "/events/" in response.url):
        page.goto(f"{live.url}/c/{conversation.pk}/")

    notice = page.locator("#connection")
    with session_client(live, alice) as client, contextlib.ExitStack() as stack:
        # As many newer streams as the cap allows: the page's, the oldest, is closed.
        for _ in range(settings.ASSISTANT_MAX_STREAMS_PER_USER):
            assert stack.enter_context(client.stream("GET", url)).status_code == 200
        notice.get_by_text("it is open in too many other tabs").wait_for(timeout=10_000)
        assert str(settings.ASSISTANT_MAX_STREAMS_PER_USER) in notice.inner_text()
        # No reconnect by itself (it would close another tab's stream): EventSource would
        # retry after 2 s, the watchdog after two keep-alives (3 s each here).
        time.sleep(7)
        assert len(streams) == 1

        with page.expect_response(lambda response: "/events/" in response.url):
            notice.get_by_role("button", name="Reconnect").click()
        assert notice.inner_text() == ""
        sent = send(client, {"id": str(conversation.pk)}, fake(text="Wieder verbunden"))
    page.locator(f'[data-message-id="{sent["assistant_message"]["id"]}"]').get_by_text(
        "Wieder verbunden"
    ).wait_for(timeout=10_000)
    assert len(streams) == 2
