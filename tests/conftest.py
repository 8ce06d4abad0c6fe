"""Fixtures: alice and bob, a fake upstream, and a real daphne server over the test database."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client

from assistant import review
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CSRF_TOKEN = "t" * 32  # Django accepts any 32-character secret as cookie and header alike.
LIVE_MODELS = "fake-model,other-model"


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


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_counts_from_earlier_tests() -> None:
    """The login and write limits count in Django's cache (assistant/throttle.py). In this
    process it is local memory, and SQLite gives a rolled-back test's user ids out again."""
    if isinstance(cache, LocMemCache):
        cache.clear()


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", password="bob-password-1")


def logged_in(user) -> Client:
    """Django's test client, logged in as `user`."""
    client = Client()
    client.force_login(user)
    return client


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


# Where util-linux has it: daphne gets SIGTERM when the test runner dies, even killed,
# so no server outlives a run (holding its port and the test database).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def start_daphne(env: dict[str, str], name: str, application: str = "config.asgi:application") -> LiveServer:
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"{name}.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                *DIE_WITH_PARENT,
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                application,
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited: {log.read_text()}")
        try:
            httpx.get(url + "/accounts/login/", timeout=1)
            return LiveServer(url, process, log)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"daphne did not start: {log.read_text()}")


def stop_daphne(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def database_url() -> str:
    """The test database (SQLite file or PostgreSQL), for the daphne processes tests start."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        credentials = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            credentials += ":" + quote(db["PASSWORD"], safe="")
        return f"postgres://{credentials}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def live_env(fake_upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "ASSISTANT_", "DJANGO_", "DATABASE_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url(),
        OPENAI_BASE_URL=fake_upstream.url,
        OPENAI_API_KEY="test-key-abc123",
        OPENAI_MAX_RETRIES="0",
        OPENAI_TIMEOUT="2",
        ASSISTANT_MODELS=LIVE_MODELS,
        ASSISTANT_MAX_ANSWER_SECONDS="20",
        # Keep-alives end a read that waits in vain, so deadlines in tests are checked.
        ASSISTANT_KEEPALIVE_SECONDS="3",
        # Tests send many answers a minute; the limits have their own tests.
        ASSISTANT_RATE_LIMIT_PER_MINUTE="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, django_db_blocker, fake_upstream) -> Iterator[LiveServer]:
    server = start_daphne(live_env(fake_upstream), "daphne")
    yield server
    stop_daphne(server)


@pytest.fixture
def live(live_server_process, transactional_db, upstream) -> LiveServer:
    """The daphne server; data the test creates is committed, so daphne sees it."""
    return live_server_process


def session_client(live: LiveServer, user, headers: dict[str, str] | None = None, **kwargs) -> httpx.Client:
    """An HTTP client logged in as `user`, with a CSRF cookie and header."""
    django_client = Client()
    django_client.force_login(user)
    return httpx.Client(
        base_url=live.url,
        cookies={
            settings.SESSION_COOKIE_NAME: django_client.cookies[settings.SESSION_COOKIE_NAME].value,
            settings.CSRF_COOKIE_NAME: CSRF_TOKEN,
        },
        headers={"X-CSRFToken": CSRF_TOKEN, **(headers or {})},
        timeout=kwargs.pop("timeout", 10),
        **kwargs,
    )


@pytest.fixture
def alice_http(live, alice) -> Iterator[httpx.Client]:
    with session_client(live, alice) as client:
        yield client


@pytest.fixture
def bob_http(live, bob) -> Iterator[httpx.Client]:
    with session_client(live, bob) as client:
        yield client
