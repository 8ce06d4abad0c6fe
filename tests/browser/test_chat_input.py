"""The composer in a real browser: German UI, keyboard only, hostile input, offline, a phone."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from assistant.models import Message
from tests.helpers.browser import message_id, screenshot, text_of, wait_status
from tests.helpers.chat import fake, wait_for_final

pytestmark = pytest.mark.browser

# Every element that can take keyboard focus, in document order; a focused one must show it.
FOCUS_INDICATOR = """
() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  return {
    element: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
      + " " + (el.textContent || "").trim().slice(0, 20),
    id: el.id,
    isBody: el === document.body,
    focusVisible: el.matches(":focus-visible"),
    visible: outline || style.boxShadow !== "none",
  };
}
"""


def stored_questions() -> list[str]:
    return list(Message.objects.filter(role="user").order_by("id").values_list("content", flat=True))


def send_and_finish(page, content: str) -> object:
    page.fill("#composer-input", content)
    page.press("#composer-input", "Enter")
    return wait_status(page, "done")


def tab_to(page, element_id: str, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


def test_german_ui_from_accept_language(pages, alice):
    page = pages.open(alice, locale="de-DE").page

    assert page.locator("html").get_attribute("lang") == "de"
    assert page.locator("#send-button").text_content().strip() == "Senden"
    assert page.get_by_role("link", name="Neuer Chat").is_visible()
    assert page.locator("#composer-input").get_attribute("placeholder").startswith("Nachricht an Assistant…")
    screenshot(page, "german-ui")


def test_keyboard_only_send_newline_and_stop(pages, alice):
    page = pages.open(alice).page
    assert page.evaluate("document.activeElement.id") == "composer-input", "focus is not in the composer"

    question = "Erste Zeile\nzweite Zeile " + fake(never_end=True, tps=30)
    page.keyboard.type("Erste Zeile")
    page.keyboard.press("Shift+Enter")
    page.keyboard.insert_text(question.split("\n", 1)[1])
    assert page.input_value("#composer-input") == question
    assert page.locator("#messages .message").count() == 0
    assert stored_questions() == []

    page.keyboard.press("Enter")
    answer = wait_status(page, "streaming")
    page.wait_for_function(
        "(id) => document.querySelector(`[data-message-id='${id}'] .text`).textContent.length > 20",
        arg=message_id(answer),
    )
    assert stored_questions() == [question]

    tab_to(page, "stop-button")
    screenshot(page, "keyboard-stop-focused")
    indicator = page.evaluate(FOCUS_INDICATOR)
    assert indicator["visible"], f"the focused Stop button shows no focus ring: {indicator}"
    page.keyboard.press("Enter")
    page.locator(f'[data-message-id="{message_id(answer)}"][data-status="cancelled"]').wait_for(timeout=1500)
    assert wait_for_final(message_id(answer)).status == Message.Status.CANCELLED

    # Space activates Stop as well.
    page.focus("#composer-input")
    page.keyboard.insert_text(fake("Noch einmal", never_end=True, tps=30))
    page.keyboard.press("Enter")
    page.locator(".message.assistant").nth(1).wait_for()
    second = wait_status(page, "streaming")
    assert message_id(second) != message_id(answer)
    tab_to(page, "stop-button")
    page.keyboard.press(" ")
    page.locator(f'[data-message-id="{message_id(second)}"][data-status="cancelled"]').wait_for(timeout=1500)


def test_every_tab_stop_shows_a_focus_ring(pages, alice):
    page = pages.open(alice).page
    send_and_finish(page, fake(text="Fertig."))
    page.fill("#composer-input", "Entwurf")

    page.focus(".skip-link")  # the page's first tab stop
    seen = [page.evaluate(FOCUS_INDICATOR)]
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUS_INDICATOR)
        if focused["isBody"] or (seen and focused["element"] == seen[0]["element"]):
            break
        seen.append(focused)
    ids = [f["id"] for f in seen]
    assert {"composer-input", "send-button"} <= set(ids), seen
    page.focus("#send-button")  # keep its picture
    screenshot(page, "focus-ring-send-button")
    missing = [f["element"] for f in seen if not (f["focusVisible"] and f["visible"])]
    assert not missing, f"no visible focus indicator on: {missing}"


def test_stop_by_keyboard_keeps_focus_on_the_page(pages, alice):
    """Stop hides itself; the keyboard focus must then go somewhere useful, not to <body>."""
    page = pages.open(alice).page
    page.keyboard.insert_text(fake(never_end=True, tps=30))
    page.keyboard.press("Enter")
    answer = wait_status(page, "streaming")
    tab_to(page, "stop-button")
    page.keyboard.press("Enter")
    page.locator(f'[data-message-id="{message_id(answer)}"][data-status="cancelled"]').wait_for(timeout=1500)

    focused = page.evaluate(FOCUS_INDICATOR)
    assert not focused["isBody"], "after Stop the keyboard focus is lost (on <body>)"


def test_very_long_message_is_stored_exactly(pages, alice):
    directive = fake("", text="Lang.")
    content = ("Sehr lange Frage mit Umlauten äöüß und € … " * 500)[: 20_000 - len(directive)] + directive
    assert len(content) == 20_000
    page = pages.open(alice).page

    send_and_finish(page, content)
    screenshot(page, "long-message")
    assert stored_questions() == [content]
    assert page.locator(".message.user .text").last.text_content() == content


def test_pasted_html_is_shown_as_text_and_never_runs(pages, alice):
    opened = pages.open(alice)
    page = opened.page
    opened.context.grant_permissions(["clipboard-read", "clipboard-write"])
    html = '<b>bold</b><script>alert(1)</script><img src="x" onerror="alert(2)">'
    answer_html = '<img src="x" onerror="alert(3)"> <script>alert(4)</script> <b>fett</b>'
    content = html + " " + fake("", text=answer_html)

    page.evaluate("(text) => navigator.clipboard.writeText(text)", content)
    page.focus("#composer-input")
    page.keyboard.press("Control+V")
    assert page.input_value("#composer-input") == content
    page.keyboard.press("Enter")
    answer = wait_status(page, "done")
    time.sleep(0.3)  # room for an injected handler to fire
    screenshot(page, "html-as-text")

    assert stored_questions() == [content]
    question = page.locator(".message.user").last
    assert question.locator(".text").text_content() == content
    assert Message.objects.get(pk=message_id(answer)).content == answer_html
    assert question.locator("script, img, b, [onerror]").count() == 0, question.inner_html()
    # The answer may be rendered (Markdown), but nothing the model wrote may run.
    assert page.locator("#messages script, #messages [onerror]").count() == 0, answer.inner_html()
    # (no dialog: Pages fails the test on any)


def test_rtl_text_and_emoji_sequences_round_trip(pages, alice):
    tricky = (
        "مرحبا بالعالم، كيف حالك؟ שלום עולם! "
        "👩‍👩‍👧‍👦 👨🏽‍💻 🏳️‍🌈 🇩🇪 ❤️‍🔥 e\u0301 \u200fעברית\u200e mixed עם English"
    )
    page = pages.open(alice).page

    answer = send_and_finish(page, tricky + " " + fake("", text=tricky))
    screenshot(page, "rtl-and-emoji")

    assert stored_questions() == [tricky + " " + fake("", text=tricky)]
    assert page.locator(".message.user .text").last.text_content() == stored_questions()[0]
    stored = Message.objects.get(pk=message_id(answer))
    assert stored.content == tricky
    assert text_of(answer).strip() == tricky


def test_double_enter_and_double_click_store_one_question_each(pages, alice):
    page = pages.open(alice).page
    first = fake("Einmal bitte", text="Eins.")
    page.fill("#composer-input", first)
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    wait_status(page, "done")

    second = fake("Und noch einmal", text="Zwei.")
    page.fill("#composer-input", second)
    page.dblclick("#send-button")
    page.locator('.message.assistant[data-status="done"]').nth(1).wait_for()
    time.sleep(0.3)  # a second request would have arrived by now

    screenshot(page, "double-send")
    assert stored_questions() == [first, second]
    assert Message.objects.filter(role="assistant").count() == 2
    assert page.locator(".message.user").count() == 2
    assert page.locator("#composer-error").is_hidden()


def test_double_click_on_retry_starts_one_answer_quietly(pages, alice):
    page = pages.open(alice).page
    page.fill("#composer-input", fake(status=503, status_times=1, tag=f"dblretry-{uuid.uuid4().hex}"))
    page.press("#composer-input", "Enter")
    failed = wait_status(page, "error")
    failed_id = message_id(failed)

    failed.locator(".message-error").get_by_role("button").dblclick()
    page.locator(f'.message.assistant[data-status="done"]:not([data-message-id="{failed_id}"])').wait_for()
    time.sleep(0.3)  # a second retry request would have been answered by now
    screenshot(page, "double-click-retry")

    answers = list(Message.objects.filter(role="assistant").values_list("status", "superseded"))
    assert answers == [("error", True), ("done", False)]
    error = page.locator("#composer-error")
    assert error.is_hidden(), f"a double-click on Retry shows: {error.text_content()!r}"


def test_sending_offline_or_failing_keeps_the_text(pages, alice):
    opened = pages.open(alice)
    page = opened.page
    content = fake("Offline geschrieben", text="Wieder da.")
    error = page.locator("#composer-error")

    opened.context.set_offline(True)
    page.fill("#composer-input", content)
    page.press("#composer-input", "Enter")
    error.wait_for()
    screenshot(page, "send-offline")
    assert re.search("offline", error.text_content(), re.I), error.text_content()
    assert page.input_value("#composer-input") == content
    opened.context.set_offline(False)
    time.sleep(0.3)
    assert stored_questions() == []

    # Online, but the request never reaches the server (a proxy or Wi-Fi portal drops it).
    page.route("**/api/**", lambda route: route.abort("connectionreset"))
    page.press("#composer-input", "Enter")
    page.wait_for_function("() => !document.getElementById('send-button').disabled")
    assert error.is_visible()
    assert error.text_content().strip()
    assert page.input_value("#composer-input") == content
    assert stored_questions() == []
    page.unroute("**/api/**")

    page.press("#composer-input", "Enter")
    wait_status(page, "done")
    assert error.is_hidden()
    assert page.input_value("#composer-input") == ""
    assert stored_questions() == [content]


OVERFLOWING = """
() => [...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (el.className ? "." + el.className : ""))
"""


def assert_inside(box: dict, width: int, height: int | None, what: str) -> None:
    assert box["x"] >= 0, (what, box)
    assert box["x"] + box["width"] <= width, (what, box)
    if height is not None:
        assert box["y"] >= 0, (what, box)
        assert box["y"] + box["height"] <= height, (what, box)


def test_phone_screen_fits_and_sends(pages, alice):
    long_url = "https://example.com/" + "sehr-lang-" * 30
    page = pages.open(
        alice, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2
    ).page

    def assert_no_horizontal_scroll() -> None:
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 390, f"page is {width}px wide; too wide: {page.evaluate(OVERFLOWING)}"

    assert_no_horizontal_scroll()
    for selector in ("#composer-input", "#send-button"):
        box = page.locator(selector).bounding_box()
        assert box, f"{selector} is not rendered"
        assert_inside(box, 390, 844, selector)

    # An everyday question (it becomes the conversation's title) and an answer with a long URL.
    question = "Wie komme ich vom Hauptbahnhof zum Dom, und wo gibt es dort guten Kaffee? "
    page.locator("#composer-input").tap()
    page.keyboard.insert_text(question + fake("", text=f"Siehe {long_url} für Details."))
    page.locator("#send-button").tap()
    answer = wait_status(page, "done")
    screenshot(page, "phone")

    assert long_url in text_of(answer)
    assert len(stored_questions()) == 1
    assert_no_horizontal_scroll()
    assert_inside(answer.bounding_box(), 390, None, "the answer")
