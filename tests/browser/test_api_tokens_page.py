"""The API tokens page in Chromium: a token made, copied, used and revoked; the sidebar's
label of a conversation an app started; axe-core on it and on the API's own page
(/api/docs/)."""

from __future__ import annotations

import httpx
import pytest

from assistant.models import ApiToken, Conversation, Origin
from tests.helpers.browser import PHONE, screenshot, serious_accessibility_violations
from tests.helpers.tokens import bearer

pytestmark = pytest.mark.browser


def test_a_token_is_made_copied_used_and_revoked_on_the_page(pages, alice):
    opened = pages.open(alice, "/settings/tokens/", permissions=["clipboard-read", "clipboard-write"])
    page = opened.page
    page.fill("#id_name", "Handy-App")
    page.select_option("#id_lifetime", "30")
    page.get_by_role("button", name="Create token").click()
    page.locator("#token-secret").wait_for()

    secret = page.input_value("#token-secret")
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    token = ApiToken.objects.get()
    assert page.locator(".token-table tbody tr").count() == 1
    assert f"{token.prefix}…" in page.inner_text(".token-table")
    used = httpx.get(pages.live.url + "/api/me/", headers=bearer(secret), timeout=10)
    assert used.status_code == 200

    page.reload()  # sends the form again: no second token, and the secret is gone
    page.locator(".notice", has_text="shown only once").wait_for()
    assert page.locator("#token-secret").count() == 0
    assert ApiToken.objects.count() == 1
    page.get_by_role("button", name="Revoke Handy-App").click()
    page.locator(".notice").wait_for()
    assert "revoked" in page.inner_text(".token-table")
    refused = httpx.get(pages.live.url + "/api/me/", headers=bearer(secret), timeout=10)
    assert refused.status_code == 401
    screenshot(page, "api-tokens")


def test_the_sidebar_labels_a_conversation_an_app_started(pages, alice):
    Conversation.objects.create(owner=alice, model="fake-model", title="Aus dem Skript", origin=Origin.API)
    Conversation.objects.create(owner=alice, model="fake-model", title="Vom Chat")
    page = pages.open(alice).page

    labelled = page.locator("#conversation-list a", has_text="Aus dem Skript")
    assert labelled.locator(".badge").inner_text() == "API"
    assert page.locator("#conversation-list a", has_text="Vom Chat").locator(".badge").count() == 0
    page.fill("#search-input", "Skript")
    page.locator(".search-result .badge", has_text="API").wait_for()


@pytest.mark.parametrize("state", ["light", "dark", "phone"])
def test_no_serious_accessibility_violations_on_the_tokens_page(pages, alice, state):
    ApiToken.objects.create(user=alice, name="Alt", prefix="ast_abcdefgh", digest="0" * 64)
    options = {"color_scheme": "dark" if state == "dark" else "light", **(PHONE if state == "phone" else {})}
    page = pages.open(alice, "/settings/tokens/", **options).page
    page.fill("#id_name", "Skript")
    page.get_by_role("button", name="Create token").click()
    page.locator("#token-secret").wait_for()

    screenshot(page, "a11y-api-tokens-" + state)
    assert serious_accessibility_violations(page) == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_violations_on_the_api_docs_page(pages, alice, scheme):
    page = pages.open(alice, "/api/docs/", color_scheme=scheme).page

    screenshot(page, "a11y-api-docs-" + scheme)
    assert serious_accessibility_violations(page) == []
