"""A page whose stream the server ends for good (logged out elsewhere, account deactivated)."""

from __future__ import annotations

import time

import pytest

from assistant.models import Conversation

pytestmark = pytest.mark.browser


def test_page_logged_out_in_another_tab_stops_listening_and_offers_the_login(alice_page, live, alice):
    page = alice_page
    conversation = Conversation.objects.create(owner=alice, model="fake-model", title="Offen")
    streams: list[str] = []
    page.on("request", lambda request: "/events/" in request.url and streams.append(request.url))
    with page.expect_response(lambda response: "/events/" in response.url):
        page.goto(f"{live.url}/c/{conversation.pk}/")

    other = page.context.new_page()
    other.goto(f"{live.url}/")
    other.get_by_role("button", name="Log out").click()
    other.wait_for_url("**/accounts/login/**")

    notice = page.locator("#connection")
    notice.get_by_text("You are signed out.").wait_for(timeout=10_000)
    link = notice.get_by_role("link", name="Sign in again")
    assert link.get_attribute("href") == f"/accounts/login/?next=%2Fc%2F{conversation.pk}%2F"
    # No reconnect: EventSource would retry after 2 s, the watchdog after two keep-alives.
    time.sleep(3)
    assert len(streams) == 1
    assert page.evaluate("document.getElementById('stop-button').hidden")
