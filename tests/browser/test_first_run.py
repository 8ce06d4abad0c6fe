"""First start in a real browser: the setup form creates the administrator, then normal login."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from tests.helpers.browser import screenshot, serious_accessibility_violations

pytestmark = pytest.mark.browser

PASSWORD = "Korrekt-Pferd-Batterie-42"


def test_first_run_setup_creates_admin_then_login_works(pages, live):
    User = get_user_model()
    assert not User.objects.exists()
    page = pages.open(path="/accounts/login/").page

    page.wait_for_url(re.compile(r"/setup/$"))
    screenshot(page, "first-run-setup-form")
    assert serious_accessibility_violations(page) == []
    page.fill("#id_username", "chefin")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.locator("form button[type=submit]").click()

    page.wait_for_url(live.url + "/")
    page.locator("#composer-input").wait_for()
    admin = User.objects.get()
    assert admin.get_username() == "chefin"
    assert admin.is_superuser
    assert admin.is_staff
    screenshot(page, "first-run-chat-after-setup")

    # The setup form is gone for good once a user exists.
    assert page.request.get(live.url + "/setup/").status == 404

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/accounts/login/"))
    assert page.locator("#id_password1").count() == 0

    # A wrong password is refused with a message; the right one lands on the chat page.
    page.fill("#id_username", "chefin")
    page.fill("#id_password", "falsch")
    page.locator("form button[type=submit]").click()
    page.get_by_role("alert").wait_for()
    assert re.search(r"/accounts/login/", page.url)

    page.fill("#id_username", "chefin")
    page.fill("#id_password", PASSWORD)
    page.locator("form button[type=submit]").click()
    page.wait_for_url(live.url + "/")
    page.locator("#composer-input").wait_for()
    screenshot(page, "first-run-chat-after-login")
