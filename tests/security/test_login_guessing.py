"""Password guessing and login floods against a live daphne.

The daphne here listens as in docs/deployment.md, on a Unix socket (where nginx would
connect, writing X-Forwarded-For), and also on TCP (any other peer, whose X-Forwarded-For
must count for nothing). Its password hasher logs every hash with how many run at once
(tests/security/login_settings.py), so the tests count hashes in its log. Each test uses
its own accounts and client addresses: the counters live as long as the server.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from tests.helpers.live import (
    ARTIFACTS,
    CSRF_TOKEN,
    DIE_WITH_PARENT,
    ROOT,
    LiveServer,
    free_port,
    live_env,
    stop_daphne,
)
from tests.security.login_settings import HASH_LOG_LINE, CountingHasher

FAILURES_PER_ACCOUNT = 3
FAILURES_PER_ADDRESS = 6
CONCURRENCY = 2
FLOOD = 64
PASSWORD = "correct-horse-battery-7"
WRONG = "Tr0ub4dor&3"
THROTTLED = "Too many failed logins. Try again in"
BUSY = "Too many logins at this moment. Try again in a few seconds."
INVALID = "Please enter a correct username and password."


class LoginServer(LiveServer):
    socket: Path

    def proxied(self, client_address: str) -> httpx.Client:
        """A client as nginx passes it on: over the Unix socket, X-Forwarded-For set."""
        return httpx.Client(
            base_url="http://localhost",
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            headers={"X-Forwarded-For": client_address},
            cookies={settings.CSRF_COOKIE_NAME: CSRF_TOKEN},
            timeout=30,
        )

    def direct(self, **headers: str) -> httpx.Client:
        """A client that reaches daphne's TCP port itself (so from 127.0.0.1)."""
        return httpx.Client(
            base_url=self.url, headers=headers, cookies={settings.CSRF_COOKIE_NAME: CSRF_TOKEN}, timeout=30
        )

    def hashes(self) -> list[int]:
        """For each password hash so far, how many ran at once when it started."""
        return [int(n) for n in re.findall(re.escape(HASH_LOG_LINE) + r" (\d+)", self.log_text())]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, fake_upstream, tmp_path_factory) -> Iterator[LoginServer]:
    socket = tmp_path_factory.mktemp("login") / "daphne.sock"
    port = free_port()
    env = live_env(
        fake_upstream,
        DJANGO_SETTINGS_MODULE="tests.security.login_settings",
        ASSISTANT_LOGIN_FAILURES_PER_ACCOUNT=str(FAILURES_PER_ACCOUNT),
        ASSISTANT_LOGIN_FAILURES_PER_ADDRESS=str(FAILURES_PER_ADDRESS),
        ASSISTANT_LOGIN_CONCURRENCY=str(CONCURRENCY),
        # More request threads than password checks: the bound, not the lanes, must hold.
        ASSISTANT_REQUEST_THREADS="16",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "daphne-login.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                *DIE_WITH_PARENT,
                *(sys.executable, "-m", "daphne", "-u", str(socket)),
                *("-b", "127.0.0.1", "-p", str(port), "config.asgi:application"),
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    live = LoginServer(f"http://127.0.0.1:{port}", process, log)
    live.socket = socket
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited: {log.read_text()}")
        try:
            # TCP first: both listen once it answers (an httpx client failing to reach a
            # Unix socket leaves its socket unclosed).
            httpx.get(live.url + "/healthz", timeout=1)
            with live.proxied("192.0.2.1") as client:
                client.get("/healthz")
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                stop_daphne(live)
                raise
            time.sleep(0.1)
    yield live
    stop_daphne(live)


def user(name: str):
    """An account with PASSWORD, hashed as the server checks it."""
    account = get_user_model().objects.create_user(name)
    account.password = CountingHasher().encode(PASSWORD, CountingHasher().salt())
    account.save(update_fields=["password"])
    return account


def log_in(
    client: httpx.Client, username: str, password: str, path: str = "/accounts/login/"
) -> httpx.Response:
    return client.post(
        path,
        data={"username": username, "password": password, "csrfmiddlewaretoken": CSRF_TOKEN},
    )


def refused_for(response: httpx.Response) -> int:
    """The seconds a throttled login is told to wait (429, Retry-After, the message)."""
    assert response.status_code == 429, (response.status_code, response.text[:300])
    assert THROTTLED in response.text
    assert "sessionid" not in response.cookies
    return int(response.headers["Retry-After"])


def test_login_guessing_one_account_is_throttled_before_any_hash_and_the_right_password_waits(
    server, transactional_db
):
    user("carol")
    user("dave")
    with server.proxied("198.51.100.7") as guesser:
        for _ in range(FAILURES_PER_ACCOUNT):
            response = log_in(guesser, "carol", WRONG)
            assert response.status_code == 200
            assert INVALID in response.text
        hashed = len(server.hashes())

        wait = refused_for(log_in(guesser, "carol", WRONG))
        assert 0 < wait <= 15 * 60
        assert "15 minutes" in log_in(guesser, "carol", WRONG).text
        # Carol herself, with her password, from elsewhere: the account waits.
        with server.proxied("203.0.113.9") as carol:
            refused_for(log_in(carol, "carol", PASSWORD))
        # None of the refused attempts hashed a password.
        assert len(server.hashes()) == hashed

        # Another account from the same address is not affected.
        assert log_in(guesser, "dave", PASSWORD).status_code == 302

    log = server.log_text()
    assert log.count("login failed for 'carol' from 198.51.100.7") == FAILURES_PER_ACCOUNT
    assert "login refused for 'carol' from 203.0.113.9: too many failed logins" in log


def test_login_guessing_many_accounts_from_one_address_is_throttled(server, transactional_db):
    user("erin")
    with server.proxied("198.51.100.23") as guesser:
        for n in range(FAILURES_PER_ADDRESS):
            assert log_in(guesser, f"guess-{n}", WRONG).status_code == 200
        # Any account from there now waits, one that exists with its password too.
        refused_for(log_in(guesser, "someone-else", WRONG))
        refused_for(log_in(guesser, "erin", PASSWORD))
    # Erin from her own address logs in.
    with server.proxied("198.51.100.24") as erin:
        assert log_in(erin, "erin", PASSWORD).status_code == 302
    log = server.log_text()
    assert all(f"login failed for 'guess-{n}' from 198.51.100.23" in log for n in range(FAILURES_PER_ADDRESS))


def test_login_guessing_cannot_escape_the_address_limit_with_x_forwarded_for(server, transactional_db):
    """A client that is not the proxy names a new address each time: it stays 127.0.0.1."""
    user("gina")  # with no user at all, the login page leads to the setup form
    for n in range(FAILURES_PER_ADDRESS):
        with server.direct(**{"X-Forwarded-For": f"10.0.{n}.1", "X-Real-IP": f"10.1.{n}.1"}) as client:
            assert log_in(client, f"forged-{n}", WRONG).status_code == 200
    with server.direct(**{"X-Forwarded-For": "10.9.9.9"}) as client:
        refused_for(log_in(client, "forged-last", WRONG))
    log = server.log_text()
    assert "login failed for 'forged-0' from 127.0.0.1" in log
    assert "10.0.0.1" not in log


def test_login_guessing_through_the_admin_login_counts_too(server, transactional_db):
    user("frank")
    with server.proxied("198.51.100.41") as guesser:
        for _ in range(FAILURES_PER_ACCOUNT):
            assert log_in(guesser, "frank", WRONG, path="/admin/login/").status_code == 200
        hashed = len(server.hashes())
        refused = log_in(guesser, "frank", WRONG, path="/admin/login/")
        assert THROTTLED in refused.text
        refused_for(log_in(guesser, "frank", PASSWORD))
        assert len(server.hashes()) == hashed
    assert server.log_text().count("login failed for 'frank' from 198.51.100.41") == FAILURES_PER_ACCOUNT


def test_login_guessing_flood_hashes_no_more_than_the_bound_at_once(server, transactional_db):
    """64 anonymous logins at once, each from its own address for its own account: no
    more than ASSISTANT_LOGIN_CONCURRENCY hash at a time; the others are told at once to
    try again, and leave their request thread."""
    user("heidi")  # with no user at all, the login page leads to the setup form
    before = len(server.hashes())
    start = threading.Barrier(FLOOD)
    token = secrets.token_hex(4)

    def one(n: int) -> httpx.Response:
        with server.proxied(f"203.0.113.{n + 100}") as client:
            client.get("/healthz")  # connected before the barrier
            start.wait(30)
            return log_in(client, f"flood-{token}-{n}", WRONG)

    with ThreadPoolExecutor(FLOOD) as pool:
        responses = list(pool.map(one, range(FLOOD)))

    statuses = [response.status_code for response in responses]
    hashes = server.hashes()[before:]
    assert hashes, "no login was checked"
    assert max(hashes) <= CONCURRENCY, hashes
    assert set(statuses) <= {200, 429}, statuses
    # Each login let through hashed once; each refused one hashed nothing.
    assert len(hashes) == statuses.count(200)
    busy = [response for response in responses if response.status_code == 429]
    assert busy, statuses
    assert all(BUSY in response.text and int(response.headers["Retry-After"]) > 0 for response in busy)
