"""Real-browser fixtures: Debian's chromium driven by playwright, logged in as a test user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.browser import chromium, login_context

pytestmark = pytest.mark.browser


@pytest.fixture(scope="package")
def browser(django_db_setup):
    """Chromium for the browser tests, closed when they end."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def alice_page(browser, live, alice) -> Iterator:
    """A page logged in as alice, failing the test on any JavaScript error."""
    context = login_context(browser, live, alice, viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors
