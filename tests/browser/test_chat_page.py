"""The chat page for daily use (issue 20): following an answer, landing on the latest
message, the phone drawer, Escape, the skip link, the theme, the length counter, the
stopped state's words and axe-core's accessibility check, in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.utils import timezone

from assistant.models import Conversation, Message, StarterPrompt
from tests.helpers.browser import (
    PHONE,
    message_id,
    screenshot,
    scroll_gap,
    send,
    serious_accessibility_violations,
    wait_for_text,
    wait_status,
)
from tests.helpers.chat import fake, last_answer_request


def stored_conversation(user, exchanges: int) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title="Lang", model="fake-model")
    for n in range(exchanges):
        Message.objects.create(conversation=conversation, role="user", content=f"Frage {n}")
        Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"Antwort {n}\n\n" + "Ein Absatz mit Text. " * 30,
            status=Message.Status.DONE,
            model="fake-model",
        )
    conversation.updated_at = timezone.now()
    conversation.save()
    return conversation


def test_opening_and_reloading_a_conversation_lands_on_the_latest_message(pages, alice):
    conversation = stored_conversation(alice, 30)
    page = pages.open(alice, f"/c/{conversation.pk}/").page

    page.locator(".message.assistant").last.wait_for()
    assert scroll_gap(page) <= 24
    assert page.locator(".message.assistant").last.is_visible()
    page.reload()
    assert scroll_gap(page) <= 24
    assert page.locator("#messages .message").last.locator(".text").text_content().startswith("Antwort 29")


def test_scrolling_up_stops_following_and_jump_to_latest_follows_again(pages, alice):
    conversation = stored_conversation(alice, 10)
    page = pages.open(alice, f"/c/{conversation.pk}/").page
    send(page, fake(tokens=4000, tps=150))
    answer = wait_status(page, "streaming")
    page.wait_for_function(
        "() => document.getElementById('messages').lastElementChild.innerText.length > 200"
    )
    assert scroll_gap(page) <= 24  # following while at the end
    jump = page.locator(".jump-latest")
    assert jump.is_hidden()

    page.locator("#messages").hover()
    page.mouse.wheel(0, -600)
    page.wait_for_function("() => document.querySelector('.jump-latest').hidden === false")
    held = page.evaluate("document.getElementById('messages').scrollTop")
    grown = page.evaluate("document.getElementById('messages').scrollHeight")
    page.wait_for_function(f"() => document.getElementById('messages').scrollHeight > {grown} + 200")
    # The answer grew by more than a screenful; the reader's place did not move.
    assert abs(page.evaluate("document.getElementById('messages').scrollTop") - held) <= 2
    screenshot(page, "jump-to-latest")

    jump.click()
    page.wait_for_function(f"() => document.getElementById('messages').scrollHeight > {grown} + 600")
    assert scroll_gap(page) <= 24
    assert jump.is_hidden()
    assert page.evaluate("document.activeElement.id") == "composer-input"
    page.keyboard.press("Escape")
    assert wait_status(page, "cancelled").get_attribute("data-message-id") == answer.get_attribute(
        "data-message-id"
    )


def test_escape_stops_an_answer_which_then_says_stopped_in_words(pages, alice):
    page = pages.open(alice).page
    send(page, fake(never_end=True, tps=30))
    answer = wait_status(page, "streaming")
    wait_for_text(page, "tok1")

    page.keyboard.press("Escape")

    stopped = page.locator(f'[data-message-id="{message_id(answer)}"][data-status="cancelled"]')
    stopped.wait_for()
    assert stopped.locator(".stopped").text_content().strip() == "Stopped"
    assert stopped.get_by_role("button", name="Continue").is_visible()
    assert stopped.get_by_role("button", name="Regenerate").is_visible()
    page.reload()
    assert (
        page.locator(f'[data-message-id="{message_id(answer)}"] .stopped').text_content().strip() == "Stopped"
    )


def test_continue_extends_an_answer_cut_for_length(pages, alice, upstream):
    page = pages.open(alice).page
    send(page, fake(text="Der Anfang der Antwort,", finish_reason="length"))
    answer = wait_status(page, "done")
    answer_id = message_id(answer)
    assert answer.locator(".cut-note").text_content() == "The answer was cut off at the model's length limit."

    # What the fake upstream says next (the continuation's last question is the request to
    # go on, without a FAKE directive): the rest of the answer.
    upstream.set(text=" und sein Ende.")
    answer.get_by_role("button", name="Continue").click()

    done = page.locator(f'[data-message-id="{answer_id}"][data-status="done"]')
    page.wait_for_function(
        "(id) => document.querySelector(`[data-message-id='${id}'] .text`).textContent.includes('Ende')",
        arg=answer_id,
    )
    done.wait_for()
    assert done.locator(".text").text_content().strip() == "Der Anfang der Antwort, und sein Ende."
    assert done.locator(".cut-note").count() == 0
    sent = last_answer_request(upstream)["body"]["messages"]
    assert sent[-2] == {"role": "assistant", "content": "Der Anfang der Antwort,"}
    page.reload()
    assert page.locator(f'[data-message-id="{answer_id}"] .text').text_content().strip() == (
        "Der Anfang der Antwort, und sein Ende."
    )


def test_regenerate_keeps_versions_behind_the_switcher(pages, alice):
    page = pages.open(alice).page
    send(page, fake(text="Erste Fassung."))
    first = wait_status(page, "done")
    first_id = message_id(first)

    first.get_by_role("button", name="Regenerate").click()
    page.locator(f'.message.assistant[data-status="done"]:not([data-message-id="{first_id}"])').wait_for()

    latest = page.locator(".message.assistant").last
    assert page.locator(".message.assistant").count() == 1
    assert latest.locator(".version-position").text_content() == "2 / 2"
    latest.get_by_role("button", name="Previous version").click()
    page.locator(f'[data-message-id="{first_id}"]').wait_for()
    shown = page.locator(".message.assistant").last
    assert shown.locator(".text").text_content().strip() == "Erste Fassung."
    assert shown.locator(".version-position").text_content() == "1 / 2"
    page.reload()
    assert page.locator(".message.assistant").last.get_attribute("data-message-id") == str(first_id)
    screenshot(page, "versions")


def test_speaker_labels_and_question_timestamps(pages, alice):
    conversation = stored_conversation(alice, 1)
    page = pages.open(alice, f"/c/{conversation.pk}/").page

    question, answer = page.locator("#messages .message").all()
    assert question.locator(".speaker").text_content() == "You said:"
    assert answer.locator(".speaker").text_content() == "Assistant said:"
    assert question.locator(".details time").get_attribute("datetime")
    send(page, fake(text="Neu."))
    wait_status(page, "done")
    new_question = page.locator(".message.user").last
    assert new_question.locator(".speaker").text_content() == "You said:"
    assert new_question.locator(".details time").get_attribute("datetime")


def test_skip_link_goes_to_the_composer(pages, alice):
    page = pages.open(alice).page
    page.focus(".new-chat")  # the sidebar's first link: the skip link comes before it

    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    assert page.locator(".skip-link").is_visible()
    page.keyboard.press("Enter")

    assert page.evaluate("document.activeElement.id") == "composer-input"


def test_phone_drawer_opens_closes_and_handles_focus(pages, alice):
    page = pages.open(alice, **PHONE).page
    sidebar = page.locator("#sidebar")
    button = page.locator("#drawer-button")
    assert sidebar.is_hidden()
    assert button.get_attribute("aria-expanded") == "false"

    button.tap()
    page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().left >= 0")
    assert sidebar.is_visible()
    assert button.get_attribute("aria-expanded") == "true"
    assert page.evaluate("document.getElementById('sidebar').contains(document.activeElement)")
    assert page.evaluate("document.querySelector('main').inert")
    screenshot(page, "phone-drawer")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().right <= 0")
    assert page.evaluate("document.activeElement.id") == "drawer-button"
    assert not page.evaluate("document.querySelector('main').inert")

    button.tap()
    page.locator(".drawer-backdrop").tap(position={"x": 370, "y": 400})
    page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().right <= 0")
    assert button.get_attribute("aria-expanded") == "false"


def test_phone_has_no_keyboard_hints_and_enter_makes_a_new_line(pages, alice):
    page = pages.open(alice, **PHONE).page
    composer = page.locator("#composer-input")

    assert "Enter" not in composer.get_attribute("placeholder")
    composer.tap()
    page.keyboard.insert_text("Erste Zeile")
    page.keyboard.press("Enter")
    page.keyboard.insert_text("zweite")

    assert composer.input_value() == "Erste Zeile\nzweite"
    assert page.locator(".message").count() == 0


def test_phone_with_the_keyboard_open_keeps_composer_and_latest_text_visible(pages, alice):
    conversation = stored_conversation(alice, 8)
    # The on-screen keyboard resizes the layout viewport (interactive-widget=resizes-content).
    page = pages.open(
        alice, f"/c/{conversation.pk}/", **{**PHONE, "viewport": {"width": 390, "height": 420}}
    ).page
    page.locator("#composer-input").tap()

    for selector in ("#composer-input", "#send-button"):
        box = page.locator(selector).bounding_box()
        assert box["y"] >= 0
        assert box["y"] + box["height"] <= 420, selector
    last = page.locator("#messages .message").last.bounding_box()
    composer_top = page.locator("#composer").bounding_box()["y"]
    assert last["y"] + last["height"] <= composer_top + 1
    assert last["y"] + last["height"] > 0
    screenshot(page, "phone-keyboard")


def test_theme_switch_system_light_dark_is_kept(pages, alice):
    opened = pages.open(alice, color_scheme="light")
    page = opened.page
    background = "getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(background)

    page.select_option("#theme-select", "dark")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark = page.evaluate(background)
    assert dark != light
    page.reload()
    assert page.evaluate(background) == dark
    assert page.locator("#theme-select").input_value() == "dark"

    page.select_option("#theme-select", "system")
    assert page.evaluate("document.documentElement.dataset.theme") is None
    assert page.evaluate(background) == light


def test_length_counter_near_the_limit_and_a_friendly_refusal_past_it(pages, alice, settings):
    page = pages.open(alice).page
    limit = page.evaluate("JSON.parse(document.getElementById('page-data').textContent).max_message_chars")
    counter = page.locator("#composer-counter")
    composer = page.locator("#composer-input")

    composer.fill("a" * (limit // 2))
    assert counter.is_hidden()
    composer.fill("ä" * (limit - 10))
    assert counter.text_content() == "10 characters left"
    composer.fill("ä" * (limit + 5))
    page.press("#composer-input", "Enter")

    error = page.locator("#composer-error")
    assert error.is_visible()
    assert "too long" in error.text_content()
    assert composer.input_value() == "ä" * (limit + 5)
    assert not Message.objects.exists()


def test_a_stalled_model_is_named_after_a_few_seconds(pages, alice):
    page = pages.open(alice).page
    # Halfway to the upstream's read timeout (2 s on the test server), or after 5 s.
    send(page, fake(stall_after=3, tps=50))
    wait_for_text(page, "tok2")

    note = page.locator(".message.assistant .stalled")
    note.wait_for(timeout=5_000)
    assert note.text_content() == "Still waiting for the model…"


def test_an_example_prompt_of_the_empty_chat_asks_it(pages, alice):
    StarterPrompt.objects.all().delete()  # the shipped ones
    StarterPrompt.objects.create(text="Vergleiche zwei Dinge " + fake("", text="| A | B |"), position=1)
    StarterPrompt.objects.create(text="Only for English pages", language="de")
    page = pages.open(alice).page
    starters = page.locator(".starter")

    assert starters.count() == 1
    starters.click()

    wait_status(page, "done")
    assert page.locator(".message.user .text").text_content().startswith("Vergleiche zwei Dinge")
    assert page.locator("#empty-hint").count() == 0


def test_download_the_conversation_as_markdown_and_json(pages, alice):
    page = pages.open(alice).page
    send(page, fake("Grüße aus Köln", text="Antwort mit **fett**."))
    wait_status(page, "done")

    with page.expect_download() as markdown:
        page.locator("#export-markdown").click()
    with page.expect_download() as as_json:
        page.locator("#export-json").click()

    text = Path(markdown.value.path()).read_text(encoding="utf-8")
    assert "Grüße aus Köln" in text
    assert "Antwort mit **fett**." in text
    assert markdown.value.suggested_filename.endswith(".md")
    data = json.loads(Path(as_json.value.path()).read_text(encoding="utf-8"))
    assert [m["content"] for m in data["messages"]][1] == "Antwort mit **fett**."


def test_search_as_you_type_ranks_marks_and_labels_archived(pages, alice):
    older = stored_conversation(alice, 1)
    older.title = "Reiseplanung"
    older.archived = True
    older.save()
    Message.objects.create(conversation=older, role="user", content="Wie weit ist es nach Köln?")
    other = stored_conversation(alice, 1)
    other.title = "Köln im Herbst"
    other.save()
    page = pages.open(alice).page

    page.locator("#search-input").press_sequentially("köln", delay=30)
    page.locator(".search-results .search-result").first.wait_for()

    results = page.locator(".search-results .search-result")
    assert results.count() == 2
    assert results.nth(0).locator(".result-title").text_content() == "Köln im Herbst"
    assert results.nth(1).locator(".badge").text_content() == "Archived"
    assert results.nth(1).locator("mark").first.text_content() == "Köln"
    page.locator("#search-input").fill("")
    page.wait_for_function("() => !document.querySelector('.search-results')")


@pytest.mark.parametrize(
    ("behaviour", "words"),
    [
        pytest.param(
            {"status": 429, "retry_after": 7}, "Please wait 7 seconds and try again", id="rate-limited"
        ),
        pytest.param({"status": 401}, "ask your administrator", id="auth-failed"),
        pytest.param({"status": 404}, "ask your administrator", id="model-not-found"),
        pytest.param({"status": 503}, "try again in a few minutes", id="unavailable"),
        pytest.param(
            {"reset_after": 3, "tps": 50}, "The connection to the model service broke off", id="cut"
        ),
        pytest.param({"malformed_after": 3}, "could not read", id="malformed"),
        pytest.param({"status": 400}, "Try a shorter question", id="bad-request"),
        pytest.param({"status": 409}, "could not take this request just now", id="conflict"),
        pytest.param({"stall_after": 0}, "took too long to answer", id="timeout"),
    ],
)
def test_each_error_says_what_happened_and_what_to_do(pages, alice, behaviour, words):
    page = pages.open(alice).page
    send(page, fake(**behaviour))

    failed = wait_status(page, "error")

    assert words in failed.locator(".message-error").text_content()


@pytest.mark.parametrize(
    "state", ["new chat", "answers", "phone drawer", "dark", "access log", "login", "search", "versions"]
)
def test_no_serious_accessibility_violations(pages, alice, state):
    if state == "new chat":
        page = pages.open(alice).page
    elif state == "access log":
        page = pages.open(alice, "/access-log/").page
    elif state == "login":
        page = pages.open(None, "/accounts/login/").page
    elif state == "search":
        stored_conversation(alice, 1)
        page = pages.open(alice, "/?q=Antwort").page
    elif state == "versions":
        page = pages.open(alice).page
        send(page, fake(text="Erste Fassung."))
        wait_status(page, "done").get_by_role("button", name="Regenerate").click()
        page.locator(".version-position").wait_for()
        wait_status(page, "done")
    elif state == "phone drawer":
        page = pages.open(alice, **PHONE).page
        page.locator("#drawer-button").tap()
        page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().left >= 0")
    else:
        page = pages.open(alice, color_scheme="dark" if state == "dark" else "light").page
        send(page, fake(text="| A | B |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('x')\n```"))
        wait_status(page, "done")
        send(page, fake(status=401))
        wait_status(page, "error")
        send(page, fake(never_end=True, tps=30))
        wait_status(page, "streaming")
        page.keyboard.press("Escape")
        wait_status(page, "cancelled")
        if state == "dark":
            page.select_option("#theme-select", "dark")

    assert serious_accessibility_violations(page) == []
