"""Fixtures: alice and bob, a fake upstream, a real daphne server over the test database,
collected static files, and browser pages. The helpers behind them are in tests/helpers."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client, override_settings
from django.utils import translation

from assistant import review
from config.fastpaths import aiohttp as fast_aiohttp
from tests.helpers.browser import Pages
from tests.helpers.live import LiveServer, live_env, logged_in, session_client, start_daphne, stop_daphne
from tests.helpers.production import manage, production_env
from tests.helpers.upstream import FakeUpstream


def pytest_configure(config) -> None:
    # Worker threads of the live tests query the database and end without closing their
    # connections. SQLite drops them silently; psycopg (DATABASE_URL=postgres://...) warns
    # when one is collected. django_db_setup below ends them before the database goes.
    config.addinivalue_line("filterwarnings", "ignore:.*was deleted while still open:ResourceWarning")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, which on PostgreSQL first ends the sessions those threads left open
    (DROP DATABASE refuses while any is connected)."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*was deleted while still open", ResourceWarning)
            gc.collect()  # the finished threads' connections, quietly (pytest would collect later)
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session", autouse=True)
def _media_root(tmp_path_factory) -> Iterator[Path]:
    """Uploaded files go to a temporary folder: in this process, and in every daphne the
    tests start (live_env passes MEDIA_ROOT on). Autouse and session-wide, so it is in
    place before the session's daphne starts."""
    root = tmp_path_factory.mktemp("media")
    with override_settings(MEDIA_ROOT=str(root)):
        yield root


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_language_from_earlier_tests() -> Iterator[None]:
    """A request in German leaves German active in the test's thread (LocaleMiddleware
    activates it and nothing deactivates it): a later test would read German messages."""
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _no_counts_from_earlier_tests() -> None:
    """The login and write limits count in Django's cache (assistant/throttle.py). In this
    process it is local memory, and SQLite gives a rolled-back test's user ids out again."""
    # `cache` is a proxy: the backend behind it is what tells.
    if isinstance(caches["default"], LocMemCache):
        cache.clear()


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def alice_client(alice) -> Client:
    return logged_in(alice)


@pytest.fixture
def bob_client(bob) -> Client:
    return logged_in(bob)


@pytest.fixture
def reviewer_client(db) -> Client:
    """Logged in as rita, a reviewer: staff in the Reviewers group (lists, transcripts after a reason)."""
    rita = get_user_model().objects.create_user("rita", password="rita-password-1")
    review.reviewer_grant(user=rita)
    return logged_in(rita)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key="test-key-abc123") as fake:
        yield fake


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake upstream, with default behaviour and an empty request log."""
    fake_upstream.reset()
    fake_upstream.requests.clear()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    server = start_daphne(live_env(fake_upstream), "daphne")
    yield server
    stop_daphne(server)


@pytest.fixture
def live(live_server_process, transactional_db, upstream) -> LiveServer:
    """The daphne server; data the test creates is committed, so daphne sees it."""
    return live_server_process


@pytest.fixture
def alice_http(live, alice) -> Iterator[httpx.Client]:
    with session_client(live, alice) as client:
        yield client


@pytest.fixture
def bob_http(live, bob) -> Iterator[httpx.Client]:
    with session_client(live, bob) as client:
        yield client


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    """collectstatic's output with the production storage, into a fresh STATIC_ROOT."""
    root = tmp_path_factory.mktemp("static")
    result = manage("collectstatic", "--noinput", env=production_env(DJANGO_STATIC_ROOT=str(root)))
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def pages(browser, live) -> Iterator[Pages]:
    """Opens logged-in or anonymous pages; fails the test on JS errors or dialogs in any.
    `browser` is the chromium of the test's package (tests/browser, tests/security)."""
    pages = Pages(browser, live)
    yield pages
    pages.close()


@pytest.fixture(params=["on", "off"])
def fast_paths(request, settings) -> Iterator[str]:
    """Every answer both ways: through the fast path `aiohttp` and on the libraries'
    public API alone (ASSISTANT_FAST_PATHS=off), with the same text, errors and timeouts."""
    settings.ASSISTANT_FAST_PATHS = request.param
    fast_aiohttp.installed.cache_clear()
    yield request.param
    fast_aiohttp.installed.cache_clear()


@pytest.fixture
def provider_settings(settings, fast_paths):
    """Settings for a provider talking to a test upstream, without retries and with short timeouts."""
    settings.OPENAI_API_KEY = "test-key-abc123"
    settings.OPENAI_MAX_RETRIES = 0
    settings.OPENAI_CONNECT_TIMEOUT = 0.5
    settings.OPENAI_TIMEOUT = 2
    return settings
