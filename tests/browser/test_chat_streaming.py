"""Answers streaming into a real browser: live tokens, stop, retry, reload and a dropped network."""

from __future__ import annotations

import itertools
import re
import time
import uuid

import pytest

from assistant.models import Message
from tests.helpers.browser import (
    RECORDER,
    DroppingProxy,
    last_assistant,
    message_id,
    only_conversation,
    screenshot,
    send,
    text_of,
    wait_for_text,
    wait_status,
)
from tests.helpers.chat import fake, wait_for_final

pytestmark = pytest.mark.browser

# 40 words with umlauts, ß and emoji (one a ZWJ sequence); nothing Markdown would change.
UMLAUT_ANSWER = (
    "Grüße aus Köln 👋 die Straße ist naß und das Öl im Maß kostet Übermut während Bäcker fröhlich "
    "Käse über Brücken tragen 🎉 Mädchen zählen Füße in der Höhle vom Löwen und schöne Tür "
    "öffnet sich 👩‍💻 für Jürgen früh"
)
assert len(UMLAUT_ANSWER.split()) == 40


def numbered_words(count: int) -> str:
    """An answer whose every word is unique, so a repeated or missing piece shows."""
    return " ".join(f"wort{i:02d}" for i in range(count))


def assert_growing_prefixes(texts: list[str], final: str) -> list[str]:
    """Every recorded text is a prefix of the final text, each longer than the one before."""
    shown = [t for t in texts if t.strip()]
    for earlier, later in itertools.pairwise(shown):
        assert len(later.strip()) > len(earlier.strip()), (earlier, later)
    for text in shown:
        assert final.startswith(text.strip()), f"{text!r} is not a prefix of {final!r}"
    return [t for t in shown if t.strip() != final]


def test_answer_streams_live_and_matches_stored_text(pages, alice, live):
    page = pages.open(alice).page
    page.evaluate(RECORDER)
    question = fake("Erzähl mir was über Köln", text=UMLAUT_ANSWER, tps=15)

    send(page, question)
    wait_for_text(page, "Maß")
    screenshot(page, "streaming-midway")
    answer = wait_status(page, "done")
    screenshot(page, "streaming-done")

    final = text_of(answer)
    assert final.strip() == UMLAUT_ANSWER
    intermediate = assert_growing_prefixes(page.evaluate("window.__texts"), UMLAUT_ANSWER)
    assert len(intermediate) >= 3, f"the text did not grow live, only saw {intermediate!r}"

    stored = Message.objects.get(pk=message_id(answer))
    assert stored.status == Message.Status.DONE
    assert stored.content == final.strip()
    assert stored.content == UMLAUT_ANSWER
    conversation = only_conversation(alice)
    assert stored.conversation_id == conversation.pk
    question_stored = conversation.messages.get(role="user")
    assert question_stored.content == question
    assert page.locator(".message.user .text").last.text_content().strip() == question

    assert re.fullmatch(rf"{re.escape(live.url)}/c/{conversation.pk}/", page.url)
    assert page.locator(f'nav a[href$="/c/{conversation.pk}/"]').is_visible()


def test_stop_ends_a_never_ending_answer(pages, alice):
    page = pages.open(alice).page
    cancels = []
    page.on("request", lambda request: "/cancel/" in request.url and cancels.append(request.url))
    send(page, fake(never_end=True, tps=30))
    wait_for_text(page, "tok10")
    stop = page.locator("#stop-button")
    assert stop.is_visible()
    screenshot(page, "stop-before")

    stop.click()
    page.wait_for_function(
        """() => {
            const all = document.querySelectorAll("#messages .message.assistant");
            const status = all[all.length - 1].dataset.status;
            return status === "cancelled" || status === "done";
        }""",
        timeout=10_000,
    )
    answer = last_assistant(page)
    shown = text_of(answer)
    time.sleep(0.8)
    assert text_of(answer) == shown, "the text kept growing after Stop"
    screenshot(page, "stop-after")

    stored = wait_for_final(message_id(answer))
    assert stored.status == Message.Status.CANCELLED
    assert stored.content == shown.strip()
    assert answer.get_attribute("data-status") == "cancelled"
    assert stop.is_hidden()
    assert page.locator("#send-button").is_enabled()
    assert len(cancels) == 1  # one click, one stop request


def test_retry_after_upstream_error_streams_a_new_answer(pages, alice, live):
    page = pages.open(alice).page
    send(page, fake(status=503, status_times=1, tag=f"retry-{uuid.uuid4().hex}"))

    failed = wait_status(page, "error")
    failed_id = message_id(failed)
    stored = wait_for_final(failed_id)
    assert stored.status == Message.Status.ERROR
    assert stored.error_type == "upstream_unavailable"
    error = failed.locator(".message-error")
    assert error.is_visible()
    assert stored.error_detail in error.text_content()
    retry = error.get_by_role("button")
    assert retry.is_visible()
    screenshot(page, "retry-error-shown")

    retry.click()
    page.locator(f'.message.assistant[data-status="done"]:not([data-message-id="{failed_id}"])').wait_for(
        timeout=15_000
    )
    screenshot(page, "retry-new-answer")
    answers = page.locator(".message.assistant")
    assert answers.count() == 1
    new = answers.last
    new_id = message_id(new)
    assert new_id != failed_id
    new_stored = wait_for_final(new_id)
    assert new_stored.status == Message.Status.DONE
    assert new_stored.content == text_of(new).strip()
    assert new_stored.content  # the fake's default answer: "tok0 tok1 ..."
    assert Message.objects.get(pk=failed_id).superseded
    # Only one question: a retry answers the same one again.
    assert page.locator(".message.user").count() == 1
    assert Message.objects.filter(role="user").count() == 1

    # The failed answer is the new one's earlier version, behind its switcher, live
    # exactly as after a reload.
    assert page.locator(f'[data-message-id="{failed_id}"]').count() == 0
    assert new.locator(".version-position").text_content() == "2 / 2"
    page.reload()
    assert page.locator(f'[data-message-id="{failed_id}"]').count() == 0
    assert page.locator(".message.assistant").last.locator(".version-position").text_content() == "2 / 2"
    page.locator(".message.assistant").last.get_by_role("button", name="Previous version").click()
    shown = page.locator(f'[data-message-id="{failed_id}"]')
    shown.wait_for()
    assert shown.locator(".message-error").is_visible()


def test_error_midway_keeps_the_partial_text(pages, alice):
    page = pages.open(alice).page
    send(page, fake(reset_after=5, tps=20))

    failed = wait_status(page, "error")
    screenshot(page, "error-midway-partial-text")
    stored = wait_for_final(message_id(failed))
    assert stored.status == Message.Status.ERROR
    assert stored.content == "tok0 tok1 tok2 tok3 tok4"
    assert text_of(failed).strip() == stored.content
    error = failed.locator(".message-error")
    assert stored.error_detail in error.text_content()
    assert error.get_by_role("button").is_visible()


def test_reload_mid_answer_continues_without_duplication(pages, alice):
    words = numbered_words(60)
    page = pages.open(alice).page
    send(page, fake(text=words, tps=15))
    wait_for_text(page, "wort15")

    page.reload()
    page.evaluate(RECORDER)
    shown_after_reload = text_of(last_assistant(page))
    assert shown_after_reload.strip(), "the reloaded page does not show the text so far"
    assert words.startswith(shown_after_reload.strip())
    wait_for_text(page, "wort40")
    screenshot(page, "reload-continues")
    answer = wait_status(page, "done")

    final = text_of(answer)
    assert final.strip() == words
    assert_growing_prefixes(page.evaluate("window.__texts"), words)
    assert Message.objects.get(pk=message_id(answer)).content == words
    assert page.locator(".message.assistant").count() == 1
    assert page.locator(".message.user").count() == 1


@pytest.fixture
def proxy(live):
    proxy = DroppingProxy(live.url)
    yield proxy
    proxy.close()


def test_network_drop_mid_answer_resumes_without_gap_or_duplication(pages, alice, proxy):
    """The browser talks to the server through a proxy that resets every connection for 1.5 s
    mid-answer (see DroppingProxy for why not `context.set_offline`)."""
    words = numbered_words(80)
    page = pages.open(alice, path=None).page
    page.goto(proxy.url + "/")
    page.evaluate(RECORDER)
    send(page, fake(text=words, tps=15))
    wait_for_text(page, "wort10")

    proxy.drop()
    page.wait_for_function(
        "() => /reconnect/i.test(document.getElementById('connection').textContent)", timeout=5000
    )
    screenshot(page, "network-drop-reconnecting")
    time.sleep(1.5)
    proxy.restore()

    page.wait_for_function(
        "() => !/reconnect/i.test(document.getElementById('connection').textContent)", timeout=8000
    )
    screenshot(page, "network-drop-resumed")
    answer = wait_status(page, "done")

    final = text_of(answer)
    assert final.strip() == words
    assert_growing_prefixes(page.evaluate("window.__texts"), words)
    assert Message.objects.get(pk=message_id(answer)).content == words
    states = [s for s in page.evaluate("window.__connection") if s]
    assert any(re.search("reconnect", s, re.I) for s in states), states
    assert not re.search("reconnect", page.locator("#connection").text_content(), re.I)
