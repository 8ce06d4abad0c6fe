"""The scale-out suite: two daphne processes, A and B, over PostgreSQL and Redis.

Runs only with ASSISTANT_SCALEOUT_TESTS=1, DATABASE_URL=postgres://..., REDIS_URL=redis://...
(a database index other than 0: it is flushed) and both services answering; that is
`make test-scaleout`, which .ci/run calls when they do. Otherwise every test here is
skipped, with the reason in pytest's summary (-ra), never silently.
"""

from __future__ import annotations

import faulthandler
import fcntl
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from assistant.events.publish import replay_log
from tests.helpers.live import LiveServer, database_url, live_env, session_client, start_daphne, stop_daphne

HERE = Path(__file__).resolve().parent
HOW = "make test-scaleout (.ci/run runs it when PostgreSQL and Redis answer)"
# Short leases, so a killed process's answers are swept within seconds. A slow
# database poll for stop requests: a stop that arrives fast came through Redis. A long
# keep-alive: a stream that recovers fast did not wait for its keep-alive re-read.
SCALEOUT_ENV = {
    "ASSISTANT_LEASE_SECONDS": "2",
    "ASSISTANT_HEARTBEAT_SECONDS": "0.3",
    "ASSISTANT_CANCEL_POLL_SECONDS": "30",
    "ASSISTANT_KEEPALIVE_SECONDS": "5",
    "DJANGO_LOG_LEVEL": "INFO",
}


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _skip_reason() -> str | None:
    if os.environ.get("ASSISTANT_SCALEOUT_TESTS") != "1":
        return f"scale-out suite off: ASSISTANT_SCALEOUT_TESTS is not 1; run {HOW}"
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        return f"scale-out suite needs DATABASE_URL=postgres://...; run {HOW}"
    if not settings.REDIS_URL:
        return f"scale-out suite needs REDIS_URL=redis://...; run {HOW}"
    redis_url = urlsplit(settings.REDIS_URL)
    if redis_url.path.strip("/") in ("", "0"):
        return "scale-out suite flushes its Redis database: give REDIS_URL a database index other than 0"
    if not _answers(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)):
        return f"scale-out suite skipped: PostgreSQL at {db['HOST']}:{db['PORT']} not reachable"
    if not _answers(redis_url.hostname or "127.0.0.1", redis_url.port or 6379):
        return f"scale-out suite skipped: Redis at {redis_url.hostname}:{redis_url.port} not reachable"
    return None


SKIP_REASON = _skip_reason()


def pytest_collection_modifyitems(config, items) -> None:
    if SKIP_REASON is None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


LOCK_FILE = Path(tempfile.gettempdir()) / "assistant-scaleout-tests.lock"


@pytest.fixture(scope="session", autouse=True)
def one_run_at_a_time(pytestconfig) -> Iterator[None]:
    """Runs on one machine share the test database and the Redis database: take turns."""
    with LOCK_FILE.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            capture = pytestconfig.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print(f"\nwaiting for another scale-out run to finish ({LOCK_FILE})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# No test here takes a minute; one that waits longer is stuck (a stream that keeps
# sending keep-alives never times out a read). Its tracebacks go to stderr and the run
# ends, instead of holding CI for its whole time limit; the daphne processes die with it.
TEST_SECONDS_MAX = 120


@pytest.fixture(autouse=True)
def watchdog(request) -> Iterator[None]:
    def fire() -> None:
        # Past pytest's output capture, as pytest-timeout does, then out.
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=True)
        sys.stderr.write(f"\n+++ {request.node.nodeid} still runs after {TEST_SECONDS_MAX} s: stacks +++\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(TEST_SECONDS_MAX, fire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture(scope="session")
def redis_client(one_run_at_a_time):
    """The suite's Redis database, flushed once before the run."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()
    replay_log.close()  # this test process's own, used by the services it calls


def scaleout_env(fake_upstream, **extra: str) -> dict[str, str]:
    """A daphne's environment: the tests' PostgreSQL database and Redis."""
    env = {
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "ASSISTANT_REDIS_PREFIX": settings.ASSISTANT_REDIS_PREFIX,
        **SCALEOUT_ENV,
        **extra,
    }
    return live_env(fake_upstream, **env)


@dataclass
class Pair:
    a: LiveServer
    b: LiveServer


@pytest.fixture(scope="session")
def pair_processes(one_run_at_a_time, django_db_setup, fake_upstream, redis_client) -> Iterator[Pair]:
    a = start_daphne(scaleout_env(fake_upstream), "daphne-scaleout-a")
    b = start_daphne(scaleout_env(fake_upstream), "daphne-scaleout-b")
    yield Pair(a, b)
    stop_daphne(a)
    stop_daphne(b)


@pytest.fixture
def pair(pair_processes, transactional_db, upstream) -> Pair:
    """Processes A and B; data the test creates is committed, so both see it."""
    for server in (pair_processes.a, pair_processes.b):
        assert server.process.poll() is None, server.log_text()
    return pair_processes


@pytest.fixture
def clients(pair, alice):
    """Alice logged in on A and on B (one session, as behind a load balancer)."""
    with session_client(pair.a, alice) as on_a, session_client(pair.b, alice) as on_b:
        yield on_a, on_b


@pytest.fixture
def extra_process(one_run_at_a_time, django_db_setup, fake_upstream, redis_client):
    """Start more daphne processes of the pair's kind (to kill, or behind a proxy)."""
    servers = []

    def start(name: str, **env: str) -> LiveServer:
        server = start_daphne(scaleout_env(fake_upstream, **env), f"daphne-scaleout-{name}")
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            stop_daphne(server)
