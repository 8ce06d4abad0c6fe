"""The page's choices: which model answers, and which language the page speaks."""

from __future__ import annotations

import pytest

from assistant.models import Conversation
from tests.helpers.browser import only_conversation, screenshot, send, wait_status
from tests.helpers.chat import fake

pytestmark = pytest.mark.browser


def test_model_choice_from_the_allowlist_is_used_and_kept(pages, alice, upstream):
    page = pages.open(alice).page
    options = page.eval_on_selector_all("#model-select option", "nodes => nodes.map(n => n.value)")
    assert options == ["fake-model", "other-model"]

    page.select_option("#model-select", "other-model")
    send(page, fake(text="Antwort vom anderen Modell."))
    wait_status(page, "done")

    conversation = only_conversation(alice)
    answer = conversation.messages.get(role="assistant")
    assert (conversation.model, answer.model) == ("other-model", "other-model")
    assert upstream.requests[0]["body"]["model"] == "other-model"
    page.reload()
    assert page.eval_on_selector("#model-select", "select => select.value") == "other-model"
    screenshot(page, "settings-model")


def test_language_setting_overrides_the_browser_and_sticks(pages, alice):
    page = pages.open(alice, locale="en-US").page
    assert page.get_attribute("html", "lang") == "en"

    page.select_option("#language-select", "de")
    page.wait_for_load_state()
    page.wait_for_function("document.documentElement.lang === 'de'")

    assert page.get_attribute("#send-button", "class") is not None
    assert page.inner_text("#send-button") == "Senden"
    page.goto(pages.live.url + "/")
    assert page.get_attribute("html", "lang") == "de"
    assert not Conversation.objects.exists()
    screenshot(page, "settings-language")
