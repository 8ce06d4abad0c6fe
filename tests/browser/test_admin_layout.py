"""The review's conversation list fits a 1440 px wide screen, with and without titles."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from assistant import review
from assistant.models import Conversation, Message
from tests.helpers.browser import screenshot

pytestmark = pytest.mark.browser

WIDTH = 1440
# The page does not scroll sideways, nor does the table within its box (Django's admin
# lets a wide table scroll inside `.results`).
OVERFLOW = """() => [
    document.documentElement.scrollWidth,
    ...[...document.querySelectorAll('#changelist .results')].map(box => box.scrollWidth - box.clientWidth),
]"""


def overflow(page) -> tuple[int, int]:
    page_width, table_overflow = page.evaluate(OVERFLOW)
    return page_width, table_overflow


def test_conversation_list_fits_1440_px_without_horizontal_scrolling(pages, alice):
    rita = get_user_model().objects.create_user("rita", password="rita-password-1")
    review.reviewer_grant(user=rita)
    owner = get_user_model().objects.create_user("a.very-long-username@example.com")
    long_title = "Quartalsbericht und Umsatzplanung für das nächste Geschäftsjahr " * 3
    for n, user in enumerate([alice, owner] * 3):
        conversation = Conversation.objects.create(owner=user, title=long_title, model="demo")
        Message.objects.create(conversation=conversation, role="user", content=f"Frage {n}", feedback=-1)
    page = pages.open(rita, "/admin/assistant/conversation/", viewport={"width": WIDTH, "height": 900}).page
    page.locator("#result_list").wait_for()
    assert overflow(page) == (WIDTH, 0)
    screenshot(page, "admin-conversations")

    # The content view adds the titles' text in the same column.
    page.click("text=Show titles and comments (states a reason)")
    page.select_option("select[name=purpose]", "support")
    page.fill("textarea[name=details]", "Ticket 4711: checking the layout")
    page.click("input[type=submit]")
    page.locator("#result_list .field-conversation_title").first.wait_for()
    assert overflow(page) == (WIDTH, 0)
    screenshot(page, "admin-conversations-content-view")
