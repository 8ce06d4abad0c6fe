"""A real daphne over the test database, clients logged in to it, and waiting for what it
stores asynchronously."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from django.conf import settings
from django.test import Client

from tests.helpers.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CSRF_TOKEN = "t" * 32  # Django accepts any 32-character secret as cookie and header alike.
LIVE_MODELS = "fake-model,other-model"


def logged_in(user) -> Client:
    """Django's test client, logged in as `user`."""
    client = Client()
    client.force_login(user)
    return client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = free_port()
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


def clean_env(**overrides: str | None) -> dict[str, str]:
    """This process's environment without the app's variables, plus `overrides` (None deletes)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OPENAI_", "ASSISTANT_", "DJANGO_", "DATABASE_", "REDIS_"))
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def live_env(fake_upstream: FakeUpstream, **extra: str | None) -> dict[str, str]:
    """The environment of a daphne over the test database and the fake upstream."""
    return clean_env(
        **{
            "DATABASE_URL": database_url(),
            "OPENAI_BASE_URL": fake_upstream.url,
            "OPENAI_API_KEY": "test-key-abc123",
            "OPENAI_MAX_RETRIES": "0",
            "OPENAI_TIMEOUT": "2",
            "ASSISTANT_MODELS": LIVE_MODELS,
            "ASSISTANT_MAX_ANSWER_SECONDS": "20",
            # Keep-alives end a read that waits in vain, so deadlines in tests are checked.
            "ASSISTANT_KEEPALIVE_SECONDS": "3",
            # Tests send many answers a minute; the limits have their own tests.
            "ASSISTANT_RATE_LIMIT_PER_MINUTE": "0",
            # Every test's first token has the same id on SQLite (its counts would add up
            # in the server's memory), and tests send bad tokens on purpose.
            "ASSISTANT_TOKEN_REQUESTS_PER_MINUTE": "0",
            "ASSISTANT_LOGIN_FAILURES_PER_ADDRESS": "0",
            # Uploaded files where this process finds them (tests/conftest.py, _media_root).
            "DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            **extra,
        }
    )


def session_cookie(user) -> str:
    """A session of `user`, as the value of the session cookie."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def session_client(live: LiveServer, user, headers: dict[str, str] | None = None, **kwargs) -> httpx.Client:
    """An HTTP client logged in as `user`, with a CSRF cookie and header."""
    return httpx.Client(
        base_url=live.url,
        cookies={
            settings.SESSION_COOKIE_NAME: session_cookie(user),
            settings.CSRF_COOKIE_NAME: CSRF_TOKEN,
        },
        headers={"X-CSRFToken": CSRF_TOKEN, **(headers or {})},
        timeout=kwargs.pop("timeout", 10),
        **kwargs,
    )


def threads_of(live: LiveServer) -> int:
    return len(os.listdir(f"/proc/{live.process.pid}/task"))


def descriptors_of(live: LiveServer) -> int:
    return len(os.listdir(f"/proc/{live.process.pid}/fd"))


def memory_of(live: LiveServer) -> int:
    """The server's resident memory in bytes."""
    with open(f"/proc/{live.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_until(check, timeout: float = 10, interval: float = 0.05):
    """The first truthy result of `check()`, polled (the server stores things asynchronously);
    the last result if none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
