"""Real-browser fixtures: Debian's chromium driven by playwright, logged in as a test user."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.helpers import Pages, login_context
from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ARTIFACTS / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="package")
def browser(django_db_setup):
    """Chromium for the browser tests, closed when they end.

    Playwright's sync API keeps an asyncio loop running in this thread, so Django takes
    every ORM call here for one from async code (SynchronousOnlyOperation). The tests'
    ORM calls are synchronous all the same: allowed while the browser lives. The daphne
    under test never sees the variable (its environment drops DJANGO_*).
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


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


def screenshot(page, name: str) -> None:
    """Keep a picture of a state as a test artifact (not in git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.fixture
def pages(browser, live) -> Iterator[Pages]:
    """Opens logged-in or anonymous pages; fails the test on JS errors or dialogs in any."""
    pages = Pages(browser, live)
    yield pages
    pages.close()
